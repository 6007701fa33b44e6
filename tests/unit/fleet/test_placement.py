"""Desired-state rules per host and the profile-switch steps: pure, no database, no clock."""

from __future__ import annotations

from dataclasses import replace

from changeover.control.fleet import placement
from changeover.control.fleet.placement import (
    Create,
    Done,
    Drain,
    Fail,
    FleetSpec,
    HostView,
    InstanceView,
    Notify,
    Retire,
    StartReplacement,
    Stop,
    Wait,
    plan_host,
    switch_step,
)

HOST = HostView("h1", alive=True, slots=10)
FLEET = FleetSpec(fleet_id=1, profile_id=10, per_host=2, hosts=frozenset({"h1"}))


def inst(i: int, **kw: object) -> InstanceView:
    base: dict[str, object] = {
        "instance_id": i,
        "fleet_id": 1,
        "profile_id": 10,
        "host": "h1",
        "desired": "running",
        "state": "ready",
    }
    base.update(kw)
    return InstanceView(**base)  # type: ignore[arg-type]


def plan(instances: list[InstanceView], **kw: object) -> list[object]:
    host = kw.pop("host", HOST)
    fleets = kw.pop("fleets", [FLEET])
    now = kw.pop("now", 1000.0)
    return plan_host(host, fleets, instances, now, drain_s=100, notice_s=10)  # type: ignore[arg-type]


def test_creates_up_to_the_target_within_slots() -> None:
    assert plan([]) == [Create(1, 10, "h1"), Create(1, 10, "h1")]
    assert plan([inst(1)]) == [Create(1, 10, "h1")]
    assert plan([inst(1), inst(2)]) == []
    assert plan([], host=replace(HOST, slots=1)) == [Create(1, 10, "h1")]
    assert plan([], host=replace(HOST, alive=False)) == []
    # Stopped instances free their slot; failed ones still count (the agent restarts them).
    assert plan([inst(1, desired="stopped", state="stopped"), inst(2, state="failed")]) == [
        Create(1, 10, "h1")
    ]


def test_no_profile_or_host_removed_retires_idle_and_drains_busy() -> None:
    busy, idle = inst(1, players=2), inst(2)
    out = plan([busy, idle], fleets=[replace(FLEET, hosts=frozenset())])
    assert out == [
        Drain(1, "host removed from the fleet", 1100.0),
        Stop(2, "host removed from the fleet", 1000.0),
    ]
    assert plan([idle], fleets=[replace(FLEET, profile_id=None)]) == [Stop(2, "no profile", 1000.0)]


def test_scale_down_prefers_idle_then_other_profiles_then_newest() -> None:
    out = plan(
        [inst(1, players=1), inst(2), inst(3, profile_id=9), inst(4)],
        fleets=[replace(FLEET, per_host=1)],
    )
    assert out == [
        Stop(3, "scaled down", 1000.0),
        Stop(4, "scaled down", 1000.0),
        Stop(2, "scaled down", 1000.0),
    ]


def test_a_replacement_counts_once_with_the_instance_it_replaces() -> None:
    pair = [inst(1, profile_id=9), inst(2, replaces_id=1, state="starting"), inst(3)]
    assert plan(pair) == []
    # Mid-switch, scaling down leaves the pair alone (the switch finishes it).
    assert plan(pair, fleets=[replace(FLEET, per_host=1)]) == [Stop(3, "scaled down", 1000.0)]


def test_after_a_switch_the_replacements_scale_down_like_any_instance() -> None:
    # Instances 3 and 4 replaced 1 and 2, which have stopped: all that runs are replacements.
    after = [inst(3, replaces_id=1), inst(4, replaces_id=2)]
    assert plan(after, fleets=[replace(FLEET, per_host=0)]) == [
        Stop(4, "scaled down", 1000.0),
        Stop(3, "scaled down", 1000.0),
    ]


def test_draining_stops_when_empty_notices_before_deadline_stops_at_it() -> None:
    d = inst(1, desired="draining", players=1, drain_deadline=1050.0, drain_reason="update")
    assert plan([d, inst(2), inst(3)]) == []
    assert plan([d, inst(2), inst(3)], now=1041.0) == [Notify(1, "update", 1050.0)]
    noticed = replace(d, notice_deadline=1050.0)
    assert plan([noticed, inst(2), inst(3)], now=1045.0) == []
    assert plan([noticed, inst(2), inst(3)], now=1050.0) == [
        Stop(1, "update (drain deadline passed)", 1050.0)
    ]
    assert plan([replace(d, players=0), inst(2), inst(3)]) == [
        Stop(1, "update (last player left)", 1000.0)
    ]


def test_idempotent_after_its_own_actions() -> None:
    first = plan([inst(1)])
    assert first == [Create(1, 10, "h1")]
    assert plan([inst(1), inst(2, state="staging")]) == []


# -- switch --------------------------------------------------------------------------------

HOSTS = {"h1": HOST, "h2": HostView("h2", alive=False, slots=10)}
NAMES = frozenset({"h1", "h2"})


def step(instances: list[InstanceView], now: float = 1000.0) -> object:
    return switch_step(instances, HOSTS, NAMES, 20, now, healthy_deadline_s=60)


def test_switch_walks_one_instance_at_a_time() -> None:
    old = [inst(1, players=2), inst(2), inst(3, host="h2")]
    assert step(old) == StartReplacement(2, "h1")  # the idle one first
    started = [*old, inst(4, profile_id=20, replaces_id=2, state="starting", created_at=990)]
    assert isinstance(step(started), Wait)
    ready = [*old, inst(4, profile_id=20, replaces_id=2, state="ready")]
    assert step(ready) == Retire(2, busy=False)
    retired = [old[0], replace(old[1], desired="stopped"), old[2], ready[-1]]
    assert step(retired) == StartReplacement(1, "h1")
    nxt = [*retired, inst(5, profile_id=20, replaces_id=1, state="ready")]
    assert step(nxt) == Retire(1, busy=True)  # players on it: drain, never stop
    # Only an instance on a lost host is left: wait for it.
    last = [replace(old[0], desired="draining"), old[2], ready[-1], nxt[-1]]
    waited = step(last)
    assert isinstance(waited, Wait) and "h2" in waited.message
    assert step([ready[-1], nxt[-1]]) == Done("every instance runs the new profile")


def test_switch_fails_on_a_failed_or_slow_replacement() -> None:
    old = inst(1)
    crashed = inst(2, profile_id=20, replaces_id=1, state="failed", error="exited with 3")
    out = step([old, crashed])
    assert isinstance(out, Fail) and "exited with 3" in out.message and out.stop_instance_id == 2
    slow = inst(2, profile_id=20, replaces_id=1, state="starting", created_at=900)
    out = step([old, slow], now=1000.0)
    assert isinstance(out, Fail) and "not ready after 60 s" in out.message


def test_pick_slot_passes_state_on_only_where_no_two_live_instances_share_it() -> None:
    # A new instance: the lowest slot no live instance holds.
    assert placement.pick_slot([], None, False, exclusive=False) == 0
    assert placement.pick_slot([0, 2], None, False, exclusive=False) == 1
    # A replacement beside its running predecessor (surge, A/B, bleed-off): another slot.
    assert placement.pick_slot([0, 1], 1, False, exclusive=False) == 2
    # One whose predecessor is being stopped (forced, no surge): the predecessor's slot.
    assert placement.pick_slot([0, 1], 1, True, exclusive=False) == 1
    # Exclusive state: always the predecessor's (the agent waits for it to end).
    assert placement.pick_slot([0, 1], 1, False, exclusive=True) == 1


# -- stand-ins for a lost host's instances (control.fleet.standins) ---------------------

THREE_HOSTS = FleetSpec(fleet_id=1, profile_id=10, per_host=2, hosts=frozenset({"h1", "h2", "h3"}))


def test_a_stand_in_does_not_count_toward_its_hosts_own_instances() -> None:
    host = HostView("h1", alive=True, slots=10)
    ours = [inst(1), inst(2)]
    stand_ins = [inst(3, standin_for="h3"), inst(4, standin_for="h3")]
    # Its host already runs its two: nothing to scale down, nothing to create.
    assert plan_host(host, [THREE_HOSTS], ours + stand_ins, 100.0, drain_s=60, notice_s=10) == []
    # One of its own missing: created, the stand-ins left alone.
    assert plan_host(host, [THREE_HOSTS], ours[:1] + stand_ins, 100.0, drain_s=60, notice_s=10) == [
        Create(1, 10, "h1")
    ]


def test_stand_ins_retire_once_their_host_is_back_busy_ones_drained() -> None:
    host = HostView("h1", alive=True, slots=10)
    idle, busy = inst(3, standin_for="h3"), inst(4, standin_for="h3", players=2)
    views = [inst(1), inst(2), idle, busy]
    assert plan_host(host, [THREE_HOSTS], views, 100.0, drain_s=60, notice_s=10) == []
    back = plan_host(
        host, [THREE_HOSTS], views, 100.0, drain_s=60, notice_s=10, alive_hosts=frozenset({"h3"})
    )
    assert back == [Stop(3, "host h3 is back", 100.0), Drain(4, "host h3 is back", 160.0)]
