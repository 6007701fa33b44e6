"""The simulator's edge on a real database (SQLite and PostgreSQL): the snapshot holds the
fleet's live instances with a seat per player of their open sessions, and without an
explicit model the players are fitted from the sessions that ended in the last 7 days."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from changeover.control.db import Database, now
from changeover.control.fleet.models import GameSession, Instance
from changeover.control.patchjobs.simulate_db import history, simulate_job, snapshot
from changeover.errors import InvalidInput
from integration.control.test_patchjobs_appliers import world

BODY = {
    "name": "sim",
    "environment": "prod",
    "application": "game",
    "method": "bleed-off",
    "builds": [{"old": "v1", "new": "v2"}],
    "fleets": ["f"],
    "drain": {"deadline_s": 3600},
}


def _session(
    n: int, instance: Instance, status: str, start: float, end: float | None
) -> GameSession:
    return GameSession(
        id=f"s{n}",
        instance_id=instance.id,
        fleet_id=instance.fleet_id,
        players=json.dumps([f"p{n}", f"q{n}"]),
        size=2,
        status=status,
        created_at=start - 1,
        connected_at=start,
        ended_at=end,
    )


def test_the_snapshot_and_the_history_come_from_the_fleet(db: Database) -> None:
    world(db, instances=3, method="bleed-off")
    t = now()
    with db.write() as s:
        first, second, _third = s.scalars(select(Instance).order_by(Instance.id)).all()
        s.add(_session(0, first, "connected", t - 100, None))
        s.add(_session(1, second, "reserved", t - 5, None))
        # 40 ended sessions of 10 minutes in the last day, and 5 older than 7 days.
        s.add_all(
            _session(10 + k, first, "ended", t - 3600 - 600 * k, t - 3000 - 600 * k)
            for k in range(40)
        )
        s.add_all(_session(100 + k, first, "ended", t - 9 * 86400, t - 8 * 86400) for k in range(5))
    with db.read() as s:
        fleet = snapshot(s, [first.fleet_id], [], t)
        ended = history(s, [first.fleet_id], t)
    seats = {i.instance_id: i.session_starts for i in fleet.instances}
    assert len(fleet.instances) == 3
    assert seats[first.id] == (t - 100, t - 100) and seats[second.id] == (t - 5, t - 5)
    assert fleet.host_slots == {"h1": fleet.host_slots["h1"]} and fleet.host_slots["h1"] >= 1
    assert len(ended) == 40 and {e.ended_at - e.started_at for e in ended} == {600}

    with db.read() as s:
        out = simulate_job(s, {"job": BODY, "runs": 2}, now())
    assert out["model"]["source"] == "history", out["model"]
    assert out["fleet"] == {"instances": 3, "players": 4}
    assert out["estimate"]["first"]["outcome_name"] == "Completed"


def test_without_history_or_model_the_answer_says_what_to_give(db: Database) -> None:
    world(db, instances=1, method="bleed-off")
    with db.read() as s, pytest.raises(InvalidInput, match="0 ended sessions"):
        simulate_job(s, {"job": BODY}, now())


def test_a_scheduled_job_is_simulated_from_its_scheduled_start(db: Database) -> None:
    world(db, instances=2, method="bleed-off")
    t = now()
    players = {"arrivals_per_s": [0.01], "sessions": [{"share": 1, "median_s": 600}]}
    with db.read() as s:
        out = simulate_job(
            s, {"job": {**BODY, "scheduled_start": t + 7200}, "players": players, "runs": 1}, t
        )
        first = out["estimate"]["first"]
        assert first["starts_after_s"] == 7200
        assert first["outcome_name"] == "Completed"
        assert first["arrivals"] > 0, "players arrived during the job, after the start"
        with pytest.raises(InvalidInput, match="5 minutes"):
            simulate_job(s, {"job": {**BODY, "scheduled_start": t + 10}, "players": players}, t)
