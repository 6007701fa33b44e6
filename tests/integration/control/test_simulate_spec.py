"""The simulator refuses what ``services.create`` refuses, with the same error (issue 24,
"bad input"): each bad body goes to the real create on a real database (SQLite and
PostgreSQL) and to ``simulate.spec_from_body`` with the names create resolved."""

from __future__ import annotations

import json
from typing import Any

import pytest

from changeover.control.builds.models import Image, Version
from changeover.control.db import Database, now
from changeover.control.fleet.models import Application, Environment, Fleet, Profile
from changeover.control.fleet.services import run_spec
from changeover.control.patchjobs import services
from changeover.control.patchjobs.records import PatchJob
from changeover.control.patchjobs.simulate import spec_from_body
from changeover.control.patchjobs.storage import spec_of
from changeover.errors import InvalidInput

BASE: dict[str, Any] = {
    "name": "j",
    "environment": "prod",
    "application": "game",
    "method": "rolling",
    "builds": [{"old": "v1", "new": "v2"}],
    "fleets": ["f"],
}
BAD: list[dict[str, Any]] = [
    {"method": "teleport"},
    {"rolling": {"max_surge": "150%"}},
    {"rolling": {"max_unavailable": 0, "max_surge": 0}},
    {"drain": {"deadline_s": -1}},
    {"drain": {"deadline_s": 600, "notice_before_s": [3600]}},
    {"stop": {"signal": "SIGBOGUS"}},
    {"failure_threshold": 1.5},
    {"canary": {"share": 0}},
    {"max_run_time": -3},
    {"scheduled_start": 10.0},
    {"name": " "},
    {"colour": "blue"},
    {"method": "custom", "steps": [{"kind": "stop_old"}]},
]


def _setup(db: Database) -> dict[str, int]:
    t = now()
    with db.write() as s:
        env = Environment(name="prod", created_at=t)
        app = Application(name="game", type="game", created_at=t)
        image = Image(name="img", description="", created_at=t)
        s.add_all([env, app, image])
        s.flush()
        profiles = []
        for n in (1, 2):
            v = Version(
                image_id=image.id,
                number=n,
                manifest_id=f"{n}" * 64,
                file_count=1,
                total_bytes=1,
                status=5,
                created_at=t,
                updated_at=t,
                created_by="t",
            )
            s.add(v)
            s.flush()
            p = Profile(
                name=f"v{n}",
                application_id=app.id,
                version_id=v.id,
                capacity=4,
                created_at=t,
                created_by="t",
                spec=json.dumps({"command": ["game"], "capacity": 4}),
            )
            s.add(p)
            s.flush()
            profiles.append(p.id)
        fleet = Fleet(
            name="f",
            application_id=app.id,
            environment_id=env.id,
            active_profile_id=profiles[0],
            instances_per_host=1,
            created_at=t,
            updated_at=t,
        )
        s.add(fleet)
        s.flush()
        return {"v1": profiles[0], "v2": profiles[1], "fleet": fleet.id}


@pytest.mark.parametrize("change", BAD, ids=[next(iter(c)) for c in BAD])
def test_a_body_create_refuses_the_simulator_refuses_alike(
    db: Database, change: dict[str, Any]
) -> None:
    ids = _setup(db)
    body = {**BASE, **change}
    t = now()
    with pytest.raises(InvalidInput) as created, db.write() as s:
        services.create(s, body, "test", t)
    with pytest.raises(InvalidInput) as simulated:
        spec_from_body(body, [(ids["v1"], ids["v2"])], [ids["fleet"]], now=t)
    assert simulated.value.message == created.value.message
    assert simulated.value.facts == created.value.facts


def test_a_body_create_accepts_gives_the_spec_the_job_runs(db: Database) -> None:
    ids = _setup(db)
    body = {**BASE, "method": "bleed-off", "drain": {"deadline_s": 7200}}
    t = now()
    with db.write() as s:
        job_id = services.create(s, body, "test", t).id
    with db.read() as s:
        stored = spec_of(s.get_one(PatchJob, job_id))
        runs = {
            pid: (f"v{n}", run_spec(s.get_one(Profile, pid)))
            for n, pid in ((1, ids["v1"]), (2, ids["v2"]))
        }
    simulated = spec_from_body(
        body, [(ids["v1"], ids["v2"])], [ids["fleet"]], now=t, job_id=job_id, runs=runs
    )
    assert simulated == stored
