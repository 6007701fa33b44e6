"""When a patch job may be created, changed, pre-staged, started, and must be finalized.

The rules (seed 001), each a pure function of the job and a clock reading:

- start time: at least ``LEAD_S`` (5 min) ahead when given (``check_start_time``); none
  means "now" (the creation time);
- edits: allowed until ``LEAD_S`` before the start, then only ``emails`` may change
  (``check_edit``), so nothing moves under a job that is pre-staging or running; an edit
  never moves a job to an application of another type, game or utility
  (``check_application_type``);
- pre-stage: at T-5 min the new builds are staged on every host the selection touches
  (``prestage``); the StageBuild keys are the ones the planner uses at start, so a host
  is never asked twice and the switch itself downloads nothing;
- queue: jobs whose footprints (fleet, build) do not overlap run in parallel; otherwise a
  job waits for every overlapping job that is running or comes first (earlier start, then
  lower id) and says which (``queue_decision``);
- max run time: past ``started_at + max_run_time_s`` the planner finalizes the job by force
  (``run_time_exceeded``; ``strategies.lifecycle`` applies it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Final

from changeover.control.patchjobs.actions import StageBuild, make_key
from changeover.control.patchjobs.model import (
    PENDING,
    Decision,
    InstanceView,
    JobProgress,
    JobSpec,
    JobStatus,
)
from changeover.errors import Conflict, InvalidInput
from changeover.times import utc

LEAD_S: Final = 300.0
"""Minimum lead of a scheduled start, the edit lock and the pre-stage time (5 min)."""
EDITABLE_WHEN_LOCKED: Final = frozenset({"emails"})
STARTED: Final = frozenset({JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.ROLLING_BACK})


def check_start_time(requested: float | None, now: float) -> float:
    """The job's start time: ``requested``, or ``now`` when none is given.

    Raises:
        InvalidInput: ``requested`` is less than 5 minutes from ``now``.
    """
    if requested is None:
        return now
    if isinstance(requested, bool) or not isinstance(requested, int | float):
        raise InvalidInput(
            "scheduled_start must be a unix time in seconds", field="scheduled_start"
        )
    if not math.isfinite(requested) or requested < now + LEAD_S:
        ahead = requested - now if math.isfinite(requested) else requested
        raise InvalidInput(
            f"scheduled_start must be at least 5 minutes ({LEAD_S:g} s) from now, "
            f"it is {ahead:.0f} s away; leave it out to start now",
            field="scheduled_start",
            earliest=now + LEAD_S,
        )
    return requested


def edit_locked(start_at: float, now: float) -> bool:
    return now >= start_at - LEAD_S


def check_edit(current: JobSpec, proposed: JobSpec, start_at: float, now: float) -> None:
    """Whether ``current`` may become ``proposed`` at ``now``.

    Raises:
        Conflict: inside the edit lock (5 min before ``start_at``, or later) a field other
            than ``emails`` changes; the error lists the fields and the lock time.
        InvalidInput: another job's id, or a new start time less than 5 min ahead.
    """
    if proposed.job_id != current.job_id:
        raise InvalidInput("job_id cannot change")
    changed = [
        f.name for f in fields(JobSpec) if getattr(current, f.name) != getattr(proposed, f.name)
    ]
    locked = [name for name in changed if name not in EDITABLE_WHEN_LOCKED]
    if locked and edit_locked(start_at, now):
        raise Conflict(
            f"patch job {current.job_id} is locked since {utc(start_at - LEAD_S)} "
            f"(5 minutes before its start): only emails can still change, "
            f"not {', '.join(locked)}",
            job_id=current.job_id,
            fields=locked,
            locked_at=start_at - LEAD_S,
        )
    if "scheduled_start" in changed:
        check_start_time(proposed.scheduled_start, now)


def check_application_type(current: str | None, proposed: str | None) -> None:
    """An edit may move a job to another application only of the same type (seed 001: a
    job for a game never becomes one for a utility, nor the reverse). An application whose
    type is unset counts as a type of its own: it cannot be told apart from either.

    Raises:
        InvalidInput: the types differ (the field is ``application``).
    """
    if current != proposed:
        raise InvalidInput(
            f"application: the job's application is of type {current or 'unset'}; an edit"
            f" cannot move it to an application of type {proposed or 'unset'}",
            field="application",
            current_type=current,
            proposed_type=proposed,
        )


def stage_key(job_id: int, host: str, version_id: int) -> str:
    return make_key(job_id, "stage", "stage", f"{host}:{version_id}")


def stage_targets(spec: JobSpec, instances: Iterable[InstanceView]) -> list[tuple[str, int]]:
    """(host, new build) for every host of the selection, sorted."""
    new_of = spec.new_version_of
    return sorted(
        {(i.host, new_of[i.version_id]) for i in instances if spec.selects(i) and not i.gone}
    )


def prestage(
    spec: JobSpec,
    progress: JobProgress,
    instances: Sequence[InstanceView],
    start_at: float,
    now: float,
) -> Decision:
    """From T-5 min until start: stage the new builds on the hosts the job will touch.

    Before T-5 it only says when to come back; once the job started it does nothing (the
    planner stages any host that joined the selection meanwhile, under the same keys).
    """
    if progress.phase != PENDING or progress.cancel is not None:
        return Decision((), progress, None)
    if now < start_at - LEAD_S:
        return Decision((), progress, start_at - LEAD_S)
    actions = [
        StageBuild(stage_key(spec.job_id, host, version), host, version)
        for host, version in stage_targets(spec, instances)
        if stage_key(spec.job_id, host, version) not in progress.issued
    ]
    issued = {**progress.issued, **{a.key: now for a in actions}}
    after = replace(progress, status=JobStatus.PRESTAGING, issued=issued)
    return Decision(tuple(actions), after, start_at)


def run_time_exceeded(spec: JobSpec, started_at: float | None, now: float) -> bool:
    return (
        spec.max_run_time_s is not None
        and started_at is not None
        and now >= started_at + spec.max_run_time_s
    )


# -- queue -----------------------------------------------------------------------------------


def footprint(spec: JobSpec) -> frozenset[tuple[int, int]]:
    """(fleet, build) pairs the job reads or writes: old builds and the new ones it makes."""
    versions = spec.old_versions | spec.new_versions
    return frozenset((f, v) for f in spec.fleet_ids for v in versions)


@dataclass(frozen=True)
class QueuedJob:
    job_id: int
    start_at: float
    footprint: frozenset[tuple[int, int]]
    status: JobStatus


@dataclass(frozen=True)
class QueueDecision:
    runnable: bool
    waiting_for: tuple[int, ...]
    reason: str


def queue_decision(job: QueuedJob, others: Sequence[QueuedJob], now: float) -> QueueDecision:
    """May ``job`` start at ``now``? Not before its time, nor while an overlapping job
    that is running or comes first is unfinished (``waiting_for`` lists them)."""
    blockers = sorted(
        o.job_id
        for o in others
        if o.job_id != job.job_id
        and not o.status.terminal
        and o.footprint & job.footprint
        and (o.status in STARTED or (o.start_at, o.job_id) < (job.start_at, job.job_id))
    )
    if blockers:
        names = ", ".join(f"job {b}" for b in blockers)
        return QueueDecision(False, tuple(blockers), f"waiting for {names} (same instances)")
    if now < job.start_at:
        return QueueDecision(False, (), f"scheduled to start at {utc(job.start_at)}")
    return QueueDecision(True, (), "runnable")


def status_before_start(decision: QueueDecision, start_at: float, now: float) -> JobStatus:
    """What to show for a job that has not started."""
    if decision.waiting_for:
        return JobStatus.WAITING
    if now >= start_at - LEAD_S:
        return JobStatus.PRESTAGING
    return JobStatus.SCHEDULED


__all__ = [
    "EDITABLE_WHEN_LOCKED",
    "LEAD_S",
    "QueueDecision",
    "QueuedJob",
    "check_application_type",
    "check_edit",
    "check_start_time",
    "edit_locked",
    "footprint",
    "prestage",
    "queue_decision",
    "run_time_exceeded",
    "stage_key",
    "stage_targets",
    "status_before_start",
]
