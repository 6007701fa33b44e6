"""Rolling update: budgets at every tick, drains instead of stops, deadlines, rollback."""

from __future__ import annotations

import pytest

from changeover.control.patchjobs.knobs import RollingKnobs
from changeover.control.patchjobs.model import (
    JobStatus,
    MarkDraining,
    Method,
    RollBack,
    StartInstance,
)
from unit.control.patchjobs.patchjob_world import (
    NEW,
    OLD,
    T0,
    RollingWatch,
    World,
    drive,
    finished,
    spec_for,
)

HOUR = 3600.0


def _fleet(world: World, n: int, busy_every: int = 2) -> None:
    """``n`` instances on hosts h0.., every ``busy_every``-th one with two players (0: none)."""
    for k in range(n):
        busy = busy_every and k % busy_every == 0
        leaves = [T0 + (k + 1) * 900.0, T0 + (k + 1) * 600.0] if busy else []
        world.add(host=f"h{k}", region="eu" if k % 2 else "us", leaves=leaves)


@pytest.mark.parametrize(
    "knobs",
    [
        RollingKnobs(),
        RollingKnobs(max_unavailable=1, max_surge=0),
        RollingKnobs(max_unavailable=0, max_surge=1),
        RollingKnobs(max_unavailable="50%", max_surge="50%"),
    ],
    ids=["defaults", "no-surge", "never-below-capacity", "halves"],
)
def test_rolling_moves_everything_within_budgets_and_never_stops_a_busy_server(
    knobs: RollingKnobs,
) -> None:
    world = World()
    _fleet(world, 10)
    spec = spec_for(Method.ROLLING, rolling=knobs)
    watch = RollingWatch(world, spec)
    run = drive(world, spec, check=watch)
    assert run.progress.status is JobStatus.COMPLETED
    assert finished(run).reason == "10 instances moved to the new build"
    stopped = [s.instance_id for s in world.stops]
    assert sorted(stopped) == sorted(watch.members)  # each old instance exactly once
    assert all(s.players == 0 for s in world.stops)
    new = world.launched(7)
    assert len(new) == 10 and all(i.state == "ready" and i.version_id == NEW for i in new)
    assert sorted(i.host for i in new) == sorted(f"h{k}" for k in range(10))
    assert world.weights == {OLD: 0.0, NEW: 1.0}
    # Busy instances were drained (allocation stops sending them players), not stopped.
    drained = {a.instance_id for a in world.of_kind(MarkDraining)}
    assert drained and drained <= set(watch.members)
    assert watch.peak_total <= 10 + watch.max_surge


def test_batches_wait_for_the_previous_one_to_be_healthy() -> None:
    world = World()
    _fleet(world, 8, busy_every=0)  # all empty
    world.start_delay_s = 20.0
    spec = spec_for(Method.ROLLING)
    run = drive(world, spec)
    starts = [t for t, a in world.log if isinstance(a, StartInstance)]
    # Batches of 4: 2 beside their old instance (max_surge) and 2 in place of a stopped
    # one (max_unavailable), each after the last was ready (20 s) for 10 s.
    assert starts == [T0 + b * 30.0 for b in range(2) for _ in range(4)]
    assert run.progress.step == 2


def test_a_lobby_that_never_ends_is_notified_and_stopped_at_its_drain_deadline() -> None:
    world = World()
    forever = world.add(host="a", leaves=[float("inf")])
    for k in range(3):
        world.add(host=f"b{k}")
    run = drive(world, spec_for(Method.ROLLING))
    assert run.progress.status is JobStatus.COMPLETED
    deadline = next(a.deadline for a in world.of_kind(MarkDraining))
    notices = [t for t, n in world.notices if n.instance_id == forever.instance_id]
    assert notices == [deadline - 3600, deadline - 900, deadline - 300, deadline - 60]
    stop = next(s for s in world.stops if s.instance_id == forever.instance_id)
    assert stop.at == deadline and stop.players == 1 and not stop.before_deadline
    assert "drain deadline reached" in stop.action.reason
    assert deadline == pytest.approx(T0 + 12 * HOUR, abs=60)


@pytest.mark.parametrize("surge", [1, 0], ids=["beside", "stop-first"])
def test_a_failed_health_gate_rolls_back_to_the_old_build(surge: int) -> None:
    world = World()
    _fleet(world, 6)
    world.broken_versions = {NEW}
    spec = spec_for(Method.ROLLING, rolling=RollingKnobs(max_unavailable=1, max_surge=surge))
    watch = RollingWatch(world, spec)
    run = drive(world, spec, check=watch)
    assert run.progress.status is JobStatus.ROLLED_BACK
    assert "failed their health gate" in run.progress.reason
    assert len(world.of_kind(RollBack)) == 1
    assert world.weights == {OLD: 1.0, NEW: 0.0}
    # Every host runs the old build again, nothing of the new one runs.
    old_running = sorted(i.host for i in world.alive() if i.version_id == OLD)
    assert old_running == [f"h{k}" for k in range(6)]
    assert [i for i in world.alive() if i.version_id == NEW] == []
    assert all(s.players == 0 for s in world.stops)
    # Old instances the rollout had stopped were started again on their hosts.
    stopped_by_rollout = {
        world.instances[s.instance_id].host for s in world.stops if "/main/" in s.action.key
    }
    restarted = {i.host for i in world.launched(7, "revert/start/")}
    assert restarted == stopped_by_rollout
    assert restarted if surge == 0 else True


def test_without_auto_revert_a_failed_gate_fails_and_leaves_things_as_they_are() -> None:
    world = World()
    _fleet(world, 4)
    world.broken_versions = {NEW}
    spec = spec_for(Method.ROLLING, rolling=RollingKnobs(auto_revert=False))
    run = drive(world, spec)
    assert run.progress.status is JobStatus.FAILED
    assert "auto_revert is off" in run.progress.reason
    assert not world.of_kind(RollBack)


def test_failures_within_the_threshold_do_not_stop_the_rollout() -> None:
    world = World()
    _fleet(world, 8, busy_every=0)
    world.fail_first = 1
    run = drive(world, spec_for(Method.ROLLING, failure_threshold=0.25))
    assert run.progress.status is JobStatus.COMPLETED
    assert sum(1 for i in world.launched(7) if i.state == "failed") == 1


def test_over_the_threshold_it_rolls_back() -> None:
    world = World()
    _fleet(world, 8, busy_every=0)
    world.fail_first = 3
    run = drive(world, spec_for(Method.ROLLING, failure_threshold=0.25))
    assert run.progress.status is JobStatus.ROLLED_BACK
