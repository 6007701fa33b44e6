"""The fleet's background work: profile switches, one step per run (see ``switches``),
and the deletion of sessions past their retention (``prune_ended_sessions``).

A run takes one step and, unless the switch is over, parks the job in Pending with a
``wake_at``; ``promote`` queues it again when that time comes. Steps are idempotent
(each reads the whole fleet from the database), so a crash between two only repeats a
read.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, exists, update

from changeover.control.db import Database, now
from changeover.control.fleet import sessions, switches
from changeover.control.fleet.models import ProfileSwitch
from changeover.control.jobs import JobKind
from changeover.control.states import JobState
from changeover.errors import ChangeoverError


def build_job_kinds(db: Database) -> list[JobKind]:
    def run_switch(job_id: int) -> None:
        with db.write() as s:
            sw = s.get_one(ProfileSwitch, job_id)
            if sw.status != JobState.RUNNING:
                return
            t = now()
            outcome = switches.step(s, sw, t)
            sw.updated_at = t
            if not outcome.done:
                sw.status = JobState.PENDING
                sw.wake_at = t + switches.STEP_WAIT_S
            elif outcome.failure is None:
                sw.status = JobState.COMPLETED
        # Raised after the commit, so the revert and the message are kept.
        if outcome.failure is not None:
            raise ChangeoverError(outcome.failure)

    def switches_due() -> ColumnElement[bool]:
        return exists().where(
            ProfileSwitch.status == JobState.PENDING, ProfileSwitch.wake_at <= now()
        )

    def promote_switches() -> None:
        with db.write() as s:
            s.execute(
                update(ProfileSwitch)
                .where(ProfileSwitch.status == JobState.PENDING, ProfileSwitch.wake_at <= now())
                .values(status=JobState.QUEUED, updated_at=now())
            )

    return [
        JobKind(
            "profile-switch",
            ProfileSwitch,
            run_switch,
            promote=promote_switches,
            waiting=switches_due,
        )
    ]


PRUNE_EVERY_S = 60.0
PRUNE_MAX_BATCHES = 100
"""Batches (``sessions.PRUNE_BATCH`` each) per pass at most; a larger backlog goes on in
the next pass, so that the job runner's other periodic tasks are not held up for long."""


def prune_ended_sessions(db: Database, retention_s: float) -> int:
    """Delete the sessions that ended more than ``retention_s`` ago, a batch per
    transaction; how many. Under load, the table would otherwise grow by every allocation
    (2,000 a second is 170 million rows a day)."""
    cutoff = now() - retention_s
    deleted = 0
    batch = sessions.PRUNE_BATCH
    for _ in range(PRUNE_MAX_BATCHES):
        with db.write() as s:
            n = sessions.prune(s, cutoff, batch)
        deleted += n
        if n < batch:
            break
    return deleted
