"""Custom steps (method 6): the job spec's own list of steps, run in order.

The list was checked when the spec was built (``steps.validate_steps``); here each step
is one small handler that returns True once it is complete, and ``progress.step`` is the
index of the step under way (``progress.phase_since`` is when it began). Before the first
step, allocation is held on the old builds (new weight 0), so no player reaches a new
instance until a ``switch_allocation`` step says so. The job completes after the last step.

Seed 004's wish list is expressible as-is: ``start_new``, ``wait_healthy``, ``run_check``
(through a private path: the check runs before any player is allowed in), ``stop_old`` (a
save-acknowledged handoff: each busy old server is asked to save and is stopped on its
"state saved", or once its stop timeout has passed: the job's ``stop.timeout_s``, else its
profile's ``stop_timeout_s``), ``switch_allocation`` weight 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from changeover.control.patchjobs.model import (
    Decision,
    JobProgress,
    JobSpec,
    JobStatus,
)
from changeover.control.patchjobs.steps import CustomStep, StepKind
from changeover.control.patchjobs.strategies.common import (
    Health,
    all_gone,
    gate_members,
    notify,
    pause,
    retire,
    run_check,
    start_key,
    start_replacement,
    stop,
    switch,
)
from changeover.control.patchjobs.strategies.lifecycle import START, run
from changeover.control.patchjobs.strategies.memo import Instances, Memo
from changeover.control.patchjobs.strategies.tick import Tick

Handler = Callable[[Tick, CustomStep, str], bool]
DEFAULT_CHECK_TIMEOUT_S = 300.0


def plan(
    spec: JobSpec,
    progress: JobProgress,
    instances: Instances,
    now: float,
    memo: Memo | None = None,
) -> Decision:
    """The custom job's next actions (see the module docstring)."""
    return run(spec, progress, instances, now, _step, memo)


def _step(t: Tick) -> None:
    if t.phase != START:
        return
    switch(t, "hold", 0.0)
    steps = t.spec.steps
    if t.step >= len(steps):
        t.finish(JobStatus.COMPLETED, f"all {len(steps)} steps done")
        return
    s = steps[t.step]
    t.reason = f"step {t.step + 1} of {len(steps)}: {s.kind.value}"
    if HANDLERS[s.kind](t, s, f"s{t.step}"):
        t.goto(START, t.step + 1)


def _start_new(t: Tick, s: CustomStep, label: str) -> bool:
    k = math.ceil(s.share * len(t.selection) - 1e-9)
    for m in t.selection[:k]:
        start_replacement(t, m)
    return True


def _wait_healthy(t: Tick, s: CustomStep, label: str) -> bool:
    started = [m for m in t.selection if t.done(start_key(t, m))]
    deadline_s = s.timeout_s if s.timeout_s is not None else t.spec.rolling.healthy_deadline_s
    return gate_members(t, started, deadline_s) is Health.HEALTHY


def _run_check(t: Tick, s: CustomStep, label: str) -> bool:
    timeout_s = s.timeout_s if s.timeout_s is not None else DEFAULT_CHECK_TIMEOUT_S
    return run_check(t, t.key(label, "check"), s.command, timeout_s)


def _switch(t: Tick, s: CustomStep, label: str) -> bool:
    switch(t, label, s.weight)
    return True


def _notify(t: Tick, s: CustomStep, label: str) -> bool:
    assert s.deadline_s is not None  # validate_steps requires it
    deadline = t.phase_since + s.deadline_s
    for m in t.selection:
        old = t.alive(m.instance_id)
        if old is not None and old.players > 0:
            key = t.key(label, "notice", m.instance_id)
            notify(t, old, key, s.reason or "this server will shut down", deadline)
    return True


def _drain(t: Tick, s: CustomStep, label: str) -> bool:
    ids = [m.instance_id for m in t.selection]
    for i in ids:
        retire(t, i, label, s.reason or "replaced by the new build", s.deadline_s)
    return all_gone(t, ids)


def _stop_old(t: Tick, s: CustomStep, label: str) -> bool:
    """Save-acknowledged handoff, then stop (see the module docstring)."""
    for m in t.selection:
        old = t.alive(m.instance_id)
        if old is None or t.stopped(m.instance_id):
            continue
        deadline = t.phase_since + t.spec.stop_wait_s(m.version_id)
        if old.players <= 0:
            stop(t, old, label, "replaced by the new build; no players", require_empty=True)
            continue
        key = t.key(label, "handoff", m.instance_id)
        notify(t, old, key, s.reason or "save now: this server is being replaced", deadline)
        saved = old.state_saved_at is not None and old.state_saved_at >= t.issued[key]
        if saved or t.now >= deadline:
            why = "state saved" if saved else "no state-saved acknowledgment in time"
            stop(t, old, label, f"handoff to the new build: {why}", require_empty=False)
        else:
            t.wake(deadline)
    return all_gone(t, [m.instance_id for m in t.selection])


def _pause(t: Tick, s: CustomStep, label: str) -> bool:
    return pause(t, t.key(label, "pause"), s.reason or f"paused at step {t.step + 1}")


HANDLERS: dict[StepKind, Handler] = {
    StepKind.START_NEW: _start_new,
    StepKind.WAIT_HEALTHY: _wait_healthy,
    StepKind.RUN_CHECK: _run_check,
    StepKind.SWITCH_ALLOCATION: _switch,
    StepKind.NOTIFY: _notify,
    StepKind.DRAIN: _drain,
    StepKind.STOP_OLD: _stop_old,
    StepKind.PAUSE: _pause,
}

__all__ = ["HANDLERS", "plan"]
