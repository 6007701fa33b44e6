"""The answers of the fleet endpoints (``views``, ``mirror_views``): catalogue, fleets,
instances, hosts, switches, mirrors, allocations and sessions, the agents' sync, and the
dashboard's aggregates."""

from __future__ import annotations

from typing import Any

from changeover.control.http_output import Out


class NamedOut(Out):
    """An environment or a region."""

    id: int
    name: str
    created_at: float


class ApplicationOut(Out):
    id: int
    name: str
    type: str | None
    created_at: float


# -- profiles ------------------------------------------------------------------------------


class PortOut(Out):
    name: str
    protocol: str
    port: int | None


class HealthOut(Out):
    type: str
    path: str
    command: list[str]
    interval_s: float
    timeout_s: float
    start_grace_s: float
    failures: int
    send_hex: str | None = None
    """A UDP probe's payload, hex-encoded; absent for the plain checks."""
    expect_hex: str | None = None


class CounterOut(Out):
    count: int
    capacity: int


class ListOut(Out):
    capacity: int
    values: list[str]


class RunSpecOut(Out):
    """How an instance runs (``changeover.runspec.RunSpec``), every field filled in."""

    command: list[str]
    ports: list[PortOut]
    env: dict[str, str]
    health: HealthOut
    stop_signal: str
    stop_timeout_s: float
    capacity: int
    state: str = "instance"
    """instance or exclusive: how an instance's state directory passes on (profiles
    stored before state modes lack it: instance)."""
    counters: dict[str, CounterOut] = {}
    """Agones' counters its game servers start with (Agones' beta SDK)."""
    lists: dict[str, ListOut] = {}
    """Agones' lists its game servers start with (Agones' beta SDK)."""


class ProfileOut(RunSpecOut):
    id: int
    name: str
    application: str
    version: int
    version_label: str | None
    manifest_id: str
    client_min: str | None
    client_max: str | None
    created_at: float
    created_by: str
    rebound_at: float | None
    """When its version last changed (a mirror's release, ``profile rebind``); None: never."""
    rebound_by: str | None


class CompatOut(Out):
    image: str
    version: int
    client_min: str | None
    client_max: str | None


# -- fleets, instances, hosts --------------------------------------------------------------


class FleetOut(Out):
    id: int
    name: str
    application: str
    environment: str
    profile: str | None
    hosts: list[str]
    instances_per_host: int
    instances: dict[str, int]
    """Live instances per desired state."""
    created_at: float
    updated_at: float


class NoticeOut(Out):
    reason: str | None
    deadline: float


class SdkOut(Out):
    """What the game reported through the SDK (labels and ports are the game's own)."""

    ready: bool
    players: list[str]
    labels: dict[str, Any]
    state_saved: bool
    annotations: dict[str, Any] = {}
    """Agones' SDK: the game's annotations (SetAnnotation), ..."""
    allocated: bool = False
    """... whether it is allocated (Allocate: in a match, no new players), ..."""
    reserved: bool = False
    """... or reserved (Reserve: no new players until its time is up), ..."""
    player_capacity: int | None = None
    """... and the player capacity it set (None: the profile's)."""


class ExitOut(Out):
    how: str
    """exited, killed or crashed (``fleet.exits``)."""
    code: int | None
    signal: str | None
    reason: str | None
    at: float | None


class InstanceOut(Out):
    id: int
    fleet: str
    profile: str
    version: int
    host: str
    host_alive: bool
    address: str
    port: int | None
    ports: dict[str, Any]
    state: str
    observed_state: str
    desired: str
    players: int
    capacity: int
    replaces: int | None
    standin_for: str | None = None
    """The lost host it stands in for until that host is back (``fleet.standins``)."""
    trial_id: int | None = None
    """The build machine trial it runs (an update, not its profile's version; no member of
    the fleet: ``GET /trials/{id}``)."""
    slot: int | None
    """Its state slot on the host (``CHANGEOVER_STATE_DIR``); None before slots existed."""
    exit: ExitOut | None
    """How its last process ended; None while none did."""
    drain_deadline: float | None
    notice: NoticeOut | None
    sdk: SdkOut
    pid: int | None
    restarts: int
    error: str | None
    launch_key: str | None
    state_saved_at: float | None
    created_at: float
    ready_at: float | None
    stopped_at: float | None


class HostOut(Out):
    id: int
    name: str
    region: str
    address: str
    slots: int
    alive: bool
    last_seen_at: float
    registered_at: float
    agent_version: str
    staged: list[str]


class HostRegistered(HostOut):
    sync_interval_s: float


# -- switches, allocations, sessions -------------------------------------------------------


class RetiringOut(Out):
    instances: int
    players: int
    deadline: float | None


class SwitchOut(Out):
    id: int
    status: int
    status_name: str
    fleet: str
    from_profile: str | None
    to_profile: str
    drain_s: float
    total: int
    moved: int
    message: str
    error: str | None
    retiring: RetiringOut
    """The old instances still draining or stopping, which ``--wait`` waits for."""
    created_at: float
    updated_at: float
    created_by: str


class AllocationOut(Out):
    session_id: str
    fleet: str
    profile: str
    instance_id: int
    host: str
    address: str
    port: int | None
    ports: dict[str, Any]
    region: str
    version: int
    players: list[str]
    joined_friend: bool
    note: str | None


class SessionOut(Out):
    session_id: str
    instance_id: int
    players: list[str]
    size: int
    party: str | None
    client_version: str | None
    status: str
    created_at: float
    connected_at: float | None
    ended_at: float | None


# -- the agents' sync ----------------------------------------------------------------------


class StopOverride(Out):
    signal: str
    timeout_s: float | None


class DesiredInstance(Out):
    id: int
    fleet: str
    profile: str
    manifest_id: str
    spec: RunSpecOut
    desired: str
    notice: NoticeOut | None
    slot: int
    """Its state slot on the host: the agent gives it ``work/slots/<fleet>/<slot>``."""
    stop: StopOverride | None = None
    """Only when a patch job's stop method overrides the profile's."""


class HostRef(Out):
    id: int
    name: str


class HostDesired(Out):
    host: HostRef
    sync_interval_s: float
    revision: float | None = None
    """Give it as ``since`` at the next sync (the database's clock as this was read)."""
    full: bool = True
    """True: ``instances`` is the whole desired state (stop what is not listed). False:
    only the instances that changed, and ``gone`` those no longer live."""
    instances: list[DesiredInstance]
    gone: list[int] = []
    versions: list[str] | None = None
    """The manifests the host should hold; absent from a quiet answer (keep the last)."""


# -- aggregates for the dashboard ----------------------------------------------------------


class RegionGroup(Out):
    profile: str
    version: int
    state: str
    instances: int
    players: int


class RegionSummary(Out):
    region: str
    instances: int
    players: int
    capacity: int
    groups: list[RegionGroup]


class ProfileSummary(Out):
    profile: str
    version: int
    label: str | None
    instances: int
    players: int


class FleetSummary(Out):
    fleet: str
    instances: int
    players: int
    regions: list[RegionSummary]
    profiles: list[ProfileSummary]
    states: list[str]


class PageInstance(Out):
    id: int
    host: str
    region: str
    profile: str
    version: int
    state: str
    players: int
    capacity: int
    port: int | None
    created_at: float
    labels: dict[str, Any] = {}
    """The game's SDK labels (Changeover's or Agones' SetLabel)."""
    allocated: bool = False
    reserved: bool = False
    trial_id: int | None = None
    """A build machine trial's instance: it runs that update's build, not ``version``."""


class InstancePage(Out):
    total: int
    limit: int
    offset: int
    instances: list[PageInstance]


class ProfileSeries(Out):
    profile: str
    version: int
    allocations: list[int]
    players: list[int]


class PlayerSeries(Out):
    start: float
    step_s: float
    ends: list[float]
    series: list[ProfileSeries]


# -- mirror profiles -----------------------------------------------------------------------


class MirrorSideOut(Out):
    profile: str
    version: int
    version_label: str | None
    role: str
    """live (the fleets run it), idle (free for the next release) or unknown (no fleet
    runs either profile, or fleets run both)."""


class MirrorOut(Out):
    id: int
    name: str
    image: str
    branch: str
    branch_version: int
    """The version the branch points at now: what ``release`` would bring live."""
    profiles: list[MirrorSideOut]
    fleets: list[str]
    """The fleets running either profile."""
    up_to_date: bool
    """The live profile runs the branch's version."""
    created_at: float
    created_by: str


class ReleaseOut(Out):
    mirror: str
    version: int
    version_label: str | None
    live: str
    """The profile the fleets are (being) switched to."""
    released_from: str | None
    """The profile they ran; None when they already ran this version (nothing to do)."""
    switches: list[SwitchOut]


# -- build machine trials ------------------------------------------------------------------


class TrialOut(Out):
    id: int
    status: int
    status_name: str
    update_id: int
    fleet: str
    profile: str
    """Whose run spec the update's build runs with."""
    host: str | None
    instance_id: int | None
    address: str | None
    port: int | None
    """Where a tester reaches the trial's game server while it runs."""
    hold_s: float
    ready_timeout_s: float
    result: str | None
    """passed or failed, once over."""
    message: str
    error: str | None
    started_at: float | None
    ended_at: float | None
    created_at: float
    updated_at: float
    created_by: str
