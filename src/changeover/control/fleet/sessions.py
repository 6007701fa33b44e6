"""Server Allocate, applied: sessions, and the capacity they hold on instances.

``allocate`` loads the candidates, asks ``allocation.rank`` for the best, and takes a
place with one compare-and-set update::

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

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Result, select, update
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


def _candidates(
    s: Session, fleet_id: int | None, profile_id: int | None, now: float
) -> list[tuple[allocation.Candidate, Instance, Host, str, Profile, Version]]:
    q = (
        select(Instance, Host, Region.name, Profile, Version, VersionCompat)
        .join(Host, Instance.host_id == Host.id)
        .join(Region, Host.region_id == Region.id)
        .join(Profile, Instance.profile_id == Profile.id)
        .join(Version, Profile.version_id == Version.id)
        .outerjoin(VersionCompat, VersionCompat.version_id == Version.id)
        .where(Instance.desired.in_(("running", "draining")), Instance.state == "ready")
        .order_by(Instance.id)
    )
    if fleet_id is not None:
        q = q.where(Instance.fleet_id == fleet_id)
    if profile_id is not None:
        q = q.where(Instance.profile_id == profile_id)
    out = []
    for inst, host, region, profile, version, compat in s.execute(q).tuples():
        lo = compat.client_min if compat is not None else None
        hi = compat.client_max if compat is not None else None
        cand = allocation.Candidate(
            instance_id=inst.id,
            region=region,
            version=version.number,
            state=inst.state,
            desired=inst.desired,
            players=inst.players,
            capacity=inst.capacity,
            host_alive=now - host.last_seen_at < LOST_AFTER_S,
            client_min=allocation.parse_client_version(lo) if lo else None,
            client_max=allocation.parse_client_version(hi) if hi else None,
        )
        out.append((cand, inst, host, region, profile, version))
    return out


def allocate(s: Session, req: AllocationRequest, now: float) -> dict[str, Any]:
    """Place a party on an instance and open its session.

    Raises:
        InvalidInput: a malformed request. NotFound: unknown fleet, profile, region or
            friend session. Conflict: no instance can take the party; ``reason`` says why
            (no_instance, no_capacity, client_update_required, client_too_new).
    """
    _check(req)
    fleet: Fleet | None = get_fleet(s, req.fleet) if req.fleet is not None else None
    profile_row: Profile | None = get_profile(s, req.profile) if req.profile else None
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
    scope = f"fleet {fleet.name}" if fleet else f"profile {req.profile}"
    for _ in range(ROUNDS):
        rows = _candidates(
            s, fleet.id if fleet else None, profile_row.id if profile_row else None, now
        )
        ranked = allocation.rank([r[0] for r in rows], request)
        if isinstance(ranked, allocation.Refusal):
            raise Conflict(f"{scope}: {ranked.message}", reason=ranked.reason)
        by_id = {r[0].instance_id: r for r in rows}
        for cand in ranked.candidates:
            took = _rowcount(
                s.execute(
                    update(Instance)
                    .where(
                        Instance.id == cand.instance_id,
                        Instance.players + request.size <= Instance.capacity,
                        Instance.desired.in_(("running", "draining")),
                    )
                    .values(players=Instance.players + request.size)
                )
            )
            if took:
                _, inst, host, region, profile, version = by_id[cand.instance_id]
                return _open(s, req, inst, host, region, profile, version, ranked, now)
        s.expire_all()  # lost every race: read the counts again
    raise Conflict(f"{scope}: every instance filled up while allocating", reason="no_capacity")


def _open(
    s: Session,
    req: AllocationRequest,
    inst: Instance,
    host: Host,
    region: str,
    profile: Profile,
    version: Version,
    ranked: allocation.Ranked,
    now: float,
) -> dict[str, Any]:
    sess = GameSession(
        id="s_" + secrets.token_urlsafe(18),
        instance_id=inst.id,
        fleet_id=inst.fleet_id,
        players=json.dumps(list(req.players)),
        size=len(req.players),
        party=req.party,
        client_version=req.client_version,
        status="reserved",
        created_at=now,
    )
    s.add(sess)
    s.flush()
    fleet = s.get_one(Fleet, inst.fleet_id)
    return {
        "session_id": sess.id,
        "fleet": fleet.name,
        "profile": profile.name,
        "instance_id": inst.id,
        "host": host.name,
        "address": host.address,
        "port": inst.port,
        "ports": json.loads(inst.ports or "{}"),
        "region": region,
        "version": version.number,
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
