"""The SDK's model of one instance: what it records and which inputs it refuses."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from changeover.errors import InvalidInput
from changeover.sdk.state import (
    MAX_LABELS,
    InstanceSDKState,
    ShutdownNotice,
    check_labels,
    check_player_id,
)


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> InstanceSDKState:
    return InstanceSDKState(instance_id="i-1", clock=clock)


def test_a_new_instance_is_not_ready_and_has_no_heartbeat(state: InstanceSDKState) -> None:
    assert not state.ready
    assert state.seconds_since_heartbeat() is None
    assert state.to_dict()["shutdown"] is None


def test_ready_records_its_first_time_and_counts_as_a_heartbeat(
    state: InstanceSDKState, clock: FakeClock
) -> None:
    state.mark_ready()
    clock.advance(5)
    state.mark_ready()
    assert state.ready
    assert state.ready_at == 1_000.0
    assert state.last_heartbeat == 1_005.0


def test_heartbeat_age_follows_the_clock(state: InstanceSDKState, clock: FakeClock) -> None:
    state.heartbeat()
    clock.advance(2.5)
    assert state.seconds_since_heartbeat() == 2.5


def test_players_connect_and_disconnect_idempotently(state: InstanceSDKState) -> None:
    assert state.connect_player("ann")
    assert not state.connect_player("ann")
    assert state.connect_player("bob")
    assert state.disconnect_player("ann")
    assert not state.disconnect_player("ann")
    assert not state.disconnect_player("never-seen")
    assert state.players == {"bob"}


@pytest.mark.parametrize(
    "bad",
    ["", "x" * 129, "tab\there", "new\nline", "nul\x00", 42, None, ["ann"]],
    ids=["empty", "too-long", "tab", "newline", "nul", "int", "none", "list"],
)
def test_bad_player_ids_are_refused_and_change_nothing(
    state: InstanceSDKState, bad: object
) -> None:
    state.connect_player("ann")
    with pytest.raises(InvalidInput):
        state.connect_player(bad)
    with pytest.raises(InvalidInput):
        state.disconnect_player(bad)
    assert state.players == {"ann"}


def test_player_ids_at_the_limit_and_unicode_are_fine() -> None:
    assert check_player_id("p" * 128) == "p" * 128
    assert check_player_id("Zoë 🎮") == "Zoë 🎮"


def test_labels_merge_and_overwrite(state: InstanceSDKState) -> None:
    state.set_labels({"mode": "ranked", "map.name": "dust"})
    state.set_labels({"mode": "casual"})
    assert state.labels == {"mode": "casual", "map.name": "dust"}
    assert list(state.to_dict()["labels"]) == ["map.name", "mode"]  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "labels",
    [
        {"Upper": "x"},
        {"": "x"},
        {"k" * 64: "x"},
        {"sp ace": "x"},
        {"ok": "v" * 257},
        {"ok": 1},
        {"ok": "line\nbreak"},
        {1: "x"},
    ],
    ids=[
        "upper",
        "empty-key",
        "long-key",
        "space",
        "long-value",
        "int-value",
        "newline",
        "int-key",
    ],
)
def test_bad_labels_are_refused_all_or_nothing(
    state: InstanceSDKState, labels: dict[object, object]
) -> None:
    state.set_labels({"keep": "me"})
    with pytest.raises(InvalidInput):
        state.set_labels({"fine": "yes", **labels})
    assert state.labels == {"keep": "me"}


def test_no_more_than_64_labels(state: InstanceSDKState) -> None:
    state.set_labels({f"k{i}": "v" for i in range(MAX_LABELS)})
    state.set_labels({"k0": "overwriting is fine at the limit"})
    with pytest.raises(InvalidInput, match="at most 64"):
        state.set_labels({"one-more": "v"})
    assert len(state.labels) == MAX_LABELS


@given(st.from_regex(r"[a-z0-9_.-]{1,63}", fullmatch=True), st.text(max_size=256))
def test_any_key_of_the_grammar_is_accepted(key: str, value: str) -> None:
    if value.isprintable():
        assert check_labels({key: value}) == {key: value}
    else:
        with pytest.raises(InvalidInput):
            check_labels({key: value})


def test_a_notice_is_recorded_with_its_time(state: InstanceSDKState, clock: FakeClock) -> None:
    assert state.notify_shutdown("new build", 2_000.0)
    assert state.shutdown == ShutdownNotice("new build", 2_000.0)
    assert state.shutdown_notified_at == 1_000.0
    assert state.shutdown.seconds_left(clock()) == 1_000.0
    assert state.to_dict()["shutdown"] == {"reason": "new build", "deadline": 2_000.0}


def test_the_same_notice_again_changes_nothing_a_new_one_asks_for_a_new_save(
    state: InstanceSDKState, clock: FakeClock
) -> None:
    state.notify_shutdown("new build", 2_000.0)
    state.mark_state_saved()
    clock.advance(10)
    assert not state.notify_shutdown("new build", 2_000.0)
    assert state.state_saved
    assert state.notify_shutdown("forced", 1_500.0)
    assert not state.state_saved
    assert state.shutdown_notified_at == 1_010.0


def test_state_saved_records_when(state: InstanceSDKState, clock: FakeClock) -> None:
    state.notify_shutdown("new build", 2_000.0)
    clock.advance(3)
    state.mark_state_saved()
    assert state.state_saved
    assert state.state_saved_at == 1_003.0


@pytest.mark.parametrize(
    ("reason", "deadline"),
    [
        ("", 1.0),
        ("   ", 1.0),
        ("r" * 257, 1.0),
        ("bad\x07", 1.0),
        (None, 1.0),
        ("ok", math.nan),
        ("ok", math.inf),
        ("ok", "soon"),
        ("ok", True),
    ],
)
def test_bad_notices_are_refused(state: InstanceSDKState, reason: object, deadline: object) -> None:
    with pytest.raises(InvalidInput):
        state.notify_shutdown(reason, deadline)  # type: ignore[arg-type]
    assert state.shutdown is None


def test_notice_from_dict_checks_its_shape() -> None:
    assert ShutdownNotice.from_dict({"reason": "r", "deadline": 5}) == ShutdownNotice("r", 5.0)
    bads: list[object] = [None, [], {"reason": "r"}, {"deadline": 5}, {"reason": 1, "deadline": 5}]
    for bad in bads:
        with pytest.raises(InvalidInput):
            ShutdownNotice.from_dict(bad)


def test_a_snapshot_does_not_follow_later_changes(state: InstanceSDKState) -> None:
    state.connect_player("ann")
    state.set_labels({"mode": "ranked"})
    snap = state.snapshot()
    state.connect_player("bob")
    state.set_labels({"mode": "casual"})
    assert snap.players == {"ann"}
    assert snap.labels == {"mode": "ranked"}
    assert snap.instance_id == "i-1"
