"""Unit tests for the job runner's pass (``control.jobs.JobRunner.run_once``), on a real
SQLite database holding two small job tables of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ColumnElement, Float, event, exists, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from changeover.control.builds.models import JobColumns
from changeover.control.db import Database, now
from changeover.control.jobs import JobKind, JobRunner
from changeover.control.states import JobState


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
