"""Issuing and checking access tokens.

A token reads ``cho_<id>_<secret>``: the id finds the row, the secret is compared with the
stored SHA-256 in constant time. Secrets are 256 random bits, so a plain hash (not a slow
password hash) is the right tool. What a scope may do is the table ``SCOPES``.

Every request is authenticated, through a short-lived cache (``PrincipalCache``) so that
a push of thousands of files does not read the token row thousands of times. Expiry is
checked on every request, cached or not. A revocation made through this server takes
effect at once; one made elsewhere (another server process on the same database, a
database edit) within ``TOKEN_CACHE_TTL_S``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from changeover.control.auth.models import Token
from changeover.control.db import now
from changeover.errors import AuthError, Forbidden, InvalidInput, NotFound

log = logging.getLogger("changeover.auth")


class Permission(StrEnum):
    READ = "read"
    PUSH = "push"  # upload updates, run and decide diff analyses
    AGENT = "agent"  # what a host agent does
    ALLOCATE = "allocate"  # place players (a game's matchmaker), end their sessions
    ADMIN = "admin"  # everything else: images, branches, tokens, fleets


SCOPES: dict[str, frozenset[Permission]] = {
    "viewer": frozenset({Permission.READ}),
    "ci": frozenset({Permission.READ, Permission.PUSH}),
    "agent": frozenset({Permission.READ, Permission.AGENT}),
    "matchmaker": frozenset({Permission.READ, Permission.ALLOCATE}),
    "admin": frozenset(Permission),
}

TOKEN_RE = re.compile(r"^cho_(\d{1,18})_([A-Za-z0-9_-]{20,100})$")
TOKEN_CACHE_TTL_S = 2.0
"""How long a checked token is trusted without reading its row again: the bound on how
late a revocation made outside this server process takes effect."""
TOKEN_CACHE_MAX = 4096


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, name and scope."""

    token_id: int
    name: str
    scope: str
    expires_at: float | None = field(default=None, compare=False)

    def require(self, permission: Permission) -> None:
        if permission not in SCOPES[self.scope]:
            allowed = sorted(s for s, perms in SCOPES.items() if permission in perms)
            raise Forbidden(
                f"token {self.name!r} has scope {self.scope!r}, which may not {permission.value};"
                f" this needs scope {' or '.join(allowed)}",
                scope=self.scope,
                needs=allowed,
            )

    @property
    def actor(self) -> str:
        return f"{self.name} (token {self.token_id})"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    s: Session, scope: str, name: str, expires_in_s: float | None = None
) -> tuple[Token, str]:
    """Make a token; returns the row and the full token string (shown once, never stored).

    Raises:
        InvalidInput: an unknown scope, an empty or overlong name, a non-positive expiry.
    """
    if scope not in SCOPES:
        raise InvalidInput(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("a token name must be 1 to 200 characters")
    if expires_in_s is not None and expires_in_s <= 0:
        raise InvalidInput("expires_in_s must be positive")
    secret = secrets.token_urlsafe(32)
    row = Token(
        name=name,
        scope=scope,
        secret_sha256=_digest(secret),
        created_at=now(),
        expires_at=now() + expires_in_s if expires_in_s else None,
    )
    s.add(row)
    s.flush()
    return row, f"cho_{row.id}_{secret}"


def authenticate(s: Session, header: str | None) -> Principal:
    """The principal behind an ``Authorization: Bearer …`` header.

    Raises:
        AuthError: no header, a malformed, unknown, revoked or expired token.
    """
    if not header:
        raise AuthError("no access token: send 'Authorization: Bearer <token>'")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise AuthError("the Authorization header must read 'Bearer <token>'")
    m = TOKEN_RE.match(value.strip())
    if m is None:
        raise AuthError("malformed access token: expected cho_<id>_<secret>")
    row = s.get(Token, int(m.group(1)))
    if row is None or not hmac.compare_digest(row.secret_sha256, _digest(m.group(2))):
        raise AuthError("access token not recognised")
    if row.revoked_at is not None:
        raise AuthError(f"access token {row.name!r} was revoked")
    if row.expires_at is not None and row.expires_at <= now():
        raise AuthError(f"access token {row.name!r} has expired; ask an admin for a new one")
    return Principal(row.id, row.name, row.scope, row.expires_at)


class PrincipalCache:
    """Principals of recently authenticated headers, by the SHA-256 of the header.

    An entry is used for at most ``ttl_s`` seconds and never past its token's expiry;
    failures are never cached. Thread-safe.
    """

    def __init__(
        self,
        ttl_s: float = TOKEN_CACHE_TTL_S,
        max_entries: int = TOKEN_CACHE_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._forgotten: dict[int, float] = {}  # token id -> when forget() was called
        self._refreshing: set[str] = set()  # keys whose refresh() is due or running
        self._lock = threading.Lock()

    @staticmethod
    def _key(header: str) -> str:
        return hashlib.sha256(header.encode()).hexdigest()

    def cached(self, header: str | None) -> Principal | None:
        """The principal of ``header`` if it was authenticated lately and is still valid."""
        if not header:
            return None
        with self._lock:
            hit = self._entries.get(self._key(header))
        if hit is None:
            return None
        cached_at, principal = hit
        fresh = self.clock() - cached_at < self.ttl_s
        if fresh and (principal.expires_at is None or principal.expires_at > now()):
            return principal
        return None

    def authenticate(self, header: str | None, lookup: Callable[[], Principal]) -> Principal:
        """The cached principal of ``header``, or ``lookup()``'s (which raises AuthError)."""
        if not header:
            return lookup()
        if (principal := self.cached(header)) is not None:
            return principal
        return self._look_up(self._key(header), lookup)

    def _look_up(self, key: str, lookup: Callable[[], Principal]) -> Principal:
        started = self.clock()
        principal = lookup()
        with self._lock:
            # A revocation that happened while we read the row must not be cached over.
            if self._forgotten.get(principal.token_id, -1.0) >= started:
                return principal
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # crude, but bounded and rare: a refill costs one query
            self._entries[key] = (started, principal)
        return principal

    def refresh_due(self, header: str) -> bool:
        """Whether ``header``'s entry is past half its ``ttl_s`` with no refresh under way;
        True once per refresh: the caller then runs :meth:`refresh` (off its event loop).

        Without it a token in steady use leaves the cache every ``ttl_s`` and every request
        in flight at that moment reads its row at once: a matchmaker's 30 connections
        stalled together twice a second, which showed in the allocation p99.
        """
        key = self._key(header)
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or key in self._refreshing:
                return False
            if self.clock() - hit[0] < self.ttl_s / 2:
                return False
            self._refreshing.add(key)
            return True

    def refresh(self, header: str, lookup: Callable[[], Principal]) -> None:
        """Read ``header``'s token again and cache the answer; a refusal (revoked, expired)
        drops the entry, so the next request is refused. Never raises: a failed read
        leaves the entry to age out as it would have without a refresh."""
        key = self._key(header)
        try:
            self._look_up(key, lookup)
        except AuthError:
            with self._lock:
                self._entries.pop(key, None)
        except Exception:  # the database is away: the entry just ages out
            log.warning("refreshing a cached access token failed", exc_info=True)
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def forget(self, token_id: int) -> None:
        """Drop a token's entries at once (it was revoked through this server)."""
        with self._lock:
            for key in [k for k, (_, p) in self._entries.items() if p.token_id == token_id]:
                del self._entries[key]
            t = self.clock()
            self._forgotten = {i: at for i, at in self._forgotten.items() if t - at < self.ttl_s}
            self._forgotten[token_id] = t


def list_tokens(s: Session) -> list[Token]:
    return list(s.scalars(select(Token).order_by(Token.id)))


def revoke_token(s: Session, token_id: int) -> Token:
    row = s.get(Token, token_id)
    if row is None:
        raise NotFound(f"no token with id {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now()
    return row


def token_dict(row: Token) -> dict[str, object]:
    return {
        "id": row.id,
        "name": row.name,
        "scope": row.scope,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
    }
