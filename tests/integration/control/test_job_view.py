"""The reconciler's incremental view of a job's instances (``patchjobs.job_view``), against
a real database of each kind:

- the database stamps ``changed_at`` on every write, however it is made (ORM insert and
  flush, a bulk UPDATE as the allocation lane makes, plain SQL);
- after any sequence of changes (new instances, state, desired state and players changing,
  finished rows pruned, hosts falling silent and coming back), the view kept from changes
  equals a full read of the job's instances (a property test), and it was kept from
  changes, not read in full again;
- a write that committed after a pass that could not see it is picked up by the next.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, text, update

from changeover.control.db import Database, now
from changeover.control.fleet.models import Fleet, Host, Instance
from changeover.control.fleet.quiet import SyncMemory
from changeover.control.fleet.services import LOST_AFTER_S
from changeover.control.patchjobs.job_view import (
    JobView,
    db_clock,
    lost_hosts,
    read_all,
    to_view,
)
from changeover.control.patchjobs.model import InstanceView
from changeover.control.patchjobs.states import LOST
from fleet_world import NUMBERS, ready_instance, world

STATES = ("staging", "starting", "ready", "stopping", "stopped", "failed")
_jobs = itertools.count(1000)


def _full_read(db: Database, job_id: int, fleet_id: int, t: float) -> list[InstanceView]:
    with db.read() as s:
        lost = lost_hosts(s, t)
        return [to_view(r, r[10] in lost) for r in read_all(s, job_id, [fleet_id])]


def _changed_at(db: Database, instance_id: int, s: Any = None) -> float:
    """As ``s`` sees it (a writer, before its commit), else as committed."""
    if s is None:
        with db.read() as reader:
            return _changed_at(db, instance_id, reader)
    return float(s.scalar(select(Instance.changed_at).where(Instance.id == instance_id)) or 0)


def _one_instance(db: Database) -> tuple[dict[str, Any], int]:
    """A world with one ready instance: the world, and the instance's id."""
    w = world(db)
    with db.write() as s:
        row = ready_instance(w)
        s.add(row)
        s.flush()
        return w, row.id


def _wait_for_clock_past(db: Database, mark: float) -> None:
    """The database clock's resolution is a millisecond on SQLite: let it move on."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with db.read() as s:
            if db_clock(s) > mark:
                return
        time.sleep(0.002)
    raise AssertionError("the database clock did not move")


def test_the_database_stamps_every_write(db: Database) -> None:
    _, instance_id = _one_instance(db)
    stamps = [_changed_at(db, instance_id)]
    assert stamps[0] > 0, "an insert is stamped"

    def wrote(how: str) -> None:
        _wait_for_clock_past(db, stamps[-1])
        stamps.append(_changed_at(db, instance_id))
        assert stamps[-1] > stamps[-2], f"{how} moved changed_at"

    with db.write() as s:
        s.get_one(Instance, instance_id).state = "stopping"
    wrote("an ORM flush")
    _wait_for_clock_past(db, stamps[-1])
    with db.write() as s:
        s.execute(
            update(Instance).where(Instance.id == instance_id).values(players=Instance.players + 1)
        )
    wrote("a bulk UPDATE")
    _wait_for_clock_past(db, stamps[-1])
    with db.write() as s:
        s.execute(
            text("UPDATE instances SET desired = 'draining' WHERE id = :i"), {"i": instance_id}
        )
    wrote("plain SQL")


def _new_fleet(db: Database, w: dict[str, Any], n: int) -> int:
    with db.write() as s:
        base = s.get_one(Fleet, w["fleet"])
        fleet = Fleet(
            name=f"f{n}",
            application_id=base.application_id,
            environment_id=base.environment_id,
            active_profile_id=base.active_profile_id,
            instances_per_host=1,
            created_at=base.created_at,
            updated_at=base.updated_at,
        )
        s.add(fleet)
        s.flush()
        return fleet.id


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.integers(0, 2), st.sampled_from(NUMBERS), st.booleans()),
        st.tuples(st.just("state"), st.integers(0, 20), st.sampled_from(STATES)),
        st.tuples(
            st.just("desired"),
            st.integers(0, 20),
            st.sampled_from(("running", "draining", "stopped")),
        ),
        st.tuples(st.just("players"), st.integers(0, 20), st.sampled_from((-1, 1))),
        st.tuples(st.just("silent"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("prune")),
        st.tuples(st.just("refresh")),
    ),
    max_size=40,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_the_view_kept_from_changes_equals_a_full_read(
    db: Database, ops: Sequence[tuple[Any, ...]]
) -> None:
    w = _world_once(db)
    job_id = next(_jobs)
    fleet_id = _new_fleet(db, w, job_id)
    view = JobView(job_id, [fleet_id])
    created: list[int] = []
    refreshes = 0

    def check() -> None:
        nonlocal refreshes
        t = now()
        with db.read() as s:
            view.refresh(s, t)
        refreshes += 1
        assert view.views() == _full_read(db, job_id, fleet_id, t)

    check()
    for op in (*ops, ("refresh",)):
        with db.write() as s:
            kind = op[0]
            if kind == "insert":
                _, host, number, launched = op
                row = ready_instance(
                    w,
                    number,
                    fleet_id=fleet_id,
                    host_id=w["hosts"][host],
                    state="staging",
                    launch_key=f"job{job_id}/main/start/{len(created)}" if launched else None,
                )
                s.add(row)
                s.flush()
                created.append(row.id)
            elif kind in ("state", "desired") and created:
                row = s.get_one(Instance, created[op[1] % len(created)])
                setattr(row, kind, op[2])
            elif kind == "players" and created:
                s.execute(  # as the allocation lane and session ends write it
                    update(Instance)
                    .where(Instance.id == created[op[1] % len(created)])
                    .values(players=Instance.players + op[2])
                )
            elif kind == "silent":
                t = now()
                seen = t - 2 * LOST_AFTER_S if op[2] else t + 3600
                s.execute(
                    update(Host).where(Host.id == w["hosts"][op[1]]).values(last_seen_at=seen)
                )
            elif kind == "prune":  # as retention does, for finished rows not the job's own
                s.execute(
                    delete(Instance).where(
                        Instance.fleet_id == fleet_id,
                        Instance.desired == "stopped",
                        Instance.state == "stopped",
                        Instance.launch_key.is_(None),
                    )
                )
        if op[0] == "refresh":
            check()
    assert view.rebuilds == 1, "every pass after the first read only what changed"
    assert refreshes >= 2


_worlds: dict[int, dict[str, Any]] = {}


def _world_once(db: Database) -> dict[str, Any]:
    """One world per database (hypothesis runs many examples in one test's database):
    each example gets its own fleet in it."""
    if id(db) not in _worlds:
        _worlds[id(db)] = world(db, hosts=3, regions=2)
    return _worlds[id(db)]


def test_a_write_committed_after_a_pass_is_seen_by_the_next(db: Database) -> None:
    w, instance_id = _one_instance(db)
    view = JobView(1, [w["fleet"]])
    with db.read() as s:
        view.refresh(s, now())
    with db.write() as writer:  # stamped now, committed only after the next pass
        writer.execute(update(Instance).where(Instance.id == instance_id).values(state="stopping"))
        writer.flush()
        _wait_for_clock_past(db, _changed_at(db, instance_id, writer))
        with db.read() as s:
            view.refresh(s, now())
        assert [v.state for v in view.views()] == ["ready"], "the write is not committed yet"
    with db.read() as s:
        view.refresh(s, now())
    assert [v.state for v in view.views()] == ["stopping"]
    assert view.rebuilds == 1


def test_a_host_whose_sync_we_are_still_answering_is_not_lost(db: Database) -> None:
    """Its last heartbeat in the database is older than ``LOST_AFTER_S``, but its agent is
    waiting for our answer: neither the reconciler's view (``heard``) nor, after a flush,
    the database takes it for lost. Once answered and silent again, it is lost."""
    w, instance_id = _one_instance(db)
    host = w["hosts"][0]
    t = now()
    long_ago = t - LOST_AFTER_S - 5
    with db.write() as s:
        s.execute(update(Host).where(Host.id == host).values(last_seen_at=long_ago))
    memory = SyncMemory()
    with memory.calling(host, "agent", arrived=long_ago - 1):
        pass  # an earlier sync, answered: the agent is the host's
    job_id = next(_jobs)
    view = JobView(job_id, [w["fleet"]])
    with db.read() as s:
        view.refresh(s, t, heard=memory.heard(t - LOST_AFTER_S))
    assert view.views()[0].state == LOST, "silent, and not being answered: lost"
    with memory.calling(host, "agent", arrived=long_ago):
        with db.read() as s:
            view.refresh(s, t, heard=memory.heard(t - LOST_AFTER_S))
        assert view.views()[0].state == "ready"
        assert memory.flush(db, now=t) == 1
        with db.read() as s:
            assert s.get_one(Host, host).last_seen_at == t
            assert lost_hosts(s, t) == frozenset(), "the database says so too once flushed"
    later = t + LOST_AFTER_S + 1
    with db.read() as s:
        view.refresh(s, later, heard=memory.heard(later - LOST_AFTER_S))
    assert view.views()[0].state == LOST, "answered, then silent: lost again"
    assert view.views()[0].instance_id == instance_id
