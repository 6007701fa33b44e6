"""A/B: B starts beside A, gated on health and verification before any player reaches it."""

from __future__ import annotations

from changeover.control.patchjobs.knobs import ABKnobs
from changeover.control.patchjobs.model import (
    JobStatus,
    Method,
    RunCheck,
    StartInstance,
    SwitchAllocation,
)
from unit.control.patchjobs.patchjob_world import NEW, OLD, T0, World, drive, finished, spec_for

CHECK = ABKnobs(verify_command="./smoke --target new", verify_timeout_s=120)


def _world() -> World:
    world = World()
    for k in range(4):
        world.add(host=f"h{k}", leaves=[T0 + 1800.0 * (k + 1)] if k % 2 else [])
    for minute in range(0, 120, 2):  # players keep arriving
        world.join(T0 + 60.0 * minute + 1, stays_s=600)
    return world


def test_ab_gates_on_health_and_verification_before_switching_and_then_bleeds_a_off() -> None:
    world = _world()
    world.start_delay_s = 30
    run = drive(world, spec_for(Method.AB, ab=CHECK))
    assert run.progress.status is JobStatus.COMPLETED
    assert finished(run).reason == "4 instances moved to the new set (B)"
    switches = [(t, a) for t, a in world.log if isinstance(a, SwitchAllocation)]
    (hold_at, hold), (switch_at, switch) = switches
    starts = [t for t, a in world.log if isinstance(a, StartInstance)]
    checks = [(t, a) for t, a in world.log if isinstance(a, RunCheck)]
    assert hold.weights == ((OLD, 1.0), (NEW, 0.0)) and hold_at <= min(starts)
    assert switch.weights == ((OLD, 0.0), (NEW, 1.0))
    ((check_at, check),) = checks
    # Verification only after every B instance was healthy (ready 30 s + 10 s), and it
    # targets the B set; the switch only after it passed.
    assert check_at >= T0 + 40 and check.command == "./smoke --target new"
    assert sorted(check.instance_ids) == sorted(i.instance_id for i in world.launched(7))
    assert switch_at >= check_at
    # No player reached B before the switch.
    assert all(leave - 600 >= switch_at for i in world.launched(7) for leave in i.leaves)
    # A was bled off: no busy A server was stopped.
    assert all(s.players == 0 for s in world.stops)
    assert len(world.stops) == 4


def test_a_failed_verification_rolls_back_before_any_player_moves() -> None:
    world = _world()
    world.check_passes = False
    run = drive(world, spec_for(Method.AB, ab=CHECK))
    assert run.progress.status is JobStatus.ROLLED_BACK
    assert "verification './smoke --target new' failed" in run.progress.reason
    assert world.weights == {OLD: 1.0, NEW: 0.0}
    assert [
        a.weights for a in world.of_kind(SwitchAllocation) if isinstance(a, SwitchAllocation)
    ] == [
        ((OLD, 1.0), (NEW, 0.0)),
        ((OLD, 1.0), (NEW, 0.0)),
    ]
    # B was empty and is gone; A untouched.
    assert {s.instance_id for s in world.stops} == {i.instance_id for i in world.launched(7)}
    assert all(s.players == 0 for s in world.stops)


def test_a_verification_without_result_times_out_and_rolls_back() -> None:
    world = _world()
    world.check_passes = None
    run = drive(world, spec_for(Method.AB, ab=CHECK))
    assert run.progress.status is JobStatus.ROLLED_BACK
    assert "no result within 120 s" in run.progress.reason


def test_unhealthy_b_rolls_back_without_running_the_verification() -> None:
    world = _world()
    world.broken_versions = {NEW}
    run = drive(world, spec_for(Method.AB, ab=CHECK))
    assert run.progress.status is JobStatus.ROLLED_BACK
    assert world.of_kind(RunCheck) == []


def test_without_a_verification_command_ab_switches_once_b_is_healthy() -> None:
    world = _world()
    run = drive(world, spec_for(Method.AB))
    assert run.progress.status is JobStatus.COMPLETED
    assert world.of_kind(RunCheck) == []
