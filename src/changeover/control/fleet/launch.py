"""New instance rows, many at a time: a patch job starts thousands in one transaction.

A new instance needs its profile's capacity and version number and a state slot on its
host (``placement.pick_slot``). ``create`` finds all of those for a whole batch with one
read each (profiles, the slots the batch's fleets hold on its hosts, the instances the
batch replaces) and writes the rows with one INSERT, instead of a few queries and an ORM
flush per row. Placement, which creates an instance now and then, goes through the same
rule (``hosts.new_instance``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import distinct, func, insert, select
from sqlalchemy.orm import Session

from changeover.control.builds.models import Version
from changeover.control.fleet import placement
from changeover.control.fleet.models import Instance, Profile, live_sql


@dataclass(frozen=True)
class Launch:
    """An instance to create: of ``profile_id`` in ``fleet_id`` on ``host_id``."""

    fleet_id: int
    profile_id: int
    host_id: int
    replaces_id: int | None = None
    launch_key: str | None = None
    """A patch job's StartInstance key (unique: the same start never creates two)."""
    standin_for: str | None = None


@dataclass(frozen=True)
class _ProfileFacts:
    capacity: int
    version_number: int
    exclusive: bool


def _profiles(s: Session, ids: set[int]) -> dict[int, _ProfileFacts]:
    rows = s.execute(
        select(Profile.id, Profile.capacity, Profile.spec, Version.number)
        .join(Version, Version.id == Profile.version_id)
        .where(Profile.id.in_(ids))
    )
    return {
        pid: _ProfileFacts(capacity, number, json.loads(spec).get("state") == "exclusive")
        for pid, capacity, spec, number in rows
    }


def _held_slots(
    s: Session, pairs: set[tuple[int, int]], skip_id: int | None
) -> dict[tuple[int, int], set[int]]:
    """The slots each (host, fleet) of ``pairs`` holds with its live instances. A batch of
    starts spread over a fleet's hosts would read the whole fleet; most places hold slots
    0..n-1 without a gap, which their count and maximum tell, so only the others are read
    slot by slot (through ix_instances_host_live, without the hosts' stopped history)."""
    s.flush()  # rows made earlier in this transaction count too
    hosts = {h for h, _ in pairs}
    fleets = {f for _, f in pairs}
    where = (
        Instance.host_id.in_(hosts),
        Instance.fleet_id.in_(fleets),
        Instance.slot.is_not(None),
        live_sql(),
    )
    if skip_id is not None:
        where += (Instance.id != skip_id,)
    held: dict[tuple[int, int], set[int]] = {}
    gapped = set()
    for host_id, fleet_id, count, top in s.connection().execute(
        select(
            Instance.host_id,
            Instance.fleet_id,
            func.count(distinct(Instance.slot)),
            func.max(Instance.slot),
        )
        .where(*where)
        .group_by(Instance.host_id, Instance.fleet_id)
    ):
        if (host_id, fleet_id) not in pairs:
            continue
        if count == top + 1:
            held[(host_id, fleet_id)] = set(range(count))
        else:
            gapped.add((host_id, fleet_id))
    if gapped:
        for host_id, fleet_id, slot in s.connection().execute(
            select(Instance.host_id, Instance.fleet_id, Instance.slot).where(
                Instance.host_id.in_({h for h, _ in gapped}), *where[1:]
            )
        ):
            if (host_id, fleet_id) in gapped:
                held.setdefault((host_id, fleet_id), set()).add(slot)
    return held


def choose_slots(
    s: Session, launches: Sequence[Launch], exclusive: Sequence[bool], skip_id: int | None = None
) -> list[int]:
    """Each launch's state slot (``placement.pick_slot``), the batch's own choices counted:
    two new instances of a fleet on one host never share a slot. ``skip_id``: a row being
    given a slot that is already in the table (it does not hold one against itself)."""
    held = _held_slots(s, {(x.host_id, x.fleet_id) for x in launches}, skip_id)
    replaced = {x.replaces_id for x in launches if x.replaces_id is not None}
    olds = {
        row.id: row
        for row in s.execute(
            select(
                Instance.id, Instance.host_id, Instance.fleet_id, Instance.slot, Instance.desired
            ).where(Instance.id.in_(replaced))
        )
    }
    slots = []
    for launch, excl in zip(launches, exclusive, strict=True):
        old = olds.get(launch.replaces_id) if launch.replaces_id is not None else None
        same_place = (
            old is not None and old.host_id == launch.host_id and old.fleet_id == launch.fleet_id
        )
        place = held.setdefault((launch.host_id, launch.fleet_id), set())
        slot = placement.pick_slot(
            place,
            old.slot if same_place and old is not None else None,
            old is not None and old.desired == "stopped",
            excl,
        )
        place.add(slot)
        slots.append(slot)
    return slots


def values(launch: Launch, capacity: int, slot: int, now: float) -> dict[str, Any]:
    """The columns of a new instance: desired running, staging until its agent says more."""
    return {
        "fleet_id": launch.fleet_id,
        "profile_id": launch.profile_id,
        "host_id": launch.host_id,
        "replaces_id": launch.replaces_id,
        "launch_key": launch.launch_key,
        "standin_for": launch.standin_for,
        "capacity": capacity,
        "players": 0,
        "desired": "running",
        "state": "staging",
        "ports": "{}",
        "restarts": 0,
        "sdk_ready": False,
        "sdk_players": "[]",
        "sdk_labels": "{}",
        "sdk_state_saved": False,
        "sdk_annotations": "{}",
        "sdk_allocated": False,
        "sdk_reserved": False,
        "slot": slot,
        "created_at": now,
        "updated_at": now,
    }


def create(s: Session, launches: Sequence[Launch], now: float) -> list[int]:
    """Insert an instance for each of ``launches``; their ids, in the same order."""
    if not launches:
        return []
    facts = _profiles(s, {x.profile_id for x in launches})
    slots = choose_slots(s, launches, [facts[x.profile_id].exclusive for x in launches])
    rows = [
        {
            **values(x, facts[x.profile_id].capacity, slot, now),
            "version_number": facts[x.profile_id].version_number,
        }
        for x, slot in zip(launches, slots, strict=True)
    ]
    return list(
        s.scalars(insert(Instance).returning(Instance.id, sort_by_parameter_order=True), rows)
    )


def is_exclusive(s: Session, profile_id: int) -> tuple[int, bool]:
    """A profile's capacity, and whether its state must pass from instance to instance."""
    facts = _profiles(s, {profile_id})[profile_id]
    return facts.capacity, facts.exclusive


__all__ = ["Launch", "choose_slots", "create", "is_exclusive", "values"]
