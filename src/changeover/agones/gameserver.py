"""The GameServer object Agones' SDK hands a game, built from what Changeover knows. Pure.

``Identity`` is what the agent fixes when it starts the process (a fresh ``uid`` for every
process, as Agones makes a new GameServer for every pod); the rest comes from the
instance's SDK state. Labels and annotations a game sets appear under Agones' own prefix
``agones.dev/sdk-``, so a game reads back what it wrote just as under Agones.

States (Agones' names), the first that applies:

    Shutdown   the game called Shutdown, or Changeover gave a shutdown notice (its
               reason and deadline are the annotations NOTICE_REASON and NOTICE_DEADLINE)
    Allocated  the game called Allocate
    Reserved   the game called Reserve, and its time is not up
    Ready      the game called Ready
    Scheduled  not yet ready
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field

from changeover.agones import counts
from changeover.agones._pb import sdk_pb2
from changeover.sdk.state import InstanceSDKState

SDK_PREFIX = "agones.dev/sdk-"
NOTICE_REASON = "changeover.dev/shutdown-reason"
NOTICE_DEADLINE = "changeover.dev/shutdown-deadline"
"""The notice's deadline, RFC 3339 in UTC (``2026-12-05T14:05:00Z``)."""
NOTICE_DEADLINE_UNIX = "changeover.dev/shutdown-deadline-unix"


@dataclass(frozen=True)
class Identity:
    """One instance's process as a GameServer: fixed for the life of the process."""

    name: str
    uid: str
    created_at: float
    address: str
    ports: Mapping[str, int] = field(default_factory=dict)
    capacity: int = 0
    """The profile's places: the player capacity until the game sets its own."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Changeover's own labels (fleet, profile, instance), beside the game's."""
    health_period_s: int = 5
    health_failures: int = 3
    health_initial_delay_s: int = 0
    health_disabled: bool = False
    namespace: str = "default"
    counts: counts.Declared = field(default_factory=lambda: counts.Declared({}, {}))
    """The counters and lists its profile declares (Agones' beta SDK)."""


def state_name(st: InstanceSDKState | None) -> str:
    if st is None:
        return "Shutdown"
    if st.shutdown_requested or st.shutdown is not None:
        return "Shutdown"
    if st.allocated:
        return "Allocated"
    if st.reserved and (st.reserved_until is None or st.clock() < st.reserved_until):
        return "Reserved"
    if st.ready:
        return "Ready"
    return "Scheduled"


def player_capacity(ident: Identity, st: InstanceSDKState) -> int:
    return st.player_capacity if st.player_capacity is not None else ident.capacity


def rfc3339(ts: float) -> str:
    return (
        datetime.datetime.fromtimestamp(ts, datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def game_server(ident: Identity, st: InstanceSDKState, generation: int = 1) -> sdk_pb2.GameServer:
    """The GameServer of ``ident`` in state ``st``; ``generation`` numbers its versions."""
    labels = dict(ident.labels)
    labels.update({SDK_PREFIX + k: v for k, v in st.labels.items()})
    annotations = {SDK_PREFIX + k: v for k, v in st.annotations.items()}
    if st.shutdown is not None:
        annotations[NOTICE_REASON] = st.shutdown.reason
        annotations[NOTICE_DEADLINE] = rfc3339(st.shutdown.deadline)
        annotations[NOTICE_DEADLINE_UNIX] = f"{st.shutdown.deadline:.3f}"
    gs = sdk_pb2.GameServer()
    meta = gs.object_meta
    meta.name = ident.name
    meta.namespace = ident.namespace
    meta.uid = ident.uid
    meta.resource_version = str(generation)
    meta.generation = generation
    meta.creation_timestamp = int(ident.created_at)
    meta.labels.update(labels)
    meta.annotations.update(annotations)
    health = gs.spec.health
    health.disabled = ident.health_disabled
    health.period_seconds = ident.health_period_s
    health.failure_threshold = ident.health_failures
    health.initial_delay_seconds = ident.health_initial_delay_s
    status = gs.status
    status.state = state_name(st)
    status.address = ident.address
    status.addresses.add(type="InternalIP", address=ident.address)
    for name, port in sorted(ident.ports.items()):
        status.ports.add(name=name, port=port)
    status.players.count = len(st.players)
    status.players.capacity = player_capacity(ident, st)
    status.players.ids.extend(sorted(st.players))
    for name, (count, capacity) in counts.all_counters(ident.counts, st).items():
        status.counters[name].count = count
        status.counters[name].capacity = capacity
    for name, (capacity, values) in counts.all_lists(ident.counts, st).items():
        status.lists[name].capacity = capacity
        status.lists[name].values.extend(values)
    return gs


def same_object(a: sdk_pb2.GameServer, b: sdk_pb2.GameServer) -> bool:
    """Whether two GameServers differ in nothing but their version numbers."""
    a2, b2 = sdk_pb2.GameServer(), sdk_pb2.GameServer()
    a2.CopyFrom(a)
    b2.CopyFrom(b)
    for gs in (a2, b2):
        gs.object_meta.resource_version = ""
        gs.object_meta.generation = 0
    return bool(a2 == b2)
