"""Forced deployment: stop, swap, start; downtime is the stop plus the start."""

from __future__ import annotations

import pytest

from changeover.control.patchjobs.knobs import RollingKnobs, StopPolicy
from changeover.control.patchjobs.model import (
    JobStatus,
    Method,
    ProfileTerms,
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


EXCLUSIVE = {OLD: ProfileTerms(exclusive_state=True), NEW: ProfileTerms(exclusive_state=True)}


@pytest.mark.parametrize(
    "method", [Method.FORCED, Method.ROLLING], ids=["forced", "rolling-surge-0"]
)
def test_with_exclusive_state_the_revert_stops_the_new_build_then_starts_the_old_on_its_slot(
    method: Method,
) -> None:
    world = World()
    world.exclusive_slots = True
    world.stop_delay_s = 3.0  # a server takes a while to save and exit
    old = [world.add(host="h1"), world.add(host="h1"), world.add(host="h2")]
    world.silent_versions = {NEW}  # the new build's server never passes its health check
    spec = spec_for(
        method,
        profiles=EXCLUSIVE,
        stop=StopPolicy("SIGKILL", 0),  # even so, the revert does not hard-kill new ones
        rolling=RollingKnobs(max_unavailable="100%", max_surge=0),
    )
    run = drive(world, spec)
    assert run.progress.status is JobStatus.ROLLED_BACK, run.progress.reason
    assert world.overlaps == []  # never two processes on one slot
    new = world.launched(7)
    back = world.launched(7, "revert/start/")
    assert len(new) == len(back) == 3
    starts = {a.key: (at, a) for at, a in world.log if isinstance(a, StartInstance)}
    stops = {a.instance_id: (at, a) for at, a in world.log if isinstance(a, StopInstance)}
    for i in old:
        (n,) = [n for n in new if starts[n.launch_key or ""][1].replaces_id == i.instance_id]
        (b,) = [b for b in back if b.launch_key == f"job7/revert/start/{i.instance_id}"]
        # The old build is back on its host, on the slot the new one took over (its state).
        assert (b.host, b.slot, b.version_id, b.state) == (i.host, i.slot, OLD, "ready")
        assert n.slot == i.slot and n.state == "stopped"
        at_stop, stop_new = stops[n.instance_id]
        at_start, start_back = starts[b.launch_key or ""]
        assert start_back.replaces_id == n.instance_id
        # Stopped first, gracefully (the profile's signal: it saves its state), and the old
        # build started only once it had ended.
        assert "/revert/" in stop_new.key and stop_new.signal is None and stop_new.graceful
        assert at_start >= at_stop + world.stop_delay_s
    assert world.weights == {OLD: 1.0, NEW: 0.0}


def test_without_exclusive_state_the_revert_still_starts_the_old_build_first() -> None:
    world = World()
    world.add()
    world.silent_versions = {NEW}
    run = drive(world, spec_for(Method.FORCED))
    assert run.progress.status is JobStatus.ROLLED_BACK
    (n,) = world.launched(7)
    (b,) = world.launched(7, "revert/start/")
    starts = {a.key: at for at, a in world.log if isinstance(a, StartInstance)}
    stops = {a.instance_id: at for at, a in world.log if isinstance(a, StopInstance)}
    assert starts[b.launch_key or ""] < stops[n.instance_id]  # beside it, then retired


def test_a_revert_that_cannot_free_the_slot_fails_and_says_so() -> None:
    world = World()
    world.exclusive_slots = True
    world.add(host="h1")
    world.silent_versions = {NEW}
    world.stop_delays = {NEW: float("inf")}  # and ignores its stop signal and SIGKILL
    run = drive(world, spec_for(Method.FORCED, profiles=EXCLUSIVE))
    assert run.progress.status is JobStatus.FAILED
    assert "revert could not stop the instances holding the state on h1" in run.progress.reason
    # It gave the new server its stop timeout (the profile's 30 s) and the health deadline.
    (stop,) = [a for at, a in world.log if isinstance(a, StopInstance) and "/revert/" in a.key]
    assert run.progress.finished_at == run.progress.issued[stop.key] + 30 + 300


def test_an_old_instance_gets_its_profiles_stop_timeout_before_it_counts_as_stuck() -> None:
    # The profile gives its servers 10 minutes to save and stop; the job names no timeout.
    world = World()
    world.add()
    world.stop_delay_s = 500.0  # more than 30 s + the 300 s health deadline
    spec = spec_for(Method.FORCED, profiles={OLD: ProfileTerms(stop_timeout_s=600.0)})
    run = drive(world, spec)
    assert run.progress.status is JobStatus.COMPLETED, run.progress.reason
    # With a job's own timeout, that one counts.
    world = World()
    world.add()
    world.stop_delay_s = 500.0
    spec = spec_for(
        Method.FORCED,
        stop=StopPolicy(timeout_s=10),
        profiles={OLD: ProfileTerms(stop_timeout_s=600.0)},
    )
    run = drive(world, spec)
    assert run.progress.status is JobStatus.ROLLED_BACK
    assert "old instance(s) 1000 did not stop" in run.progress.reason
