"""Canary (method 5): a share of capacity on the new build first, watched, then all or none.

start    new-build instances beside ``canary.share`` of the selection (rounded up, at
         least one), spread across regions (one per region in turn)
gate     the canaries healthy (min_healthy_time within healthy_deadline)
window   for ``canary.analysis_window_s`` the canaries are watched: one that crashed
         (restarted, failed, vanished, or is not ready) counts against them; a crash
         rate above ``failure_threshold`` rolls the job back at once
await    only with ``auto_promote`` off: paused until an operator resumes (promotes)
promote  a rolling update of the whole selection with the rolling knobs; the canaries
         are already its first healthy batch, so their old instances go first
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import zip_longest

from changeover.control.patchjobs.model import (
    Decision,
    JobProgress,
    JobSpec,
    Member,
)
from changeover.control.patchjobs.states import READY
from changeover.control.patchjobs.strategies.common import (
    Health,
    gate_failed,
    gate_members,
    pause,
    start_key,
    start_replacement,
    too_many_failed,
)
from changeover.control.patchjobs.strategies.lifecycle import START, run
from changeover.control.patchjobs.strategies.memo import Instances, Memo
from changeover.control.patchjobs.strategies.rolling import finish_moved, roll
from changeover.control.patchjobs.strategies.tick import Tick
from changeover.times import utc


def plan(
    spec: JobSpec,
    progress: JobProgress,
    instances: Instances,
    now: float,
    memo: Memo | None = None,
) -> Decision:
    """The canary's next actions (see the module docstring)."""
    return run(spec, progress, instances, now, _step, memo)


def canaries(spec: JobSpec, members: Sequence[Member]) -> list[Member]:
    """The members that get a canary: ``share`` of them rounded up, regions in turn."""
    k = min(len(members), max(1, math.ceil(spec.canary.share * len(members) - 1e-9)))
    by_region: dict[str, list[Member]] = {}
    for m in members:
        by_region.setdefault(m.region, []).append(m)
    order = [m for row in zip_longest(*(by_region[r] for r in sorted(by_region))) for m in row if m]
    return order[:k]


def _crashed(t: Tick, m: Member) -> bool:
    i = t.launched(start_key(t, m))
    # Not ready covers failed, stopped and lost; restarts catch a crash between two looks.
    return i is None or i.state != READY or i.restarts > 0


def _step(t: Tick) -> None:
    knobs = t.spec.canary
    chosen = canaries(t.spec, t.selection)
    if t.phase == START:
        for m in chosen:
            start_replacement(t, m)
        t.goto("gate")
    elif t.phase == "gate":
        if gate_members(t, chosen, t.spec.rolling.healthy_deadline_s) is Health.HEALTHY:
            t.mark("window", t.now)
            t.goto("window")
    elif t.phase == "window":
        crashed = [m.instance_id for m in chosen if _crashed(t, m)]
        if too_many_failed(t, len(crashed), len(chosen)):
            rate = len(crashed) / len(chosen)
            gate_failed(
                t,
                f"canary crash rate {rate:.0%} ({len(crashed)} of {len(chosen)}) is above "
                f"the threshold of {t.spec.failure_threshold:.0%}",
            )
            return
        end = t.marks["window"] + knobs.analysis_window_s
        if t.now < end:
            t.reason = f"canary analysis: {len(chosen)} instances watched until {utc(end)}"
            t.wake(end)
        else:
            t.goto("promote" if knobs.auto_promote else "await")
    elif t.phase == "await":
        if pause(t, t.key("canary", "pause"), "canary passed its analysis: resume to promote"):
            t.goto("promote")
    elif t.phase == "promote" and roll(t, t.selection):
        finish_moved(t, t.selection)


__all__ = ["canaries", "plan"]
