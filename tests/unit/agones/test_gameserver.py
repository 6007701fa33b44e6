"""Agones' view of an instance, pure: the lifecycle calls on the shared SDK state, the
GameServer built from it, and the capacity the control plane derives. A fake clock: no
sleeps, no sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from changeover.agones import gameserver
from changeover.agones.regenerate import strip_options
from changeover.control.fleet.hosts import sdk_capacity
from changeover.errors import Conflict, InvalidInput
from changeover.sdk.state import InstanceSDKState


class Clock:
    def __init__(self) -> None:
        self.now = 1_767_225_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def st(clock: Clock) -> InstanceSDKState:
    return InstanceSDKState(instance_id="i1", clock=clock)


IDENT = gameserver.Identity(
    name="arena-1",
    uid="u-1",
    created_at=1_767_224_000.9,
    address="10.0.0.5",
    ports={"game": 7001, "query": 7002},
    capacity=8,
)


def state(st: InstanceSDKState) -> str:
    return gameserver.state_name(st)


def test_the_lifecycle_as_agones_has_it(st: InstanceSDKState, clock: Clock) -> None:
    assert state(st) == "Scheduled"
    st.mark_ready()
    assert state(st) == "Ready"
    st.allocate()
    assert state(st) == "Allocated"
    st.mark_ready()  # Ready ends an allocation
    assert state(st) == "Ready" and not st.allocated
    st.reserve(10)
    assert state(st) == "Reserved" and st.reserved_until == clock.now + 10
    assert not st.end_reservation()  # not yet
    clock.now += 10
    assert state(st) == "Ready"  # its time is up, even before anyone ends it
    assert st.end_reservation() and not st.reserved
    st.reserve(0)  # until Ready or Allocate
    clock.now += 1e6
    assert state(st) == "Reserved" and not st.end_reservation()
    st.allocate()
    assert state(st) == "Allocated" and not st.reserved
    st.notify_shutdown("new build", clock.now + 60)
    assert state(st) == "Shutdown"


def test_shutdown_requested_wins(st: InstanceSDKState) -> None:
    st.mark_ready()
    st.request_shutdown()
    assert state(st) == "Shutdown"
    assert gameserver.state_name(None) == "Shutdown"


@pytest.mark.parametrize("seconds", [-1, -(10**9), 1.5, True, "5"])
def test_a_bad_reservation_changes_nothing(st: InstanceSDKState, seconds: object) -> None:
    st.allocate()
    with pytest.raises(InvalidInput):
        st.reserve(seconds)
    assert st.allocated and not st.reserved


@pytest.mark.parametrize("capacity", [-1, 100_001, 2.0, True, None])
def test_a_bad_player_capacity_changes_nothing(st: InstanceSDKState, capacity: object) -> None:
    st.set_player_capacity(3)
    with pytest.raises(InvalidInput):
        st.set_player_capacity(capacity)
    assert st.player_capacity == 3


def test_players_up_to_the_limit(st: InstanceSDKState) -> None:
    assert st.connect_player("ann", limit=1)
    assert not st.connect_player("ann", limit=1)  # already there: no error, as in Agones
    with pytest.raises(Conflict, match="at capacity"):
        st.connect_player("bob", limit=1)
    assert st.players == {"ann"}
    assert st.connect_player("bob")  # the Changeover SDK's own call has no limit


def test_annotations_follow_the_label_rules(st: InstanceSDKState) -> None:
    st.set_annotations({"match": "m-1"})
    with pytest.raises(InvalidInput, match="annotation"):
        st.set_annotations({"ok": "fine", "Bad Key": "x"})
    assert st.annotations == {"match": "m-1"}
    assert st.snapshot().annotations is not st.annotations


def test_the_game_server_object(st: InstanceSDKState, clock: Clock) -> None:
    st.mark_ready()
    st.set_labels({"mode": "ranked"})
    st.set_annotations({"match": "m-1"})
    st.connect_player("bob")
    st.connect_player("ann")
    st.notify_shutdown("new build 42", 1_767_225_600.0)
    gs = gameserver.game_server(IDENT, st, generation=3)
    meta, status = gs.object_meta, gs.status
    assert (meta.name, meta.uid, meta.creation_timestamp) == ("arena-1", "u-1", 1_767_224_000)
    assert (meta.generation, meta.resource_version) == (3, "3")
    assert dict(meta.labels) == {"agones.dev/sdk-mode": "ranked"}
    assert dict(meta.annotations) == {
        "agones.dev/sdk-match": "m-1",
        gameserver.NOTICE_REASON: "new build 42",
        gameserver.NOTICE_DEADLINE: "2026-01-01T00:00:00Z",
        gameserver.NOTICE_DEADLINE_UNIX: "1767225600.000",
    }
    assert status.state == "Shutdown"
    assert status.address == "10.0.0.5"
    assert [(a.type, a.address) for a in status.addresses] == [("InternalIP", "10.0.0.5")]
    assert [(p.name, p.port) for p in status.ports] == [("game", 7001), ("query", 7002)]
    assert (status.players.count, status.players.capacity) == (2, 8)
    assert list(status.players.ids) == ["ann", "bob"]
    st.set_player_capacity(4)
    assert gameserver.game_server(IDENT, st).status.players.capacity == 4


def test_same_object_ignores_only_the_version_numbers(st: InstanceSDKState) -> None:
    a = gameserver.game_server(IDENT, st, 1)
    assert gameserver.same_object(a, gameserver.game_server(IDENT, st, 7))
    st.heartbeat()  # not part of the object: a watch sends nothing for it
    assert gameserver.same_object(a, gameserver.game_server(IDENT, st, 1))
    st.set_labels({"k": "v"})
    assert not gameserver.same_object(a, gameserver.game_server(IDENT, st, 1))


@pytest.mark.parametrize(
    ("allocated", "reserved", "own", "places"),
    [
        (False, False, None, 8),  # the profile's
        (False, False, 3, 3),  # the game's own
        (False, False, 0, 0),
        (True, False, 3, 0),  # in a match: no new players
        (False, True, None, 0),
    ],
)
def test_the_places_allocation_fills(
    allocated: bool, reserved: bool, own: int | None, places: int
) -> None:
    assert sdk_capacity(8, allocated, reserved, own) == places


def test_stripping_the_gateway_options_keeps_every_rpc_and_field() -> None:
    proto = (Path(gameserver.__file__).parent / "proto" / "sdk.proto").read_text()
    stripped = strip_options(proto)
    assert "google.api" not in stripped and "openapiv2" not in stripped
    for raw in proto.splitlines():
        line = raw.strip()
        if line.startswith(("rpc ", "message ")) or line.endswith(("= 1;", "= 2;", "= 3;")):
            assert line.split("[")[0].strip().rstrip(";") in stripped, line
