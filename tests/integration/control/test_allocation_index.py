"""Server Allocate's candidate query against a real database (SQLite and PostgreSQL):

- ``instances.version_number`` (the copy of the profile's version number that the
  allocation indexes sort by) follows the profile however an instance gets one: created
  by placement, a Fleet Profile Switch or a patch job, written directly, or changed;
- the database walks an allocation index in order instead of sorting the fleet, also on
  PostgreSQL with statistics older than the hosts' heartbeats;
- ``allocate_db._best_rows`` stays a prefix of what ``allocation.rank`` picks over every
  candidate, for regions, weights, client versions and party sizes.
"""

from __future__ import annotations

import dataclasses
import random
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import event, func, insert, select, update

from changeover.control.builds.models import Version
from changeover.control.db import Database, now
from changeover.control.fleet import allocate_db, allocation, allocator, sessions, switches, takes
from changeover.control.fleet import hosts as host_svc
from changeover.control.fleet.models import (
    Fleet,
    GameSession,
    Host,
    Instance,
    Profile,
    VersionCompat,
)
from changeover.control.fleet.services import LOST_AFTER_S
from changeover.control.patchjobs.actions import StartInstance
from changeover.control.patchjobs.appliers import apply
from changeover.errors import ChangeoverError, Conflict
from fleet_world import NUMBERS, party_request, ready_instance, statements, world
from tests_helpers import wait_for


def test_version_number_follows_the_profile(db: Database) -> None:
    w = world(db)
    p3, p7, p12 = (w["profiles"][n] for n in NUMBERS)
    with db.write() as s:
        placed = host_svc.new_instance(s, w["fleet"], p3, w["hosts"][0], now(), None)
        written = ready_instance(w, 7)  # written directly: no version number given
        s.add(written)
        s.flush()
        assert (placed.version_number, written.version_number) == (3, 7)
        written.profile_id = p12  # a profile swap on an existing row
        s.flush()
        ids = placed.id, written.id
    with db.read() as s:
        got = dict(s.execute(select(Instance.id, Instance.version_number)).all())
        assert got == {ids[0]: 3, ids[1]: 12}
        assert p7 not in {i.profile_id for i in s.scalars(select(Instance))}


def test_a_profile_switch_and_a_patch_job_start_instances_of_the_new_version(
    db: Database,
) -> None:
    w = world(db)
    with db.write() as s:
        old = host_svc.new_instance(s, w["fleet"], w["profiles"][3], w["hosts"][0], now(), None)
        old.state = "ready"
        s.flush()
        fleet = s.get_one(Fleet, w["fleet"])
        sw = switches.create_switch(s, fleet, "p7", 0.0, "t")
        out = switches.step(s, sw, now())
        assert not out.done, sw.message
        switched = s.scalar(select(Instance).where(Instance.replaces_id == old.id))
        assert switched is not None and switched.profile_id == w["profiles"][7]
        # A patch job's StartInstance (``version_id`` is the new profile's id).
        start = StartInstance("job/start/1", "h0", w["fleet"], w["profiles"][12], old.id)
        apply(s, None, None, start, now())  # type: ignore[arg-type]  # _start reads neither
        started = s.scalar(select(Instance).where(Instance.launch_key == start.key))
        assert started is not None
        ids = old.id, switched.id, started.id
    with db.read() as s:
        got = dict(s.execute(select(Instance.id, Instance.version_number)).all())
        assert got == dict(zip(ids, NUMBERS, strict=True))
        rows = s.execute(
            select(Instance.version_number, Version.number)
            .join(Profile, Profile.id == Instance.profile_id)
            .join(Version, Version.id == Profile.version_id)
        ).all()
        assert all(a == b for a, b in rows)


def _plan(db: Database, by_profile: bool, params: dict[str, Any], q: Any = None) -> str:
    q = (allocate_db._BEST[by_profile] if q is None else q).params(**params)
    sql = str(q.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as c:
        if db.is_sqlite:
            return "\n".join(r[-1] for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        # Tiny tables: a sequential scan would win on cost, so forbid sorting and scanning.
        # A plan without a sort exists only if an allocation index serves WHERE and ORDER BY.
        c.exec_driver_sql("SET LOCAL enable_sort = off")  # this transaction only
        c.exec_driver_sql("SET LOCAL enable_seqscan = off")
        return "\n".join(r[0] for r in c.exec_driver_sql("EXPLAIN " + sql.replace("%", "%%")))


def _indexed_world(db: Database) -> dict[str, Any]:
    """200 ready instances of three versions over four hosts, the statistics up to date."""
    w = world(db, hosts=4)
    with db.write() as s:
        s.add_all(
            ready_instance(w, NUMBERS[n % 3], host_id=w["hosts"][n % 4], players=n % 4)
            for n in range(200)
        )
    if not db.is_sqlite:
        with db.engine.begin() as c:  # committed: a rolled-back ANALYZE leaves no statistics
            c.exec_driver_sql("ANALYZE")
    return w


@pytest.mark.parametrize("by_profile", [False, True])
def test_the_best_candidates_come_from_an_index_not_a_sort(db: Database, by_profile: bool) -> None:
    w = _indexed_world(db)
    scope = w["profiles"][7] if by_profile else w["fleet"]
    plan = _plan(db, by_profile, {"scope_id": scope, "alive_after": now() - 10, "size": 1})
    index = "ix_instances_alloc_profile" if by_profile else "ix_instances_alloc_fleet"
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan


def test_with_weights_each_profiles_best_come_from_an_index_not_a_sort(db: Database) -> None:
    """During a patch job the fleet has allocation weights: sorting by them in SQL sorted
    the whole fleet on every read; each profile's best few are read along its index."""
    w = _indexed_world(db)
    params = {"scope_id": w["fleet"], "alive_after": now() - 10, "size": 1}
    plan = _plan(
        db, False, {**params, "profile_id": w["profiles"][7]}, allocate_db._BEST_OF_PROFILE
    )
    assert "ix_instances_alloc_profile" in plan or "ix_instances_alloc_fleet" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan


@pytest.mark.postgres
def test_on_postgresql_the_allocator_keeps_the_index_when_statistics_are_stale(
    pg_url: str,
) -> None:
    """Heartbeats move every host's ``last_seen_at`` past what the last ``ANALYZE`` saw, so
    "seen in the last 10 s" looks like no host at all. Planned for those values, the best
    candidates came from reading and sorting the whole fleet (29 ms at 10,000 instances);
    the allocator's transactions plan for any values and keep walking the index."""
    db = Database(pg_url)  # SQLite has no plan cache, nor this choice
    db.migrate()
    w = world(db, hosts=20)
    t = now()
    with db.write() as s:
        s.execute(update(Host).values(last_seen_at=t - 3600))
        s.add_all(
            ready_instance(w, NUMBERS[0], host_id=w["hosts"][n % 20], players=n % 4)
            for n in range(3000)
        )
    with db.engine.begin() as c:  # committed: a rolled-back ANALYZE leaves no statistics
        c.exec_driver_sql("ANALYZE")
    with db.write() as s:  # every host heartbeats after the ANALYZE
        s.execute(update(Host).values(last_seen_at=t))

    compiled = allocate_db._BEST[False].compile(dialect=_numbered_params_dialect())
    values = {"scope_id": w["fleet"], "alive_after": t - 10, "size": 1, "param_1": 16}
    args = ", ".join(repr(values[name]) for name in compiled.positiontup or ())

    def plan(generic: bool) -> str:
        with db.write(hot_path=generic) as s:
            s.connection().exec_driver_sql(f"PREPARE best AS {compiled}".replace("%", "%%"))
            rows = s.connection().exec_driver_sql(f"EXPLAIN EXECUTE best({args})").all()
            s.connection().exec_driver_sql("DEALLOCATE best")
            return "\n".join(r[0] for r in rows)

    try:
        generic = plan(generic=True)
        assert "ix_instances_alloc_fleet" in generic and "Sort" not in generic, generic
        print("planned for the values instead:\n" + plan(generic=False))
    finally:
        db.dispose()


@pytest.mark.postgres
def test_on_postgresql_the_allocator_outlives_a_cut_connection(pg_url: str) -> None:
    """The allocator's connections are not pinged before use (``Database.write(hot_path=
    True)``): one cut meanwhile (a PostgreSQL restart, a proxy's idle timeout) fails one
    batch, which runs again on a new connection; nobody sees an error."""
    db = Database(pg_url)
    db.migrate()
    w = world(db, hosts=1)
    with db.write() as s:
        s.add(ready_instance(w, NUMBERS[0], capacity=10))
    group = allocator.Allocator(db)

    def allocate(player: str) -> dict[str, Any]:
        request = allocate_db.AllocationRequest("f", None, (), None, (player,))
        return group.submit(request).result(timeout=30)

    try:
        assert allocate("before")["players"] == ["before"]
        with db.write(hot_path=True) as s:  # the allocator's connection: its pool holds one
            backend = s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with db.engine.begin() as c:
            c.exec_driver_sql(f"SELECT pg_terminate_backend({int(backend)})")
        batches = group.batches
        assert allocate("after")["players"] == ["after"]
        assert group.batches == batches + 2  # failed on the cut connection, then ran apart
        with db.read() as s:
            assert s.scalar(select(Instance.players)) == 2
    finally:
        group.stop()
        db.dispose()


def test_on_postgresql_an_allocation_passes_over_an_instance_another_transaction_holds(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy leader's transaction holding an instance (a host's sync, a batch of stops)
    does not hold up the allocator's batch: it takes the next best instance; with no other
    it waits for the holder, up to ``HELD_WAIT_S``, and is refused after that."""
    db = Database(pg_url)
    db.migrate()
    w = world(db, hosts=1)
    with db.write() as s:
        best, other = ready_instance(w, 7, players=2), ready_instance(w, 7)  # fullest first
        s.add_all([best, other])
        s.flush()
        best_id, other_id = best.id, other.id
    group = allocator.Allocator(db)

    def allocate(player: str) -> Any:
        return group.submit(allocate_db.AllocationRequest("f", None, (), None, (player,)))

    def waiting_for_a_lock() -> bool:
        with db.engine.connect() as c:
            return bool(
                c.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).scalar()
            )

    def hold(c: Any, *ids: int) -> None:
        c.execute(update(Instance).where(Instance.id.in_(ids)).values(updated_at=1))

    try:
        assert allocate("first").result(timeout=30)["instance_id"] == best_id
        with db.engine.connect() as holder:
            hold(holder, best_id)
            passed_over = allocate("second").result(timeout=30)  # the lock is still held
            assert passed_over["instance_id"] == other_id
            hold(holder, other_id)
            monkeypatch.setattr(allocate_db, "HELD_WAIT_S", 60.0)
            waiting = allocate("third")  # every candidate held: it waits for one
            wait_for(waiting_for_a_lock, timeout_s=30, what="the allocation waiting for a lock")
            assert not waiting.done()
            holder.rollback()
        assert waiting.result(timeout=30)["instance_id"] == best_id
        with db.engine.connect() as holder:  # held past the wait: refused, nothing written
            hold(holder, best_id, other_id)
            monkeypatch.setattr(allocate_db, "HELD_WAIT_S", 0.05)
            with pytest.raises(Conflict) as refused:
                allocate("fourth").result(timeout=30)
            assert refused.value.facts["reason"] == "no_capacity"
            assert "being changed" in str(refused.value)
            # In one batch, the next request is refused without waiting again.
            with statements(db, "lock_timeout =") as waits, db.write() as s:
                for n in range(3):
                    with pytest.raises(Conflict, match="being changed"):
                        allocate_db.allocate(s, party_request(n), now())
            assert len(waits) == 1, waits
            holder.rollback()
        assert allocate("fifth").result(timeout=30)["instance_id"] == other_id
        with db.read() as s:
            players = dict(s.execute(select(Instance.id, Instance.players)).all())
            sessions_made = s.scalar(select(func.count()).select_from(GameSession))
        assert players == {best_id: 4, other_id: 2}
        assert sessions_made == 4
    finally:
        group.stop()
        db.dispose()


def _numbered_params_dialect() -> Any:
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    return PGDialect_psycopg(paramstyle="numeric_dollar")


def _rank_all(s: Any, params: dict[str, Any], t: float, request: Any, weights: Any) -> Any:
    """``allocation.rank`` over every ready instance of the fleet, as ``allocate`` reads
    them to word a refusal."""
    rows = list(s.execute(allocate_db._SCOPED[False], params))
    return allocation.rank([allocate_db._candidate(r, t, weights) for r in rows], request)


def test_the_best_rows_are_a_prefix_of_what_rank_picks_over_every_candidate(
    db: Database,
) -> None:
    w = world(db, hosts=6, regions=3)
    rng = random.Random(7)
    t = now()
    with db.write() as s:
        s.add(
            VersionCompat(
                version_id=w["versions"][3], client_min=None, client_max="1.9", updated_at=t
            )
        )
        s.add(
            VersionCompat(
                version_id=w["versions"][12], client_min="2.0", client_max=None, updated_at=t
            )
        )
        dead = s.get_one(Host, w["hosts"][5])
        dead.last_seen_at = t - 2 * LOST_AFTER_S  # its instances take no players
        for _ in range(300):
            capacity = rng.choice((1, 4, 8))
            s.add(
                ready_instance(
                    w,
                    rng.choice(NUMBERS),
                    host_id=rng.choice(w["hosts"]),
                    capacity=capacity,
                    players=rng.randint(0, capacity),
                    desired=rng.choice(("running", "running", "running", "draining", "stopped")),
                    state=rng.choice(("ready", "ready", "ready", "starting", "stopped")),
                )
            )
    p3, p7, p12 = (w["profiles"][n] for n in NUMBERS)
    cases: list[tuple[tuple[str, ...], dict[int, float], str | None, int]] = [
        ((), {}, None, 1),
        ((), {}, None, 3),
        (("r2",), {}, None, 1),
        (("r1", "r0"), {}, None, 2),
        ((), {p3: 0.0, p7: 1.0}, None, 1),
        ((), {p12: 0.5, p3: 2.0}, None, 1),
        ((), {p12: 0.5}, None, 1),  # the others weigh 1.0
        ((), {p3: 1.0, p7: 1.0, p12: 0.0}, None, 1),  # two profiles of one weight, merged
        ((), {p3: 0.001, p7: 0.002, p12: 0.003}, None, 2),
        ((), {p7: 2.0}, "1.5", 1),  # weights and an incompatible profile
        (("r2", "r0"), {p7: 0.0, p12: 3.0}, None, 1),
        ((), {}, "1.5", 1),
        ((), {}, "2.5", 1),
        (("r0",), {p3: 0.25}, "1.0", 2),
    ]
    with db.read() as s:
        for regions, weights, client, size in cases:
            version = allocation.parse_client_version(client) if client else None
            request = allocation.Request(regions=regions, client_version=version, size=size)
            params = {"scope_id": w["fleet"], "alive_after": t - LOST_AFTER_S, "size": size}
            incompatible = (
                allocate_db._incompatible_profiles(s, w["app"], None, version) if version else []
            )
            best = allocate_db._best_rows(
                s, False, params, request, incompatible, weights, (p3, p7, p12)
            )
            ranked = _rank_all(s, params, t, request, weights)
            case = (regions, weights, client, size)
            assert isinstance(ranked, allocation.Ranked), (case, ranked)
            expected = [c.instance_id for c in ranked.candidates[: allocate_db.PREFETCH]]
            assert [r.id for r in best] == expected, case
            assert all(r.version == r_num for r, r_num in _numbers(s, best)), case


def _numbers(s: Any, rows: list[Any]) -> list[tuple[Any, int]]:
    by_id = dict(
        s.execute(
            select(Instance.id, Version.number)
            .join(Profile, Profile.id == Instance.profile_id)
            .join(Version, Version.id == Profile.version_id)
        ).all()
    )
    return [(r, by_id[r.id]) for r in rows]


def test_allocations_in_one_transaction_share_one_read_and_never_overfill(
    db: Database,
) -> None:
    """As in one batch of the allocator: the first allocation reads the best candidates,
    the next ones rank the same rows with the places taken since, and the compare-and-set
    still stops at capacity."""
    w = world(db)
    with db.write() as s:
        rows = [ready_instance(w, n) for n in (7, 3, 7)]  # capacity 4 each
        s.add_all(rows)
        s.flush()
        v7a, v3, v7b = (r.id for r in rows)
    reads: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if "ORDER BY instances.version_number DESC" in statement:
            reads.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.write() as s:
            placed = [
                allocate_db.allocate(s, party_request(n), now())["instance_id"] for n in range(12)
            ]
            assert len(reads) == 1
            with pytest.raises(Conflict) as refused:
                allocate_db.allocate(s, party_request(12), now())
            assert refused.value.facts["reason"] == "no_capacity"
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    # Newest version first, the fullest first: exactly what one transaction each would do.
    assert placed == [v7a] * 4 + [v7b] * 4 + [v3] * 4
    with db.read() as s:
        assert {i.id: i.players for i in s.scalars(select(Instance))} == {v7a: 4, v3: 4, v7b: 4}


def test_a_refusal_writes_nothing(db: Database) -> None:
    """The allocator runs a batch without savepoints because of this: every refusal of
    ``allocate_db.allocate`` comes before its first write, even after lost races."""
    w = world(db)
    with db.write() as s:
        rows = [ready_instance(w, 7)]  # capacity 4
        s.add_all(rows)
    writes: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(("SELECT", "SAVEPOINT", "RELEASE")):
            writes.append(statement)

    with db.write() as s:
        allocate_db.allocate(s, party_request(1, size=3), now())
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.write() as s:
            for req in [
                party_request(2, size=2),  # no room: one place left
                dataclasses.replace(party_request(3), fleet="nope"),
                dataclasses.replace(party_request(4), regions=("mars",)),
                dataclasses.replace(party_request(5), client_version="x.y"),
                dataclasses.replace(party_request(6), join_session="s_nope"),
                dataclasses.replace(party_request(7), players=()),
            ]:
                with pytest.raises(ChangeoverError):
                    allocate_db.allocate(s, req, now())
            refusals = [w for w in writes if not w.upper().startswith(("BEGIN", "COMMIT"))]
            allocate_db.allocate(s, party_request(8), now())  # the one place left: it does write
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert refusals == []
    assert [w.split()[0].upper() for w in writes if "BEGIN" not in w.upper()] == [
        "UPDATE",
        "INSERT",
    ]


def test_in_one_transaction_a_kind_of_request_refused_is_refused_again_without_reading(
    db: Database,
) -> None:
    """A refusal reads every candidate (for its exact reason); in one batch the same kind
    of request is refused again from memory, as nothing the batch does makes room."""
    w = world(db)
    with db.write() as s:
        s.add(ready_instance(w, 7, players=3))  # one place left of 4
    with statements(db, "ORDER BY instances.id") as full_reads, db.write() as s:
        refusals = []
        for n in range(3):
            with pytest.raises(Conflict) as refused:
                allocate_db.allocate(s, party_request(n, size=2), now())
            refusals.append((str(refused.value), refused.value.facts))
        assert len(full_reads) == 1
        assert refusals[0] == refusals[1] == refusals[2]
        assert refusals[0][1]["reason"] == "no_capacity"
        assert allocate_db.allocate(s, party_request(9), now())  # another kind: room
        with pytest.raises(Conflict):
            allocate_db.allocate(s, party_request(10), now())  # now full: read again
        assert len(full_reads) == 2


def test_deferred_writes_go_out_together_and_know_their_own_sessions(db: Database) -> None:
    w = world(db)
    with db.write() as s:
        a, b = ready_instance(w, 7), ready_instance(w, 7)  # capacity 4 each
        s.add_all([a, b])
    statements: list[str] = []
    takes: list[Any] = []

    def count(_c: Any, _cur: Any, statement: str, _p: Any, context: Any, _many: bool) -> None:
        statements.append(statement.lstrip().split()[0].upper())
        if statements[-1] == "UPDATE":
            takes.append(context.compiled_parameters)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.write() as s, allocate_db.deferred_writes(s):
            first = allocate_db.allocate(s, party_request(1, size=3), now())
            # A friend joins a session of the same batch, not in the table yet.
            friend = allocate_db.allocate(
                s, dataclasses.replace(party_request(2), join_session=first["session_id"]), now()
            )
            others = [allocate_db.allocate(s, party_request(n), now()) for n in range(3, 6)]
            assert "INSERT" not in statements
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    # One read of the best candidates for each kind of request (the friend's is a kind of
    # its own); before each read, the takes held back so far; at the end, the rest.
    made = [st for st in statements if st in ("SELECT", "UPDATE", "INSERT")]
    assert made[:6] == [
        "SELECT",  # the fleet
        "SELECT",  # the best candidates for a party of 3
        "UPDATE",  # its take
        "SELECT",  # the best candidates and the friend's instance
        "UPDATE",  # the friend's take
        "SELECT",  # the best candidates for one player
    ], statements
    if db.is_sqlite:
        assert made[6:] == ["UPDATE", "INSERT"], statements  # 3 takes, 5 sessions
        # The three takes fell on one instance: one compare-and-set for their sum.
        assert [(t["instance_id"], t["n"]) for t in takes[-1]] == [(b.id, 3)], takes
    else:  # the rest went out with the COMMIT, on the driver's connection (takes.py)
        assert made[6:] == [], statements
    assert friend["instance_id"] == first["instance_id"] and friend["joined_friend"]
    assert {o["instance_id"] for o in others} == {b.id}  # the friend filled the first
    with db.read() as s:
        for got in [first, friend, *others]:
            row = sessions.get_session(s, got["session_id"])
            assert (row.instance_id, row.status) == (got["instance_id"], "reserved")
        players = dict(s.execute(select(Instance.id, Instance.players)).all())
    assert players == {a.id: 4, b.id: 3}


def test_a_held_back_take_lost_to_another_writer_undoes_the_whole_block(db: Database) -> None:
    w = world(db)
    with db.write() as s:
        row = ready_instance(w, 7)  # capacity 4
        s.add(row)

    def batch() -> None:
        with db.write() as s, allocate_db.deferred_writes(s):
            allocate_db.allocate(s, party_request(1, size=2), now())
            # Another writer (an agent's sync, another server) fills the instance meanwhile.
            s.execute(update(Instance).where(Instance.id == row.id).values(players=3))

    with pytest.raises(takes.LostRace):
        batch()
    with db.read() as s:
        assert s.scalar(select(Instance.players)) == 0  # rolled back, the other write too
        assert s.scalars(select(GameSession)).all() == []


def test_a_shared_read_never_places_on_an_instance_drained_since(db: Database) -> None:
    w = world(db)
    with db.write() as s:
        rows = [ready_instance(w, 7), ready_instance(w, 3)]
        s.add_all(rows)
        s.flush()
        new, old = (r.id for r in rows)
    with db.write() as s:
        assert allocate_db.allocate(s, party_request(1), now())["instance_id"] == new
        # A patch job drains it (as another transaction would, between two allocations).
        s.execute(update(Instance).where(Instance.id == new).values(desired="draining"))
        assert allocate_db.allocate(s, party_request(2), now())["instance_id"] == old
        # Parties of another size read their own candidates.
        assert allocate_db.allocate(s, party_request(3, size=3), now())["instance_id"] == old
    with db.read() as s:
        assert {i.id: i.players for i in s.scalars(select(Instance))} == {new: 1, old: 4}


def test_the_migration_fills_in_the_version_numbers_of_existing_instances(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An instance made before migration 0004 gets its profile's version number."""
    for kind in ("sqlite", "postgres"):
        url = (
            request.getfixturevalue("pg_url")
            if kind == "postgres"
            else f"sqlite:///{tmp_path}/m.db"
        )
        database = Database(url)
        try:
            _migrate(database, "0003")
            w = world(database)
            t = now()
            with database.write() as s:
                for number in (7, 12):
                    s.execute(
                        insert(Instance.__table__).values(  # the columns 0003 knows
                            fleet_id=w["fleet"],
                            profile_id=w["profiles"][number],
                            host_id=w["hosts"][0],
                            capacity=4,
                            players=0,
                            desired="running",
                            state="ready",
                            ports="{}",
                            restarts=0,
                            sdk_ready=False,
                            sdk_players="[]",
                            sdk_labels="{}",
                            sdk_state_saved=False,
                            created_at=t,
                            updated_at=t,
                        )
                    )
            _migrate(database, "head")
            with database.read() as s:
                got = s.execute(select(Instance.profile_id, Instance.version_number)).all()
                assert sorted(got) == sorted((w["profiles"][n], n) for n in (7, 12)), kind
        finally:
            database.dispose()


def _migrate(database: Database, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option(
        "script_location", str(resources.files("changeover.control") / "migrations")
    )
    with database.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def _head() -> str:
    cfg = Config()
    cfg.set_main_option(
        "script_location", str(resources.files("changeover.control") / "migrations")
    )
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def _downgrade(database: Database, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option(
        "script_location", str(resources.files("changeover.control") / "migrations")
    )
    with database.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def _descending_keys(database: Database, index: str) -> list[str]:
    with database.engine.connect() as c:
        rows = c.exec_driver_sql(f"PRAGMA index_xinfo('{index}')").all()
    return [r[2] for r in rows if r[1] >= 0 and r[3]]  # (seqno, cid, name, desc, ...)


def test_on_sqlite_no_later_migration_loses_the_allocation_indexes_descending_keys(
    tmp_path: Path,
) -> None:
    """SQLite's batch mode rebuilds a table and recreates its indexes, and once did so
    without their DESC keys: every later migration, up and down, must keep them."""
    database = Database(f"sqlite:///{tmp_path}/m.db")
    try:
        later = [f"{n:04d}" for n in range(4, int(_head()) + 1)]
        for revision in later:
            _migrate(database, revision)
            for index in ("ix_instances_alloc_fleet", "ix_instances_alloc_profile"):
                got = _descending_keys(database, index)
                assert got == ["version_number", "players"], (revision, index, got)
        for revision in reversed(later[:-1]):
            _downgrade(database, revision)
            for index in ("ix_instances_alloc_fleet", "ix_instances_alloc_profile"):
                got = _descending_keys(database, index)
                assert got == ["version_number", "players"], (revision, index, got)
    finally:
        database.dispose()
