"""Bleed-off: new servers take new players, old ones keep theirs until empty or the deadline."""

from __future__ import annotations

import pytest

from changeover.control.patchjobs.knobs import DrainPolicy
from changeover.control.patchjobs.model import JobStatus, MarkDraining, Method, RollBack
from unit.control.patchjobs.patchjob_world import NEW, OLD, T0, World, drive, finished, spec_for

HOUR = 3600.0


def test_bleed_off_stops_empty_at_once_notifies_busy_and_stops_them_at_the_deadline() -> None:
    world = World()
    empty = world.add(host="a")
    short = world.add(host="b", leaves=[T0 + 2 * HOUR])
    saver = world.add(host="c", leaves=[float("inf")])
    silent = world.add(host="d", leaves=[float("inf")])
    world.savers = {saver.instance_id}
    run = drive(world, spec_for(Method.BLEED_OFF))
    assert run.progress.status is JobStatus.COMPLETED
    assert finished(run).reason == "4 old instances bled off"
    marked = {a.instance_id: a for a in world.of_kind(MarkDraining)}
    gate_passed = T0 + world.start_delay_s + 10  # ready, then min_healthy_time
    deadline = gate_passed + 12 * HOUR
    assert set(marked) == {short.instance_id, saver.instance_id, silent.instance_id}
    assert {a.deadline for a in marked.values() if isinstance(a, MarkDraining)} == {deadline}
    stops = {s.instance_id: s for s in world.stops}
    assert stops[empty.instance_id].at == gate_passed  # empty: at once
    assert stops[short.instance_id].at == T0 + 2 * HOUR and stops[short.instance_id].players == 0
    for busy in (saver, silent):
        notices = [t for t, n in world.notices if n.instance_id == busy.instance_id]
        assert notices == [deadline - 3600, deadline - 900, deadline - 300, deadline - 60]
        assert stops[busy.instance_id].at == deadline  # always finished by the deadline
        assert stops[busy.instance_id].players == 1 and not stops[busy.instance_id].before_deadline
    assert stops[saver.instance_id].action.state_saved
    assert not stops[silent.instance_id].action.state_saved
    assert world.weights == {OLD: 0.0, NEW: 1.0}


def test_new_players_go_to_new_servers_and_friends_can_still_join_old_ones() -> None:
    world = World()
    old = world.add(host="a", leaves=[T0 + HOUR])
    world.add(host="b")
    world.join(T0 + 60, stays_s=600)  # a stranger, after the bleed-off began
    world.join(T0 + 120, stays_s=3 * HOUR, friend_of=old.instance_id)  # joins a friend
    run = drive(world, spec_for(Method.BLEED_OFF))
    assert run.progress.status is JobStatus.COMPLETED
    new_hosts = {i.host for i in world.launched(7)}
    assert new_hosts == {"a", "b"}
    stop = next(s for s in world.stops if s.instance_id == old.instance_id)
    # The friend kept the old server alive past its first player's departure.
    assert stop.at == T0 + 120 + 3 * HOUR and stop.players == 0


def test_notice_times_and_deadline_are_configurable() -> None:
    world = World()
    busy = world.add(leaves=[float("inf")])
    spec = spec_for(
        Method.BLEED_OFF, drain=DrainPolicy(deadline_s=2 * HOUR, notice_before_s=(600.0, 30.0))
    )
    drive(world, spec)
    (stop,) = world.stops
    deadline = T0 + 15 + 2 * HOUR
    assert stop.at == pytest.approx(deadline)
    assert [t for t, n in world.notices if n.instance_id == busy.instance_id] == [
        deadline - 600,
        deadline - 30,
    ]


def test_a_new_build_that_fails_is_rolled_back_before_anything_is_drained() -> None:
    world = World()
    for k in range(3):
        world.add(host=f"h{k}", leaves=[T0 + HOUR])
    world.broken_versions = {NEW}
    run = drive(world, spec_for(Method.BLEED_OFF))
    assert run.progress.status is JobStatus.ROLLED_BACK
    assert len(world.of_kind(RollBack)) == 1
    assert world.of_kind(MarkDraining) == []
    assert len([i for i in world.alive() if i.version_id == OLD]) == 3
