"""Server Allocate, applied: sessions, and the capacity they hold on instances.

``allocate`` reads the best few candidates (the database filters and sorts them by the
same rules as ``allocation.rank``, so Python sees a handful of rows, not every instance of
the fleet; all of them are read only to word a refusal), asks ``allocation.rank`` for the
best, and takes a place with one compare-and-set update::

    UPDATE instances SET players = players + :n WHERE id = :id AND players + :n <= capacity

in the same transaction as the session row. Losing the race (another request filled the
instance first) moves on to the next candidate, then re-reads and re-ranks, so no instance
ever holds more players than its capacity, on SQLite (writers queue on ``BEGIN IMMEDIATE``)
and on PostgreSQL (the row lock and the re-checked ``WHERE``) alike.

A session is ``reserved`` when allocated, ``connected`` once the game reports one of its
players through the SDK, and ``ended`` when they have all left (or the instance stopped);
a reservation nobody takes up ``expires`` after ``RESERVE_TTL_S``. Ending gives the places
back with the mirror update (``players = players - :n``). Games without the SDK report no
players, so their sessions end only by ``DELETE /sessions/{id}`` or when the instance stops.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Result,
    Row,
    Select,
    Table,
    bindparam,
    case,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from changeover.control.builds.models import Version
from changeover.control.fleet import allocation
from changeover.control.fleet.models import (
    Fleet,
    GameSession,
    Host,
    Instance,
    Profile,
    Region,
    VersionCompat,
)
from changeover.control.fleet.services import LOST_AFTER_S, get_fleet, get_profile, get_region
from changeover.control.patchjobs.records import AllocationWeight
from changeover.errors import Conflict, InvalidInput, NotFound
from changeover.sdk.state import check_player_id

RESERVE_TTL_S = 60.0
OPEN = ("reserved", "connected")
MAX_PARTY = 64
ROUNDS = 5


@dataclass(frozen=True)
class AllocationRequest:
    fleet: str | None
    profile: str | None
    regions: tuple[str, ...]
    client_version: str | None
    players: tuple[str, ...]
    party: str | None = None
    join_session: str | None = None


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def _release(s: Session, instance_id: int, n: int) -> None:
    s.execute(
        update(Instance)
        .where(Instance.id == instance_id, Instance.players >= n)
        .values(players=Instance.players - n)
    )


def _close(s: Session, session: GameSession, status: str, now: float) -> None:
    if session.status not in OPEN:
        return
    session.status = status
    session.ended_at = now
    _release(s, session.instance_id, session.size)


def track(s: Session, row: Instance, obs: Mapping[str, Any], now: float) -> None:
    """Follow the sessions of one instance from what its agent observed."""
    open_sessions = list(
        s.scalars(
            select(GameSession)
            .where(GameSession.instance_id == row.id, GameSession.status.in_(OPEN))
            .order_by(GameSession.id)
        )
    )
    if not open_sessions:
        return
    if obs.get("state") in ("stopped", "failed"):
        for sess in open_sessions:
            _close(s, sess, "ended", now)
        return
    sdk = obs.get("sdk")
    if not isinstance(sdk, dict) or not sdk.get("ready"):
        return  # no word from the game: nothing is known about its players
    players = set(map(str, sdk.get("players") or []))
    for sess in open_sessions:
        members = set(json.loads(sess.players))
        if members & players:
            if sess.status == "reserved":
                sess.status = "connected"
                sess.connected_at = now
        elif sess.status == "connected":
            _close(s, sess, "ended", now)
        elif now - sess.created_at > RESERVE_TTL_S:
            _close(s, sess, "expired", now)


def end_session(s: Session, session_id: str, now: float) -> GameSession:
    """The players left (the game backend says so): give their places back. Idempotent."""
    sess = get_session(s, session_id)
    _close(s, sess, "ended", now)
    return sess


def get_session(s: Session, session_id: str) -> GameSession:
    sess = s.get(GameSession, session_id) if len(session_id) <= 40 else None
    if sess is None:
        raise NotFound(f"no session {session_id[:40]!r}", session_id=session_id[:40])
    return sess


def _check(req: AllocationRequest) -> None:
    if (req.fleet is None) == (req.profile is None):
        raise InvalidInput("name exactly one of fleet or profile to allocate from")
    if not 1 <= len(req.players) <= MAX_PARTY:
        raise InvalidInput(f"an allocation is for 1 to {MAX_PARTY} players")
    if len(set(req.players)) != len(req.players):
        raise InvalidInput("the players of a party must be different")
    for p in req.players:
        check_player_id(p)
    if req.party is not None and not 1 <= len(req.party) <= 128:
        raise InvalidInput("party must be 1 to 128 characters")


_LIVE = ("running", "draining")
PREFETCH = 16
"""Candidates the fast path reads per round: the best few, enough to move on after races."""


def _scoped_select(by_profile: bool) -> Select[*tuple[Any, ...]]:
    """The ready instances of a fleet (or profile) ``:scope_id``, as plain columns."""
    return (
        select(
            Instance.id,
            Instance.fleet_id,
            Instance.profile_id,
            Instance.state,
            Instance.desired,
            Instance.players,
            Instance.capacity,
            Instance.port,
            Instance.ports,
            Host.name.label("host"),
            Host.address,
            Host.last_seen_at,
            Region.name.label("region"),
            Profile.name.label("profile"),
            Version.number.label("version"),
            Fleet.name.label("fleet"),
            VersionCompat.client_min,
            VersionCompat.client_max,
        )
        .join(Host, Instance.host_id == Host.id)
        .join(Region, Host.region_id == Region.id)
        .join(Profile, Instance.profile_id == Profile.id)
        .join(Version, Profile.version_id == Version.id)
        .join(Fleet, Instance.fleet_id == Fleet.id)
        .outerjoin(VersionCompat, VersionCompat.version_id == Version.id)
        .where(
            Instance.desired.in_(_LIVE),
            Instance.state == "ready",
            (Instance.profile_id if by_profile else Instance.fleet_id) == bindparam("scope_id"),
        )
    )


def _allocatable(scoped: Select[*tuple[Any, ...]]) -> Select[*tuple[Any, ...]]:
    """What ``allocation.rank`` never refuses: running, on a live host, room for the party."""
    return scoped.where(
        Instance.desired == "running",
        Host.last_seen_at > bindparam("alive_after"),
        Instance.players + bindparam("size") <= Instance.capacity,
    )


# Built once: SQLAlchemy then also reuses their compiled form without recomputing its key.
_SCOPED = {by: _scoped_select(by) for by in (False, True)}
_BEST = {
    by: _allocatable(_SCOPED[by])
    .order_by(Version.number.desc(), Instance.players.desc(), Instance.id)
    .limit(PREFETCH)
    for by in (False, True)
}
_FLEET_BY_NAME = select(
    Fleet.id,
    Fleet.application_id,
    # In the same round trip: whether the fleet has allocation weights at all, so a fleet
    # without them pays nothing more (the usual case outside a patch job).
    select(AllocationWeight.fleet_id)
    .where(AllocationWeight.fleet_id == Fleet.id)
    .limit(1)
    .exists()
    .label("weighted"),
).where(Fleet.name == bindparam("name"))
_WEIGHTS = select(AllocationWeight.profile_id, AllocationWeight.weight).where(
    AllocationWeight.fleet_id == bindparam("fleet_id")
)
_INSTANCES = cast(Table, Instance.__table__)
_TAKE = (
    update(_INSTANCES)
    .where(
        _INSTANCES.c.id == bindparam("instance_id"),
        _INSTANCES.c.players + bindparam("n") <= _INSTANCES.c.capacity,
        _INSTANCES.c.desired.in_(_LIVE),
    )
    .values(players=_INSTANCES.c.players + bindparam("n"))
)
_INSERT_SESSION = insert(cast(Table, GameSession.__table__))


@functools.lru_cache(maxsize=256)
def _bound(value: str | None) -> allocation.ClientVersion | None:
    return allocation.parse_client_version(value) if value else None


def _candidate(
    row: Row[Any], now: float, weights: Mapping[int, float] | None = None
) -> allocation.Candidate:
    return allocation.Candidate(
        instance_id=row.id,
        region=row.region,
        version=row.version,
        state=row.state,
        desired=row.desired,
        players=row.players,
        capacity=row.capacity,
        host_alive=now - row.last_seen_at < LOST_AFTER_S,
        client_min=_bound(row.client_min),
        client_max=_bound(row.client_max),
        weight=weights.get(row.profile_id, 1.0) if weights else 1.0,
    )


def _incompatible_profiles(
    s: Session, application_id: int | None, profile_id: int | None, client: allocation.ClientVersion
) -> list[int]:
    """The profiles (of the fleet's application, or the one profile) refusing ``client``."""
    q = select(Profile.id, VersionCompat.client_min, VersionCompat.client_max).join(
        VersionCompat, VersionCompat.version_id == Profile.version_id
    )
    if profile_id is not None:
        q = q.where(Profile.id == profile_id)
    else:
        q = q.where(Profile.application_id == application_id)
    return [
        pid
        for pid, lo, hi in s.execute(q).tuples()
        if not allocation.accepts_client(client, _bound(lo), _bound(hi))
    ]


def _best_rows(
    s: Session,
    by_profile: bool,
    params: dict[str, Any],
    request: allocation.Request,
    incompatible: list[int],
    weights: Mapping[int, float],
) -> list[Row[Any]]:
    """The best ``PREFETCH`` instances that ``allocation.rank`` could pick, in its order.

    The database applies the rules that remove an instance (running, live host, room for
    the party, listed region, compatible version, weight above 0) and sorts by the same key
    as ``rank``, so this is a prefix of what ``rank`` returns over every candidate; the
    friend's instance, if any, is added for ``rank`` to judge.
    """
    q = _BEST[by_profile]
    if request.regions or incompatible or weights:
        q = _allocatable(_SCOPED[by_profile])
        order: list[Any] = []
        if request.regions:
            q = q.where(Region.name.in_(request.regions))
            order.append(case({r: i for i, r in enumerate(request.regions)}, value=Region.name))
        excluded = incompatible + [p for p, w in weights.items() if w <= 0]
        if excluded:
            q = q.where(Instance.profile_id.not_in(excluded))
        if weights:
            order.append(case(weights, value=Instance.profile_id, else_=1.0).desc())
        order += [Version.number.desc(), Instance.players.desc(), Instance.id]
        q = q.order_by(*order).limit(PREFETCH)
    rows = list(s.execute(q, params))
    friend_id = request.friend_instance_id
    if friend_id is not None and all(r.id != friend_id for r in rows):
        rows += s.execute(_SCOPED[by_profile].where(Instance.id == friend_id), params).all()
    return rows


def allocate(s: Session, req: AllocationRequest, now: float) -> dict[str, Any]:
    """Place a party on an instance and open its session.

    Each round reads only the best few candidates (``_best_rows``); when they yield none,
    every candidate is read and ranked, so a refusal names the exact reason.

    Raises:
        InvalidInput: a malformed request. NotFound: unknown fleet, profile, region or
            friend session. Conflict: no instance can take the party; ``reason`` says why
            (no_instance, no_capacity, client_update_required, client_too_new).
    """
    _check(req)
    application_id = profile_id = None
    weights: dict[int, float] = {}
    if req.fleet is not None:
        found = s.execute(_FLEET_BY_NAME, {"name": req.fleet}).first()
        if found is None:
            get_fleet(s, req.fleet)  # raises NotFound, naming the known fleets
            raise NotFound(f"unknown fleet {req.fleet!r}", fleet=req.fleet)
        scope_id, application_id = found.id, found.application_id
        if found.weighted:
            weights = {p: w for p, w in s.execute(_WEIGHTS, {"fleet_id": found.id})}  # noqa: C416
    else:  # _check: exactly one of fleet and profile
        scope_id = profile_id = get_profile(s, req.profile or "").id
    for r in req.regions:
        get_region(s, r)
    client = (
        allocation.parse_client_version(req.client_version)
        if req.client_version is not None
        else None
    )
    friend_id = None
    if req.join_session is not None:
        friend_id = get_session(s, req.join_session).instance_id
    request = allocation.Request(
        regions=req.regions,
        client_version=client,
        size=len(req.players),
        friend_instance_id=friend_id,
    )
    scope = f"fleet {req.fleet}" if req.fleet is not None else f"profile {req.profile}"
    by_profile = profile_id is not None
    params = {"scope_id": scope_id, "alive_after": now - LOST_AFTER_S, "size": request.size}
    incompatible = (
        _incompatible_profiles(s, application_id, profile_id, client) if client is not None else []
    )
    for _ in range(ROUNDS):
        rows = _best_rows(s, by_profile, params, request, incompatible, weights)
        ranked = allocation.rank([_candidate(r, now, weights) for r in rows], request)
        if isinstance(ranked, allocation.Refusal):
            rows = list(s.execute(_SCOPED[by_profile].order_by(Instance.id), params))
            ranked = allocation.rank([_candidate(r, now, weights) for r in rows], request)
            if isinstance(ranked, allocation.Refusal):
                raise Conflict(f"{scope}: {ranked.message}", reason=ranked.reason)
        by_id = {r.id: r for r in rows}
        for cand in ranked.candidates:
            took = s.execute(_TAKE, {"instance_id": cand.instance_id, "n": request.size})
            if _rowcount(took):
                return _open(s, req, by_id[cand.instance_id], ranked, now)
        # Lost every race: the next round reads the counts again (plain rows, never stale).
    raise Conflict(f"{scope}: every instance filled up while allocating", reason="no_capacity")


def _open(
    s: Session, req: AllocationRequest, row: Row[Any], ranked: allocation.Ranked, now: float
) -> dict[str, Any]:
    session_id = "s_" + secrets.token_urlsafe(18)
    s.execute(
        _INSERT_SESSION,
        {
            "id": session_id,
            "instance_id": row.id,
            "fleet_id": row.fleet_id,
            "players": json.dumps(list(req.players)),
            "size": len(req.players),
            "party": req.party,
            "client_version": req.client_version,
            "status": "reserved",
            "created_at": now,
            "connected_at": None,
            "ended_at": None,
        },
    )
    return {
        "session_id": session_id,
        "fleet": row.fleet,
        "profile": row.profile,
        "instance_id": row.id,
        "host": row.host,
        "address": row.address,
        "port": row.port,
        "ports": json.loads(row.ports or "{}"),
        "region": row.region,
        "version": row.version,
        "players": list(req.players),
        "joined_friend": ranked.friend,
        "note": ranked.friend_note,
    }


def session_dict(sess: GameSession) -> dict[str, Any]:
    return {
        "session_id": sess.id,
        "instance_id": sess.instance_id,
        "players": json.loads(sess.players),
        "size": sess.size,
        "party": sess.party,
        "client_version": sess.client_version,
        "status": sess.status,
        "created_at": sess.created_at,
        "connected_at": sess.connected_at,
        "ended_at": sess.ended_at,
    }
