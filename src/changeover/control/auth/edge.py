"""The token of every API request, checked before anything reads its body.

``Authenticate`` is ASGI middleware, outside the body limit and the framework: a request to
``/api/v1/…`` without a valid token is answered 401 whatever it sends (a malformed, huge or
hostile body included), and its body is never read. The principal it finds is left in the
request's scope, where ``auth.views.requires`` picks it up to check the token's scope (403)
per endpoint. A token checked lately comes from the ``PrincipalCache`` (refreshed in the
background before it runs out); otherwise its row is read on a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from changeover.control.auth.services import Principal, PrincipalCache
from changeover.control.http_errors import database_unavailable
from changeover.errors import AuthError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

API_PREFIX = "/api/v1/"
PRINCIPAL_KEY = "changeover.principal"
"""Where the request's authenticated principal is kept in its ASGI scope."""


class Authenticate:
    """ASGI middleware: 401 for an ``/api/v1/`` request without a valid token."""

    def __init__(
        self,
        app: Any,
        *,
        principals: Callable[[], PrincipalCache],
        read_token: Callable[[str | None], Principal],
    ) -> None:
        """``read_token`` reads a header's token from the database (``AuthError`` if it is
        refused)."""
        self.app = app
        self.principals = principals
        self.read_token = read_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        cache = self.principals()
        principal = cache.cached(header)
        try:
            if principal is None:
                principal = await run_in_threadpool(
                    cache.authenticate, header, functools.partial(self.read_token, header)
                )
            elif header is not None and cache.refresh_due(header):
                refresh = functools.partial(cache.refresh, header, lambda: self.read_token(header))
                asyncio.get_running_loop().run_in_executor(None, refresh)
        except AuthError as e:
            await _refuse(send, e)
            return
        except OperationalError as e:  # the token could not be read: the database is away
            body = json.dumps(database_unavailable(e)).encode()
            headers = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        scope[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(send: Send, error: AuthError) -> None:
    body = json.dumps(error.to_dict()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b"Bearer"),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
