"""Where the stand-ins for a lost host's instances go (``standins.assign``). Pure, no
database; how placement treats them on their host is in ``test_placement``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from changeover.control.fleet.standins import Orphan, Room, assign


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
