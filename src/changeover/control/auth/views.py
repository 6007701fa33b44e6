"""HTTP endpoints for tokens, and the dependency that authenticates every request."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field

from changeover.control.auth import services
from changeover.control.auth.services import Permission, Principal
from changeover.control.context import Context


def ctx(request: Request) -> Context:
    c: Context = request.app.state.ctx
    return c


_cache_lock = threading.Lock()


def principals(request: Request) -> services.PrincipalCache:
    """This application's cache of authenticated tokens (see ``services.PrincipalCache``)."""
    return app_principals(request.app.state)


def app_principals(state: Any) -> services.PrincipalCache:
    """The cache of authenticated tokens kept in an application's ``state``."""
    with _cache_lock:
        cache: services.PrincipalCache | None = getattr(state, "principals", None)
        if cache is None:
            cache = state.principals = services.PrincipalCache()
    return cache


def requires(permission: Permission) -> Callable[..., Principal]:
    """A dependency: the caller's principal, checked for ``permission``.

    Every request is authenticated; a token checked less than ``TOKEN_CACHE_TTL_S`` ago is
    not read from the database again (expiry is still checked every time).
    """

    def dependency(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Principal:
        def lookup() -> Principal:
            with ctx(request).db.read() as s:
                return services.authenticate(s, authorization)

        principal = principals(request).authenticate(authorization, lookup)
        principal.require(permission)
        return principal

    return dependency


Reader = Annotated[Principal, Depends(requires(Permission.READ))]
Pusher = Annotated[Principal, Depends(requires(Permission.PUSH))]
Admin = Annotated[Principal, Depends(requires(Permission.ADMIN))]
Allocator = Annotated[Principal, Depends(requires(Permission.ALLOCATE))]

router = APIRouter(prefix="/api/v1", tags=["tokens"])


class TokenCreate(BaseModel):
    scope: str
    name: str = Field(min_length=1, max_length=200)
    expires_in_s: float | None = Field(default=None, gt=0)


@router.get("/whoami")
def whoami(who: Reader) -> dict[str, Any]:
    return {"token_id": who.token_id, "name": who.name, "scope": who.scope}


@router.post("/tokens", status_code=201)
def create_token(body: TokenCreate, request: Request, _: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        row, token = services.create_token(s, body.scope, body.name, body.expires_in_s)
        return {**services.token_dict(row), "token": token}


@router.get("/tokens")
def list_tokens(request: Request, _: Admin) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        return [services.token_dict(t) for t in services.list_tokens(s)]


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: int, request: Request, _: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        out = services.token_dict(services.revoke_token(s, token_id))
    principals(request).forget(token_id)  # after the commit: no lookup in flight re-caches it
    return out
