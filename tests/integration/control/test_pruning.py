"""Sessions and instances past their retention are deleted (``fleet/sessions.prune`` and
``fleet/services.prune_instances``, run by the job runner through
``fleet/tasks.prune_history``); open sessions, live instances and recent ones never are."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from changeover.control.db import Database, now
from changeover.control.fleet import services, sessions, tasks
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
        assert sessions.prune(s, now() - 7 * DAY, limit=2) == 1
        assert sessions.prune(s, now() - 7 * DAY, limit=2) == 0
    assert _left(db) == ["connected", "recent-ended", "reserved"]
    with db.read() as s:
        assert s.scalar(select(Instance.players)) == 2  # deleting a row gives nothing back


def test_a_pass_goes_on_batch_after_batch_up_to_its_limit(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(db, [(f"s{n}", "ended", 8 + n / 10) for n in range(7)] + [("open", "reserved", None)])
    monkeypatch.setattr(tasks, "PRUNE_BATCH", 2)
    monkeypatch.setattr(tasks, "PRUNE_MAX_BATCHES", 2)
    # Two batches of two: the rest waits for the next pass, the oldest went first.
    assert tasks.prune_history(db, 7 * DAY).sessions == 4
    assert _left(db) == ["open", "s0", "s1", "s2"]
    assert tasks.prune_history(db, 7 * DAY).sessions == 3
    assert tasks.prune_history(db, 7 * DAY).sessions == 0
    assert _left(db) == ["open"]


def test_the_retention_comes_from_the_environment() -> None:
    assert load({}).retention_s == 7 * DAY
    assert load({"CHANGEOVER_RETENTION_S": "3600"}).retention_s == 3600
    for bad in ("a week", "0", "-5"):
        with pytest.raises(InvalidInput, match="CHANGEOVER_RETENTION_S"):
            load({"CHANGEOVER_RETENTION_S": bad})


def _instances(db: Database) -> dict[str, Instance]:
    """Instances of every kind of past, by name; ``gone-with-session`` has an open session
    and ``gone-ended-session`` one that ended 8 days ago."""
    w = world(db)
    t = now()

    def stopped(days_ago: float | None, **kw: object) -> Instance:
        at = None if days_ago is None else t - days_ago * DAY
        return ready_instance(
            w, **({"desired": "stopped", "state": "stopped", "stopped_at": at} | kw)
        )

    rows = {
        "gone": stopped(8),
        "gone-older": stopped(9),
        "gone-recently": stopped(1),
        "gone-unobserved-stop": stopped(None, updated_at=t - 8.5 * DAY),  # stopped_at unknown
        "gone-with-session": stopped(10),
        "gone-ended-session": stopped(10),
        "running": ready_instance(w, created_at=t - 30 * DAY, updated_at=t - 30 * DAY),
        "stopping": stopped(None, state="stopping", updated_at=t - 30 * DAY),
        "crashed-meant-to-run": ready_instance(w, state="stopped", stopped_at=t - 30 * DAY),
    }
    with db.write() as s:
        s.add_all(rows.values())
        s.flush()
        s.add(_session(rows["gone-with-session"], "open", "connected", None))
        s.add(_session(rows["gone-ended-session"], "old", "ended", 8))
        s.flush()
        s.expunge_all()  # the ids stay readable after the commit
    return rows


def _instances_left(db: Database, rows: dict[str, Instance]) -> list[str]:
    by_id = {row.id: name for name, row in rows.items()}
    with db.read() as s:
        return sorted(by_id[i] for i in s.scalars(select(Instance.id)))


def test_only_instances_stopped_for_good_before_the_cutoff_and_without_sessions_go(
    db: Database,
) -> None:
    rows = _instances(db)
    with db.write() as s:
        assert services.prune_instances(s, now() - 7 * DAY, limit=2) == 2
    # The oldest first: the one with a session is older, but its session keeps it.
    assert {"gone", "gone-older", "gone-unobserved-stop"} - set(_instances_left(db, rows)) == {
        "gone-older",
        "gone-unobserved-stop",
    }
    with db.write() as s:
        assert services.prune_instances(s, now() - 7 * DAY, limit=100) == 1
    assert _instances_left(db, rows) == [
        "crashed-meant-to-run",
        "gone-ended-session",
        "gone-recently",
        "gone-with-session",
        "running",
        "stopping",
    ]


def test_a_pass_deletes_the_sessions_first_then_the_instances_they_held(db: Database) -> None:
    rows = _instances(db)
    pruned = tasks.prune_history(db, 7 * DAY)
    # The ended session went, and its instance with it; the open one holds its instance.
    assert pruned == tasks.Pruned(sessions=1, instances=4)
    assert "gone-ended-session" not in _instances_left(db, rows)
    assert "gone-with-session" in _instances_left(db, rows)
    assert _left(db) == ["open"]
    assert tasks.prune_history(db, 7 * DAY) == tasks.Pruned(sessions=0, instances=0)
