"""Game sessions, and the capacity they hold on instances.

A session is opened by Server Allocate (``allocate_db``), which takes its places on an
instance. It is ``reserved`` when allocated, ``connected`` once the game reports one of its
players through the SDK, and ``ended`` when they have all left (or the instance stopped);
a reservation nobody takes up ``expires`` after ``RESERVE_TTL_S``. Ending gives the places
back with the mirror update (``players = players - :n``). Games without the SDK report no
players, so their sessions end only by ``DELETE /sessions/{id}`` or when the instance stops.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, case, delete, select, update
from sqlalchemy.orm import Session

from changeover.control.db import rowcount
from changeover.control.fleet.models import GameSession, Instance
from changeover.errors import NotFound

RESERVE_TTL_S = 60.0
OPEN = ("reserved", "connected")


def _release(s: Session, instance_id: int, n: int) -> None:
    """Give ``n`` places back (never below none: a count that drifted stops at 0)."""
    s.execute(
        update(Instance)
        .where(Instance.id == instance_id, Instance.players > 0)
        .values(players=case((Instance.players >= n, Instance.players - n), else_=0))
    )


def _end(session: GameSession, status: str, now: float) -> int:
    """Mark ``session`` over; the places it gives back (0 if it was over already)."""
    if session.status not in OPEN:
        return 0
    session.status = status
    session.ended_at = now
    return session.size


def _close(s: Session, session: GameSession, status: str, now: float) -> None:
    if n := _end(session, status, now):
        _release(s, session.instance_id, n)


def open_sessions(s: Session, instance_ids: Sequence[int]) -> dict[int, list[GameSession]]:
    """The open sessions of these instances, by instance: one query for a whole host."""
    found: dict[int, list[GameSession]] = {}
    for sess in s.scalars(
        select(GameSession)
        .where(GameSession.instance_id.in_(instance_ids), GameSession.status.in_(OPEN))
        .order_by(GameSession.id)
    ):
        found.setdefault(sess.instance_id, []).append(sess)
    return found


def track(
    row: Instance,
    obs: Mapping[str, Any],
    now: float,
    open_sessions: Sequence[GameSession],
) -> int:
    """Follow the sessions of one instance (``open_sessions``) from what its agent observed.

    Returns the places the sessions that closed give back, for ``release`` to return to
    their instances: a sync's instances are given back by one statement, not one each."""
    if not open_sessions:
        return 0
    if obs.get("state") in ("stopped", "failed"):
        # Every session at once: a stopped instance of a busy fleet may hold hundreds.
        return sum(_end(sess, "ended", now) for sess in open_sessions)
    sdk = obs.get("sdk")
    if not isinstance(sdk, dict) or not sdk.get("ready"):
        return 0  # no word from the game: nothing is known about its players
    players = set(map(str, sdk.get("players") or []))
    given = 0
    for sess in open_sessions:
        members = set(json.loads(sess.players))
        if members & players:
            if sess.status == "reserved":
                sess.status = "connected"
                sess.connected_at = now
        elif sess.status == "connected":
            given += _end(sess, "ended", now)
        elif now - sess.created_at > RESERVE_TTL_S:
            given += _end(sess, "expired", now)
    return given


def release(s: Session, given: Mapping[int, int]) -> dict[int, int]:
    """Give places back to instances (``given``: places by instance id, each above 0) and
    return their player counts after it. Two statements whatever their number: an
    executemany of the UPDATE and one read of the counts (a forced stop of a host's
    hundred busy instances used to cost a flush, an UPDATE and a re-read for each)."""
    if not given:
        return {}
    table = Instance.__table__
    s.execute(
        update(table)
        .where(table.c.id == bindparam("instance_id"), table.c.players > 0)
        .values(
            players=case(
                (table.c.players >= bindparam("n"), table.c.players - bindparam("n")),
                else_=0,
            )
        ),
        [{"instance_id": k, "n": n} for k, n in given.items()],
    )
    counts = s.execute(select(table.c.id, table.c.players).where(table.c.id.in_(given)))
    return {row.id: row.players for row in counts}


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


def prune(s: Session, ended_before: float, limit: int) -> int:
    """Delete up to ``limit`` sessions that ended (or expired) before ``ended_before``, the
    oldest first; how many were deleted. Open sessions have no ``ended_at``: never these."""
    oldest = (
        select(GameSession.id)
        .where(GameSession.ended_at < ended_before, GameSession.status.not_in(OPEN))
        .order_by(GameSession.ended_at)
        .limit(limit)
    )
    return rowcount(s.execute(delete(GameSession).where(GameSession.id.in_(oldest))))
