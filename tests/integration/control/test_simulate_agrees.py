"""One code path (issue 24): a real job, driven by the real reconciler against a real
database (SQLite and PostgreSQL), and its simulation from the same start take the same
actions in the same order.

The agents report every instance as its desired state asks (as ``FakeAgents`` does) one
step after each reconciler pass, and the simulation's agents do the same in virtual time.
Nothing random is left: the first test has no players, the second fixes when each player
leaves (nobody arrives, sessions have one length). The comparison is by action key, which
names the job, the step, the kind and the old instance."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from sqlalchemy import func, select

from changeover.control.db import Database, now
from changeover.control.fleet.models import Host, Instance, Region
from changeover.control.patchjobs import reconciler as reconciler_module
from changeover.control.patchjobs.checks import CheckRunner
from changeover.control.patchjobs.player_model import PlayerModel, SessionComponent
from changeover.control.patchjobs.reconciler import Reconciler
from changeover.control.patchjobs.records import PatchJob, PatchJobAction
from changeover.control.patchjobs.simulate import FleetSnapshot, SimInstance, simulate
from changeover.control.patchjobs.states import JobStatus
from changeover.control.patchjobs.storage import spec_of
from integration.control.test_patchjobs_appliers import finished, world

NOBODY = PlayerModel((0.0,), (SessionComponent(1.0, 60.0),))
HOUR = 3600.0
LONG = 24 * HOUR
ALONE = PlayerModel((0.0,), (SessionComponent(1.0, LONG),))
"""Nobody arrives; every session lasts exactly ``LONG``: where players leave is fixed."""


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


def _completed_keys(db: Database, job_id: int) -> list[str]:
    """The keys of the actions a completed job recorded, in order."""
    with db.read() as s:
        job = s.get_one(PatchJob, job_id)
        assert JobStatus(job.status) is JobStatus.COMPLETED, job.reason
        return list(
            s.scalars(
                select(PatchJobAction.key)
                .where(PatchJobAction.job_id == job_id)
                .order_by(PatchJobAction.seq)
            )
        )


def _snapshot(db: Database, t: float, ends: dict[int, float] | None = None) -> FleetSnapshot:
    """The fleet at ``t``; ``ends``: instance id -> when its one player leaves (a session
    ``LONG`` long, begun so that it ends then: ``ALONE`` draws exactly that)."""
    ends = ends or {}
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
            SimInstance(
                i.id,
                i.fleet_id,
                host,
                region,
                i.profile_id,
                i.capacity,
                (t - (LONG - (ends[i.id] - t)),) if i.id in ends else (),
            )
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
    real = _completed_keys(db, ids["job"])
    assert [a.key for a in simulated.actions] == real


def _players(db: Database, ends: dict[int, float], t: float) -> None:
    """Each instance's one player, if its session has not ended and its server still runs
    (a stopped server's players are gone: kicked)."""
    with db.write() as s:
        for i in s.scalars(select(Instance)):
            playing = int(i.id in ends and ends[i.id] > t and i.state != "stopped")
            if i.state == "stopped":
                ends.pop(i.id, None)
            if i.players != playing:
                i.players = playing


@pytest.mark.parametrize("method", ["bleed-off", "ab"])
def test_with_players_a_real_job_and_its_simulation_take_the_same_actions(
    db: Database, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four old servers: one empty (stopped at once), one whose player stays past the
    drain deadline (notices, then kicked at the deadline), one whose player leaves before
    the first notice and one between the two notices (each stopped once empty). The real
    reconciler runs on a clock the test moves as the simulator moves its own: 0.5 s after a
    pass that acted, else on to the job's wake-up or the next player who leaves."""
    extra = {"drain": {"deadline_s": 2 * HOUR, "notice_before_s": [HOUR, 900]}}
    ids = world(db, instances=4, method=method, **extra)
    t0 = now()
    with db.read() as s:
        spec = spec_of(s.get_one(PatchJob, ids["job"]))
        old = sorted(s.scalars(select(Instance.id)))
    ends = {old[1]: t0 + 10 * HOUR, old[2]: t0 + 0.5 * HOUR, old[3]: t0 + 1.5 * HOUR}
    simulated = simulate(spec, _snapshot(db, t0, ends), ALONE)
    assert simulated.outcome is JobStatus.COMPLETED, simulated.reason
    assert simulated.kicked_at_deadline == 1

    clock = [t0]
    monkeypatch.setattr(reconciler_module, "now", lambda: clock[0])
    reconciler = Reconciler(db, CheckRunner(db))
    reconciler.lost_from = math.inf  # the virtual clock runs hours ahead of the agents' syncs
    acted = 0
    for _ in range(400):
        _players(db, ends, clock[0])
        reconciler.tick()
        if finished(db, ids["job"]):
            break
        _agents_step(db, ids["host"])
        with db.read() as s:
            recorded = s.scalar(select(func.count()).select_from(PatchJobAction)) or 0
            wake = s.get_one(PatchJob, ids["job"]).wake_at
        if recorded > acted:
            acted = recorded
            clock[0] += 0.5
            continue
        due = [x for x in (wake, *ends.values()) if x is not None and x > clock[0]]
        clock[0] = max(clock[0] + 0.5, min(due, default=clock[0] + 0.5))
    real = _completed_keys(db, ids["job"])
    assert [a.key for a in simulated.actions] == real
    # Not vacuous: players decided the order (notices, stops once empty, one at the deadline).
    assert any("notice3600" in k for k in real) and any("notice900" in k for k in real)
    stops = [k for k in real if "/stop/" in k]
    assert stops == [f"job{ids['job']}/main/stop/{old[i]}" for i in (0, 2, 3, 1)]
