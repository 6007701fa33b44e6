"""Forced deployment (method 1): stop every old instance, start the new build in its place.

Downtime per instance is the stop plus the start and nothing more, because the job only
gets here once the new build is staged on every host (``lifecycle``'s stage phase). Each
old instance is stopped with the job's stop method (graceful signal, ``stop.timeout_s``,
then SIGKILL; players are not waited for: that is what "forced" means), and its
replacement is started on the same host as soon as the old one is reported gone (the port
and slot are free then). An old instance that is still not gone ``healthy_deadline_s``
after its stop timeout has passed (the job's ``stop.timeout_s``, else its profile's
``stop_timeout_s``), or replacements failing their health gate beyond
``failure_threshold``, fail the gate: the job rolls back by default (the old build is
still staged, so the way back is as quick).
"""

from __future__ import annotations

from changeover.control.patchjobs.model import (
    Decision,
    JobProgress,
    JobSpec,
)
from changeover.control.patchjobs.strategies.common import (
    MAIN,
    Health,
    gate,
    gate_failed,
    start_key,
    start_replacement,
    stop,
    too_many_failed,
)
from changeover.control.patchjobs.strategies.lifecycle import START, run
from changeover.control.patchjobs.strategies.memo import Instances, Memo
from changeover.control.patchjobs.strategies.rolling import finish_moved
from changeover.control.patchjobs.strategies.tick import Tick


def plan(
    spec: JobSpec,
    progress: JobProgress,
    instances: Instances,
    now: float,
    memo: Memo | None = None,
) -> Decision:
    """The forced deployment's next actions (see the module docstring)."""
    return run(spec, progress, instances, now, _step, memo)


def _step(t: Tick) -> None:
    if t.phase != START:
        return
    rk = t.spec.rolling
    stuck: list[int] = []
    settled = 0
    failed: list[int] = []
    for m in t.selection:
        old = t.alive(m.instance_id)
        if old is not None:
            stop(t, old, MAIN, "forced update to the new build", require_empty=False)
            stopped_at = t.issued.get(t.key(MAIN, "stop", m.instance_id), t.now)
            give_up = stopped_at + t.spec.stop_wait_s(m.version_id) + rk.healthy_deadline_s
            if t.now >= give_up:
                stuck.append(m.instance_id)
            t.wake(give_up)
            continue
        key = start_key(t, m)
        start_replacement(t, m)
        health = gate(t, key, f"healthy/{m.instance_id}", rk.healthy_deadline_s)
        settled += health is not Health.PENDING
        if health is Health.FAILED:
            failed.append(m.instance_id)
    n = len(t.selection)
    if stuck:
        gate_failed(t, f"old instance(s) {', '.join(map(str, stuck))} did not stop")
    elif too_many_failed(t, len(failed), n):
        ids = ", ".join(map(str, failed))
        gate_failed(t, f"{len(failed)} of {n} new instances failed their health gate ({ids})")
    elif settled == n:
        finish_moved(t, t.selection)
    else:
        t.reason = f"forced update: {settled} of {n} instances replaced and healthy"


__all__ = ["plan"]
