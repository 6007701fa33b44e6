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

from sqlalchemy import case, delete, select, update
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
    s: Session,
    row: Instance,
    obs: Mapping[str, Any],
    now: float,
    open_sessions: Sequence[GameSession],
) -> bool:
    """Follow the sessions of one instance (``open_sessions``) from what its agent observed.

    Returns whether a session closed: its places were given back with an UPDATE of
    ``row``'s player count that the ORM's copy of ``row`` does not know about."""
    if not open_sessions:
        return False
    if obs.get("state") in ("stopped", "failed"):
        # Every session at once, and their places given back by one UPDATE: a stopped
        # instance of a busy fleet may hold hundreds.
        given = sum(_end(sess, "ended", now) for sess in open_sessions)
        if given:
            _release(s, row.id, given)
        return True
    sdk = obs.get("sdk")
    if not isinstance(sdk, dict) or not sdk.get("ready"):
        return False  # no word from the game: nothing is known about its players
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
    if given:
        _release(s, row.id, given)
    return given > 0


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
