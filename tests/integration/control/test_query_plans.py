"""The hot paths' queries use indexes at fleet scale, on both databases.

A fleet world of 100,000 instances (10 fleets over 1,000 hosts, a fifth of them stopped
history), 20,000 ended game sessions and an earlier job's 50,000 actions and events is
written straight into the database. Then every
statement of the hot paths is captured as the database receives it, and explained with its
own parameters:

- an agent's sync of one host (observations of its 100 instances);
- two passes of the patch-job reconciler over a job on one fleet (the first reads the
  job's view in full, the second only what changed), and the appliers of a start and a
  stop;
- Server Allocate.

None of them may scan a table that grows with the fleet (instances, sessions, the jobs'
actions and events): a scan there costs in proportion to every instance, not to the
host, job or request at hand. (PostgreSQL plans from statistics, gathered here as
autovacuum would; SQLite from its own rules, as in production, where nothing runs ANALYZE.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, insert, select

from changeover.control.db import Database, now
from changeover.control.fleet import allocate_db
from changeover.control.fleet import hosts as host_svc
from changeover.control.fleet.models import Fleet, FleetHost, GameSession, Host, Instance
from changeover.control.patchjobs import services
from changeover.control.patchjobs.actions import StartInstance, StopInstance
from changeover.control.patchjobs.appliers import apply
from changeover.control.patchjobs.reconciler import Reconciler
from changeover.control.patchjobs.records import PatchJob, PatchJobAction, PatchJobEvent
from changeover.control.patchjobs.states import JobStatus
from changeover.control.patchjobs.storage import spec_of
from fleet_world import world

pytestmark = pytest.mark.timeout(600)

HOSTS = 1000
FLEETS = 10
PER_HOST_AND_FLEET = 10  # 100,000 instances
GROWING = ("instances", "sessions", "patch_job_actions", "patch_job_events")
_SQLITE_SCAN = re.compile(rf"^SCAN ({'|'.join(GROWING)})\b")
_PG_SCAN = re.compile(rf"Seq Scan on ({'|'.join(GROWING)})\b")


def _fill(db: Database) -> dict[str, Any]:
    w = world(db, hosts=HOSTS, regions=4)
    t = now()
    with db.write() as s:
        base = s.get_one(Fleet, w["fleet"])
        fleets = [base.id]
        for n in range(1, FLEETS):
            f = Fleet(
                name=f"f{n}",
                application_id=base.application_id,
                environment_id=base.environment_id,
                active_profile_id=base.active_profile_id,
                instances_per_host=PER_HOST_AND_FLEET,
                created_at=t,
                updated_at=t,
            )
            s.add(f)
            s.flush()
            fleets.append(f.id)
            names = s.scalars(select(Host.name))
            s.add_all(FleetHost(fleet_id=f.id, host_name=name) for name in names)
    rows = [
        {
            "fleet_id": fleets[k % FLEETS],
            "profile_id": w["profiles"][3],
            "version_number": 3,
            "host_id": host_id,
            "capacity": 4,
            "players": k % 3,
            "desired": "stopped" if (k // FLEETS) % 5 == 0 else "running",
            "state": "stopped" if (k // FLEETS) % 5 == 0 else "ready",
            "slot": k,
            "port": 7000,
            "ports": "{}",
            "sdk_players": "[]",
            "sdk_labels": "{}",
            "created_at": t,
            "updated_at": t,
            "ready_at": t - 60,
        }
        for host_id in w["hosts"]
        for k in range(FLEETS * PER_HOST_AND_FLEET)
    ]
    with db.write() as s:
        for at in range(0, len(rows), 10_000):
            s.execute(insert(Instance), rows[at : at + 10_000])
        some = list(s.scalars(select(Instance.id).limit(20_000)))
        s.execute(
            insert(GameSession),
            [
                {
                    "id": f"s{n:06d}",
                    "instance_id": instance_id,
                    "fleet_id": fleets[0],
                    "players": '["p"]',
                    "size": 1,
                    "status": "ended",
                    "created_at": t - 600,
                    "ended_at": t - 300,
                }
                for n, instance_id in enumerate(some)
            ],
        )
        job = services.create(
            s,
            {
                "name": "big",
                "environment": "prod",
                "application": "game",
                "method": "forced",
                "builds": [{"old": "p3", "new": "p7"}],
                "fleets": ["f"],
                "scheduled_start": t + 3600,  # pending: its passes read, they start nothing
            },
            "test",
            t,
        )
        w["job"] = job.id
        # Earlier jobs' history: 50,000 applied actions and their events.
        done = services.create(
            s,
            {
                "name": "earlier",
                "environment": "prod",
                "application": "game",
                "method": "forced",
                "builds": [{"old": "p12", "new": "p3"}],
                "fleets": ["f9"],
            },
            "test",
            t - 86400,
        )
        done.status = int(JobStatus.COMPLETED)
        s.flush()
        s.execute(
            insert(PatchJobAction),
            [
                {
                    "key": f"job{done.id}/main/stop/{n}",
                    "job_id": done.id,
                    "seq": n,
                    "action": '{"type": "StopInstance"}',
                    "recorded_at": t - 86400,
                    "applied_at": t - 86400,
                    "result": "stopped",
                }
                for n in range(50_000)
            ],
        )
        s.execute(
            insert(PatchJobEvent),
            [
                {
                    "job_id": done.id,
                    "at": t - 86400,
                    "kind": "action",
                    "status": int(JobStatus.COMPLETED),
                    "message": "stopped",
                    "data": "{}",
                    "attempts": 0,
                    "mailed_at": t - 86400,
                    "hooked_at": t - 86400,
                }
                for n in range(50_000)
            ],
        )
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as c:
            c.exec_driver_sql("ANALYZE")
    return w


@contextmanager
def _captured(db: Database) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if not many and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            seen.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)


def _scans(db: Database, statement: str, params: Any) -> list[str]:
    with db.engine.connect() as c:
        if db.engine.dialect.name == "sqlite":
            plan = [r[3] for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
            bad = [line for line in plan if _SQLITE_SCAN.search(line)]
        else:
            plan = [r[0] for r in c.exec_driver_sql("EXPLAIN " + statement, params)]
            bad = [line for line in plan if _PG_SCAN.search(line)]
        c.rollback()
    return bad


def test_the_hot_paths_use_indexes_at_100k_instances(db: Database) -> None:
    w = _fill(db)
    t = now()
    host_id = w["hosts"][HOSTS // 2]
    with db.read() as s:
        mine = list(
            s.execute(
                select(Instance.id, Instance.state).where(
                    Instance.host_id == host_id, Instance.desired != "stopped"
                )
            )
        )
    observed = [{"id": i, "state": state, "port": 7000} for i, state in mine]
    reconciler = Reconciler(db)
    with _captured(db) as statements:
        with db.write() as s:
            host_svc.sync(
                s,
                host_id=host_id,
                agent_uid="u" * 16,
                observed=observed,
                staged=[],
                now=t,
                replace_lost_after_s=120.0,
            )
        reconciler.tick()
        reconciler.tick()
        with db.write() as s:
            job = s.get_one(PatchJob, w["job"])
            spec = spec_of(job)
            old = mine[0][0]
            start = StartInstance(
                key=f"job{job.id}/main/start/{old}",
                fleet_id=w["fleet"],
                version_id=w["profiles"][7],
                host=f"h{HOSTS // 2}",
                replaces_id=old,
            )
            apply(s, job, spec, start, t)
            stop = StopInstance(
                key=f"job{job.id}/main/stop/{old}",
                instance_id=old,
                signal=None,
                graceful=True,
                timeout_s=None,
                require_empty=True,
                fallback_deadline=t + 60,
                state_saved=False,
                reason="test",
            )
            apply(s, job, spec, stop, t)
            allocate_db.allocate(
                s,
                allocate_db.AllocationRequest(
                    fleet="f", profile=None, regions=(), client_version=None, players=("p1",)
                ),
                t,
            )
    assert len(statements) > 20, "the paths ran their queries"
    assert any("changed_at" in sql for sql, _ in statements), "an incremental pass ran"
    bad = {}
    for sql, params in statements:
        scans = _scans(db, sql, params)
        if scans:
            bad[sql] = scans
    assert not bad, "\n\n".join(f"{sql}\n  -> {scans}" for sql, scans in bad.items())
