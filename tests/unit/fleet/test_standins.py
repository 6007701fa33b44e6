"""Stand-ins for a lost host's instances: where they go (``standins.assign``) and how
placement treats them on their host (``placement.plan_host``). Pure, no database."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from changeover.control.fleet.placement import (
    Create,
    Drain,
    FleetSpec,
    HostView,
    InstanceView,
    Stop,
    plan_host,
)
from changeover.control.fleet.standins import Orphan, Room, assign

FLEET = FleetSpec(fleet_id=1, profile_id=10, per_host=2, hosts=frozenset({"h1", "h2", "h3"}))


def test_stand_ins_spread_over_the_emptiest_hosts_of_their_fleet() -> None:
    orphans = [Orphan(n, 1, "h3") for n in (7, 5, 6)]
    rooms = [Room("h1", 2, frozenset({1})), Room("h2", 3, frozenset({1}))]
    assert assign(orphans, rooms) == {5: "h2", 6: "h1", 7: "h2"}


def test_no_stand_in_on_a_host_its_fleet_does_not_list_or_without_room() -> None:
    orphans = [Orphan(1, 1, "h3"), Orphan(2, 2, "h3"), Orphan(3, 1, "h3")]
    rooms = [
        Room("h1", 1, frozenset({1})),
        Room("h2", 5, frozenset({9})),
        Room("h3", 9, frozenset({1, 2})),
    ]
    # Fleet 2 is listed only by the lost host itself; fleet 1 has one free slot, on h1.
    assert assign(orphans, rooms) == {1: "h1"}


@given(
    orphans=st.lists(
        st.builds(Orphan, st.integers(1, 50), st.integers(1, 3), st.sampled_from(["h1", "h9"])),
        unique_by=lambda o: o.instance_id,
        max_size=20,
    ),
    rooms=st.lists(
        st.builds(
            Room,
            st.sampled_from(["h1", "h2", "h3", "h4"]),
            st.integers(0, 4),
            st.frozensets(st.integers(1, 3), max_size=3),
        ),
        unique_by=lambda r: r.host,
        max_size=4,
    ),
)
def test_stand_ins_never_overfill_a_host_nor_land_where_they_may_not(
    orphans: list[Orphan], rooms: list[Room]
) -> None:
    got = assign(orphans, rooms)
    by_host = {r.host: r for r in rooms}
    fleet_of = {o.instance_id: o for o in orphans}
    for instance_id, host in got.items():
        orphan = fleet_of[instance_id]
        assert host != orphan.host and orphan.fleet_id in by_host[host].fleets
    for room in rooms:
        assert list(got.values()).count(room.host) <= room.free
    # Nobody is left without a stand-in while a host that may take it has room.
    for orphan in orphans:
        if orphan.instance_id in got:
            continue
        for room in rooms:
            if orphan.fleet_id in room.fleets and room.host != orphan.host:
                assert list(got.values()).count(room.host) == room.free


def _inst(i: int, **kw: object) -> InstanceView:
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


def test_a_stand_in_does_not_count_toward_its_hosts_own_instances() -> None:
    host = HostView("h1", alive=True, slots=10)
    ours = [_inst(1), _inst(2)]
    stand_ins = [_inst(3, standin_for="h3"), _inst(4, standin_for="h3")]
    # Its host already runs its two: nothing to scale down, nothing to create.
    assert plan_host(host, [FLEET], ours + stand_ins, 100.0, drain_s=60, notice_s=10) == []
    # One of its own missing: created, the stand-ins left alone.
    assert plan_host(host, [FLEET], ours[:1] + stand_ins, 100.0, drain_s=60, notice_s=10) == [
        Create(1, 10, "h1")
    ]


def test_stand_ins_retire_once_their_host_is_back_busy_ones_drained() -> None:
    host = HostView("h1", alive=True, slots=10)
    idle, busy = _inst(3, standin_for="h3"), _inst(4, standin_for="h3", players=2)
    views = [_inst(1), _inst(2), idle, busy]
    assert plan_host(host, [FLEET], views, 100.0, drain_s=60, notice_s=10) == []
    back = plan_host(
        host, [FLEET], views, 100.0, drain_s=60, notice_s=10, alive_hosts=frozenset({"h3"})
    )
    assert back == [Stop(3, "host h3 is back", 100.0), Drain(4, "host h3 is back", 160.0)]
