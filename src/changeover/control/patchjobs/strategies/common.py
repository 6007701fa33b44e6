"""The pieces every method shares: replacements, health gates, drain-and-retire, batch sizes.

Health gate (``gate``): a new instance passes when it has been ready for
``rolling.min_healthy_time_s``; it fails when it is reported failed, stopped or lost, or
is still not healthy (or not even visible) ``deadline_s`` after its StartInstance was
recorded. A pass is recorded as the mark ``healthy/<old instance id>`` and never taken
back, so a later flap does not stall the job (the canary window watches for crashes
instead). ``too_many_failed`` applies ``spec.failure_threshold``; a gate that fails calls
``gate_failed``: roll back when ``auto_revert`` is on (the default), else end as failed
and leave instances as they are.

Drain-and-retire (``retire``), the promise "never stop a server with players before the
deadline, always finish by it":

- no players: stop now, as a compare-and-set on ``players = 0`` (``require_empty``);
- players: drain (allocation sends only friends), deadline = now + ``drain.deadline_s``,
  recorded as an absolute time; notices at ``drain.notice_before_s`` before it (only the
  most imminent one due is sent, so a late wake-up does not send four at once); stopped
  once empty, or at the deadline whatever happens, reporting whether the server
  acknowledged "state saved" after its first notice.

Batch sizes (``batch_limits``), as Kubernetes rounds them: ``max_unavailable`` as a
percentage rounds down (but never below 1, docs/architecture.md), ``max_surge`` rounds up,
so 25 % of 6 instances allows 1 unavailable and 2 extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from changeover.control.patchjobs.actions import (
    MarkDraining,
    Notify,
    Pause,
    RollBack,
    RunCheck,
    StartInstance,
    StopInstance,
    SwitchAllocation,
)
from changeover.control.patchjobs.knobs import RollingKnobs, resolve_amount
from changeover.control.patchjobs.model import InstanceView, JobStatus, Member
from changeover.control.patchjobs.states import FAILED, READY, RUNNING
from changeover.control.patchjobs.strategies.tick import Tick

MAIN = "main"
ROLLBACK = "rollback"
CANCEL_REVERT = "cancel-revert"
REVERT_PHASES = frozenset({ROLLBACK, CANCEL_REVERT})


class Health(Enum):
    PENDING = "pending"
    HEALTHY = "healthy"
    FAILED = "failed"


def batch_limits(knobs: RollingKnobs, n: int) -> tuple[int, int]:
    """(max unavailable, max surge) as instance counts for a selection of ``n``."""
    unavailable = resolve_amount(knobs.max_unavailable, n, round_up=False)
    if isinstance(knobs.max_unavailable, str):
        unavailable = max(1, unavailable)
    surge = resolve_amount(knobs.max_surge, n, round_up=True)
    if unavailable == 0 and surge == 0:
        unavailable = 1  # "0%" surge of a tiny set: still move one at a time
    return min(unavailable, n), min(surge, n)


def start_key(t: Tick, m: Member) -> str:
    return t.key(MAIN, "start", m.instance_id)


def start_replacement(t: Tick, m: Member) -> bool:
    """Start ``m``'s new-build replacement on its host (once)."""
    return t.emit(
        StartInstance(start_key(t, m), m.host, m.fleet_id, m.new_version_id, m.instance_id)
    )


def gate(t: Tick, key: str, mark: str, deadline_s: float) -> Health:
    """Health of the instance started by the StartInstance ``key`` (see module docstring)."""
    if mark in t.marks:
        return Health.HEALTHY
    issued_at = t.issued.get(key)
    if issued_at is None or key in t.new_keys:
        return Health.PENDING  # not started, or started in this very pass
    i = t.launched(key)
    min_s = t.spec.rolling.min_healthy_time_s
    if i is not None and i.healthy(t.now, min_s):
        t.mark(mark, t.now)
        return Health.HEALTHY
    # Not visible yet (its row is still being created) is pending, not failed: only the
    # deadline turns a start that never showed up into a failure.
    if (i is not None and (i.gone or i.state == FAILED)) or t.now >= issued_at + deadline_s:
        return Health.FAILED
    if i is None:
        t.wake(issued_at + deadline_s)
        return Health.PENDING
    if i.state == READY and i.ready_since is not None:
        t.wake(i.ready_since + min_s)
    t.wake(issued_at + deadline_s)
    return Health.PENDING


def gate_members(t: Tick, members: Sequence[Member], deadline_s: float) -> Health:
    """The gate over the replacements of ``members`` (all started): HEALTHY once each is
    healthy or failed within the tolerance; FAILED (and ``gate_failed`` called) beyond it."""
    states = [gate(t, start_key(t, m), f"healthy/{m.instance_id}", deadline_s) for m in members]
    failed = [m.instance_id for m, h in zip(members, states, strict=True) if h is Health.FAILED]
    if too_many_failed(t, len(failed), len(members)):
        ids = ", ".join(map(str, failed))
        gate_failed(
            t, f"{len(failed)} of {len(members)} new instances failed their health gate ({ids})"
        )
        return Health.FAILED
    if Health.PENDING in states:
        waiting = states.count(Health.PENDING)
        t.reason = f"waiting for {waiting} of {len(members)} new instances to become healthy"
        return Health.PENDING
    return Health.HEALTHY


def too_many_failed(t: Tick, failed: int, total: int) -> bool:
    return total > 0 and failed > t.spec.failure_threshold * total


def gate_failed(t: Tick, why: str) -> None:
    """A health gate failed: roll back (auto_revert) or end as failed."""
    if t.spec.rolling.auto_revert:
        start_revert(t, why, cancel=False)
    else:
        t.finish(JobStatus.FAILED, f"{why}; auto_revert is off, instances left as they are")


def start_revert(t: Tick, why: str, *, cancel: bool) -> None:
    t.emit(RollBack(t.key("revert", "rollback"), why))
    t.status, t.reason = JobStatus.ROLLING_BACK, why
    t.goto(CANCEL_REVERT if cancel else ROLLBACK)


def switch(t: Tick, step: str, new_weight: float) -> bool:
    """Send ``new_weight`` of new players to the new builds and the rest to the old."""
    weights: dict[int, float] = {}
    for b in t.spec.builds:
        weights[b.old_version_id] = round(1.0 - new_weight, 6)
        weights[b.new_version_id] = new_weight
    return t.emit(
        SwitchAllocation(t.key(step, "switch"), t.spec.fleet_ids, tuple(sorted(weights.items())))
    )


def available(t: Tick, i: InstanceView | None) -> bool:
    """Serving new players: ready, meant to run, not being drained or stopped."""
    return (
        i is not None
        and i.state == READY
        and i.desired == RUNNING
        and not t.draining(i.instance_id)
        and not t.stopped(i.instance_id)
    )


def stop(
    t: Tick,
    i: InstanceView,
    step: str,
    reason: str,
    *,
    require_empty: bool,
    keep_state: bool = False,
) -> bool:
    """Stop ``i`` with the job's stop method; ``keep_state``: never a hard kill (a job's
    SIGKILL gives way to the profile's own stop signal), so the server saves its state."""
    noticed = t.marks.get(f"noticed/{i.instance_id}")
    saved = noticed is not None and i.state_saved_at is not None and i.state_saved_at >= noticed
    sp = t.spec.stop
    signal = sp.signal if sp.graceful or not keep_state else None
    return t.emit(
        StopInstance(
            key=t.key(step, "stop", i.instance_id),
            instance_id=i.instance_id,
            signal=signal,
            graceful=signal != "SIGKILL",
            timeout_s=sp.timeout_s,
            require_empty=require_empty,
            fallback_deadline=t.deadlines.get(i.instance_id, t.now + t.spec.drain.deadline_s),
            state_saved=saved,
            reason=reason,
        )
    )


def notify(t: Tick, i: InstanceView, key: str, reason: str, deadline: float) -> bool:
    if not t.emit(Notify(key, i.instance_id, reason, deadline)):
        return False
    t.mark(f"noticed/{i.instance_id}", t.now, first=True)
    return True


def retire(
    t: Tick,
    instance_id: int,
    step: str,
    reason: str,
    deadline_s: float | None = None,
    *,
    keep_state: bool = False,
) -> bool:
    """Drain-and-retire (module docstring). True once the stop has been asked for.
    ``keep_state``: as for ``stop``."""
    return _judge(t, instance_id, step, reason, deadline_s, keep_state) is None


def _judge(
    t: Tick,
    instance_id: int,
    step: str,
    reason: str,
    deadline_s: float | None,
    keep_state: bool,
) -> float | None:
    """``retire``: None once the stop has been asked for, else when to look again."""
    i = t.alive(instance_id)
    if i is None or t.stopped(instance_id):
        return None
    if i.players <= 0:
        why = f"{reason}; no players"
        return None if stop(t, i, step, why, require_empty=True, keep_state=keep_state) else t.now
    deadline = t.deadlines.get(instance_id)
    if deadline is None:
        deadline = t.now + (t.spec.drain.deadline_s if deadline_s is None else deadline_s)
        t.emit(MarkDraining(t.key(step, "drain", instance_id), instance_id, deadline, reason))
    if t.now >= deadline:
        why = f"{reason}; drain deadline reached"
        return None if stop(t, i, step, why, require_empty=False, keep_state=keep_state) else t.now
    due = [n for n in t.spec.drain.notice_before_s if t.now >= deadline - n]
    if due:
        n = min(due)
        notify(t, i, t.key(step, f"notice{n:g}", instance_id), reason, deadline)
    later = [deadline - n for n in t.spec.drain.notice_before_s if t.now < deadline - n]
    until = min(later, default=deadline)
    t.wake(until)
    return until


def retire_all(t: Tick, step: str, reason: str) -> tuple[int, float | None]:
    """``retire`` every member of the selection: (how many still run, stopping or not, and
    the latest drain deadline among them). With a memo (``strategies.memo``) only the
    members whose row changed or whose next notice or deadline came are judged again."""
    if t.memo is None:
        left, latest = 0, None
        for m in t.selection:
            _judge(t, m.instance_id, step, reason, None, False)
            if t.alive(m.instance_id) is not None:
                left += 1
                d = t.deadlines.get(m.instance_id)
                latest = d if latest is None or (d is not None and d > latest) else latest
        return left, latest
    roster, new = t.memo.roster(step, t.selection)
    due = roster.ids if new else roster.due(t.memo.changed, t.now)
    for i in sorted(due):
        until = _judge(t, i, step, reason, None, False)
        running = t.alive(i) is not None
        roster.record(i, until, t.deadlines.get(i) if running else None, running)
    wake = roster.next_wake()
    if wake is not None:
        t.wake(wake)
    return len(roster.running), max(roster.deadlines, default=None)


def run_check(t: Tick, key: str, command: str, timeout_s: float) -> bool:
    """Verify the new set with ``command`` (once). True once it passed; a failure or no
    result within ``timeout_s`` fails the gate."""
    ids = tuple(i.instance_id for i in t.new_instances() if not i.gone)
    t.emit(RunCheck(key, command, ids, timeout_s))
    result = t.given.check_results.get(key)
    if result is True:
        return True
    if result is False:
        gate_failed(t, f"verification {command!r} failed against the new instances")
        return False
    deadline = t.issued[key] + timeout_s
    if t.now >= deadline:
        gate_failed(t, f"verification {command!r} gave no result within {timeout_s:g} s")
        return False
    t.reason = f"verifying the new instances with {command!r}"
    t.wake(deadline)
    return False


def pause(t: Tick, key: str, reason: str) -> bool:
    """Wait for an operator: True once a resume (``progress.resumes``) was spent on it."""
    t.emit(Pause(key, reason))
    used = int(t.marks.get("resumes_used", 0))
    if t.given.resumes > used:
        t.mark("resumes_used", used + 1)
        t.status = JobStatus.RUNNING
        return True
    t.status, t.reason = JobStatus.PAUSED, reason
    return False


def all_gone(t: Tick, instance_ids: Sequence[int]) -> bool:
    return all(t.alive(i) is None for i in instance_ids)


def describe(t: Tick) -> str:
    """Where the instances stand, for reasons and reports."""
    old = sum(1 for m in t.selection if t.alive(m.instance_id) is not None)
    new = sum(1 for i in t.new_instances() if not i.gone)
    return f"{old} of {len(t.selection)} old instances and {new} new instances still run"


__all__ = [
    "CANCEL_REVERT",
    "MAIN",
    "REVERT_PHASES",
    "ROLLBACK",
    "Health",
    "all_gone",
    "available",
    "batch_limits",
    "describe",
    "gate",
    "gate_failed",
    "gate_members",
    "notify",
    "pause",
    "retire",
    "retire_all",
    "run_check",
    "start_key",
    "start_replacement",
    "start_revert",
    "stop",
    "switch",
    "too_many_failed",
]
