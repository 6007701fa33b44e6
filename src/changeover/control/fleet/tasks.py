"""The fleet's background work: profile switches and build machine trials, one step per
run (see ``switches`` and ``trials``), and the deletion of sessions and instances past
their retention (``prune_history``).

A run takes one step and, unless the switch (trial) is over, parks the job in Pending with a
``wake_at``; ``promote`` queues it again when that time comes. Steps are idempotent
(each reads the whole fleet from the database), so a crash between two only repeats a
read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import ColumnElement, exists, update
from sqlalchemy.orm import Session

from changeover.control.builds.models import Trial
from changeover.control.db import Database, now
from changeover.control.fleet import services, sessions, switches, trials
from changeover.control.fleet.models import ProfileSwitch
from changeover.control.jobs import JobKind
from changeover.control.states import JobState
from changeover.errors import ChangeoverError


class _Outcome(Protocol):
    """What a step says (``switches.Outcome``, ``trials.Outcome``)."""

    @property
    def done(self) -> bool: ...

    @property
    def failure(self) -> str | None: ...


def _stepped(
    db: Database,
    name: str,
    model: Any,
    step: Callable[[Session, Any, float], _Outcome],
    wait_s: float,
) -> JobKind:
    """A job that takes one ``step`` per run and waits in Pending ``wait_s`` between
    steps (``model`` has ``status``, ``updated_at`` and ``wake_at``)."""

    def run(job_id: int) -> None:
        with db.write() as s:
            row = s.get_one(model, job_id)
            if row.status != JobState.RUNNING:
                return
            t = now()
            outcome = step(s, row, t)
            row.updated_at = t
            if not outcome.done:
                row.status = JobState.PENDING
                row.wake_at = t + wait_s
            elif outcome.failure is None:
                row.status = JobState.COMPLETED
        # Raised after the commit, so what the step recorded (a revert, a verdict) is kept.
        if outcome.failure is not None:
            raise ChangeoverError(outcome.failure)

    def due() -> ColumnElement[bool]:
        return exists().where(model.status == JobState.PENDING, model.wake_at <= now())

    def promote() -> None:
        with db.write() as s:
            s.execute(
                update(model)
                .where(model.status == JobState.PENDING, model.wake_at <= now())
                .values(status=JobState.QUEUED, updated_at=now())
            )

    return JobKind(name, model, run, promote=promote, waiting=due)


def build_job_kinds(db: Database) -> list[JobKind]:
    return [
        _stepped(db, "profile-switch", ProfileSwitch, switches.step, switches.STEP_WAIT_S),
        _stepped(db, "trial", Trial, trials.step, trials.STEP_WAIT_S),
    ]


PRUNE_EVERY_S = 60.0
PRUNE_BATCH = 1000
"""Rows deleted per transaction: small enough that SQLite's one writer (an allocation
batch) never waits long behind it."""
PRUNE_MAX_BATCHES = 100
"""Batches per table per pass at most; a larger backlog goes on in the next pass, so that
the job runner's other periodic tasks are not held up for long."""


@dataclass(frozen=True)
class Pruned:
    sessions: int
    instances: int


def prune_history(db: Database, retention_s: float) -> Pruned:
    """Delete the sessions that ended, then the instances that stopped, more than
    ``retention_s`` ago, a batch per transaction. Under load the sessions table would
    otherwise grow by every allocation (2,000 a second is 170 million rows a day), and
    the instances table by every instance a switch or patch job replaces. Sessions go
    first: an instance goes only once no session names it."""
    cutoff = now() - retention_s
    return Pruned(
        sessions=_in_batches(db, sessions.prune, cutoff),
        instances=_in_batches(db, services.prune_instances, cutoff),
    )


def _in_batches(db: Database, prune: Callable[[Session, float, int], int], cutoff: float) -> int:
    deleted = 0
    for _ in range(PRUNE_MAX_BATCHES):
        with db.write() as s:
            n = prune(s, cutoff, PRUNE_BATCH)
        deleted += n
        if n < PRUNE_BATCH:
            break
    return deleted
