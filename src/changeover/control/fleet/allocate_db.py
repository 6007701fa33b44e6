"""Server Allocate, applied: place a party on an instance and open its session.

``allocate`` reads the best few candidates (the database filters and sorts them by the
same rules as ``allocation.rank``, so Python sees a handful of rows, not every instance of
the fleet; all of them are read only to word a refusal), asks ``allocation.rank`` for the
best, and takes a place with one compare-and-set update::

    UPDATE instances SET players = players + :n WHERE id = :id AND players + :n <= capacity

in the same transaction as the session row. The database finds those few by walking an
index in ``rank``'s order (``models.Instance``: ``ix_instances_alloc_fleet`` and
``_profile``, partial, over ready instances taking players with a free place; keyed by the
copy of the version number each instance keeps), and stops after ``PREFETCH`` rows: at
10,000 instances it reads 16 index entries instead of sorting the fleet. The allocations of
one transaction (an ``allocator`` batch) share that read (``_Shared``).

Losing the race (another request filled the instance first) moves on to the next
candidate, then re-reads and re-ranks, so no instance ever holds more players than its
capacity, on SQLite (writers queue on ``BEGIN IMMEDIATE``) and on PostgreSQL (the row lock
and the re-checked ``WHERE``) alike.

A batch run together (``deferred_writes``) holds its updates and session rows back and
writes them with its commit, whatever its size: see there and ``takes``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Row,
    Select,
    bindparam,
    case,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from changeover.control.fleet import allocation
from changeover.control.fleet.models import (
    Fleet,
    Host,
    Instance,
    Profile,
    Region,
    VersionCompat,
)
from changeover.control.fleet.services import LOST_AFTER_S, get_fleet, get_profile, get_region
from changeover.control.fleet.sessions import get_session
from changeover.control.fleet.takes import (
    INSERT_SESSION,
    HeldWrites,
    take_now,
    write_and_commit,
    write_takes,
)
from changeover.control.patchjobs.records import AllocationWeight
from changeover.errors import Conflict, InvalidInput, NotFound
from changeover.sdk.state import check_player_id

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
HELD_WAIT_S = 0.25
"""How long an allocation waits for the best instance with room when another transaction
holds every one (``_wait_for_held``) before it is refused."""
PREFETCH = 16
"""Candidates the fast path reads per round: the best few, enough to move on after races."""


def _columns(by_profile: bool) -> Select[*tuple[Any, ...]]:
    """The instances of a fleet (or profile) ``:scope_id``, as plain columns, unfiltered."""
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
            # Kept equal to the profile's versions.number (models.Instance.version_number).
            Instance.version_number.label("version"),
            Fleet.name.label("fleet"),
            VersionCompat.client_min,
            VersionCompat.client_max,
        )
        .join(Host, Instance.host_id == Host.id)
        .join(Region, Host.region_id == Region.id)
        .join(Profile, Instance.profile_id == Profile.id)
        .join(Fleet, Instance.fleet_id == Fleet.id)
        .outerjoin(VersionCompat, VersionCompat.version_id == Profile.version_id)
        .where((Instance.profile_id if by_profile else Instance.fleet_id) == bindparam("scope_id"))
    )


def _scoped_select(by_profile: bool) -> Select[*tuple[Any, ...]]:
    """The ready instances of a fleet (or profile) ``:scope_id``, as plain columns."""
    return _columns(by_profile).where(Instance.desired.in_(_LIVE), Instance.state == "ready")


def _allocatable(by_profile: bool) -> Select[*tuple[Any, ...]]:
    """What ``allocation.rank`` never refuses: running, on a live host, room for the party.

    The first three terms are those of the allocation indexes' ``WHERE``
    (``models.ALLOCATABLE_SQL``), as literals: only then may the database use them.
    """
    return _columns(by_profile).where(
        Instance.state == literal_column("'ready'"),
        Instance.desired == literal_column("'running'"),
        Instance.players < Instance.capacity,
        Host.last_seen_at > bindparam("alive_after"),
        Instance.players + bindparam("size") <= Instance.capacity,
    )


_ORDER = (Instance.version_number.desc(), Instance.players.desc(), Instance.id)
"""``allocation.rank``'s order after regions and weights: the allocation indexes' order."""


def _best_of(q: Select[*tuple[Any, ...]]) -> Select[*tuple[Any, ...]]:
    """``q``'s first ``PREFETCH`` rows, locked for this transaction; on PostgreSQL an
    instance another transaction has locked is passed over rather than waited for.

    Under a patch job the leader's transactions hold instances they change (a host's
    sync, a batch of stops) until they commit, and a busy leader takes its time: a take
    that waited for such a row held every allocation of its batch, for up to seconds,
    measured. An instance being changed is about to be stopped, drained or re-counted;
    the next best serves as well. If every candidate is locked, ``allocate`` reads them
    all again without a lock clause and waits a moment for the best (``_wait_for_held``)
    before it refuses. SQLite locks the whole
    database for a writer and has no such clause (SQLAlchemy leaves it out).
    ``NO KEY UPDATE``: the lock the take's own update takes, which still lets other
    transactions insert sessions that refer to the instance."""
    return q.limit(PREFETCH).with_for_update(of=Instance, key_share=True, skip_locked=True)


# Built once: SQLAlchemy then also reuses their compiled form without recomputing its key.
_SCOPED = {by: _scoped_select(by) for by in (False, True)}
_ALLOCATABLE = {by: _allocatable(by) for by in (False, True)}
_BEST = {by: _best_of(_ALLOCATABLE[by].order_by(*_ORDER)) for by in (False, True)}
_BEST_OF_PROFILE = _best_of(
    _ALLOCATABLE[False].where(Instance.profile_id == bindparam("profile_id")).order_by(*_ORDER)
)
"""A fleet's best few of one profile (``_best_weighted``)."""
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
_APPLICATION_PROFILES = select(Profile.id).where(Profile.application_id == bindparam("app"))
_WEIGHTS = select(AllocationWeight.profile_id, AllocationWeight.weight).where(
    AllocationWeight.fleet_id == bindparam("fleet_id")
)


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
        for pid, lo, hi in s.execute(q).all()
        if not allocation.accepts_client(client, _bound(lo), _bound(hi))
    ]


def _best_rows(
    s: Session,
    by_profile: bool,
    params: dict[str, Any],
    request: allocation.Request,
    incompatible: list[int],
    weights: Mapping[int, float],
    profiles: tuple[int, ...] = (),
) -> list[Row[Any]]:
    """The best ``PREFETCH`` instances that ``allocation.rank`` could pick, in its order
    (``profiles``: every profile of the fleet's application, for a fleet with weights).

    The database applies the rules that remove an instance (running, live host, room for
    the party, listed region, compatible version, weight above 0) and sorts by the same key
    as ``rank``, so this is a prefix of what ``rank`` returns over every candidate (less
    any that another transaction holds, ``_best_of``); the friend's instance, if any, is
    added for ``rank`` to judge.
    """
    # Weights are a fleet's (a profile request has none), and the per-profile merge
    # takes ``scope_id`` for a fleet's id: a profile's would match other instances.
    if weights and not by_profile and not request.regions:
        rows = _best_weighted(s, params, incompatible, weights, profiles)
    else:
        rows = _best_ordered(s, by_profile, params, request, incompatible, weights)
    friend_id = request.friend_instance_id
    if friend_id is not None and all(r.id != friend_id for r in rows):
        rows += s.execute(_SCOPED[by_profile].where(Instance.id == friend_id), params).all()
    return rows


def _best_ordered(
    s: Session,
    by_profile: bool,
    params: dict[str, Any],
    request: allocation.Request,
    incompatible: list[int],
    weights: Mapping[int, float],
) -> list[Row[Any]]:
    """``_best_rows`` in one statement, sorted by the database."""
    q = _BEST[by_profile]
    if request.regions or incompatible or weights:
        q = _ALLOCATABLE[by_profile]
        order: list[Any] = []
        if request.regions:
            q = q.where(Region.name.in_(request.regions))
            order.append(case({r: i for i, r in enumerate(request.regions)}, value=Region.name))
        excluded = incompatible + [p for p, w in weights.items() if w <= 0]
        if excluded:
            q = q.where(Instance.profile_id.not_in(excluded))
        if weights:
            order.append(case(weights, value=Instance.profile_id, else_=1.0).desc())
        q = _best_of(q.order_by(*order, *_ORDER))
    return list(s.execute(q, params))


def _best_weighted(
    s: Session,
    params: dict[str, Any],
    incompatible: list[int],
    weights: Mapping[int, float],
    profiles: tuple[int, ...],
) -> list[Row[Any]]:
    """``_best_rows`` for a fleet with allocation weights (a patch job moving players to
    its new build), any region. Sorting by weight first would make the database sort
    every candidate of the fleet on each read; instead each profile's best few are read
    along ``ix_instances_alloc_profile`` (a few index entries each) and merged here:
    heavier profiles first, then ``_ORDER`` (the same order as ``_best_ordered``'s)."""
    by_weight: dict[float, list[Row[Any]]] = {}
    skip = set(incompatible)
    for profile_id in profiles:
        weight = float(weights.get(profile_id, 1.0))
        if weight <= 0 or profile_id in skip:
            continue
        rows = s.execute(_BEST_OF_PROFILE, {**params, "profile_id": profile_id}).all()
        by_weight.setdefault(weight, []).extend(rows)
    best: list[Row[Any]] = []
    for weight in sorted(by_weight, reverse=True):
        best += sorted(by_weight[weight], key=lambda r: (-r.version, -r.players, r.id))
        if len(best) >= PREFETCH:
            break
    return best[:PREFETCH]


@dataclass
class _Scope:
    """A fleet (or profile) as a request names it, read once per transaction."""

    label: str
    by_profile: bool
    id: int
    application_id: int | None
    weights: dict[int, float]
    profiles: tuple[int, ...] = ()
    """With weights: the profiles of the fleet's application (``_best_weighted``)."""


@dataclass
class _Window:
    """The best candidates of one kind of request, as read (``_best_rows``), with the
    places this transaction took on them since: still a prefix of ``rank``'s order, since
    taking places only moves an instance up that order (fuller) or out of it (full)."""

    rows: dict[int, Row[Any]]
    candidates: list[allocation.Candidate]

    def took(self, instance_id: int, n: int) -> None:
        self.candidates = [
            dataclasses.replace(c, players=c.players + n) if c.instance_id == instance_id else c
            for c in self.candidates
        ]

    def drop(self, instance_id: int) -> None:
        self.candidates = [c for c in self.candidates if c.instance_id != instance_id]


@dataclass
class _Shared:
    """What the allocations of one transaction (an ``allocator`` batch) share, in
    ``Session.info``: the fleets, regions and client-version rules they looked up, and a
    window of best candidates per kind of request, so that only the first allocation of
    each kind reads them. A transaction of its own per allocation shares nothing."""

    scopes: dict[tuple[str | None, str | None], _Scope] = field(default_factory=dict)
    regions: set[str] = field(default_factory=set)
    incompatible: dict[tuple[int, bool, allocation.ClientVersion], list[int]] = field(
        default_factory=dict
    )
    windows: dict[tuple[Any, ...], _Window] = field(default_factory=dict)
    deferred: HeldWrites | None = None
    """Writes held back (``deferred_writes``); None: each is made at once."""
    refused: dict[tuple[Any, ...], Conflict] = field(default_factory=dict)
    """Per kind of request, the refusal a read of every candidate gave: the same kind is
    refused again at once, as nothing a transaction does makes room (it only takes
    places). A fleet with no room at all (a forced patch job's gap between its old and
    new servers) otherwise cost a read of the whole fleet per refused request."""
    held: set[int] = field(default_factory=set)
    """Instances another transaction held past ``HELD_WAIT_S`` (``_wait_for_held``): the
    batch's later requests are refused at once rather than waiting for them again."""

    def took(self, instance_id: int, n: int, current: _Window) -> None:
        """Count a take in every window, so that none offers places this transaction
        took through another kind of request (held-back takes are not checked by the
        database until they are written)."""
        for window in (current, *self.windows.values()):
            window.took(instance_id, n)


def _take(s: Session, shared: _Shared, instance_id: int, n: int, friend: bool) -> bool:
    """Take ``n`` places on the instance; False if it has no longer room for them."""
    if shared.deferred is not None:
        shared.deferred.add_take(instance_id, n, friend)
        return True
    return take_now(s, instance_id, n, friend)


def _before_reading_instances(s: Session, shared: _Shared) -> None:
    """Held-back takes are written before instances are read: rows read are then always
    rows counting this transaction's takes, as without holding back."""
    if shared.deferred is not None:
        write_takes(s, shared.deferred)


def _shared(s: Session) -> _Shared:
    shared = s.info.get("allocate")
    if not isinstance(shared, _Shared):
        shared = s.info["allocate"] = _Shared()
    return shared


def _scope(s: Session, shared: _Shared, req: AllocationRequest) -> _Scope:
    key = (req.fleet, req.profile)
    if (found := shared.scopes.get(key)) is not None:
        return found
    if req.fleet is not None:
        row = s.execute(_FLEET_BY_NAME, {"name": req.fleet}).first()
        if row is None:
            get_fleet(s, req.fleet)  # raises NotFound, naming the known fleets
            raise NotFound(f"unknown fleet {req.fleet!r}", fleet=req.fleet)
        weights = dict(s.execute(_WEIGHTS, {"fleet_id": row.id}).all()) if row.weighted else {}
        # A fleet's instances run profiles of its application (checked wherever a fleet
        # gets a profile; its application is fixed).
        profiles = (
            tuple(s.scalars(_APPLICATION_PROFILES, {"app": row.application_id})) if weights else ()
        )
        scope = _Scope(f"fleet {req.fleet}", False, row.id, row.application_id, weights, profiles)
    else:  # _check: exactly one of fleet and profile
        profile_id = get_profile(s, req.profile or "").id
        scope = _Scope(f"profile {req.profile}", True, profile_id, None, {})
    shared.scopes[key] = scope
    return scope


def allocate(s: Session, req: AllocationRequest, now: float) -> dict[str, Any]:
    """Place a party on an instance and open its session.

    Each round reads only the best few candidates (``_best_rows``); when they yield none,
    every candidate is read and ranked, so a refusal names the exact reason. Allocations in
    one transaction (the allocator's batch) read the fleet, its weights and the best few
    candidates once per kind of request and share them (``_Shared``); the compare-and-set
    that takes a place still checks the instance's real count.

    Every refusal below (a ``ChangeoverError``) is raised before anything is written, and
    the allocator's batches rely on it (``allocator``: no savepoint per request).

    Raises:
        InvalidInput: a malformed request. NotFound: unknown fleet, profile, region or
            friend session. Conflict: no instance can take the party; ``reason`` says why
            (no_instance, no_capacity, client_update_required, client_too_new).
    """
    _check(req)
    shared = _shared(s)
    scope = _scope(s, shared, req)
    weights = scope.weights
    for r in req.regions:
        if r not in shared.regions:
            get_region(s, r)
            shared.regions.add(r)
    client = (
        allocation.parse_client_version(req.client_version)
        if req.client_version is not None
        else None
    )
    friend_id = None
    if req.join_session is not None:
        friend_id = _opened_instance(shared, req.join_session)
        if friend_id is None:
            friend_id = get_session(s, req.join_session).instance_id
    request = allocation.Request(
        regions=req.regions,
        client_version=client,
        size=len(req.players),
        friend_instance_id=friend_id,
    )
    params = {"scope_id": scope.id, "alive_after": now - LOST_AFTER_S, "size": request.size}
    incompatible: list[int] = []
    if client is not None:
        rules = (scope.id, scope.by_profile, client)
        if (known := shared.incompatible.get(rules)) is None:
            known = shared.incompatible[rules] = _incompatible_profiles(
                s, scope.application_id, scope.id if scope.by_profile else None, client
            )
        incompatible = known
    # The requests that may share a window: a friend's instance is judged apart.
    kind = (
        (scope.by_profile, scope.id, req.regions, client, request.size)
        if friend_id is None
        else None
    )
    for _ in range(ROUNDS):
        window = shared.windows.pop(kind, None) if kind else None
        ranked = allocation.rank(window.candidates, request) if window else None
        if not isinstance(ranked, allocation.Ranked):  # none shared, or it has none left
            _before_reading_instances(s, shared)
            rows = _best_rows(
                s, scope.by_profile, params, request, incompatible, weights, scope.profiles
            )
            window = _Window({r.id: r for r in rows}, [_candidate(r, now, weights) for r in rows])
            ranked = allocation.rank(window.candidates, request)
        if isinstance(ranked, allocation.Refusal):
            ranked, window = _every_candidate(s, shared, scope, kind, params, request, now)
        assert window is not None
        for cand in ranked.candidates:
            if _take(s, shared, cand.instance_id, request.size, ranked.friend):
                result = _open(s, req, window.rows[cand.instance_id], ranked, now)
                shared.took(cand.instance_id, request.size, window)
                if kind and window.candidates:
                    shared.windows[kind] = window
                return result
            window.drop(cand.instance_id)  # filled meanwhile by someone else
        # Lost every race: the next round reads the counts again (plain rows, never stale).
    raise Conflict(
        f"{scope.label}: every instance filled up while allocating", reason="no_capacity"
    )


def _every_candidate(
    s: Session,
    shared: _Shared,
    scope: _Scope,
    kind: tuple[Any, ...] | None,
    params: dict[str, Any],
    request: allocation.Request,
    now: float,
) -> tuple[allocation.Ranked, _Window]:
    """Every ready candidate, ranked: when the best few gave none, for a refusal's exact
    reason (``Conflict``), or to find one they missed. The window is not shared: its rows
    are of any kind."""
    if kind and (known := shared.refused.get(kind)) is not None:
        raise Conflict(known.message, **known.facts)
    _before_reading_instances(s, shared)
    rows = list(s.execute(_SCOPED[scope.by_profile].order_by(Instance.id), params))
    ranked = allocation.rank([_candidate(r, now, scope.weights) for r in rows], request)
    if isinstance(ranked, allocation.Refusal):
        refusal = Conflict(f"{scope.label}: {ranked.message}", reason=ranked.reason)
        if kind:
            shared.refused[kind] = refusal
        raise refusal
    _wait_for_held(s, shared, scope.label, ranked.candidates[0].instance_id)
    return ranked, _Window({r.id: r for r in rows}, [])


_LOCK_ONE = (
    select(Instance.id)
    .where(Instance.id == bindparam("instance_id"))
    .with_for_update(of=Instance, key_share=True)
)


def _wait_for_held(s: Session, shared: _Shared, label: str, instance_id: int) -> None:
    """On PostgreSQL, lock the instance about to be taken, waiting at most
    ``HELD_WAIT_S``; ``Conflict`` (no_capacity) if another transaction holds it longer.

    Called when the best-candidates read passed over every instance with room
    (``_best_of``) and the read of them all found some: they are held, typically by a
    patch job's batch of stops on a busy leader, after which they have no room at all.
    Waiting for that batch held the allocator's whole batch for seconds (a forced job's
    window with no ready instance, BENCHMARKS.md); a host's sync holds its rows for
    milliseconds, well within the wait. Nothing is written before it: a refusal."""
    if s.get_bind().dialect.name != "postgresql":
        return  # SQLite: one writer at a time, and this transaction is it
    refusal = Conflict(
        f"{label}: every instance with room is being changed (a patch job stopping or"
        " draining them?); try again shortly",
        reason="no_capacity",
    )
    if instance_id in shared.held:
        raise refusal
    try:
        with s.begin_nested():  # a timed-out lock fails this savepoint, not the batch
            wait_ms = max(1, round(HELD_WAIT_S * 1000))
            s.execute(text(f"SET LOCAL lock_timeout = {wait_ms}"))
            s.execute(_LOCK_ONE, {"instance_id": instance_id})
            s.execute(text("SET LOCAL lock_timeout TO DEFAULT"))  # the rest: as before
    except OperationalError as e:
        if getattr(e.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        shared.held.add(instance_id)
        raise refusal from e


@contextlib.contextmanager
def deferred_writes(s: Session) -> Iterator[None]:
    """Inside the block, allocations in ``s`` hold their writes back and make them together:
    the compare-and-set updates (one per instance, for the sum of its takes) before the next
    read of instances, and the rest with the session rows as the block ends, when it
    commits ``s``'s transaction (``takes.write_and_commit``: on PostgreSQL the writes and
    the ``COMMIT`` in one round trip). Without it, each allocation costs two round trips of
    its own, and the commit one more.

    Meanwhile every window counts the block's takes (``_Shared.took``), so the choices are
    those that immediate updates would make, unless another transaction changed an
    instance first: then an update matches no row and the block raises ``LostRace``.

    Only for a block whose allocations are all kept or all undone (the allocator's batch
    run together), whose caller runs it again apart after ``LostRace``; a session row is
    not in the table until the block ends."""
    shared = _shared(s)
    deferred = shared.deferred = HeldWrites()
    try:
        yield
    finally:
        shared.deferred = None
    write_and_commit(s, deferred)


def _opened_instance(shared: _Shared, session_id: str) -> int | None:
    """The instance of a session opened in this block but not inserted yet, if any."""
    for row in shared.deferred.sessions if shared.deferred else ():
        if row["id"] == session_id:
            return int(row["instance_id"])
    return None


def _open(
    s: Session, req: AllocationRequest, row: Row[Any], ranked: allocation.Ranked, now: float
) -> dict[str, Any]:
    session_id = "s_" + secrets.token_urlsafe(18)
    values = {
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
    }
    deferred = _shared(s).deferred
    if deferred is None:
        s.execute(INSERT_SESSION, values)
    else:
        deferred.sessions.append(values)
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
