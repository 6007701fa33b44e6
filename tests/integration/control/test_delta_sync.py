"""Syncs by changes (issue 22), against SQLite and PostgreSQL.

- An agent that applies only the desired *changes* it is given ends up with exactly the
  whole desired state, whatever happens to its instances meanwhile (random sequences of
  the writes the control plane makes: jobs' stops, notices, drains, new instances, the
  agent's own reports; checked after every sync).
- A sync with nothing new is answered from one read, writes nothing, and keeps the
  heartbeat (written by the batch); anything new (an instance row, a build to stage, a
  fleet edit, a plan that is due) makes it a full one.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from sqlalchemy import event, select, update

from changeover.control.db import Database, now
from changeover.control.fleet import desired, launch, quiet
from changeover.control.fleet import hosts as host_svc
from changeover.control.fleet import services as fleet_svc
from changeover.control.fleet.models import Environment, Host, Instance
from changeover.control.fleet.pacing import SyncPacer
from changeover.control.fleet.schemas import HostDesired
from changeover.control.patchjobs import storage as patchjob_storage
from changeover.control.patchjobs.job_view import db_clock
from changeover.control.patchjobs.records import PatchJob
from changeover.control.patchjobs.storage import OWNING
from fleet_world import world
from tests_helpers import wait_for

UID = "u" * 16  # the agent_uid fleet_world gives its hosts
WRITES = ("INSERT", "UPDATE", "DELETE")


class Agent:
    """What an agent holds: the desired state built from the answers it applied."""

    def __init__(self, db: Database, host_id: int) -> None:
        self.db = db
        self.host_id = host_id
        self.since: float | None = None
        self.desired: dict[int, dict[str, Any]] = {}
        self.states: dict[int, str] = {}
        self.told: dict[int, dict[str, Any]] = {}

    def observed(self) -> list[dict[str, Any]]:
        return [
            {"id": i, "state": st, "port": 7000 + i, "pid": 100 + i}
            for i, st in self.states.items()
        ]

    def sync(self, t: float) -> dict[str, Any]:
        everything = self.observed()
        changed = [o for o in everything if self.told.get(o["id"]) != o]
        with self.db.write() as s:
            out = host_svc.sync(
                s,
                host_id=self.host_id,
                agent_uid=UID,
                observed=everything if self.since is None else changed,
                staged=[],
                now=t,
                since=self.since,
            )
        # What the route sends unchecked, but the profiles of this test's world are bare
        # (the API's tests check the instances' specs).
        HostDesired.model_validate({**out, "instances": []})
        self.told = {o["id"]: o for o in everything}
        if out["full"]:
            self.desired = {}
        for item in out["instances"]:
            self.desired[item["id"]] = item
            self.states.setdefault(item["id"], "staging")
        for gone in out["gone"]:
            self.desired.pop(gone, None)
            self.states.pop(gone, None)
        self.since = out["revision"]
        return out


def whole(db: Database, host_id: int, t: float) -> dict[int, dict[str, Any]]:
    """The host's whole desired state as the control plane would answer it now."""
    with db.read() as s:
        host = s.get_one(Host, host_id)
        rows = list(
            s.scalars(
                select(Instance).where(
                    Instance.host_id == host_id,
                    (Instance.desired != "stopped") | (Instance.state != "stopped"),
                )
            )
        )
        out = desired.answer(s, host, rows, revision=db_clock(s), since=None, now=t)
    return {i["id"]: i for i in out["instances"]}


def _write(db: Database, instance_id: int, **values: Any) -> None:
    with db.write() as s:
        s.execute(update(Instance).where(Instance.id == instance_id).values(**values))


def _owning_job(db: Database, w: dict[str, Any]) -> None:
    """A started job that owns the fleet: placement leaves it alone, and a sync by changes
    reads only the instances the job handed over or that changed (``hosts._host_rows``)."""
    t = now()
    with db.write() as s:
        s.add(
            PatchJob(
                name="owner",
                environment_id=s.scalars(select(Environment.id)).one(),
                application_id=w["app"],
                method=1,
                spec=json.dumps({"fleet_ids": [w["fleet"]]}),
                start_at=t,
                status=min(OWNING),
                progress="{}",
                created_at=t,
                updated_at=t,
                created_by="test",
            )
        )


@pytest.mark.parametrize(("seed", "owned"), [(1, False), (2, False), (3, True), (4, True)])
def test_changes_applied_in_turn_equal_the_whole_state(
    db: Database, seed: int, owned: bool
) -> None:
    rnd = random.Random(seed)
    w = world(db)
    host = w["hosts"][0]
    with db.write() as s:
        s.execute(update(fleet_svc.Fleet).values(instances_per_host=3))
    if owned:
        Agent(db, host).sync(now())  # placement's three, before the job takes the fleet
        _owning_job(db, w)
        with db.read() as s:
            assert patchjob_storage.owned_fleet_ids(s) == {w["fleet"]}
    agent = Agent(db, host)
    t = now()
    agent.sync(t)
    kinds = ["report", "stop", "notify", "drain", "start", "stopped", "slot", "sync"]
    deltas = 0
    for step in range(40):
        t += 1
        kind = rnd.choice(kinds)
        live = sorted(agent.desired)
        pick = rnd.choice(live) if live else None
        if kind == "report" and pick is not None:
            agent.states[pick] = rnd.choice(["starting", "ready", "failed"])
        elif kind == "stop" and pick is not None:  # a patch job's StopInstance
            _write(db, pick, desired="stopped", stop_signal="SIGTERM", stop_timeout_s=5.0)
        elif kind == "notify" and pick is not None:
            _write(db, pick, notice_reason=f"step {step}", notice_deadline=t + 30)
        elif kind == "drain" and pick is not None:
            _write(db, pick, desired="draining", drain_reason="job", drain_deadline=t + 60)
        elif kind == "start":  # a patch job's StartInstance
            with db.write() as s:
                launch.create(s, [launch.Launch(w["fleet"], w["profiles"][7], host)], t)
        elif kind == "stopped":  # the agent saw the ones it was told to stop end
            for i, d in agent.desired.items():
                if d["desired"] == "stopped":
                    agent.states[i] = "stopped"
        elif kind == "slot" and pick is not None:
            _write(db, pick, slot=50 + step)
        out = agent.sync(t)
        deltas += not out["full"]
        assert agent.desired == whole(db, host, t), f"seed {seed}, step {step} ({kind})"
    assert deltas >= 30  # the comparison above was of changes, not of whole answers


def test_a_sync_with_nothing_new_is_one_read(db: Database) -> None:
    w = world(db)
    host = w["hosts"][0]
    memory = quiet.SyncMemory()
    t = now()
    with db.write() as s:
        first = host_svc.sync(
            s, host_id=host, agent_uid=UID, observed=[], staged=[], now=t, memory=memory
        )
    (item,) = first["instances"]
    ready = [{"id": item["id"], "state": "ready", "port": 7000, "pid": 100}]
    with db.write() as s:
        host_svc.sync(
            s, host_id=host, agent_uid=UID, observed=ready, staged=[], now=t, memory=memory
        )
    # The rows just written are within the margin of any revision for MARGIN_S seconds:
    # look from a revision that far on (the database's clock is the real one).
    since = db_clock_now(db) + quiet.MARGIN_S + 0.001

    def ask(at: float) -> dict[str, Any] | None:
        with db.read() as s:
            return quiet.answer(
                s,
                memory,
                SyncPacer(),
                host_id=host,
                agent_uid=UID,
                since=since,
                staged_json=host_svc.staged_list([]),
                now=at,
            )

    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        answer = ask(t + 1)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert answer is not None
    HostDesired.model_validate(answer)  # what the route sends, unchecked
    assert (answer["full"], answer["instances"], answer["gone"]) == (False, [], [])
    assert "versions" not in answer  # the agent keeps the last ones
    # One statement (the live-host count of the interval aside), and no write.
    queries = [x for x in statements if x.lstrip().upper().startswith((*WRITES, "SELECT"))]
    reads = [x for x in queries if "count(" not in x.lower()]
    assert len(reads) == 1 and reads[0].lstrip().upper().startswith("SELECT"), statements
    # Its heartbeat is batched, written by the flush, and never moves back.
    memory.beat(host, t + 7200)
    memory.beat(host, t + 7100)
    assert memory.flush(db) == 1
    with db.read() as s:
        assert s.get_one(Host, host).last_seen_at == t + 7200
    memory.beat(host, t + 1)
    memory.flush(db)
    with db.read() as s:
        assert s.get_one(Host, host).last_seen_at == t + 7200

    # Anything new makes it a full sync: a plan that is due, ...
    assert ask(t + quiet.PLAN_EVERY_S + 1) is None
    # ... another agent on the host, builds staged that differ, ...
    with db.read() as s:
        assert (
            quiet.answer(
                s,
                memory,
                SyncPacer(),
                host_id=host,
                agent_uid="x" * 16,
                since=since,
                staged_json="[]",
                now=t + 1,
            )
            is None
        )
        assert (
            quiet.answer(
                s,
                memory,
                SyncPacer(),
                host_id=host,
                agent_uid=UID,
                since=since,
                staged_json='["abc"]',
                now=t + 1,
            )
            is None
        )
    # ... a fleet edit (hosts.desired_at), ...
    with db.write() as s:
        fleet_svc.touch_hosts(s, [w["fleet"]], db_clock(s))
    since = db_clock_now(db) + quiet.MARGIN_S + 0.001
    assert ask(t + 1) is not None  # (from a later revision, quiet again)
    # ... and an instance row that changed. (SQLite's clock counts milliseconds: a write
    # in the very millisecond of the revision would look as old as it.)
    wait_for(
        lambda: db_clock_now(db) > since - quiet.MARGIN_S,
        5,
        "the database's clock to pass the revision",
    )
    _write(db, item["id"], notice_reason="bye", notice_deadline=t + 10)
    assert ask(t + 1) is None

    def from_now_on() -> None:
        nonlocal since
        since = db_clock_now(db) + quiet.MARGIN_S + 0.001
        wait_for(
            lambda: db_clock_now(db) > since - quiet.MARGIN_S,
            5,
            "the database's clock to pass the revision",
        )

    # Server Allocate's writes (a running instance's players) leave it quiet: an agent is
    # told nothing of players, and a busy fleet's every instance changes every few seconds.
    from_now_on()
    with db.write() as s:
        s.execute(update(Instance).values(players=Instance.players + 1))
    assert ask(t + 1) is not None
    # A draining one's players do count: placement stops it once it is empty.
    _write(db, item["id"], desired="draining")
    assert ask(t + 1) is None
    from_now_on()
    assert ask(t + 1) is not None
    with db.write() as s:
        s.execute(update(Instance).values(players=Instance.players - 1))
    assert ask(t + 1) is None


def db_clock_now(db: Database) -> float:
    with db.read() as s:
        return db_clock(s)
