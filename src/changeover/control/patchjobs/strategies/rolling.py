"""Rolling update (method 2): replace the selection in batches within max_unavailable and
max_surge, each batch healthy before the next, busy instances drained, never stopped.

Each pass of ``roll``:

1. health: every replacement started so far is gated (ready for ``min_healthy_time_s``
   within ``healthy_deadline_s``); more failures than ``failure_threshold`` allows, or no
   replacement turning healthy for ``progress_deadline_s`` while some are pending, fails
   the gate (rollback by default);
2. retire: the old instance of every settled replacement (healthy, or failed within the
   tolerance) is retired: stopped if empty, else drained until empty or its deadline;
3. an old instance drained without a replacement (no surge room) gets its replacement as
   soon as it is stopped;
4. next batch, only when no replacement is pending: walk the members not yet started,
   emptiest first, within the budgets
       surge room       = n + max_surge - (old instances running + new ones started)
       unavailable room = max_unavailable - (n - instances serving new players)
   With surge room, a replacement starts beside the old instance (the old one keeps
   serving until the new one is healthy, then is retired: stopped if empty, drained if
   not). Without, an empty old instance is stopped first and replaced (costs
   unavailability) and a busy one is drained (costs unavailability) and replaced once
   its players are gone or its deadline passed. Instances asked to stop count as gone.
5. done when every member has a settled replacement and its old instance is gone: move
   allocation fully to the new builds and finish.

The availability count is conservative: a replacement only counts once it passed its
gate, an old instance once it is ready, meant to run and not drained.
"""

from __future__ import annotations

from collections.abc import Sequence

from changeover.control.patchjobs.actions import MarkDraining
from changeover.control.patchjobs.model import (
    Decision,
    InstanceView,
    JobProgress,
    JobSpec,
    JobStatus,
    Member,
)
from changeover.control.patchjobs.strategies.common import (
    MAIN,
    Health,
    available,
    batch_limits,
    gate,
    gate_failed,
    retire,
    start_key,
    start_replacement,
    stop,
    switch,
    too_many_failed,
)
from changeover.control.patchjobs.strategies.lifecycle import START, run
from changeover.control.patchjobs.strategies.memo import Instances, Memo
from changeover.control.patchjobs.strategies.tick import Tick

REASON = "replaced by the new build"


def plan(
    spec: JobSpec,
    progress: JobProgress,
    instances: Instances,
    now: float,
    memo: Memo | None = None,
) -> Decision:
    """The rolling update's next actions (see the module docstring)."""
    return run(spec, progress, instances, now, _step, memo)


def _step(t: Tick) -> None:
    if t.phase == START and roll(t, t.selection):
        finish_moved(t, t.selection)


def finish_moved(t: Tick, members: Sequence[Member]) -> None:
    switch(t, MAIN, 1.0)
    t.finish(JobStatus.COMPLETED, f"{len(members)} instances moved to the new build")


def roll(t: Tick, members: Sequence[Member]) -> bool:
    """One pass of the rolling replacement of ``members``; True once all are replaced."""
    rk = t.spec.rolling
    n = len(members)
    health: dict[int, Health] = {}
    for m in members:
        if t.done(start_key(t, m)):
            health[m.instance_id] = gate(
                t, start_key(t, m), f"healthy/{m.instance_id}", rk.healthy_deadline_s
            )
    failed = [i for i, h in health.items() if h is Health.FAILED]
    pending = {i for i, h in health.items() if h is Health.PENDING}
    if too_many_failed(t, len(failed), n):
        ids = ", ".join(map(str, failed))
        gate_failed(t, f"{len(failed)} of {n} new instances failed their health gate ({ids})")
        return False
    if pending:
        # Progress clock: from the last replacement that turned healthy, or from when the
        # job started waiting on the current pending ones (a batch may follow a long wait
        # for players to leave, which is not a lack of progress).
        since = [
            t.phase_since,
            min(t.issued[start_key(t, m)] for m in members if m.instance_id in pending),
        ]
        since += [
            t.marks[f"healthy/{m.instance_id}"]
            for m in members
            if f"healthy/{m.instance_id}" in t.marks
        ]
        last = max(since)
        if t.now >= last + rk.progress_deadline_s:
            gate_failed(t, f"no new instance became healthy in {rk.progress_deadline_s:g} s")
            return False
        t.wake(last + rk.progress_deadline_s)
    for m in members:
        if health.get(m.instance_id) in (Health.HEALTHY, Health.FAILED):
            retire(t, m.instance_id, MAIN, REASON)
        elif (
            m.instance_id not in health
            and t.draining(m.instance_id)
            and retire(t, m.instance_id, MAIN, REASON)
        ):
            # Drained for lack of surge room: its replacement starts once it is stopped.
            start_replacement(t, m)
    if not pending:
        _next_batch(t, members)
    done = all(
        health.get(m.instance_id) in (Health.HEALTHY, Health.FAILED)
        and t.alive(m.instance_id) is None
        for m in members
    )
    if not done:
        left = sum(1 for m in members if t.alive(m.instance_id) is not None)
        t.reason = f"batch {t.step}: {left} of {n} old instances left, {len(pending)} starting"
    return done


def _next_batch(t: Tick, members: Sequence[Member]) -> None:
    n = len(members)
    max_unavailable, max_surge = batch_limits(t.spec.rolling, n)
    running_old = 0
    started_new = 0
    serving = 0
    for m in members:
        old = t.alive(m.instance_id)
        if old is not None and not t.stopped(m.instance_id):
            running_old += 1
            serving += available(t, old)
        if t.done(start_key(t, m)):
            new = t.launched(start_key(t, m))
            if new is None or not (new.gone or t.stopped(new.instance_id)):
                started_new += 1
                serving += f"healthy/{m.instance_id}" in t.marks and available(t, new)
    surge_room = n + max_surge - (running_old + started_new)
    unavailable_room = max_unavailable - (n - serving)
    waiting = [m for m in members if not t.done(start_key(t, m)) and not t.draining(m.instance_id)]
    batch = 0
    for m in sorted(waiting, key=lambda m: (_players(t.alive(m.instance_id)), m.instance_id)):
        old = t.alive(m.instance_id)
        if old is None or t.stopped(m.instance_id):
            if surge_room >= 1:  # gone on its own: already unavailable, needs a new slot
                start_replacement(t, m)
                surge_room, batch = surge_room - 1, batch + 1
            continue
        cost = 1 if available(t, old) else 0
        if surge_room >= 1:
            # Beside the old one: nothing leaves allocation until the new one is healthy
            # (then the old one is retired: stopped if empty, drained if not).
            start_replacement(t, m)
            surge_room, batch = surge_room - 1, batch + 1
        elif unavailable_room >= cost and old.players <= 0:
            stop(t, old, MAIN, f"{REASON}; no players", require_empty=True)
            start_replacement(t, m)
            unavailable_room, batch = unavailable_room - cost, batch + 1
        elif unavailable_room >= cost:
            # No room beside it: drain now, replace once its players are gone.
            deadline = t.now + t.spec.drain.deadline_s
            key = t.key(MAIN, "drain", m.instance_id)
            t.emit(MarkDraining(key, m.instance_id, deadline, REASON))
            unavailable_room, batch = unavailable_room - cost, batch + 1
    if batch:
        t.step += 1


def _players(i: InstanceView | None) -> int:
    return 0 if i is None else i.players


__all__ = ["finish_moved", "plan", "roll"]
