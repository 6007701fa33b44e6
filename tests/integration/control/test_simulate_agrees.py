"""One code path (issue 24): a real job, driven by the real reconciler against a real
database (SQLite and PostgreSQL), and its simulation from the same start take the same
actions in the same order.

The fleet has no players here, so nothing random is left: the agents report every
instance as its desired state asks (as ``FakeAgents`` does) one step after each
reconciler pass, and the simulation's agents do the same in virtual time. The comparison
is by action key, which names the job, the step, the kind and the old instance."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from changeover.control.db import Database, now
from changeover.control.fleet.models import Host, Instance, Region
from changeover.control.patchjobs.checks import CheckRunner
from changeover.control.patchjobs.player_model import PlayerModel, SessionComponent
from changeover.control.patchjobs.reconciler import Reconciler
from changeover.control.patchjobs.records import PatchJob, PatchJobAction
from changeover.control.patchjobs.simulate import FleetSnapshot, SimInstance, simulate
from changeover.control.patchjobs.states import JobStatus
from changeover.control.patchjobs.storage import spec_of
from integration.control.test_patchjobs_appliers import finished, world

NOBODY = PlayerModel((0.0,), (SessionComponent(1.0, 60.0),))


def _agents_step(db: Database, host_id: int) -> None:
    """Every build staged, every instance in the state its desired state asks."""
    with db.write() as s:
        host = s.get_one(Host, host_id)
        host.staged = json.dumps(["1" * 64, "2" * 64])
        for i in s.scalars(select(Instance)):
            want = "stopped" if i.desired == "stopped" else "ready"
            if i.state != want:
                i.state = want
                if want == "ready":
                    i.ready_at = now() - 60


def _snapshot(db: Database, t: float) -> FleetSnapshot:
    with db.read() as s:
        rows = list(
            s.execute(
                select(Instance, Host.name, Region.name)
                .join(Host, Host.id == Instance.host_id)
                .join(Region, Region.id == Host.region_id)
                .order_by(Instance.id)
            )
        )
    return FleetSnapshot(
        at=t,
        instances=tuple(
            SimInstance(i.id, i.fleet_id, host, region, i.profile_id, i.capacity)
            for i, host, region in rows
        ),
    )


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("forced", {}),
        ("rolling", {}),
        ("ab", {}),
        ("bleed-off", {}),
        ("canary", {"canary": {"share": 0.34, "analysis_window_s": 0}}),
    ],
)
def test_a_real_job_and_its_simulation_take_the_same_actions(
    db: Database, method: str, extra: dict[str, Any]
) -> None:
    ids = world(db, instances=3, method=method, **extra)
    with db.read() as s:
        spec = spec_of(s.get_one(PatchJob, ids["job"]))
    simulated = simulate(spec, _snapshot(db, now()), NOBODY)
    assert simulated.outcome is JobStatus.COMPLETED, simulated.reason

    reconciler = Reconciler(db, CheckRunner(db))
    reconciler.lost_from = 0.0
    for _ in range(400):
        reconciler.tick()
        if finished(db, ids["job"]):
            break
        _agents_step(db, ids["host"])
    with db.read() as s:
        job = s.get_one(PatchJob, ids["job"])
        assert JobStatus(job.status) is JobStatus.COMPLETED, job.reason
        real = list(
            s.scalars(
                select(PatchJobAction.key)
                .where(PatchJobAction.job_id == ids["job"])
                .order_by(PatchJobAction.seq)
            )
        )
    assert [a.key for a in simulated.actions] == real
