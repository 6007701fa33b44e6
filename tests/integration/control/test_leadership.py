"""One leader among replicas (``control.leadership``), on SQLite and PostgreSQL: the lease
is taken by one replica at a time, handed over when it runs out or is given up, and a
leader that lost it commits nothing more (the fence), even a leader that still believes it
leads. The replicas here are ``Leadership`` objects on one database, as two processes'
would be; ``test_replicas`` runs real server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from changeover.control.db import Database, db_clock
from changeover.control.jobs import JobRunner
from changeover.control.leadership import (
    CONTROL,
    LeaderLease,
    Leadership,
    LostLeadership,
    current_leader,
    replica_name,
)
from tests_helpers import wait_for


def _replica(db: Database, name: str, lease_s: float = 60.0) -> Leadership:
    return Leadership(db, lease_s=lease_s, attempt_every_s=min(1.0, lease_s / 3), name=name)


def _probe(db: Database, name: str) -> None:
    """A write of leader work: a row in the lease table under another name."""
    with db.write() as s:
        s.execute(insert(LeaderLease).values(name=name, holder="", holder_name="", term=0))


def _probes(db: Database) -> set[str]:
    with db.read() as s:
        return set(s.scalars(select(LeaderLease.name).where(LeaderLease.name != CONTROL)))


def test_one_replica_leads_and_keeps_its_term(db: Database) -> None:
    a, b = _replica(db, "a"), _replica(db, "b")
    assert a.attempt() is True and a.term == 1
    assert b.attempt() is False and b.term is None
    assert a.attempt() is True and a.term == 1  # kept, not taken again
    with db.read() as s:
        assert current_leader(s) == ("a", 1, True)


def test_the_lease_runs_out_and_the_old_leader_is_fenced(db: Database) -> None:
    a, b = _replica(db, "a", lease_s=0.5), _replica(db, "b", lease_s=0.5)
    assert a.attempt()
    with a.fenced():
        _probe(db, "a-leading")
    # b takes over once a's lease ran out (a renews no more: as if it were paused).
    wait_for(b.attempt, 10, "b to take the lease that a stopped renewing")
    assert b.term == 2
    # a's own clock tells it too that its lease ran out: it refuses before asking.
    assert a.term is None
    with pytest.raises(LostLeadership), a.fenced():
        _probe(db, "a-after-term-1")
    # The fence itself: a paused leader can wake up believing it still leads (its check of
    # the time came before the pause). The database refuses it all the same.
    a._term, a._held_until = 1, time.monotonic() + 60  # what it believed before the pause
    with pytest.raises(LostLeadership, match="no longer leads"), a.fenced():
        _probe(db, "a-paused")
    assert a.term is None  # and it knows now
    with b.fenced():
        _probe(db, "b-leading")
    assert _probes(db) == {"a-leading", "b-leading"}


def test_stepping_down_hands_over_at_once(db: Database) -> None:
    a, b = _replica(db, "a"), _replica(db, "b")
    assert a.attempt() and not b.attempt()
    a.step_down()
    assert a.term is None
    assert b.attempt() and b.term == 2


def test_a_crashed_leader_of_this_machine_is_replaced_at_once(db: Database) -> None:
    """A control plane restarted after a crash on the same machine takes its lease back
    without waiting for it to run out; a live process's lease is left alone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    crashed = _replica(db, f"{socket.gethostname()}:{dead.pid} http://x")
    assert crashed.attempt()
    restarted = _replica(db, replica_name("http://x"))
    assert restarted.attempt() and restarted.term == 2
    # A lease held by another live process of this machine (our parent) is not taken.
    alive = _replica(db, f"{socket.gethostname()}:{os.getppid()}")
    restarted.step_down()
    assert alive.attempt()
    assert not _replica(db, replica_name()).attempt()


def test_a_fenced_transaction_holds_off_the_taker(pg_url: str) -> None:
    """On PostgreSQL, a leader's transaction that passed the fence delays the next term
    until it commits: its writes land within its own term, never beside the next one's."""
    db = Database(pg_url)
    db.migrate()
    try:
        a, b = _replica(db, "a", lease_s=0.5), _replica(db, "b", lease_s=0.5)
        assert a.attempt()
        took: list[bool] = []

        def take() -> bool:
            try:
                return b.attempt()
            except OperationalError:  # its wait for the lease's row timed out: again
                return False

        taker = threading.Thread(target=lambda: took.append(bool(wait_for(take, 30, "b"))))
        with a.fenced(), db.write() as s:
            s.execute(insert(LeaderLease).values(name="a-slow", holder="", holder_name=""))
            me = s.scalar(text("select pg_backend_pid()"))
            taker.start()

            def blocked_by_me() -> bool:
                with db.read() as r:
                    waiting = r.scalar(
                        text(
                            "select count(*) from pg_stat_activity"
                            " where :me = any(pg_blocking_pids(pid))"
                        ),
                        {"me": me},
                    )
                return bool(waiting)

            wait_for(blocked_by_me, 30, "b's attempt to wait for a's transaction")
            expires = s.scalar(select(LeaderLease.expires_at).where(LeaderLease.name == CONTROL))
            wait_for(lambda: _clock(db) > (expires or 0), 30, "a's lease to run out")
            assert took == [] and taker.is_alive()  # still held off, past the lease
            committed_before = db_clock(s)
        taker.join(30)
        assert took == [True]
        with db.read() as r:
            assert current_leader(r)[:2] == ("b", 2)
            lease = r.get(LeaderLease, CONTROL)
            assert lease is not None and lease.acquired_at > committed_before
            assert r.scalar(select(func.count()).where(LeaderLease.name == "a-slow")) == 1
    finally:
        db.dispose()


def test_the_lease_is_kept_while_every_pooled_connection_is_busy(pg_url: str) -> None:
    """On PostgreSQL, a server answering many syncs at once can have every connection of its
    pool checked out; the lease's renewal (and the heartbeats', the other urgent write)
    must not wait behind them, or the leader loses its lease to its own load."""
    db = Database(pg_url)
    db.migrate()
    held = []
    try:
        a = _replica(db, "a", lease_s=60)
        assert a.attempt()
        pool = db.engine.pool
        limit = pool.size() + pool._max_overflow  # type: ignore[attr-defined]
        held = [db.engine.connect() for _ in range(limit)]
        assert pool.checkedout() == limit  # nothing left for an ordinary transaction
        assert a.attempt() and a.held  # renewed on a connection of its own
        with db.write(urgent=True) as s:
            assert s.scalar(text("select 1")) == 1
        assert pool.checkedout() == limit
    finally:
        for c in held:
            c.close()
        db.dispose()


def test_a_leader_paused_in_a_transaction_cannot_hold_off_the_next_term(pg_url: str) -> None:
    """A leader paused inside a fenced transaction holds the lease's lock; PostgreSQL ends
    that transaction once it idled ``stuck_after_s``, the next term begins, and the paused
    leader's writes are lost with its transaction."""
    db = Database(pg_url)
    db.migrate()
    try:
        a = Leadership(db, lease_s=0.5, attempt_every_s=0.1, name="a", stuck_after_s=1.0)
        b = _replica(db, "b", lease_s=0.5)
        assert a.attempt()
        with pytest.raises(DBAPIError, match="idle-in-transaction"), a.fenced(), db.write() as s:  # noqa: PT012
            s.execute(insert(LeaderLease).values(name="a-paused", holder="", holder_name=""))

            def take() -> bool:
                try:
                    return b.attempt()
                except OperationalError:
                    return False

            wait_for(take, 30, "b to take the lease from a leader paused mid-transaction")
        with db.read() as r:
            assert current_leader(r)[:2] == ("b", 2)
        assert _probes(db) == set()
    finally:
        db.dispose()


def _clock(db: Database) -> float:
    with db.read() as s:
        return db_clock(s)


def test_the_runner_does_leader_work_only_while_it_leads(db: Database) -> None:
    a, b = _replica(db, "a"), _replica(db, "b")
    done: list[str] = []
    elected: list[int | None] = []

    def chore() -> None:
        _probe(db, f"chore-{len(done)}")
        done.append("chore")

    runner = JobRunner(
        db,
        [],
        poll_s=0.5,
        lease_s=60,
        leader_periodic=[(0.0, chore)],
        leadership=a,
        on_elected=lambda: elected.append(a.term),
    )
    assert b.attempt()
    runner.run_once()
    assert done == [] and elected == []  # a follower: no leader work
    b.step_down()
    assert a.attempt()
    runner.run_once()
    runner.run_once()
    assert done == ["chore", "chore"] and elected == [2]  # told once, per term
    # Leader work after the lease was lost commits nothing.
    with db.write() as s:
        s.execute(LeaderLease.__table__.update().values(expires_at=0.0))
    assert b.attempt()
    a._term, a._held_until = 2, time.monotonic() + 60  # a believes it still leads
    runner.run_once()
    assert done == ["chore", "chore"] and _probes(db) == {"chore-0", "chore-1"}
