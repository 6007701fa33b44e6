"""The life of every patch job around its method: start, stage, cancel, deadline, revert.

``run`` is what each method's ``plan`` calls with its own ``step`` function:

    pending ──start──▶ stage ──all hosts staged──▶ start … (the method's phases) … done
       │                 │ (not staged within progress_deadline: failed, nothing changed)
       │ cancel          │ cancel: revert ▶ rollback phase   wrap-up ▶ cancelled, as is
       ▼                 ▼
    cancelled      a failed health gate ▶ rollback (auto_revert) ──▶ rolled back
    (never ran)    max run time passed  ▶ finalized by force, instances as they are

At start the selection (the instances of the job's fleets on an old build) is frozen into
``progress.selection``: an instance started later is not the job's business. A job with a
client release declares its default client ranges then (``DeclareClientRange``), and
releases the client when it completes (``Tick.finish``; see ``client_release``). Within one
pass, a phase that ends hands over to the next at once (``MAX_HOPS`` bounds the chain),
so a job never waits a tick for nothing.

Revert (``rollback`` after a failed gate, ``cancel-revert`` after a cancel): allocation
goes back to the old builds; drained old instances are taken back; every old instance the
job stopped is started again on its host (the old build is still staged) and must pass
the health gate; only then are the job's new instances retired like any other (stopped
when empty, drained with notices until the deadline otherwise). If the old build cannot
start again, the job fails and leaves the new instances running rather than nothing.

With exclusive state (``JobSpec.exclusive_state``: the old or the new build's profile says
so) the old build cannot start beside a new instance: it would wait for the new one's
state slot for ever. There the order is the other way round: the member's new instance is
retired first (stopped when empty, drained otherwise; never with a hard kill, so it saves
its state), and once it and the old instance are gone the old build starts on the same
slot (its StartInstance replaces the new instance, or the old one when none was started),
opening the state the new one saved. An instance still not gone ``healthy_deadline_s``
after its stop timeout has passed fails the revert the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from changeover.control.patchjobs.actions import (
    DeclareClientRange,
    StageBuild,
    StartInstance,
    Undrain,
)
from changeover.control.patchjobs.model import (
    PENDING,
    CancelMode,
    Decision,
    InstanceView,
    JobProgress,
    JobSpec,
    JobStatus,
    Member,
)
from changeover.control.patchjobs.schedule import run_time_exceeded, stage_key
from changeover.control.patchjobs.states import DRAINING, STOPPED
from changeover.control.patchjobs.strategies.common import (
    CANCEL_REVERT,
    MAIN,
    REVERT_PHASES,
    Health,
    all_gone,
    describe,
    gate,
    retire,
    start_key,
    start_revert,
    switch,
)
from changeover.control.patchjobs.strategies.memo import Instances, Memo
from changeover.control.patchjobs.strategies.tick import Tick

StepFn = Callable[[Tick], None]
STAGE: Final = "stage"
START: Final = "start"
"""The first phase of every method."""
MAX_HOPS: Final = 64


def run(
    spec: JobSpec,
    progress: JobProgress,
    instances: Instances,
    now: float,
    step: StepFn,
    memo: Memo | None = None,
) -> Decision:
    """One planning pass of a job whose method moves it on with ``step`` (``memo``: what
    earlier passes of the job found settled, ``strategies.memo``)."""
    if progress.status.terminal:
        return Decision((), progress, None)
    t = Tick(spec, progress, instances, now, memo)
    if t.phase == PENDING:
        if progress.cancel is not None:
            t.finish(JobStatus.CANCELLED, "cancelled before it started: it never ran")
            return t.decision()
        _begin(t)
    elif progress.cancel is not None and t.phase not in REVERT_PHASES:
        _cancel(t, progress.cancel)
    if not t.status.terminal and run_time_exceeded(spec, t.started_at, now):
        t.finish(
            JobStatus.FINALIZED_BY_FORCE,
            f"max run time of {spec.max_run_time_s:g} s passed in phase {t.phase}: "
            f"{describe(t)}; finalized by force, instances left as they are",
        )
    for _ in range(MAX_HOPS):
        if t.status.terminal:
            break
        where = (t.phase, t.step)
        if t.phase == STAGE:
            _stage(t)
        elif t.phase in REVERT_PHASES:
            _revert(t)
        else:
            step(t)
        if (t.phase, t.step) == where:
            break
    if spec.max_run_time_s is not None and t.started_at is not None:
        t.wake(t.started_at + spec.max_run_time_s)
    return t.decision()


def _begin(t: Tick) -> None:
    new_of = t.spec.new_version_of
    t.selection = tuple(
        Member(i.instance_id, i.fleet_id, i.host, i.region, i.version_id, new_of[i.version_id])
        for i in sorted(t.instances.values(), key=lambda i: i.instance_id)
        if t.spec.selects(i) and not i.gone and i.desired != STOPPED
    )
    t.started_at = t.now
    release = t.spec.client_release
    if release is not None and release.compat:
        # Before any new server can start: the ranges allocation reads (seed 002).
        t.emit(
            DeclareClientRange(
                t.key(MAIN, "client-range"),
                tuple(sorted(t.spec.old_versions)),
                tuple(sorted(t.spec.new_versions)),
                release.image_id,
                release.branch,
                release.client_version,
            )
        )
    if not t.selection:
        t.finish(
            JobStatus.COMPLETED, "no instance of these fleets runs an old build: nothing to do"
        )
        return
    t.status, t.reason = JobStatus.RUNNING, f"started with {len(t.selection)} instances"
    t.goto(STAGE)


def _cancel(t: Tick, mode: CancelMode) -> None:
    if mode is CancelMode.WRAP_UP:
        t.finish(JobStatus.CANCELLED, f"cancelled and wrapped up: {describe(t)}, left as they are")
    elif t.phase == STAGE:
        t.finish(JobStatus.CANCELLED, "cancelled before any instance was changed")
    else:
        start_revert(t, "cancelled by an operator", cancel=True)


def _stage(t: Tick) -> None:
    targets = sorted({(m.host, m.new_version_id) for m in t.selection})
    for host, version in targets:
        t.emit(StageBuild(stage_key(t.spec.job_id, host, version), host, version))
    missing = sorted({host for host, version in targets if (host, version) not in t.given.staged})
    if not missing:
        t.goto(START)
        return
    limit = t.spec.rolling.progress_deadline_s
    if t.now >= t.phase_since + limit:
        t.finish(
            JobStatus.FAILED,
            f"the new build was not staged on {', '.join(missing)} within {limit:g} s; "
            "no instance was changed",
        )
        return
    t.reason = f"staging the new build on {len(missing)} host(s): {', '.join(missing)}"
    t.wake(t.phase_since + limit)


def _revert(t: Tick) -> None:
    switch(t, "revert", 0.0)
    pending: list[Member] = []
    failed: list[Member] = []
    stuck: list[Member] = []
    for m in t.selection:
        if t.alive(m.instance_id) is not None and not t.stopped(m.instance_id):
            if t.draining(m.instance_id):
                t.emit(Undrain(t.key("revert", "undrain", m.instance_id), m.instance_id))
            continue
        # The job stopped this old instance: run the old build there again first.
        key = t.key("revert", "start", m.instance_id)
        new = t.launched(start_key(t, m))
        replaces = new.instance_id if new else None
        if t.spec.exclusive_state(m) and not t.done(key):
            way = _make_way(t, m, new)
            if way is not Health.HEALTHY:
                (stuck if way is Health.FAILED else pending).append(m)
                continue
            if replaces is None:  # none was started: the old instance's slot
                replaces = m.instance_id
        t.emit(StartInstance(key, m.host, m.fleet_id, m.version_id, replaces))
        health = gate(t, key, f"healthy/revert/{m.instance_id}", t.spec.rolling.healthy_deadline_s)
        if health is Health.FAILED:
            failed.append(m)
        elif health is Health.PENDING:
            pending.append(m)
    cause = t.reason
    if failed or stuck:
        why = []
        if stuck:
            hosts = ", ".join(sorted({m.host for m in stuck}))
            why.append(f"revert could not stop the instances holding the state on {hosts}")
        if failed:
            hosts = ", ".join(sorted({m.host for m in failed}))
            why.append(f"revert could not start the old build again on {hosts}")
        t.finish(JobStatus.FAILED, f"{cause}; {'; '.join(why)}, new instances left running")
        return
    if pending:
        return
    retiring = [i.instance_id for i in t.new_instances() if not i.gone]
    for instance_id in retiring:
        retire(t, instance_id, "revert", "reverting to the old build")
    if all_gone(t, retiring):
        outcome = JobStatus.CANCELLED if t.phase == CANCEL_REVERT else JobStatus.ROLLED_BACK
        t.finish(outcome, f"{cause}; reverted to the old build")


def _make_way(t: Tick, m: Member, new: InstanceView | None) -> Health:
    """Exclusive state (module docstring): retire ``m``'s new instance and wait until it
    and the old one are gone. HEALTHY once the slot is free; FAILED when an instance is
    still there ``healthy_deadline_s`` after its stop timeout has passed."""
    waiting = [i for i in (t.alive(m.instance_id), new) if i is not None and not i.gone]
    if new is not None and not new.gone:
        retire(t, new.instance_id, "revert", "reverting to the old build", keep_state=True)
    for i in waiting:
        asked = [
            at
            for step in (MAIN, "revert")
            if (at := t.issued.get(t.key(step, "stop", i.instance_id))) is not None
        ]
        if not asked or i.desired == DRAINING:
            continue  # draining: its players are waited for until its drain deadline
        give_up = min(asked) + t.spec.stop_wait_s(i.version_id) + t.spec.rolling.healthy_deadline_s
        if t.now >= give_up:
            return Health.FAILED
        t.wake(give_up)
    return Health.PENDING if waiting else Health.HEALTHY


__all__ = ["MAX_HOPS", "STAGE", "START", "StepFn", "run"]
