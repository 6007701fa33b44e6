"""Patch jobs (seed 001): move a selection of instances from old builds to new ones.

The pure core, no I/O: ``model`` (the job spec, the instances as observed, the recorded
progress, the decision), ``actions`` (what the reconciler applies, each with an
idempotency key), ``schedule`` (start-time rule, edit lock, pre-stage, queue, max run
time), ``steps`` (a custom job's step list and its checks) and ``strategies`` (one
planner per method). A crash-safe reconciler drives them:

    progress = load(job)                      # desired state and progress live in the DB
    replay(unapplied actions of the job)      # idempotent by key: nothing happens twice
    d = METHODS[spec.method].planner(spec, progress, instances, now)
    with transaction: save(d.progress); save(d.actions as unapplied)   # intent first
    apply(d.actions); mark applied            # then act
    sleep until d.wake_at, an instance of the job changes, or an operator acts

``METHODS`` and ``STATUSES`` feed the ``methods`` and ``statuses`` endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple, Protocol

from changeover.control.patchjobs.model import (
    Decision,
    JobProgress,
    JobSpec,
)
from changeover.control.patchjobs.states import METHOD_NAMES, JobStatus, Method
from changeover.control.patchjobs.strategies import ab, bleedoff, canary, custom, forced, rolling
from changeover.control.patchjobs.strategies.memo import Instances, JobInstances, Memo


class Planner(Protocol):
    def __call__(
        self,
        spec: JobSpec,
        progress: JobProgress,
        instances: Instances,
        now: float,
        memo: Memo | None = None,
    ) -> Decision: ...


class MethodEntry(NamedTuple):
    name: str
    planner: Planner


METHODS: Final[Mapping[int, MethodEntry]] = {
    Method.FORCED: MethodEntry(METHOD_NAMES[Method.FORCED], forced.plan),
    Method.ROLLING: MethodEntry(METHOD_NAMES[Method.ROLLING], rolling.plan),
    Method.AB: MethodEntry(METHOD_NAMES[Method.AB], ab.plan),
    Method.BLEED_OFF: MethodEntry(METHOD_NAMES[Method.BLEED_OFF], bleedoff.plan),
    Method.CANARY: MethodEntry(METHOD_NAMES[Method.CANARY], canary.plan),
    Method.CUSTOM: MethodEntry(METHOD_NAMES[Method.CUSTOM], custom.plan),
}
"""Method id -> (name, planner)."""

STATUSES: Final[Mapping[int, str]] = {int(s): s.label for s in JobStatus}
"""Status code -> name."""


def plan(
    spec: JobSpec,
    progress: JobProgress,
    instances: Instances,
    now: float,
    memo: Memo | None = None,
) -> Decision:
    """The next decision for ``spec`` with the planner of its method; ``memo``: kept by
    the caller from one pass of the job to the next, to skip what cannot have changed
    (``strategies.memo``; the decision is the same without it)."""
    return METHODS[spec.method].planner(spec, progress, instances, now, memo)


def methods_table() -> list[dict[str, object]]:
    """``GET .../methods``: ``[{"id": 1, "name": "Forced deployment"}, …]``."""
    return [{"id": int(k), "name": v.name} for k, v in sorted(METHODS.items())]


def statuses_table() -> list[dict[str, object]]:
    """``GET .../statuses``: ``[{"id": 1, "name": "Scheduled"}, …]``."""
    return [{"id": k, "name": v} for k, v in sorted(STATUSES.items())]


__all__ = [
    "METHODS",
    "STATUSES",
    "Instances",
    "JobInstances",
    "Memo",
    "MethodEntry",
    "Planner",
    "methods_table",
    "plan",
    "statuses_table",
]
