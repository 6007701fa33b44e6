"""Server Allocate without the web framework: ``POST /api/v1/allocations`` as plain ASGI.

A matchmaker calls this endpoint for every player who presses "play", thousands of times a
second at peak, always with the same token. Through FastAPI each call paid for route
matching, dependency injection, a ``Request`` and a ``Response`` object and the framework's
body validation: about half of the server's CPU per allocation, measured. So this handler
sits in the middleware stack, inside the request-id, metrics, access-log and body-limit
middleware, and answers the common case itself: a token already in the principal cache
and a well-formed body. The body is validated by the same Pydantic model the FastAPI route
uses, the errors are the same ``{"error", "message"}`` bodies with the same status codes,
and the allocation goes to the same group-commit allocator.

Everything else passes through to FastAPI's route, which stays the documented one (it is
in the OpenAPI schema) and reads the token from the database on a cache miss: the next
call then takes this lane.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from changeover.control.auth.services import Permission, Principal, PrincipalCache
from changeover.control.fleet import allocator
from changeover.control.fleet.views import AllocationCreate
from changeover.control.http_errors import database_unavailable, status_for, validation_message
from changeover.errors import ChangeoverError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

PATH = "/api/v1/allocations"
_JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class _Route:
    """What the framework's router leaves in ``scope["route"]``, for the metrics' label."""

    path: str


_ROUTE = _Route(PATH)


class AllocateLane:
    """ASGI middleware: answers ``POST PATH`` for cached tokens, passes on the rest."""

    def __init__(
        self,
        app: Any,
        *,
        group: Callable[[], allocator.Allocator],
        principals: Callable[[], PrincipalCache],
        read_token: Callable[[str], Principal],
    ) -> None:
        """``read_token`` reads a header's token from the database (``AuthError`` if it is
        refused): the cache's entries are refreshed with it before they run out."""
        self.app = app
        self.group = group
        self.principals = principals
        self.read_token = read_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        cache = self.principals()
        principal = cache.cached(header)
        if header is None or principal is None:  # not seen lately: the route reads the row
            await self.app(scope, receive, send)
            return
        if cache.refresh_due(header):
            refresh = functools.partial(cache.refresh, header, lambda: self.read_token(header))
            asyncio.get_running_loop().run_in_executor(None, refresh)
        scope["route"] = _ROUTE
        try:
            principal.require(Permission.ALLOCATE)
            body = await _body(receive)
            request = AllocationCreate.model_validate_json(body or b"null").to_request()
            result = await self.group().allocate(request)
            status, answer = 201, result
        except ChangeoverError as e:
            status, answer = status_for(e), e.to_dict()
        except OperationalError as e:
            status, answer = 503, database_unavailable(e)
        except ValidationError as e:
            status = 422
            answer = {"error": "invalid_input", "message": validation_message(e.errors())}
        await send({"type": "http.response.start", "status": status, "headers": _JSON})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _body(receive: Receive) -> bytes:
    """The whole request body (``BodyLimit``, outside, bounds its size)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ChangeoverError("the client went away before sending its request")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
