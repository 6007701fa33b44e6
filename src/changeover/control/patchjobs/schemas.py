"""The answers of the patch-job endpoints (``views``), as docs/patchjobs.md describes them."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from changeover.control.fleet.schemas import ExitOut
from changeover.control.http_output import Out


class MethodOut(Out):
    id: int
    name: str


class StatusOut(Out):
    id: int
    name: str


class StopMethodOut(Out):
    id: int
    name: str
    signal: str


# -- preview -------------------------------------------------------------------------------


class RegionCount(Out):
    region: str
    instances: int


class FleetCount(Out):
    fleet: str
    instances: int


class PreviewInstance(Out):
    id: int
    fleet: str
    host: str
    region: str
    profile: str
    players: int
    state: str


class PreviewOut(Out):
    total: int
    regions: list[RegionCount]
    fleets: list[FleetCount]
    instances: list[PreviewInstance]
    """The first ``MAX_PREVIEW``; ``truncated`` when there are more."""
    truncated: bool


# -- simulate ------------------------------------------------------------------------------


class SimActionOut(Out):
    at_s: float
    kind: str
    instance_id: int | None


class SimResultOut(Out):
    method: int
    method_name: str
    outcome: int | None
    """The job's final status; None when it had not ended by the horizon."""
    outcome_name: str | None
    reason: str
    duration_s: float | None
    selected: int
    players_at_start: int
    arrivals: int
    moved_after_notice: int
    left_after_notice: int
    kicked_at_deadline: int
    kicked_by_stop: int
    refused: int
    peak_extra_instances: int
    extra_slots_needed: int | None
    hosts_over_slots: list[str]
    reduced_capacity_s: float
    min_capacity_share: float
    region_finish_s: dict[str, float]
    starts_after_s: float
    """When the job starts (its ``scheduled_start``) after the fleet was read; the other
    times count from the start."""
    action_count: int
    actions: list[SimActionOut]


class SimEstimateOut(Out):
    runs: int
    duration_p50_s: float | None
    duration_p90_s: float | None
    kicked_p50: float
    kicked_p90: float
    unfinished: int
    first: SimResultOut


class SimModelOut(Out):
    source: str
    note: str


class SimFleetOut(Out):
    instances: int
    players: int


class SimulateOut(Out):
    at: float
    seed: int
    model: SimModelOut
    fleet: SimFleetOut
    estimate: SimEstimateOut
    methods: list[SimResultOut]
    """Every method on the same fleet and seed, when ``compare`` was asked."""


# -- a job ---------------------------------------------------------------------------------


class BuildPair(Out):
    old: str | None
    new: str | None
    """The profiles' names (None: deleted since)."""
    old_id: int
    new_id: int


class StopOut(Out):
    signal: str | None
    timeout_s: float | None
    """Either None: the instance's profile's."""


class EmailOut(Out):
    email: str
    progress: bool
    result: bool
    created_at: float
    changed_at: float | None


class RollingOut(Out):
    max_unavailable: int | str
    max_surge: int | str
    min_healthy_time_s: float
    healthy_deadline_s: float
    progress_deadline_s: float
    auto_revert: bool


class DrainOut(Out):
    deadline_s: float
    notice_before_s: list[float]


class CanaryOut(Out):
    share: float
    analysis_window_s: float
    auto_promote: bool


class ABOut(Out):
    verify_command: str | None
    verify_timeout_s: float


class KnobsOut(Out):
    rolling: RollingOut
    drain: DrainOut
    canary: CanaryOut
    ab: ABOut
    failure_threshold: float
    steps: list[dict[str, Any]]
    """A custom method's steps, as given."""


class ClientReleaseOut(Out):
    image: str
    branch: str
    version: int
    """The client image's version number the branch moves to."""
    client_version: str
    """Its client version (label when it is one, e.g. 1.4.2, else the number)."""
    compat: bool
    """Whether the job gives its server versions default client ranges."""
    branch_version: int | None
    """Where the branch points now (None: no such branch yet)."""
    released: bool
    """The branch points at the released version."""


class RegionProgress(Out):
    """A region and its instances per state: ``{"region": "eu", "old": 3, "done": 2}``."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, int]
    region: str


class ProgressOut(Out):
    total: int
    by_state: dict[str, int]
    regions: list[RegionProgress]


class JobOut(Out):
    id: int
    name: str
    environment: str
    application: str
    method: int
    method_name: str
    status: int
    status_name: str
    phase: str
    step: int
    reason: str
    waiting_for: list[int]
    """The jobs this one waits for (status Waiting)."""
    builds: list[BuildPair]
    fleets: list[str | None]
    stop: StopOut
    comments: str
    scheduled_start: float | None
    start_at: float
    started_at: float | None
    finished_at: float | None
    max_run_time: float | None
    max_run_time_unit: int | str
    max_run_time_s: float | None
    emails: list[EmailOut]
    client_release: ClientReleaseOut | None
    """The client released after the servers (seed 002), if the job carries one."""
    knobs: KnobsOut
    cancel: str | None
    edit_locked: bool
    progress: ProgressOut
    wake_at: float | None
    created_at: float
    updated_at: float
    created_by: str


class JobList(Out):
    jobs: list[JobOut]
    total: int


class EventOut(Out):
    id: int
    at: float
    kind: str
    status: int
    status_name: str
    message: str
    data: dict[str, Any]


class EventList(Out):
    events: list[EventOut]


class ActionOut(Out):
    key: str
    seq: int
    action: dict[str, Any]
    """The recorded action (its kind and arguments)."""
    recorded_at: float
    applied_at: float | None
    result: str | None


class MemberInstance(Out):
    id: int
    profile: str | None
    state: str
    desired: str
    slot: int | None
    players: int
    exit: ExitOut | None
    exit_text: str | None


class JobInstance(Out):
    instance_id: int
    fleet: str | None
    host: str
    region: str
    state: str | None
    """The member's state while the job runs; None once it is over."""
    old: MemberInstance | None
    new: MemberInstance | None
    revert: MemberInstance | None


class JobInstanceList(Out):
    total: int
    instances: list[JobInstance]
