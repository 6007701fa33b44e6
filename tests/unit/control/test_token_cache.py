"""Unit tests for the cache of authenticated tokens (``control.auth.services.PrincipalCache``)."""

from __future__ import annotations

import pytest

from changeover.control.auth import services
from changeover.control.auth.services import Principal, PrincipalCache
from changeover.errors import AuthError

HEADER = "Bearer cho_1_" + "s" * 43


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lookups:
    """A stand-in for the database: counts reads, can be told to refuse."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.calls = 0
        self.refuse: str | None = None

    def __call__(self) -> Principal:
        self.calls += 1
        if self.refuse:
            raise AuthError(self.refuse)
        return self.principal


def test_a_token_is_read_once_per_ttl_and_a_revocation_shows_after_it() -> None:
    clock = Clock()
    cache = PrincipalCache(ttl_s=2.0, clock=clock)
    db = Lookups(Principal(1, "ci", "ci"))
    for _ in range(100):
        assert cache.authenticate(HEADER, db) == db.principal
    assert db.calls == 1
    db.refuse = "access token 'ci' was revoked"  # revoked by another process
    clock.now += 1.9
    assert cache.authenticate(HEADER, db) == db.principal  # still inside the bound
    clock.now += 0.2
    with pytest.raises(AuthError, match="revoked"):
        cache.authenticate(HEADER, db)
    with pytest.raises(AuthError):  # failures are not cached
        cache.authenticate(HEADER, db)
    assert db.calls == 3


def test_expiry_is_checked_on_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    wall = Clock()
    monkeypatch.setattr(services, "now", wall)
    cache = PrincipalCache(ttl_s=3600)
    db = Lookups(Principal(2, "short", "viewer", expires_at=wall.now + 10))
    cache.authenticate(HEADER, db)
    wall.now += 9.9
    cache.authenticate(HEADER, db)
    assert db.calls == 1
    db.refuse = "access token 'short' has expired"
    wall.now += 0.1  # the token's own expiry: the cache must not answer for it any more
    with pytest.raises(AuthError, match="expired"):
        cache.authenticate(HEADER, db)


def test_forget_drops_a_revoked_token_at_once() -> None:
    cache = PrincipalCache(ttl_s=3600)
    db = Lookups(Principal(3, "ci", "ci"))
    other = Lookups(Principal(4, "other", "ci"))
    cache.authenticate(HEADER, db)
    cache.authenticate("Bearer other", other)
    cache.forget(3)
    db.refuse = "access token 'ci' was revoked"
    with pytest.raises(AuthError):
        cache.authenticate(HEADER, db)
    assert cache.authenticate("Bearer other", other) == other.principal
    assert other.calls == 1


def test_headers_are_not_kept_in_clear_and_the_cache_is_bounded() -> None:
    cache = PrincipalCache(ttl_s=3600, max_entries=10)
    db = Lookups(Principal(5, "ci", "ci"))
    for i in range(25):
        cache.authenticate(f"Bearer cho_5_{i:043d}", db)
    assert len(cache._entries) <= 10
    assert all("cho_" not in key for key in cache._entries)


def test_a_missing_header_always_goes_to_the_lookup() -> None:
    cache = PrincipalCache()
    db = Lookups(Principal(6, "x", "ci"))
    db.refuse = "no access token"
    for _ in range(2):
        with pytest.raises(AuthError):
            cache.authenticate(None, db)
    assert db.calls == 2


def test_by_default_a_revocation_shows_within_two_seconds() -> None:
    # The README promises it: a revoked token works for up to 2 seconds more.
    clock = Clock()
    cache = PrincipalCache(clock=clock)
    db = Lookups(Principal(8, "ci", "ci"))
    cache.authenticate(HEADER, db)
    db.refuse = "access token 'ci' was revoked"
    clock.now += 1.9
    assert cache.authenticate(HEADER, db) == db.principal  # served from the cache
    clock.now += 0.11
    with pytest.raises(AuthError, match="revoked"):
        cache.authenticate(HEADER, db)
    assert db.calls == 2


def test_a_revocation_during_a_lookup_is_not_cached_over() -> None:
    clock = Clock()
    cache = PrincipalCache(ttl_s=2.0, clock=clock)
    principal = Principal(7, "ci", "ci")
    calls = 0

    def slow_lookup() -> Principal:
        # The row was read as valid; meanwhile an admin revoked the token here.
        nonlocal calls
        calls += 1
        if calls == 1:
            cache.forget(7)
            return principal
        raise AuthError("access token 'ci' was revoked")

    assert cache.authenticate(HEADER, slow_lookup) == principal
    with pytest.raises(AuthError, match="revoked"):
        cache.authenticate(HEADER, slow_lookup)


def test_a_token_in_steady_use_is_refreshed_before_it_runs_out() -> None:
    clock = Clock()
    cache = PrincipalCache(ttl_s=2.0, clock=clock)
    db = Lookups(Principal(8, "mm", "matchmaker"))
    cache.authenticate(HEADER, db)
    clock.now += 0.9
    assert not cache.refresh_due(HEADER)  # young: nothing to do
    clock.now += 0.2
    assert cache.refresh_due(HEADER)  # past half its life: one caller refreshes it ...
    assert not cache.refresh_due(HEADER)  # ... and no other while that runs
    cache.refresh(HEADER, db)
    assert db.calls == 2
    clock.now += 1.5  # 2.6 s after the first read: still cached, read 1.5 s ago
    assert cache.cached(HEADER) == db.principal
    assert cache.refresh_due(HEADER)  # and due again


def test_a_refresh_that_is_refused_drops_the_entry_at_once() -> None:
    clock = Clock()
    cache = PrincipalCache(ttl_s=2.0, clock=clock)
    db = Lookups(Principal(9, "mm", "matchmaker"))
    cache.authenticate(HEADER, db)
    clock.now += 1.5
    assert cache.refresh_due(HEADER)
    db.refuse = "access token 'mm' was revoked"  # revoked by another process
    cache.refresh(HEADER, db)
    assert cache.cached(HEADER) is None  # not served for the 0.5 s it had left
    with pytest.raises(AuthError, match="revoked"):
        cache.authenticate(HEADER, db)


def test_a_refresh_that_fails_leaves_the_entry_to_age_out() -> None:
    clock = Clock()
    cache = PrincipalCache(ttl_s=2.0, clock=clock)
    db = Lookups(Principal(10, "mm", "matchmaker"))
    cache.authenticate(HEADER, db)
    clock.now += 1.5
    assert cache.refresh_due(HEADER)

    def database_away() -> Principal:
        raise OSError("connection refused")

    cache.refresh(HEADER, database_away)  # logged, not raised
    assert cache.cached(HEADER) == db.principal  # its last 0.5 s, as without a refresh
    assert cache.refresh_due(HEADER)  # the next caller tries again
    clock.now += 0.6
    assert cache.cached(HEADER) is None


def test_a_revocation_here_during_a_refresh_is_not_cached_over() -> None:
    clock = Clock()
    cache = PrincipalCache(ttl_s=2.0, clock=clock)
    principal = Principal(11, "mm", "matchmaker")
    cache.authenticate(HEADER, lambda: principal)
    clock.now += 1.5
    assert cache.refresh_due(HEADER)

    def read_then_revoked() -> Principal:
        cache.forget(11)  # an admin revoked it through this server while the row was read
        return principal

    cache.refresh(HEADER, read_then_revoked)
    assert cache.cached(HEADER) is None
