"""Idempotency and crash safety of every planner, and cancel (revert / wrap-up).

The driver already checks, on every pass, that planning twice on the same inputs gives
the same decision and that no key is ever emitted twice. These tests add crashes: the
reconciler applies only part of a decision, dies, replays its outbox and plans again.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from changeover.control.patchjobs import plan
from changeover.control.patchjobs.knobs import ABKnobs
from changeover.control.patchjobs.model import (
    CancelMode,
    Finish,
    JobProgress,
    JobSpec,
    JobStatus,
    Method,
    StopInstance,
)
from changeover.control.patchjobs.steps import parse_steps
from unit.control.patchjobs.patchjob_world import NEW, OLD, T0, World, drive, spec_for

STEPS = parse_steps(
    [
        {"kind": "start_new", "share": 0.5},
        {"kind": "wait_healthy"},
        {"kind": "switch_allocation", "weight": 0.5},
        {"kind": "start_new"},
        {"kind": "wait_healthy"},
        {"kind": "run_check", "command": "check"},
        {"kind": "switch_allocation", "weight": 1},
        {"kind": "drain", "deadline_s": 3600},
    ]
)


def _scenario(method: Method, n: int = 6) -> tuple[World, JobSpec]:
    world = World()
    for k in range(n):
        leaves = [T0 + 1200.0 * k, T0 + 600.0 * k] if k % 2 else []
        world.add(host=f"h{k}", region=("eu", "us")[k % 2], leaves=leaves)
    for minute in range(0, 90, 3):
        world.join(T0 + 60.0 * minute + 1, stays_s=900)
    kw: dict[str, object] = {}
    if method is Method.AB:
        kw["ab"] = ABKnobs(verify_command="check")
    if method is Method.CUSTOM:
        kw["steps"] = STEPS
    return world, spec_for(method, **kw)


def _stopped_once(world: World) -> None:
    ids = [s.instance_id for s in world.stops]
    assert len(ids) == len(set(ids)), f"an instance was stopped twice: {sorted(ids)}"
    keys = [a.key for _, a in world.log]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("method", list(Method), ids=lambda m: m.name.lower())
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crashes_mid_decision_never_duplicate_a_stop_and_end_the_same(
    method: Method, seed: int
) -> None:
    world, spec = _scenario(method)
    calm = drive(world, spec)
    _stopped_once(world)
    calm_stops = sorted(world.instances[s.instance_id].host for s in world.stops)

    world, spec = _scenario(method)
    rng = random.Random(seed)
    crashy = drive(world, spec, crash_after=lambda _: rng.choice([None, 0, 1, 2]))
    _stopped_once(world)
    assert crashy.progress.status is calm.progress.status is JobStatus.COMPLETED
    assert sorted(world.instances[s.instance_id].host for s in world.stops) == calm_stops
    if method is not Method.FORCED:  # forced does not wait for players, by definition
        assert all(s.players == 0 or not s.before_deadline for s in world.stops)


@pytest.mark.parametrize("method", list(Method), ids=lambda m: m.name.lower())
def test_a_crash_before_the_progress_was_recorded_replans_the_very_same_actions(
    method: Method,
) -> None:
    world, spec = _scenario(method)
    p = JobProgress()
    for _ in range(6):  # walk a few passes in, then "lose" the recorded progress once
        p = replace(p, staged=frozenset(world.staged))
        first = plan(spec, p, world.view(), world.now)
        again = plan(spec, p, world.view(), world.now)
        assert first == again
        # Recorded but nothing applied: planning again asks for nothing new.
        assert plan(spec, first.progress, world.view(), world.now).actions == ()
        for a in first.actions:
            world.apply(a)
        p = first.progress
        world.advance(first.wake_at or world.now)


def _cancel_at(at: float, mode: CancelMode):  # type: ignore[no-untyped-def]
    def operator(world: World, p: JobProgress) -> JobProgress:
        return replace(p, cancel=mode) if world.now >= at and p.cancel is None else p

    return operator


@pytest.mark.parametrize("method", list(Method), ids=lambda m: m.name.lower())
def test_cancel_and_revert_brings_the_old_build_back_everywhere(method: Method) -> None:
    world, spec = _scenario(method)
    at = T0 + (8 if method is Method.FORCED else 40)  # forced is over at T0 + 15
    run = drive(world, spec, operator=_cancel_at(at, CancelMode.REVERT))
    assert run.progress.status is JobStatus.CANCELLED
    assert "cancelled by an operator; reverted to the old build" in run.progress.reason
    _stopped_once(world)
    assert sorted(i.host for i in world.alive() if i.version_id == OLD) == [
        f"h{k}" for k in range(6)
    ]
    assert [i for i in world.alive() if i.version_id == NEW] == []
    assert world.weights[OLD] == 1.0 and world.weights[NEW] == 0.0
    if method is not Method.FORCED:
        assert all(s.players == 0 or not s.before_deadline for s in world.stops)


@pytest.mark.parametrize("method", [Method.ROLLING, Method.BLEED_OFF], ids=["rolling", "bleed"])
def test_cancel_and_wrap_up_leaves_instances_as_they_are(method: Method) -> None:
    world, spec = _scenario(method)
    run = drive(world, spec, operator=_cancel_at(T0 + 40, CancelMode.WRAP_UP))
    assert run.progress.status is JobStatus.CANCELLED
    assert "wrapped up" in run.progress.reason
    last = run.decisions[-1][1].actions
    assert [type(a) for a in last] == [Finish]
    stops_at_cancel = len(world.of_kind(StopInstance))
    after = plan(spec, run.progress, world.view(), world.now + 3600)
    assert after.actions == () and after.wake_at is None
    assert len(world.of_kind(StopInstance)) == stops_at_cancel


def test_a_cancel_during_a_rollback_does_not_change_its_course() -> None:
    world, spec = _scenario(Method.ROLLING)
    world.broken_versions = {NEW}
    run = drive(world, spec, operator=_cancel_at(T0 + 30, CancelMode.WRAP_UP))
    assert run.progress.status is JobStatus.ROLLED_BACK


def test_cancel_revert_while_staging_changes_nothing() -> None:
    world, spec = _scenario(Method.FORCED)
    world.auto_stage = False
    run = drive(world, spec, operator=_cancel_at(T0 + 30, CancelMode.REVERT))
    assert run.progress.status is JobStatus.CANCELLED
    assert run.progress.reason == "cancelled before any instance was changed"
    assert world.stops == []


def test_a_player_slipping_in_before_an_empty_stop_turns_it_into_a_drain() -> None:
    world, spec = _scenario(Method.BLEED_OFF, n=2)
    empty = world.instances[1000]
    p = JobProgress()
    while True:  # up to the decision that stops the empty old instance
        p = replace(p, staged=frozenset(world.staged))
        d = plan(spec, p, world.view(), world.now)
        p = d.progress
        stops = [a for a in d.actions if isinstance(a, StopInstance)]
        if any(a.instance_id == empty.instance_id for a in stops):
            break
        for a in d.actions:
            world.apply(a)
        world.advance(min(t for t in (d.wake_at, world.next_event()) if t is not None))
    stop = next(a for a in stops if a.instance_id == empty.instance_id)
    assert stop.require_empty
    empty.leaves.append(world.now + 600)  # the allocator won the race
    world._at(world.now + 600, "leave", empty.instance_id)
    for a in d.actions:
        world.apply(a)
    assert empty.state == "ready" and empty.desired == "draining"
    run = drive(world, spec, p)
    assert run.progress.status is JobStatus.COMPLETED
    (final,) = [s for s in world.stops if s.instance_id == empty.instance_id]
    assert final.players == 0 and final.at >= T0 + 600  # stopped once, when it emptied
