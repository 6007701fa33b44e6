"""Forced deployment: stop, swap, start; downtime is the stop plus the start."""

from __future__ import annotations

from changeover.control.patchjobs.knobs import StopPolicy
from changeover.control.patchjobs.model import (
    JobStatus,
    Method,
    RollBack,
    StartInstance,
    StopInstance,
)
from unit.control.patchjobs.patchjob_world import NEW, OLD, T0, World, drive, finished, spec_for


def test_forced_stops_every_old_instance_and_starts_the_new_build_in_its_place() -> None:
    world = World()
    old = [world.add(host=f"h{k}", leaves=[T0 + 3600] * k) for k in range(5)]
    run = drive(world, spec_for(Method.FORCED))
    assert run.progress.status is JobStatus.COMPLETED
    assert finished(run).reason == "5 instances moved to the new build"
    assert sorted(s.instance_id for s in world.stops) == [i.instance_id for i in old]
    # Forced means players are not waited for.
    assert [s.players for s in world.stops] == [0, 1, 2, 3, 4]
    stops = {a.instance_id: t for t, a in world.log if isinstance(a, StopInstance)}
    starts = {a.replaces_id: (t, a) for t, a in world.log if isinstance(a, StartInstance)}
    for i in old:
        at, start = starts[i.instance_id]
        assert start.host == i.host and start.version_id == NEW
        assert at == stops[i.instance_id]  # started as soon as the old one was gone
    new = world.launched(7)
    # Downtime is the stop plus the start: ready start_delay_s after the stop.
    assert all(n.ready_since == T0 + world.start_delay_s for n in new)
    assert world.weights == {OLD: 0.0, NEW: 1.0}


def test_the_stop_method_and_timeout_are_the_jobs() -> None:
    world = World()
    world.add()
    drive(world, spec_for(Method.FORCED, stop=StopPolicy("SIGKILL", 0)))
    (stop,) = world.of_kind(StopInstance)
    assert isinstance(stop, StopInstance)
    assert (stop.signal, stop.graceful, stop.timeout_s, stop.require_empty) == (
        "SIGKILL",
        False,
        0,
        False,
    )
    world = World()
    world.add()
    drive(world, spec_for(Method.FORCED))
    (stop,) = world.of_kind(StopInstance)
    assert isinstance(stop, StopInstance)
    assert (stop.signal, stop.graceful, stop.timeout_s) == (None, True, None)  # the profile's


def test_forced_waits_for_the_build_to_be_staged_and_changes_nothing_if_it_never_is() -> None:
    world = World()
    world.add(host="slow")
    world.auto_stage = False
    run = drive(world, spec_for(Method.FORCED))
    assert run.progress.status is JobStatus.FAILED
    assert "not staged on slow within 600 s" in run.progress.reason
    assert "no instance was changed" in run.progress.reason
    assert world.stops == []


def test_a_new_build_that_does_not_come_up_is_rolled_back_on_every_host() -> None:
    world = World()
    hosts = [world.add(host=f"h{k}").host for k in range(3)]
    world.broken_versions = {NEW}
    run = drive(world, spec_for(Method.FORCED))
    assert run.progress.status is JobStatus.ROLLED_BACK
    assert len(world.of_kind(RollBack)) == 1
    assert sorted(i.host for i in world.alive() if i.version_id == OLD) == hosts
    assert [i for i in world.alive() if i.version_id == NEW] == []
    assert world.weights == {OLD: 1.0, NEW: 0.0}
