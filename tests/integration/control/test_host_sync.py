"""An agent's sync against a real database (SQLite and PostgreSQL): a sync that repeats
the last observation writes no instance row and gets the same answer; a change is
written; the interval the agents are told stretches with the number of live hosts."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event, select

from changeover.control.db import Database, now
from changeover.control.fleet import hosts as host_svc
from changeover.control.fleet import pacing
from changeover.control.fleet.models import GameSession, Host, Instance
from fleet_world import world

UID = "u" * 16  # the agent_uid fleet_world gives its hosts


def sync(db: Database, host_id: int, observed: list[dict[str, Any]], t: float) -> Any:
    with db.write() as s:
        return host_svc.sync(s, host_id=host_id, agent_uid=UID, observed=observed, staged=[], now=t)


def ready(reply: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    return [
        {"id": i["id"], "state": "ready", "port": 7000 + i["id"], "pid": 100 + i["id"]}
        | {"sdk": {"ready": True, "players": []}}
        | extra
        for i in reply["instances"]
    ]


def test_a_repeated_sync_writes_nothing_and_a_change_is_written(db: Database) -> None:
    host = world(db)["hosts"][0]
    t = now()
    first = sync(db, host, [], t)
    assert [i["desired"] for i in first["instances"]] == ["running"]
    second = sync(db, host, ready(first), t + 1)
    with db.read() as s:
        row = s.scalars(select(Instance)).one()
        assert (row.state, row.ready_at, row.observed_at, row.port) == (
            "ready",
            t + 1,
            t + 1,
            7000 + row.id,
        )

    writes: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            writes.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        third = sync(db, host, ready(second), t + 2)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert third | {"revision": 0} == second | {"revision": 0}  # the database's clock
    assert [w for w in writes if "instances" in w] == []  # only the host's heartbeat
    assert any("hosts" in w for w in writes)

    sync(db, host, ready(third, restarts=1, state="starting"), t + 3)
    with db.read() as s:
        row = s.scalars(select(Instance)).one()
        assert (row.state, row.restarts, row.ready_at, row.observed_at) == (
            "starting",
            1,
            None,
            t + 3,
        )


def test_the_sync_interval_stretches_with_the_live_hosts(db: Database) -> None:
    hosts = world(db, hosts=120)["hosts"]
    assert pacing.sync_interval(1) == pacing.SYNC_INTERVAL_S
    reply = sync(db, hosts[0], [], now())
    assert reply["sync_interval_s"] == pacing.MAX_SYNC_INTERVAL_S
    assert pacing.MAX_SYNC_INTERVAL_S * 4 <= host_svc.LOST_AFTER_S
    # Between the floor and the ceiling, the fleet together stays near SYNCS_PER_S.
    middle = int(pacing.SYNCS_PER_S * 2)
    assert middle / pacing.sync_interval(middle) == pacing.SYNCS_PER_S
    few = sync(db, hosts[0], [], now() + 7200)  # the others fell silent an hour ago
    assert few["sync_interval_s"] == pacing.SYNC_INTERVAL_S


def test_a_busy_control_plane_asks_for_fewer_syncs_within_the_lost_bound() -> None:
    assert pacing.sync_interval(10, seconds_per_sync=0.0) == pacing.SYNC_INTERVAL_S
    # 10 hosts whose syncs take 0.1 s each: answering them every second would take all of
    # one process's time; at half of it, every 2 s.
    assert pacing.sync_interval(10, seconds_per_sync=0.1) == 2.0
    assert pacing.sync_interval(10, seconds_per_sync=10.0) == pacing.MAX_SYNC_INTERVAL_S
    pacer = pacing.SyncPacer(weight=0.5)
    for _ in range(20):
        pacer.record(0.1)
    assert abs(pacer.seconds_per_sync - 0.1) < 1e-3
    assert abs(pacer.interval(10) - 2.0) < 0.05


def test_the_heartbeat_counts_from_when_the_agent_called(db: Database) -> None:
    """A sync answered late (the control plane was busy) counts as heard when it arrived."""
    host = world(db)["hosts"][0]
    t = now()
    with db.write() as s:
        host_svc.sync(
            s, host_id=host, agent_uid="u" * 16, observed=[], staged=[], now=t + 9, heard_at=t
        )
    with db.read() as s:
        assert s.get_one(Host, host).last_seen_at == t


def test_a_sync_ends_sessions_and_gives_their_places_back_in_one_write(db: Database) -> None:
    """The game reports who is playing: connected sessions whose players left end; a
    stopped instance ends every open one. Each time the instance's count goes down by
    exactly their sizes, in one UPDATE of the instance (a busy one holds hundreds)."""
    w = world(db)
    host = w["hosts"][0]
    t = now()
    first = sync(db, host, [], t)
    (iid,) = [i["id"] for i in first["instances"]]
    sizes = {f"s{n}": n % 3 + 1 for n in range(12)}
    with db.write() as s:
        s.get_one(Instance, iid).capacity = 100
        s.get_one(Instance, iid).players = sum(sizes.values())
        for sid, size in sizes.items():
            s.add(
                GameSession(
                    id=sid,
                    instance_id=iid,
                    fleet_id=w["fleet"],
                    players=json.dumps([f"{sid}-p{k}" for k in range(size)]),
                    size=size,
                    status="connected",
                    created_at=t,
                )
            )
    staying = {sid for n, sid in enumerate(sizes) if n % 2}
    playing = [f"{sid}-p0" for sid in staying]
    writes: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE INSTANCES"):
            writes.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        sync(db, host, ready(first, sdk={"ready": True, "players": playing}), t + 1)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert len(writes) <= 2, writes  # the observation, the places given back
    with db.read() as s:
        status = dict(s.execute(select(GameSession.id, GameSession.status)).all())
        assert status == {sid: "connected" if sid in staying else "ended" for sid in sizes}
        assert s.get_one(Instance, iid).players == sum(sizes[sid] for sid in staying)
    stopped = [{"id": iid, "state": "stopped"}]
    sync(db, host, stopped, t + 2)
    with db.read() as s:
        assert set(s.scalars(select(GameSession.status))) == {"ended"}
        assert s.get_one(Instance, iid).players == 0
