"""HTTP endpoints for tokens, and the dependency that authenticates every request."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from changeover.control.auth import services
from changeover.control.auth.edge import PRINCIPAL_KEY
from changeover.control.auth.schemas import TokenCreated, TokenOut, WhoAmI
from changeover.control.auth.services import Permission, Principal
from changeover.control.context import Context
from changeover.control.http_input import MAX_SECONDS, EdgeRoute, Id


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


def requires(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller's principal, checked for ``permission``.

    Every request is authenticated: ``/api/v1/`` requests already were, before their body
    was read (``auth.edge``); others here. A token checked less than ``TOKEN_CACHE_TTL_S``
    ago is not read from the database again (expiry is still checked every time).
    """

    async def dependency(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Principal:
        # On the event loop: a request the edge authenticated (every /api/v1/ one) takes no
        # worker thread before its endpoint's own (a busy server's threads are its queue).
        known: Principal | None = request.scope.get(PRINCIPAL_KEY)
        if known is not None:
            known.require(permission)
            return known

        def lookup() -> Principal:
            with ctx(request).db.read() as s:
                return services.authenticate(s, authorization)

        cache = principals(request)
        principal = await run_in_threadpool(cache.authenticate, authorization, lookup)
        principal.require(permission)
        return principal

    return dependency


Reader = Annotated[Principal, Depends(requires(Permission.READ))]
Pusher = Annotated[Principal, Depends(requires(Permission.PUSH))]
Admin = Annotated[Principal, Depends(requires(Permission.ADMIN))]
Allocator = Annotated[Principal, Depends(requires(Permission.ALLOCATE))]

router = APIRouter(prefix="/api/v1", tags=["tokens"], route_class=EdgeRoute)


class TokenCreate(BaseModel):
    scope: str
    name: str = Field(min_length=1, max_length=200)
    expires_in_s: Annotated[float, Field(gt=0, le=MAX_SECONDS)] | None = None


@router.get("/whoami", response_model=WhoAmI)
def whoami(who: Reader) -> dict[str, Any]:
    return {"token_id": who.token_id, "name": who.name, "scope": who.scope}


@router.post("/tokens", status_code=201, response_model=TokenCreated)
def create_token(body: TokenCreate, request: Request, _: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        row, token = services.create_token(s, body.scope, body.name, body.expires_in_s)
        return {**services.token_dict(row), "token": token}


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(request: Request, _: Admin) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        return [services.token_dict(t) for t in services.list_tokens(s)]


@router.delete("/tokens/{token_id}", response_model=TokenOut)
def revoke_token(token_id: Id, request: Request, _: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        out = services.token_dict(services.revoke_token(s, token_id))
    principals(request).forget(token_id)  # after the commit: no lookup in flight re-caches it
    return out
