"""Bleed-off (method 4, seed 002): new players go to the new build, old servers keep theirs.

    start    a new-build instance beside every old one, on the same host
    gate     every new instance healthy (else roll back: no player has moved yet)
    bleed    allocation prefers the new build (old weight 0) and every old instance is
             marked draining (bleed-off): friends can still join it, nobody else.
             Empty old instances stop at once; the others get the SDK shutdown notice at
             ``drain.notice_before_s`` before the deadline (60, 15, 5, 1 min) and are
             stopped by force at ``drain.deadline_s`` (12 h) unless they empty first. The
             stop reports whether the server acknowledged "state saved" after its notice.
    done     when no old instance runs

All old instances are drained in the same pass, so they share one absolute deadline,
recorded per instance in ``progress.deadlines``.
"""

from __future__ import annotations

from changeover.control.patchjobs.model import (
    Decision,
    JobProgress,
    JobSpec,
    JobStatus,
)
from changeover.control.patchjobs.strategies.common import (
    MAIN,
    Health,
    gate_members,
    retire_all,
    start_replacement,
    switch,
)
from changeover.control.patchjobs.strategies.lifecycle import START, run
from changeover.control.patchjobs.strategies.memo import Instances, Memo
from changeover.control.patchjobs.strategies.tick import Tick
from changeover.times import utc

REASON = "bleed-off: the new build is live"


def plan(
    spec: JobSpec,
    progress: JobProgress,
    instances: Instances,
    now: float,
    memo: Memo | None = None,
) -> Decision:
    """The bleed-off's next actions (see the module docstring)."""
    return run(spec, progress, instances, now, _step, memo)


def _step(t: Tick) -> None:
    if t.phase == START:
        for m in t.selection:
            start_replacement(t, m)
        t.goto("gate")
    elif t.phase == "gate":
        if gate_members(t, t.selection, t.spec.rolling.healthy_deadline_s) is Health.HEALTHY:
            t.goto("bleed")
    elif t.phase == "bleed":
        switch(t, "bleed", 1.0)
        left, deadline = retire_all(t, MAIN, REASON)
        if not left:
            t.finish(JobStatus.COMPLETED, f"{len(t.selection)} old instances bled off")
        else:
            t.reason = (
                f"bleeding off: {left} old instances still have players; "
                f"stopped by {utc(t.now if deadline is None else deadline)} at the latest"
            )


__all__ = ["plan"]
