"""Sessions past their retention are deleted (``fleet/sessions.prune``, run by the job
runner through ``fleet/tasks.prune_ended_sessions``); open and recent ones never are."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from changeover.control.db import Database, now
from changeover.control.fleet import sessions, tasks
from changeover.control.fleet.models import GameSession, Instance
from changeover.errors import InvalidInput
from changeover.settings import load
from fleet_world import ready_instance, world

DAY = 86400.0


def _session(
    instance: Instance, name: str, status: str, ended_days_ago: float | None
) -> GameSession:
    t = now()
    return GameSession(
        id=name,
        instance_id=instance.id,
        fleet_id=instance.fleet_id,
        players='["p"]',
        size=1,
        status=status,
        created_at=t - 30 * DAY,
        ended_at=None if ended_days_ago is None else t - ended_days_ago * DAY,
    )


def _fill(db: Database, rows: list[tuple[str, str, float | None]]) -> Instance:
    w = world(db)
    with db.write() as s:
        instance = ready_instance(w, players=2)
        s.add(instance)
        s.flush()
        s.add_all(_session(instance, *row) for row in rows)
    return instance


def _left(db: Database) -> list[str]:
    with db.read() as s:
        return sorted(s.scalars(select(GameSession.id)))


def test_only_sessions_ended_before_the_cutoff_go_the_oldest_first(db: Database) -> None:
    _fill(
        db,
        [
            ("old-ended", "ended", 9),
            ("older-expired", "expired", 10),
            ("oldest-ended", "ended", 11),
            ("recent-ended", "ended", 1),
            ("reserved", "reserved", None),
            ("connected", "connected", None),
        ],
    )
    with db.write() as s:
        assert sessions.prune(s, now() - 7 * DAY, limit=2) == 2
    assert "oldest-ended" not in _left(db) and "older-expired" not in _left(db)
    with db.write() as s:
        assert sessions.prune(s, now() - 7 * DAY) == 1
        assert sessions.prune(s, now() - 7 * DAY) == 0
    assert _left(db) == ["connected", "recent-ended", "reserved"]
    with db.read() as s:
        assert s.scalar(select(Instance.players)) == 2  # deleting a row gives nothing back


def test_a_pass_goes_on_batch_after_batch_up_to_its_limit(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(db, [(f"s{n}", "ended", 8 + n / 10) for n in range(7)] + [("open", "reserved", None)])
    monkeypatch.setattr(sessions, "PRUNE_BATCH", 2)
    monkeypatch.setattr(tasks, "PRUNE_MAX_BATCHES", 2)
    # Two batches of two: the rest waits for the next pass, the oldest went first.
    assert tasks.prune_ended_sessions(db, 7 * DAY) == 4
    assert _left(db) == ["open", "s0", "s1", "s2"]
    assert tasks.prune_ended_sessions(db, 7 * DAY) == 3
    assert tasks.prune_ended_sessions(db, 7 * DAY) == 0
    assert _left(db) == ["open"]


def test_the_retention_comes_from_the_environment() -> None:
    assert load({}).session_retention_s == 7 * DAY
    assert load({"CHANGEOVER_SESSION_RETENTION_S": "3600"}).session_retention_s == 3600
    for bad in ("a week", "0", "-5"):
        with pytest.raises(InvalidInput, match="CHANGEOVER_SESSION_RETENTION_S"):
            load({"CHANGEOVER_SESSION_RETENTION_S": bad})
