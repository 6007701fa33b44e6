"""Server Allocate rules: pure, so every rule has a test and a property holds for any input."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from changeover.control.fleet.allocation import (
    Candidate,
    Ranked,
    Refusal,
    Request,
    parse_client_version,
    rank,
)
from changeover.errors import InvalidInput


def cand(i: int, **kw: object) -> Candidate:
    base: dict[str, object] = {
        "instance_id": i,
        "region": "eu",
        "version": 1,
        "state": "ready",
        "desired": "running",
        "players": 0,
        "capacity": 4,
    }
    base.update(kw)
    return Candidate(**base)  # type: ignore[arg-type]


def best(candidates: list[Candidate], request: Request | None = None) -> int:
    got = rank(candidates, request or Request())
    assert isinstance(got, Ranked), got
    return got.candidates[0].instance_id


def refused(candidates: list[Candidate], request: Request | None = None) -> str:
    got = rank(candidates, request or Request())
    assert isinstance(got, Refusal), got
    return got.reason


def test_newest_version_first_then_fullest_then_oldest() -> None:
    cs = [cand(1, version=1, players=3), cand(2, version=2, players=0), cand(3, version=2)]
    assert best(cs) == 2  # newer beats fuller; equal: the older instance
    cs = [cand(1, version=2, players=1), cand(2, version=2, players=3), cand(3, version=2)]
    assert best(cs) == 2  # pack: the fullest with room


def test_the_spreading_counterfactual_takes_the_emptiest_among_equals() -> None:
    """What the rollout simulator's benchmark measures packing against; the rest of the
    order (newest build first) stays."""
    pool = [cand(1, players=3), cand(2, players=1), cand(3, players=2, version=2)]
    assert best(pool) == 3
    assert best(pool[:2]) == 1
    assert best(pool[:2], Request(spread=True)) == 2
    assert best(pool, Request(spread=True)) == 3


def test_full_instances_are_skipped_and_party_needs_room_for_all() -> None:
    cs = [cand(1, players=4), cand(2, players=3), cand(3, players=1, version=0)]
    assert best(cs) == 2
    assert best(cs, Request(size=2)) == 3
    assert refused(cs, Request(size=4)) == "no_capacity"


def test_never_draining_stopped_lost_or_unready() -> None:
    cs = [
        cand(1, desired="draining"),
        cand(2, desired="stopped"),
        cand(3, host_alive=False),
        cand(4, state="starting"),
    ]
    assert refused(cs) == "no_instance"
    assert best([*cs, cand(5, version=0)]) == 5


def test_friend_on_a_draining_old_server_is_joined() -> None:
    cs = [cand(1, version=1, desired="draining", players=2), cand(2, version=2)]
    got = rank(cs, Request(friend_instance_id=1))
    assert isinstance(got, Ranked)
    assert got.friend
    assert [c.instance_id for c in got.candidates] == [1]


@pytest.mark.parametrize(
    ("friend", "why"),
    [
        (cand(1, players=4), "full"),
        (cand(1, host_alive=False), "not reachable"),
        (cand(1, desired="stopped"), "stopped"),
        (cand(1, client_max=(1,)), "client version"),
    ],
)
def test_friend_not_joinable_falls_back_with_a_note(friend: Candidate, why: str) -> None:
    got = rank([friend, cand(2)], Request(friend_instance_id=1, client_version=(2,)))
    assert isinstance(got, Ranked)
    assert not got.friend
    assert got.candidates[0].instance_id == 2
    assert got.friend_note is not None and why in got.friend_note


def test_client_versions() -> None:
    old = cand(1, version=1, client_min=(1,), client_max=(1, 9))
    new = cand(2, version=2, client_min=(2,), client_max=(2, 9))
    assert best([old, new], Request(client_version=(1, 5))) == 1
    assert best([old, new], Request(client_version=(2, 0))) == 2
    # A client from the future never lands on an old server.
    assert refused([old], Request(client_version=(2, 0))) == "client_too_new"
    assert refused([new], Request(client_version=(1, 0))) == "client_update_required"
    assert best([cand(3)], Request(client_version=(99,))) == 3  # no bounds: any client


def test_region_preference_is_an_ordered_filter() -> None:
    cs = [cand(1, region="us", version=9), cand(2, region="eu"), cand(3, region="ap")]
    assert best(cs, Request(regions=("eu", "us"))) == 2
    assert best(cs, Request(regions=("us", "eu"))) == 1
    assert best([cand(1, region="us", players=4), cand(2, region="eu")], Request(("us", "eu"))) == 2
    assert refused(cs, Request(regions=("sa",))) == "no_instance"


def test_parse_client_version() -> None:
    assert parse_client_version("1.4.0") == (1, 4) == parse_client_version("1.4")
    assert parse_client_version("0") == (0,)
    for bad in ("", "1.x", "v1", "1.2.3.4.5", "1..2"):
        with pytest.raises(InvalidInput, match="numbers separated by dots"):
            parse_client_version(bad)


candidates = st.lists(
    st.builds(
        Candidate,
        instance_id=st.integers(1, 30),
        region=st.sampled_from(["eu", "us"]),
        version=st.integers(1, 3),
        state=st.sampled_from(["ready", "starting", "stopped", "failed"]),
        desired=st.sampled_from(["running", "draining", "stopped"]),
        players=st.integers(0, 5),
        capacity=st.integers(1, 5),
        host_alive=st.booleans(),
        client_min=st.one_of(st.none(), st.tuples(st.integers(1, 3))),
        client_max=st.one_of(st.none(), st.tuples(st.integers(1, 3))),
    ),
    max_size=12,
    unique_by=lambda c: c.instance_id,
)
requests = st.builds(
    Request,
    regions=st.sampled_from([(), ("eu",), ("us", "eu")]),
    client_version=st.one_of(st.none(), st.tuples(st.integers(1, 3))),
    size=st.integers(1, 3),
    friend_instance_id=st.one_of(st.none(), st.integers(1, 30)),
)


@given(candidates, requests)
def test_never_over_capacity_never_draining_unless_friend(
    cs: list[Candidate], request: Request
) -> None:
    got = rank(cs, request)
    if isinstance(got, Refusal):
        return
    for c in got.candidates:
        assert c.players + request.size <= c.capacity
        assert c.host_alive and c.state == "ready"
        assert c.accepts(request.client_version)
        if c.desired != "running":
            assert got.friend and c.instance_id == request.friend_instance_id
            assert c.desired == "draining"
        if request.regions and not got.friend:
            assert c.region in request.regions


@given(candidates, requests)
def test_sequential_allocations_fill_without_overflow(
    cs: list[Candidate], request: Request
) -> None:
    """Applying the choice again and again (as the compare-and-set does) never overflows."""
    players = {c.instance_id: c.players for c in cs}
    for _ in range(30):
        current = [replace(c, players=players[c.instance_id]) for c in cs]
        got = rank(current, request)
        if isinstance(got, Refusal):
            break
        chosen = got.candidates[0]
        players[chosen.instance_id] += request.size
        assert players[chosen.instance_id] <= chosen.capacity


def test_allocation_weights_hold_players_off_and_prefer_the_heaviest() -> None:
    old = cand(1, version=1, players=3)
    new = cand(2, version=2)
    # A patch job holds players on the old build (the new one weighs 0): even though the
    # new build is newer, nobody new lands there.
    assert best([replace(old, weight=1.0), replace(new, weight=0.0)]) == 1
    # Both open: the heavier first, before version and fullness.
    assert best([replace(old, weight=0.7), replace(new, weight=0.3)]) == 1
    assert best([replace(old, weight=0.3), replace(new, weight=0.7)]) == 2
    # Nothing with weight above 0: no instance for a new player.
    assert refused([replace(old, weight=0.0), replace(new, weight=0.0)]) == "no_instance"
    # A friend still joins a server whose build weighs 0.
    friend = Request(friend_instance_id=1)
    assert best([replace(old, weight=0.0), replace(new, weight=1.0)], friend) == 1
