"""Agones' counters and lists (its beta ``CountsAndLists``) for one game server. Pure.

A profile declares the counters and lists its game servers start with
(``RunSpec.counters``, ``RunSpec.lists``); the instance's SDK state holds only those the
game changed since its process started (``InstanceSDKState.counters``, ``.lists``), so a
new process starts from the declaration, as a new GameServer does under Agones, and an
agent restart keeps what the game set (the state is saved with the instance). The rules
and the gRPC codes are those of Agones' SDK server:

    NOT_FOUND         a counter or list the profile does not declare; a value not in the list
    OUT_OF_RANGE      a count outside [0, capacity]; a capacity below 0 (or, for a list,
                      above 1000); a value added to a full list
    ALREADY_EXISTS    a value already in the list
    INVALID_ARGUMENT  an update mask naming what is not a field of a List; a bad value

Lowering a capacity below the count (or a list's length) lowers the count (drops the last
values) with it, as Agones does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc

from changeover.errors import InvalidInput
from changeover.runspec import MAX_COUNTER, MAX_LIST_CAPACITY, CounterSpec, ListSpec
from changeover.runspec import check_list_value as _value
from changeover.sdk.state import InstanceSDKState

LIST_FIELDS = ("name", "capacity", "values")
"""The fields of Agones' List message: what an update mask may name (name changes nothing)."""


class CountError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Declared:
    """What the profile declares: the counters and lists a new game server starts with."""

    counters: Mapping[str, CounterSpec]
    lists: Mapping[str, ListSpec]


def counter(d: Declared, st: InstanceSDKState, name: str) -> tuple[int, int]:
    """(count, capacity) of counter ``name``."""
    if name in st.counters:
        c = st.counters[name]
        return c["count"], c["capacity"]
    spec = d.counters.get(name)
    if spec is None:
        raise CountError(grpc.StatusCode.NOT_FOUND, f"counter not found: {name}")
    return spec.count, spec.capacity


def update_counter(
    d: Declared,
    st: InstanceSDKState,
    name: str,
    *,
    count: int | None,
    capacity: int | None,
    diff: int,
) -> tuple[int, int]:
    """Set the capacity, then the count, then add ``diff``; all or nothing."""
    now, cap = counter(d, st, name)
    if capacity is not None:
        if not 0 <= capacity <= MAX_COUNTER:
            raise CountError(
                grpc.StatusCode.OUT_OF_RANGE,
                f"capacity must be 0 to {MAX_COUNTER}, got {capacity}",
            )
        cap, now = capacity, min(now, capacity)
    if count is not None:
        if not 0 <= count <= cap:
            raise CountError(
                grpc.StatusCode.OUT_OF_RANGE, f"count {count} is out of range [0, {cap}]"
            )
        now = count
    if diff:
        if not 0 <= now + diff <= cap:
            raise CountError(
                grpc.StatusCode.OUT_OF_RANGE,
                f"count {now} + {diff} is out of range [0, {cap}]",
            )
        now += diff
    st.counters[name] = {"count": now, "capacity": cap}
    return now, cap


def get_list(d: Declared, st: InstanceSDKState, name: str) -> tuple[int, list[str]]:
    """(capacity, values) of list ``name``."""
    if name in st.lists:
        entry = st.lists[name]
        return entry["capacity"], list(entry["values"])
    spec = d.lists.get(name)
    if spec is None:
        raise CountError(grpc.StatusCode.NOT_FOUND, f"list not found: {name}")
    return spec.capacity, list(spec.values)


def _checked(values: Iterable[str]) -> list[str]:
    try:
        return list(dict.fromkeys(_value(v) for v in values))
    except InvalidInput as e:
        raise CountError(grpc.StatusCode.INVALID_ARGUMENT, e.message) from e


def update_list(
    d: Declared,
    st: InstanceSDKState,
    name: str,
    mask: Sequence[str],
    capacity: int,
    values: Sequence[str],
) -> tuple[int, list[str]]:
    """Overwrite the fields ``mask`` names with ``capacity`` and ``values``. As Agones'
    sidecar: the capacity given must be in range even when the mask leaves it out, and an
    empty mask changes nothing (Agones' Node.js SDK sends one from ``setListCapacity``)."""
    unknown = [p for p in mask if p not in LIST_FIELDS]
    if unknown:
        raise CountError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"update_mask path(s) {unknown} are not fields of a List: {', '.join(LIST_FIELDS)}",
        )
    if not 0 <= capacity <= MAX_LIST_CAPACITY:
        raise CountError(
            grpc.StatusCode.OUT_OF_RANGE,
            f"capacity must be 0 to {MAX_LIST_CAPACITY}, got {capacity}",
        )
    cap, now = get_list(d, st, name)
    if "capacity" in mask:
        cap = capacity
    if "values" in mask:
        now = _checked(values)
    now = now[:cap]
    st.lists[name] = {"capacity": cap, "values": now}
    return cap, now


def add_list_value(
    d: Declared, st: InstanceSDKState, name: str, value: str
) -> tuple[int, list[str]]:
    cap, now = get_list(d, st, name)
    (value,) = _checked([value])
    if value in now:
        raise CountError(grpc.StatusCode.ALREADY_EXISTS, f"already exists: {value} in list {name}")
    if len(now) >= cap:
        raise CountError(grpc.StatusCode.OUT_OF_RANGE, f"list {name} is at its capacity {cap}")
    now.append(value)
    st.lists[name] = {"capacity": cap, "values": now}
    return cap, now


def remove_list_value(
    d: Declared, st: InstanceSDKState, name: str, value: str
) -> tuple[int, list[str]]:
    cap, now = get_list(d, st, name)
    if value not in now:
        raise CountError(grpc.StatusCode.NOT_FOUND, f"not found: {value} in list {name}")
    now.remove(value)
    st.lists[name] = {"capacity": cap, "values": now}
    return cap, now


def all_counters(d: Declared, st: InstanceSDKState) -> dict[str, tuple[int, int]]:
    """Every counter, as the GameServer's status shows them."""
    return {name: counter(d, st, name) for name in sorted({*d.counters, *st.counters})}


def all_lists(d: Declared, st: InstanceSDKState) -> dict[str, tuple[int, list[str]]]:
    return {name: get_list(d, st, name) for name in sorted({*d.lists, *st.lists})}
