"""Custom steps: a validated list runs in order, including pause/resume and the handoff."""

from __future__ import annotations

from dataclasses import replace

import pytest

from changeover.control.patchjobs.model import (
    JobProgress,
    JobStatus,
    Method,
    Notify,
    Pause,
    RunCheck,
    StartInstance,
    SwitchAllocation,
)
from changeover.control.patchjobs.steps import parse_steps
from changeover.errors import InvalidInput
from unit.control.patchjobs.patchjob_world import NEW, OLD, T0, World, drive, finished, spec_for

SEED_004: list[dict[str, object]] = [
    {"kind": "start_new"},
    {"kind": "wait_healthy"},
    {"kind": "run_check", "command": "./integration --private"},
    {"kind": "stop_old", "reason": "saving your world"},
    {"kind": "switch_allocation", "weight": 1},
]


def _world() -> World:
    world = World()
    world.add(host="a")
    world.add(host="b", leaves=[float("inf")])
    world.add(host="c", leaves=[float("inf")])
    return world


def test_seed_004s_deployment_boots_verifies_hands_off_then_routes() -> None:
    world = _world()
    saver = world.instances[1001]
    world.savers = {saver.instance_id}
    for minute in range(1, 10):
        world.join(T0 + 60.0 * minute, stays_s=30)
    spec = spec_for(Method.CUSTOM, steps=parse_steps(SEED_004))
    run = drive(world, spec)
    assert run.progress.status is JobStatus.COMPLETED
    assert finished(run).reason == "all 5 steps done"
    log = [(t, type(a).__name__) for t, a in world.log]
    kinds = [k for _, k in log]
    # Allocation held on the old build first, then the order of the list.
    assert kinds.index("SwitchAllocation") < kinds.index("StartInstance")
    assert kinds.index("RunCheck") > kinds.index("StartInstance")
    holds = [a for a in world.of_kind(SwitchAllocation) if isinstance(a, SwitchAllocation)]
    assert [a.weights for a in holds] == [((OLD, 1.0), (NEW, 0.0)), ((OLD, 0.0), (NEW, 1.0))]
    check_at = next(t for t, a in world.log if isinstance(a, RunCheck))
    handoffs = [(t, n) for t, n in world.notices if "/handoff/" in n.key]
    assert {n.instance_id for _, n in handoffs} == {1001, 1002}
    assert all(t >= check_at and n.reason == "saving your world" for t, n in handoffs)
    stops = {s.instance_id: s for s in world.stops}
    asked = handoffs[0][0]
    # The saver is stopped on its "state saved" (2 s), the other after stop.timeout_s.
    assert stops[1001].at == asked + 2 and stops[1001].action.state_saved
    assert stops[1002].at == asked + 30 and not stops[1002].action.state_saved
    assert stops[1000].players == 0
    switch_at = max(t for t, a in world.log if isinstance(a, SwitchAllocation))
    assert switch_at >= max(s.at for s in world.stops)  # traffic moves last, as asked
    # No player reached the new set before the final switch.
    assert all(leave - 30 >= switch_at for i in world.launched(7) for leave in i.leaves)


def test_a_staged_list_with_a_pause_waits_for_resume_and_then_finishes() -> None:
    steps = parse_steps(
        [
            {"kind": "start_new", "share": 0.5},
            {"kind": "wait_healthy"},
            {"kind": "switch_allocation", "weight": 0.5},
            {"kind": "pause", "reason": "look at the dashboards"},
            {"kind": "start_new"},
            {"kind": "wait_healthy", "timeout_s": 120},
            {"kind": "switch_allocation", "weight": 1},
            {"kind": "notify", "deadline_s": 1800, "reason": "new version, restart soon"},
            {"kind": "drain", "deadline_s": 1800},
        ]
    )
    world = World()
    for k in range(4):
        world.add(host=f"h{k}", leaves=[float("inf")] if k == 3 else [])
    spec = spec_for(Method.CUSTOM, steps=steps)
    paused = drive(world, spec)
    assert paused.progress.status is JobStatus.PAUSED
    assert paused.progress.reason == "look at the dashboards"
    assert paused.progress.step == 3
    assert len(world.of_kind(StartInstance)) == 2  # half
    assert world.weights == {OLD: 0.5, NEW: 0.5}
    again = drive(world, spec, paused.progress)
    assert again.progress == paused.progress  # nothing moves while paused

    def resume(_: World, p: JobProgress) -> JobProgress:
        return replace(p, resumes=1)

    done = drive(world, spec, paused.progress, operator=resume)
    assert done.progress.status is JobStatus.COMPLETED
    assert len(world.of_kind(StartInstance)) == 4
    assert len(world.of_kind(Pause)) == 1
    # The busy one got the notify step's notice, then the drain's; stopped at its deadline.
    busy = [n for _, n in world.notices if n.instance_id == 1003]
    # (The 60-min notice is due at once: the drain's deadline is only 30 min away.)
    assert [n.key.split("/")[2] for n in busy] == [
        "notice",
        "notice3600",
        "notice900",
        "notice300",
        "notice60",
    ]
    (late,) = [s for s in world.stops if s.instance_id == 1003]
    assert late.players == 1 and not late.before_deadline


def test_a_failing_check_rolls_the_custom_job_back() -> None:
    world = _world()
    world.check_passes = False
    run = drive(world, spec_for(Method.CUSTOM, steps=parse_steps(SEED_004)))
    assert run.progress.status is JobStatus.ROLLED_BACK
    assert world.notices == []  # nobody was asked to save for nothing
    assert len([i for i in world.alive() if i.version_id == OLD]) == 3


def test_a_drain_shorter_than_the_notice_times_sends_only_those_still_ahead() -> None:
    steps = parse_steps(
        [
            {"kind": "start_new"},
            {"kind": "wait_healthy"},
            {"kind": "switch_allocation", "weight": 1},
            {"kind": "drain", "deadline_s": 120},
        ]
    )
    world = World()
    world.add(leaves=[float("inf")])
    drive(world, spec_for(Method.CUSTOM, steps=steps))
    kinds = [n.key.split("/")[2] for n in world.of_kind(Notify) if isinstance(n, Notify)]
    assert kinds == ["notice300", "notice60"]  # one at once (not four), then the last minute
    (stop,) = world.stops
    assert stop.at == pytest.approx(T0 + 15 + 120)


def test_a_bad_list_never_becomes_a_job() -> None:
    with pytest.raises(InvalidInput, match=r"steps\[1\] sends players"):
        spec_for(
            Method.CUSTOM,
            steps=parse_steps([{"kind": "start_new"}, {"kind": "switch_allocation"}]),
        )
