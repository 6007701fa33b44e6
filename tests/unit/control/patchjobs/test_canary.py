"""Canary: a share first, an analysis window, then promote or roll back on its own."""

from __future__ import annotations

from dataclasses import replace

from changeover.control.patchjobs.knobs import CanaryKnobs
from changeover.control.patchjobs.model import (
    JobProgress,
    JobStatus,
    Member,
    Method,
    Pause,
    RollBack,
    StartInstance,
)
from changeover.control.patchjobs.strategies.canary import canaries
from unit.control.patchjobs.patchjob_world import NEW, OLD, T0, World, drive, spec_for

WINDOW = 600.0


def _world(n: int = 20) -> World:
    world = World()
    for k in range(n):
        world.add(
            host=f"h{k}", region=("eu", "us")[k % 2], leaves=[T0 + 300.0 * k] if k % 3 else []
        )
    return world


def test_the_canary_is_a_share_rounded_up_spread_across_regions() -> None:
    spec = spec_for(Method.CANARY)
    members = [Member(k, 1, f"h{k}", ("eu", "us", "ap")[k % 3], OLD, NEW) for k in range(30)]
    picked = canaries(spec, members)
    assert [m.region for m in picked] == ["ap", "eu", "us"]  # 10 % of 30, one per region
    assert len(canaries(spec, members[:1])) == 1  # at least one
    assert len(canaries(spec_for(Method.CANARY, canary=CanaryKnobs(share=0.15)), members)) == 5


def test_a_healthy_canary_is_promoted_after_its_window() -> None:
    world = _world()
    run = drive(world, spec_for(Method.CANARY))
    assert run.progress.status is JobStatus.COMPLETED
    starts = sorted(t for t, a in world.log if isinstance(a, StartInstance))
    canary_at, window_start = starts[0], T0 + world.start_delay_s + 10
    assert starts[:2] == [canary_at, canary_at]  # 2 canaries
    assert starts[2] >= window_start + WINDOW  # the rest only after the window
    assert run.progress.marks["window"] == window_start
    assert len(world.launched(7)) == 20
    assert all(s.players == 0 or not s.before_deadline for s in world.stops)
    assert world.weights == {OLD: 0.0, NEW: 1.0}


def test_a_crashing_canary_rolls_back_during_the_window() -> None:
    world = _world()
    world.crash_first = 1  # one canary crashes 30 s after it is up
    run = drive(world, spec_for(Method.CANARY))
    assert run.progress.status is JobStatus.ROLLED_BACK
    assert "canary crash rate 50% (1 of 2) is above the threshold of 0%" in run.progress.reason
    assert len(world.of_kind(RollBack)) == 1
    assert len(world.of_kind(StartInstance)) == 2  # only the canaries ever started
    assert len([i for i in world.alive() if i.version_id == OLD]) == 20
    assert [i for i in world.alive() if i.version_id == NEW] == []
    assert world.now < T0 + 15 + WINDOW  # did not wait for the window to end


def test_a_crash_rate_within_the_threshold_is_promoted() -> None:
    world = _world()
    world.crash_first = 1
    run = drive(world, spec_for(Method.CANARY, failure_threshold=0.5))
    assert run.progress.status is JobStatus.COMPLETED


def test_without_auto_promote_a_good_canary_waits_for_an_operator() -> None:
    world = _world(10)
    spec = spec_for(Method.CANARY, canary=CanaryKnobs(auto_promote=False))
    paused = drive(world, spec, stop_when=lambda p: p.status is JobStatus.PAUSED)
    assert paused.progress.status is JobStatus.PAUSED
    assert "resume to promote" in paused.progress.reason
    assert len(world.of_kind(Pause)) == 1
    assert len(world.of_kind(StartInstance)) == 1
    still = drive(world, spec, paused.progress, stop_when=lambda p: world.now > T0 + 5 * 3600)
    assert still.progress.status is JobStatus.PAUSED  # nothing moves without the operator
    assert len(world.of_kind(StartInstance)) == 1

    def resume(_: World, p: JobProgress) -> JobProgress:
        return replace(p, resumes=1)

    done = drive(world, spec, still.progress, operator=resume)
    assert done.progress.status is JobStatus.COMPLETED
    assert len(world.of_kind(Pause)) == 1
