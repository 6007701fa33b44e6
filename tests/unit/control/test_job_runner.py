"""Unit tests for the job runner's pass (``control.jobs.JobRunner.run_once``), on a real
SQLite database holding two small job tables of their own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ColumnElement, Float, event, exists, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from changeover.control.builds.models import JobColumns
from changeover.control.db import Database, db_clock, now
from changeover.control.jobs import JobKind, JobRunner
from changeover.control.states import JobState
from tests_helpers import wait_for


class _Base(DeclarativeBase):
    pass


class Chore(JobColumns, _Base):
    __tablename__ = "chores"
    id: Mapped[int] = mapped_column(primary_key=True)
    wake_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Errand(JobColumns, _Base):
    __tablename__ = "errands"
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    _Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


def _add(db: Database, model: Any, status: JobState, **extra: Any) -> int:
    with db.write() as s:
        row = model(status=status, created_at=now(), updated_at=now(), created_by="test", **extra)
        s.add(row)
        s.flush()
        return int(row.id)


def _kinds(db: Database, ran: list[tuple[str, int]]) -> list[JobKind]:
    def chores_due() -> ColumnElement[bool]:
        return exists().where(Chore.status == JobState.PENDING, Chore.wake_at <= now())

    def promote_chores() -> None:
        with db.write() as s:
            s.execute(
                update(Chore)
                .where(Chore.status == JobState.PENDING, Chore.wake_at <= now())
                .values(status=JobState.QUEUED)
            )

    return [
        JobKind("chore", Chore, lambda i: ran.append(("chore", i)), promote_chores, chores_due),
        JobKind("errand", Errand, lambda i: ran.append(("errand", i))),
    ]


def _transactions(db: Database) -> list[str]:
    """What each transaction begun from now on does: ``read`` or ``write``, then a
    ``query`` per statement."""
    seen: list[str] = []

    def on_begin(conn: Any) -> None:
        seen.append("write" if conn.get_execution_options().get("write") else "read")

    def on_execute(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's own, sent as its transaction begins
            seen.append("query")

    event.listen(db.engine, "begin", on_begin)
    event.listen(db.engine, "before_cursor_execute", on_execute)
    return seen


def test_an_idle_pass_asks_every_kind_in_one_statement(db: Database) -> None:
    ran: list[tuple[str, int]] = []
    runner = JobRunner(db, _kinds(db, ran), poll_s=0.5, lease_s=60)
    runner.run_once()  # the first pass also recovers expired leases
    _add(db, Chore, JobState.PENDING, wake_at=now() + 3600)  # waiting, not due
    seen = _transactions(db)
    assert runner.run_once() is False
    assert seen == ["read", "query"] and ran == []


def test_a_job_promoted_in_a_pass_runs_in_that_pass(db: Database) -> None:
    ran: list[tuple[str, int]] = []
    runner = JobRunner(db, _kinds(db, ran), poll_s=0.5, lease_s=60)
    due = _add(db, Chore, JobState.PENDING, wake_at=now() - 1)
    assert runner.run_once() is True
    assert ran == [("chore", due)]
    with db.read() as s:  # leased by this runner (the handler writes the final status)
        row = s.get_one(Chore, due)
        assert (row.status, row.lease_owner) == (JobState.RUNNING, runner.owner)


def test_queued_jobs_run_one_a_pass_in_kind_and_id_order(db: Database) -> None:
    ran: list[tuple[str, int]] = []
    runner = JobRunner(db, _kinds(db, ran), poll_s=0.5, lease_s=60)
    errand = _add(db, Errand, JobState.QUEUED)
    chores = [_add(db, Chore, JobState.QUEUED) for _ in range(2)]
    while runner.run_once():
        pass
    assert ran == [("chore", chores[0]), ("chore", chores[1]), ("errand", errand)]


def test_a_job_another_worker_leased_first_is_not_run_twice(db: Database) -> None:
    ran: list[tuple[str, int]] = []
    kinds = _kinds(db, ran)
    runner = JobRunner(db, kinds, poll_s=0.5, lease_s=60)
    job = _add(db, Errand, JobState.QUEUED)
    # Another replica claims it between this pass's read and its claim.
    other = JobRunner(db, kinds, poll_s=0.5, lease_s=60)
    assert other._claim(kinds[1], job) == job
    assert runner._claim(kinds[1], job) is None
    assert runner.run_once() is False and ran == []


def test_leases_are_on_the_databases_clock_not_the_workers(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica whose machine clock runs an hour ahead does not take a job whose lease,
    by the database's clock, is still running; one whose lease ran out it runs again."""
    ran: list[tuple[str, int]] = []
    kinds = _kinds(db, ran)
    holder = JobRunner(db, kinds, poll_s=0.5, lease_s=60)
    leased = _add(db, Errand, JobState.QUEUED)
    assert holder._claim(kinds[1], leased) == leased
    with db.read() as s:
        clock = db_clock(s)
        until = s.get_one(Errand, leased).lease_until
    assert until is not None and clock + 55 < until <= clock + 60
    expired = _add(db, Errand, JobState.RUNNING, lease_owner="gone", lease_until=clock - 1)
    ahead = time.time() + 3600
    monkeypatch.setattr("changeover.control.db.time.time", lambda: ahead)
    skewed = JobRunner(db, kinds, poll_s=0.5, lease_s=60)
    while skewed.run_once():
        pass
    assert ran == [("errand", expired)]


def test_a_running_job_keeps_its_lease_past_the_lease_time(db: Database) -> None:
    """The worker renews its job's lease while the handler runs, so another worker's
    passes, through several lease times, never take the job; once its worker is gone
    (nothing renews), the next pass after the lease runs it again."""
    ran: list[tuple[str, int]] = []
    lease_s = 0.6
    other_passes: list[bool] = []

    def long_job(job_id: int) -> None:
        other = JobRunner(db, _kinds(db, ran), poll_s=0.1, lease_s=lease_s)
        until = time.monotonic() + 4 * lease_s
        while time.monotonic() < until:
            other._recovered_at = 0.0  # look for expired leases on every pass
            other_passes.append(other.run_once())
            time.sleep(lease_s / 10)
        ran.append(("long", job_id))

    kinds = [JobKind("errand", Errand, long_job)]
    job = _add(db, Errand, JobState.QUEUED)
    assert JobRunner(db, kinds, poll_s=0.1, lease_s=lease_s).run_once() is True
    assert ran == [("long", job)] and len(other_passes) > 20 and not any(other_passes)
    # Its worker died with the job still running: nobody renews the lease any more.
    with db.write() as s:
        s.get_one(Errand, job).status = JobState.RUNNING
    later = JobRunner(db, _kinds(db, ran), poll_s=0.1, lease_s=lease_s)
    wait_for(later.run_once, 10, "another worker to run the job whose lease ran out")
    assert ran[-1] == ("errand", job)


def test_an_idle_runner_wakes_for_its_periodic_tasks_not_only_to_poll(db: Database) -> None:
    ticks: list[float] = []
    runner = JobRunner(
        db, _kinds(db, []), poll_s=60, lease_s=60, periodic=[(0.05, lambda: ticks.append(1))]
    )
    runner.start()
    try:
        # With only its 60 s poll to wake it, the task would have run once by now.
        wait_for(lambda: len(ticks) >= 3, 20, "three runs of a task due every 0.05 s")
    finally:
        runner.stop()
