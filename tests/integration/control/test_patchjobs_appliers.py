"""Appliers and the reconciler's compare-and-sets against a real database (SQLite and
PostgreSQL), without a server: each action applied twice changes nothing more, a stop
that finds players drains instead, and two reconcilers racing over one job apply every
action exactly once."""

from __future__ import annotations

import json
import shlex
import sys
import threading
import time
from collections import Counter
from typing import Any

from sqlalchemy import select

from changeover.control.builds.models import Image, Version
from changeover.control.db import Database, now
from changeover.control.fleet import tasks as fleet_tasks
from changeover.control.fleet.models import (
    Application,
    Environment,
    Fleet,
    FleetHost,
    Host,
    Instance,
    Profile,
    Region,
)
from changeover.control.patchjobs import fleet_view, services
from changeover.control.patchjobs.actions import (
    Finish,
    MarkDraining,
    StartInstance,
    StopInstance,
    SwitchAllocation,
    Undrain,
)
from changeover.control.patchjobs.appliers import apply
from changeover.control.patchjobs.checks import CheckRunner
from changeover.control.patchjobs.reconciler import Reconciler
from changeover.control.patchjobs.records import AllocationWeight, PatchJob, PatchJobAction
from changeover.control.patchjobs.states import JobStatus
from changeover.control.patchjobs.storage import spec_of
from tests_helpers import wait_for


def world(db: Database, instances: int = 2, **job: Any) -> dict[str, int]:
    """One fleet on profile v1 (v2 beside it), ``instances`` ready instances on host h1."""
    t = now()
    with db.write() as s:
        env = Environment(name="prod", created_at=t)
        app = Application(name="game", type="game", created_at=t)
        region = Region(name="eu", created_at=t)
        image = Image(name="img", description="", created_at=t)
        s.add_all([env, app, region, image])
        s.flush()
        versions = [
            Version(
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
            for n in (1, 2)
        ]
        s.add_all(versions)
        s.flush()
        profiles = [
            Profile(
                name=f"v{n}",
                application_id=app.id,
                version_id=v.id,
                capacity=4,
                created_at=t,
                created_by="t",
                spec=json.dumps({"command": ["game"], "capacity": 4}),
            )
            for n, v in zip((1, 2), versions, strict=True)
        ]
        s.add_all(profiles)
        s.flush()
        fleet = Fleet(
            name="f",
            application_id=app.id,
            environment_id=env.id,
            active_profile_id=profiles[0].id,
            instances_per_host=instances,
            created_at=t,
            updated_at=t,
        )
        host = Host(
            name="h1",
            region_id=region.id,
            address="10.0.0.1",
            slots=10,
            agent_uid="u" * 16,
            registered_at=t,
            last_seen_at=t + 3600,
            staged="[]",
        )
        s.add_all([fleet, host])
        s.flush()
        s.add(FleetHost(fleet_id=fleet.id, host_name="h1"))
        for _ in range(instances):
            s.add(
                Instance(
                    fleet_id=fleet.id,
                    profile_id=profiles[0].id,
                    host_id=host.id,
                    capacity=4,
                    players=0,
                    desired="running",
                    state="ready",
                    port=7000,
                    ready_at=t - 60,
                    created_at=t,
                    updated_at=t,
                )
            )
        s.flush()
        job = services.create(
            s,
            {
                "name": "j",
                "environment": "prod",
                "application": "game",
                "method": "forced",
                "builds": [{"old": "v1", "new": "v2"}],
                "fleets": ["f"],
                "rolling": {"min_healthy_time_s": 0, "healthy_deadline_s": 30},
                **job,
            },
            "test",
            t,
        )
        return {
            "job": job.id,
            "fleet": fleet.id,
            "v1": profiles[0].id,
            "v2": profiles[1].id,
            "host": host.id,
        }


def test_appliers_are_idempotent_and_stop_falls_back_to_draining(db: Database) -> None:
    ids = world(db)
    t = now()
    with db.write() as s:
        job = s.get_one(PatchJob, ids["job"])
        spec = spec_of(job)
        first, second = sorted(s.scalars(select(Instance.id)))
        start = StartInstance("job1/main/start/1", "h1", ids["fleet"], ids["v2"], first)
        drain = MarkDraining("job1/main/drain/2", second, t + 60, "bleed")
        switch = SwitchAllocation(
            "job1/main/switch", (ids["fleet"],), ((ids["v1"], 0.0), (ids["v2"], 1.0))
        )
        for action in (start, drain, switch):
            apply(s, job, spec, action, t)
            apply(s, job, spec, action, t)  # a replay changes nothing more
        assert len(list(s.scalars(select(Instance).where(Instance.launch_key == start.key)))) == 1
        assert s.get_one(Instance, second).desired == "draining"
        weights = {w.profile_id: w.weight for w in s.scalars(select(AllocationWeight))}
        assert weights == {ids["v1"]: 0.0, ids["v2"]: 1.0}
        apply(s, job, spec, Undrain("job1/revert/undrain/2", second), t)
        assert s.get_one(Instance, second).desired == "running"
        # A player got in before the stop: it drains until the fallback deadline instead.
        s.get_one(Instance, first).players = 1
        s.flush()
        stop = StopInstance(
            "job1/main/stop/1", first, "SIGINT", True, 7, True, t + 99, False, "replaced"
        )
        out = apply(s, job, spec, stop, t)
        row = s.get_one(Instance, first)
        assert (row.desired, row.drain_deadline, row.stop_signal) == ("draining", t + 99, "SIGINT")
        assert "got in first" in out.result
        row.players = 0
        s.flush()
        apply(
            s,
            job,
            spec,
            StopInstance("job1/x/stop/1", first, "SIGINT", True, 7, True, t + 99, False, "again"),
            t,
        )
        assert s.get_one(Instance, first).desired == "stopped"
        apply(s, job, spec, Finish("job1/end/finish", JobStatus.COMPLETED, "done"), t)
        assert s.get_one(Fleet, ids["fleet"]).active_profile_id == ids["v2"]
        assert list(s.scalars(select(AllocationWeight))) == []


class FakeAgents:
    """Reports every instance as its desired state asks, and every build staged."""

    def __init__(self, db: Database, host_id: int) -> None:
        self.db, self.host_id = db, host_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(0.02):
            with self.db.write() as s:
                host = s.get_one(Host, self.host_id)
                host.staged = json.dumps(["1" * 64, "2" * 64])
                for i in s.scalars(select(Instance)):
                    want = "stopped" if i.desired == "stopped" else "ready"
                    if i.state != want:
                        i.state = want
                        i.ready_at = now() - 60 if want == "ready" else i.ready_at

    def __enter__(self) -> FakeAgents:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def finished(db: Database, job_id: int) -> bool:
    with db.read() as s:
        if not JobStatus(s.get_one(PatchJob, job_id).status).terminal:
            return False
        return (
            s.scalar(select(PatchJobAction.key).where(PatchJobAction.applied_at.is_(None))) is None
        )


def test_two_reconcilers_racing_apply_each_action_once(db: Database) -> None:
    ids = world(db, instances=3)
    racers = [Reconciler(db, CheckRunner(db)) for _ in range(2)]
    for r in racers:
        r.lost_from = 0.0
    errors: list[BaseException] = []

    def race(r: Reconciler) -> None:
        try:
            for _ in range(400):
                if finished(db, ids["job"]):
                    return
                r.tick()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=race, args=(r,)) for r in racers]
    with FakeAgents(db, ids["host"]):
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
    assert not errors, errors
    with db.read() as s:
        job = s.get_one(PatchJob, ids["job"])
        assert JobStatus(job.status) is JobStatus.COMPLETED, job.reason
        actions = list(s.scalars(select(PatchJobAction)))
        assert all(a.applied_at is not None for a in actions)
        events = services.events(s, job, 0, 1000)
    applied = Counter(e["data"]["key"] for e in events if e["kind"] == "action")
    assert set(applied.values()) == {1}
    assert len(applied) == len(actions) - 1  # every action but Finish, which says "finished"
    assert [e["kind"] for e in events].count("finished") == 1


class DeadChecks(CheckRunner):
    """A process that died with its check: the check was started and never answered."""

    def start(self, request: Any) -> None:
        self.started = request


def test_a_restarted_reconciler_runs_a_lost_check_again(db: Database) -> None:
    verify = shlex.join([sys.executable, "-c", "pass"])
    ids = world(db, method="ab", ab={"verify_command": verify, "verify_timeout_s": 60})
    dead = Reconciler(db, DeadChecks(db))
    dead.lost_from = 0.0
    with FakeAgents(db, ids["host"]):
        deadline = time.monotonic() + 60
        while getattr(dead.checks, "started", None) is None and time.monotonic() < deadline:
            dead.tick()
            threading.Event().wait(0.02)  # the agents answer on their own thread
        assert getattr(dead.checks, "started", None) is not None, "the check was never started"
        restarted = Reconciler(db, CheckRunner(db))
        restarted.lost_from = 0.0
        deadline = time.monotonic() + 60
        while not finished(db, ids["job"]) and time.monotonic() < deadline:
            restarted.tick()
            threading.Event().wait(0.02)  # the check runs on its own thread
    with db.read() as s:
        job = s.get_one(PatchJob, ids["job"])
        assert JobStatus(job.status) is JobStatus.COMPLETED, job.reason
        checks = [e for e in services.events(s, job, 0, 1000) if e["kind"] == "check"]
    assert len(checks) == 1 and checks[0]["data"]["passed"] is True


def test_a_finished_jobs_progress_stays_as_it_ended_after_its_instances_are_gone(
    db: Database,
) -> None:
    ids = world(db, instances=3)
    reconciler = Reconciler(db, CheckRunner(db))
    reconciler.lost_from = 0.0

    def tick_until_finished() -> bool:
        reconciler.tick()
        return finished(db, ids["job"])

    with FakeAgents(db, ids["host"]):
        wait_for(tick_until_finished, timeout_s=60, what="the job to finish")
    with db.read() as s:
        job = s.get_one(PatchJob, ids["job"])
        at_end = services.progress_summary(s, job, now())
        recorded = next(e for e in services.events(s, job, 0, 1000) if e["kind"] == "finished")
    assert at_end["by_state"] == {"new": 3} and at_end["total"] == 3
    assert recorded["data"]["progress"] == at_end
    # A later job replaced them all a week ago, and the stopped rows were pruned since.
    with db.write() as s:
        for i in s.scalars(select(Instance)):
            i.desired, i.state, i.stopped_at = "stopped", "stopped", now() - 8 * 86400
    assert fleet_tasks.prune_history(db, 7 * 86400).instances == 6
    with db.read() as s:
        assert list(s.scalars(select(Instance))) == []
        job = s.get_one(PatchJob, ids["job"])
        assert services.progress_summary(s, job, now()) == at_end
        # What reading the instances now would say instead.
        assert fleet_view.live_summary(s, job, now())["by_state"] == {"stopped": 3}
