"""Agones' counters and lists (``agones.counts``): the rules hold after any sequence of
calls, and a refused call changes nothing. Pure."""

from __future__ import annotations

import copy
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from changeover.agones import counts
from changeover.runspec import CounterSpec, ListSpec
from changeover.sdk.state import InstanceSDKState

DECLARED = counts.Declared({"rooms": CounterSpec(1, 4)}, {"party": ListSpec(3, ("a",))})
VALUES = st.sampled_from(["a", "b", "c", "d", "", "x" * 300])
REFUSALS = (
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
)
CALLS = st.one_of(
    st.tuples(st.just("diff"), st.integers(-5, 5)),
    st.tuples(st.just("count"), st.integers(-2, 6)),
    st.tuples(st.just("capacity"), st.integers(-2, 6)),
    st.tuples(st.just("add"), VALUES),
    st.tuples(st.just("remove"), VALUES),
    st.tuples(
        st.just("update"),
        st.tuples(
            st.lists(st.sampled_from(["capacity", "values", "name"]), max_size=2),
            st.integers(-1, 5),
            st.lists(VALUES, max_size=6),
        ),
    ),
)


def _call(s: InstanceSDKState, kind: str, arg: Any) -> None:
    if kind == "diff":
        counts.update_counter(DECLARED, s, "rooms", count=None, capacity=None, diff=arg)
    elif kind == "count":
        counts.update_counter(DECLARED, s, "rooms", count=arg, capacity=None, diff=0)
    elif kind == "capacity":
        counts.update_counter(DECLARED, s, "rooms", count=None, capacity=arg, diff=0)
    elif kind == "add":
        counts.add_list_value(DECLARED, s, "party", arg)
    elif kind == "remove":
        counts.remove_list_value(DECLARED, s, "party", arg)
    else:
        mask, capacity, values = arg
        counts.update_list(DECLARED, s, "party", mask, capacity, values)


@given(st.lists(CALLS, max_size=30))
def test_the_rules_hold_and_a_refusal_changes_nothing(calls: list[tuple[str, Any]]) -> None:
    s = InstanceSDKState("i1", clock=lambda: 0.0)
    assert counts.counter(DECLARED, s, "rooms") == (1, 4)
    assert counts.get_list(DECLARED, s, "party") == (3, ["a"])
    for kind, arg in calls:
        before = (copy.deepcopy(s.counters), copy.deepcopy(s.lists))
        refused: grpc.StatusCode | None = None
        try:
            _call(s, kind, arg)
        except counts.CountError as e:
            refused = e.code
        if refused is not None:
            assert refused in REFUSALS
            assert (s.counters, s.lists) == before
        count, capacity = counts.counter(DECLARED, s, "rooms")
        assert 0 <= count <= capacity
        cap, values = counts.get_list(DECLARED, s, "party")
        assert 0 <= len(values) <= cap <= 1000
        assert len(set(values)) == len(values)
        assert all(0 < len(v) <= 256 for v in values)


def test_undeclared_names_are_not_found() -> None:
    s = InstanceSDKState("i1", clock=lambda: 0.0)
    for call in (
        lambda: counts.counter(DECLARED, s, "nope"),
        lambda: counts.get_list(DECLARED, s, "nope"),
        lambda: counts.add_list_value(DECLARED, s, "nope", "a"),
    ):
        with pytest.raises(counts.CountError) as refused:
            call()
        assert refused.value.code == grpc.StatusCode.NOT_FOUND
    assert counts.all_counters(DECLARED, s) == {"rooms": (1, 4)}
