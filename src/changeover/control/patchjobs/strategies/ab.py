"""A/B deployment (method 3): start B beside A, prove it, switch allocation, bleed A off.

    start    allocation held on A (B gets weight 0: no player reaches it yet), then a
             new-build instance beside every old one, on the same host
    gate     every B instance healthy (min_healthy_time within healthy_deadline)
    verify   optional ``ab.verify_command`` against B (seed 004's private check); it must
             pass within ``ab.verify_timeout_s``
    switch   allocation moves to B
    bleed    every A instance is retired: stopped when empty, drained otherwise (friends
             may still join), with notices, and stopped at the drain deadline
    done     when no A instance runs

A failed gate or verification before the switch costs players nothing: B is stopped (it
is empty) and allocation stays on A.
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
    run_check,
    start_replacement,
    switch,
)
from changeover.control.patchjobs.strategies.lifecycle import START, run
from changeover.control.patchjobs.strategies.memo import Instances, Memo
from changeover.control.patchjobs.strategies.tick import Tick


def plan(
    spec: JobSpec,
    progress: JobProgress,
    instances: Instances,
    now: float,
    memo: Memo | None = None,
) -> Decision:
    """The A/B deployment's next actions (see the module docstring)."""
    return run(spec, progress, instances, now, _step, memo)


def _step(t: Tick) -> None:
    ab = t.spec.ab
    if t.phase == START:
        switch(t, "hold", 0.0)
        for m in t.selection:
            start_replacement(t, m)
        t.goto("gate")
    elif t.phase == "gate":
        if gate_members(t, t.selection, t.spec.rolling.healthy_deadline_s) is Health.HEALTHY:
            t.goto("verify" if ab.verify_command else "switch")
    elif t.phase == "verify":
        assert ab.verify_command is not None  # the phase exists only with a command
        key = t.key(MAIN, "check")
        if run_check(t, key, ab.verify_command, ab.verify_timeout_s):
            t.goto("switch")
    elif t.phase == "switch":
        switch(t, "switch", 1.0)
        t.goto("bleed")
    elif t.phase == "bleed":
        left, _ = retire_all(t, MAIN, "A/B: players now go to the new set")
        if not left:
            n = len(t.selection)
            t.finish(JobStatus.COMPLETED, f"{n} instances moved to the new set (B)")
        else:
            t.reason = f"bleeding off A: {left} old instances still have players"


__all__ = ["plan"]
