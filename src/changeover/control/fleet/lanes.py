"""The two hot endpoints without the web framework, as plain ASGI: Server Allocate
(``POST /api/v1/allocations``) and the agents' sync (``POST /api/v1/agents/{id}/sync``).

A matchmaker calls the first for every player who presses "play", thousands of times a
second at peak; every host calls the second every second or two, a thousand hosts on a
big fleet; both always with the same token. Through FastAPI each call paid for route
matching, dependency injection, a ``Request`` and a ``Response`` object and the
framework's body validation: about half of the server's CPU per allocation, and on a
leader answering 100 hosts during a patch job, its event loop spent a tenth of its time
matching routes and a seventh solving dependencies, measured. So this handler sits in the
middleware stack, inside the request-id, metrics, access-log and body-limit middleware,
and answers the common case itself: a token already in the principal cache and a
well-formed body. The body is validated by the same Pydantic model the FastAPI route
uses, the errors are the same ``{"error", "message"}`` bodies with the same status
codes, and the work is done by the same code (the group-commit allocator, the sync's
``fleet.views.answer_sync``).

Everything else passes through to FastAPI's routes, which stay the documented ones (they
are in the OpenAPI schema) and read the token from the database on a cache miss: the
next call then takes this lane.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from changeover.control.auth.services import Permission, Principal, PrincipalCache
from changeover.control.fleet import allocator
from changeover.control.fleet.views import AgentSync, AllocationCreate
from changeover.control.http_errors import database_unavailable, status_for, validation_message
from changeover.control.observability import ARRIVED_KEY
from changeover.errors import ChangeoverError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Syncer = Callable[[int, AgentSync, float], Awaitable[bytes]]
"""Answers a host's sync: its id, the agent's body, when the request arrived."""

PATH = "/api/v1/allocations"
SYNC_PATH = "/api/v1/agents/{host_id}/sync"
_SYNC = re.compile(r"/api/v1/agents/([1-9][0-9]{0,17})/sync")
"""A host id the route's ``Id`` takes (1 to 10**18 - 1 is within it): others go there."""
_JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class _Route:
    """What the framework's router leaves in ``scope["route"]``, for the metrics' label."""

    path: str


_ROUTE = _Route(PATH)
_SYNC_ROUTE = _Route(SYNC_PATH)


class FastLanes:
    """ASGI middleware: answers ``POST PATH`` and ``POST SYNC_PATH`` for cached tokens,
    passes on the rest."""

    def __init__(
        self,
        app: Any,
        *,
        group: Callable[[], allocator.Allocator],
        sync: Syncer,
        principals: Callable[[], PrincipalCache],
        read_token: Callable[[str], Principal],
    ) -> None:
        """``read_token`` reads a header's token from the database (``AuthError`` if it is
        refused): the cache's entries are refreshed with it before they run out."""
        self.app = app
        self.group = group
        self.sync = sync
        self.principals = principals
        self.read_token = read_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        synced = _SYNC.fullmatch(path) if path != PATH else None
        if path != PATH and synced is None:
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
        scope["route"] = _ROUTE if synced is None else _SYNC_ROUTE
        status, answer = 200, b""
        try:
            if synced is None:
                principal.require(Permission.ALLOCATE)
                body = await _body(receive)
                request = AllocationCreate.model_validate_json(body or b"null").to_request()
                result = await self.group().allocate(request)
                status, answer = 201, json.dumps(result).encode()
            else:
                principal.require(Permission.AGENT)
                arrived = float(scope.get(ARRIVED_KEY) or 0.0)
                sync = AgentSync.model_validate_json(await _body(receive) or b"null")
                answer = await self.sync(int(synced[1]), sync, arrived)
        except ChangeoverError as e:
            status, answer = status_for(e), json.dumps(e.to_dict()).encode()
        except OperationalError as e:
            status, answer = 503, json.dumps(database_unavailable(e)).encode()
        except ValidationError as e:
            status = 422
            message = validation_message(e.errors())
            answer = json.dumps({"error": "invalid_input", "message": message}).encode()
        await send({"type": "http.response.start", "status": status, "headers": _JSON})
        await send({"type": "http.response.body", "body": answer})


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
