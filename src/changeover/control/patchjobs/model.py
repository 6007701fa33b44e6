"""What a patch-job planner reads and writes: the observed instances, the job's spec, the
progress the job has recorded, and the decision a planner returns.

    JobSpec        what the operator asked for (validated when built; immutable once the job
                   is inside its edit lock, see ``schedule``), with what the planners need
                   to know of its builds' profiles (``ProfileTerms``)
    InstanceView   one instance as the database shows it (desired + observed columns)
    JobProgress    what the job has recorded: status, phase, step, the frozen selection,
                   every action key already issued, per-instance intents, absolute
                   timestamps; plus the few facts written from outside (cancel, resume,
                   check results, staged builds)
    Decision       a planner's answer: the actions to take now, the progress to record
                   BEFORE taking them, and when to ask again

Fields are named after the database columns they map from (``instance_id``, ``fleet_id``,
``version_id``, ``ready_since`` = ``instances.ready_at``, ``launch_key``, …). All times are
absolute unix seconds, so a restarted control plane resumes every wait where it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeVar

from changeover.control.patchjobs.actions import (
    Action,
    Finish,
    MarkDraining,
    Notify,
    Pause,
    RollBack,
    RunCheck,
    StageBuild,
    StartInstance,
    StopInstance,
    SwitchAllocation,
    Undrain,
    make_key,
)
from changeover.control.patchjobs.client_release import ClientRelease
from changeover.control.patchjobs.knobs import (
    ABKnobs,
    CanaryKnobs,
    DrainPolicy,
    RollingKnobs,
    StopPolicy,
)
from changeover.control.patchjobs.states import (
    GONE_STATES,
    READY,
    RUNNING,
    CancelMode,
    JobStatus,
    Method,
)
from changeover.control.patchjobs.steps import CustomStep, validate_steps
from changeover.errors import InvalidInput
from changeover.runspec import DEFAULT_STOP_TIMEOUT_S

EMAIL_RE: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
K = TypeVar("K")
V = TypeVar("V")
PENDING: Final = "pending"
"""The phase of a job that has not started."""


def _frozen(value: Mapping[K, V]) -> Mapping[K, V]:
    """A read-only copy; a read-only view is taken as it is (a progress passes its
    mappings on to the next unchanged, and a planning pass hands over the copy it made)."""
    if isinstance(value, MappingProxyType):
        return value
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class InstanceView:
    """One instance row: ``desired`` is the control plane's, the rest the agent's report."""

    instance_id: int
    fleet_id: int
    host: str
    version_id: int
    state: str
    """Observed: staging, starting, ready, stopping, stopped, failed, lost."""
    region: str = ""
    desired: str = RUNNING
    """running, draining or stopped."""
    players: int = 0
    ready_since: float | None = None
    """When it last became ready (reset by a restart)."""
    restarts: int = 0
    """Crashes the agent restarted it from: the canary's crash signal."""
    launch_key: str | None = None
    """The key of the StartInstance that created it, if a patch job did."""
    state_saved_at: float | None = None
    """When the server last acknowledged "state saved" through the SDK."""

    @property
    def gone(self) -> bool:
        return self.state in GONE_STATES

    def healthy(self, now: float, min_healthy_time_s: float) -> bool:
        """Ready, and continuously so for ``min_healthy_time_s``."""
        return (
            self.state == READY
            and self.ready_since is not None
            and now - self.ready_since >= min_healthy_time_s
        )


@dataclass(frozen=True)
class BuildPair:
    old_version_id: int
    new_version_id: int


@dataclass(frozen=True)
class ProfileTerms:
    """What the planners need to know of one build's profile (profiles never change once
    created, so the job keeps these from when it was submitted)."""

    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S
    """How long the agent waits after the stop signal before SIGKILL."""
    exclusive_state: bool = False
    """``state: exclusive`` (``runspec.STATE_MODES``): one process at a time on an
    instance's state, which passes from each instance to its replacement."""


DEFAULT_TERMS: Final = ProfileTerms()


@dataclass(frozen=True)
class Member:
    """One instance of the selection, as it was when the job started (kept in progress, so
    the job still knows its host and version after the instance is gone)."""

    instance_id: int
    fleet_id: int
    host: str
    region: str
    version_id: int
    new_version_id: int


@dataclass(frozen=True)
class JobSpec:
    """A patch job as submitted. Everything but ``emails`` is locked 5 minutes before start.

    Raises (on construction):
        InvalidInput: a field is missing or out of range; the message names it.
    """

    job_id: int
    method: Method
    builds: tuple[BuildPair, ...]
    fleet_ids: tuple[int, ...]
    name: str = ""
    scheduled_start: float | None = None
    """Absolute; None = start now. ``schedule.check_start_time`` enforces the 5-min lead."""
    max_run_time_s: float | None = None
    """Past it the job is finalized by force; None = no limit (drains still end by theirs)."""
    stop: StopPolicy = field(default_factory=StopPolicy)
    rolling: RollingKnobs = field(default_factory=RollingKnobs)
    drain: DrainPolicy = field(default_factory=DrainPolicy)
    canary: CanaryKnobs = field(default_factory=CanaryKnobs)
    ab: ABKnobs = field(default_factory=ABKnobs)
    failure_threshold: float = 0.0
    """Share of new instances that may fail a health gate (or crash in a canary window)
    before the job rolls back; 0 = any failure rolls back."""
    steps: tuple[CustomStep, ...] = ()
    """Custom method only."""
    emails: tuple[str, ...] = ()
    profiles: Mapping[int, ProfileTerms] = field(default_factory=dict)
    """Profile id (``version_id``) -> its terms; a profile not listed has the defaults."""
    client_release: ClientRelease | None = None
    """The client branch to move once the servers are done (``client_release``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "profiles", _frozen(self.profiles))
        if isinstance(self.job_id, bool) or not isinstance(self.job_id, int) or self.job_id < 1:
            raise InvalidInput(f"job_id must be a positive integer, got {self.job_id!r}")
        if self.method not in set(Method):
            raise InvalidInput(f"method must be one of 1..6, got {self.method!r}")
        object.__setattr__(self, "method", Method(self.method))
        if not self.builds:
            raise InvalidInput("builds must list at least one old -> new build pair")
        olds = [b.old_version_id for b in self.builds]
        if len(set(olds)) != len(olds):
            raise InvalidInput("builds must not list the same old build twice")
        for b in self.builds:
            if b.old_version_id == b.new_version_id:
                raise InvalidInput(f"builds: old and new build are both {b.old_version_id}")
            if b.new_version_id in olds:
                raise InvalidInput(f"builds: build {b.new_version_id} is both old and new")
        if not self.fleet_ids or len(set(self.fleet_ids)) != len(self.fleet_ids):
            raise InvalidInput("fleet_ids must list at least one fleet, each once")
        if self.max_run_time_s is not None and not 0 < self.max_run_time_s <= 30 * 86400:
            raise InvalidInput(
                f"max_run_time_s must be > 0 and at most 30 days, got {self.max_run_time_s!r}"
            )
        if not 0 <= self.failure_threshold < 1:
            raise InvalidInput(
                f"failure_threshold must be in [0, 1), got {self.failure_threshold!r}"
            )
        for e in self.emails:
            if not isinstance(e, str) or not EMAIL_RE.fullmatch(e):
                raise InvalidInput(f"emails: {e!r} is not an e-mail address")
        if self.method is Method.CUSTOM:
            object.__setattr__(self, "steps", validate_steps(self.steps))
        elif self.steps:
            raise InvalidInput("steps are only for the custom method (6)")

    @property
    def new_version_of(self) -> Mapping[int, int]:
        return {b.old_version_id: b.new_version_id for b in self.builds}

    @property
    def old_versions(self) -> frozenset[int]:
        return frozenset(b.old_version_id for b in self.builds)

    @property
    def new_versions(self) -> frozenset[int]:
        return frozenset(b.new_version_id for b in self.builds)

    def terms(self, version_id: int) -> ProfileTerms:
        return self.profiles.get(version_id, DEFAULT_TERMS)

    def stop_wait_s(self, version_id: int) -> float:
        """How long stopping an instance of ``version_id`` may take before SIGKILL: the
        job's stop timeout where it gave one, else that profile's."""
        if self.stop.timeout_s is not None:
            return self.stop.timeout_s
        return self.terms(version_id).stop_timeout_s

    def exclusive_state(self, m: Member) -> bool:
        """Whether ``m``'s old or new build runs with exclusive state: its instances then
        never run beside each other (each waits for the other's state slot)."""
        return (
            self.terms(m.version_id).exclusive_state or self.terms(m.new_version_id).exclusive_state
        )

    def selects(self, i: InstanceView) -> bool:
        """Whether ``i`` is in this job's selection (seed 001: fleets x old builds)."""
        return i.fleet_id in self.fleet_ids and i.version_id in self.old_versions


@dataclass(frozen=True)
class JobProgress:
    """Everything the job has recorded; the reconciler stores it as one row (or JSON).

    Written by the planner (through ``Decision.progress``): every field but the last four.
    Written from outside, read by the planner: ``cancel`` and ``resumes`` (API),
    ``check_results`` (the reconciler, when a RunCheck ends), ``staged`` (the reconciler,
    when an agent reports a staged build).
    """

    status: JobStatus = JobStatus.SCHEDULED
    phase: str = PENDING
    step: int = 0
    """Batch number (rolling) or step index (custom)."""
    phase_since: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""
    """The last thing worth telling the operator (why it waits, why it failed)."""
    selection: tuple[Member, ...] = ()
    issued: Mapping[str, float] = field(default_factory=dict)
    """Action key -> when it was recorded. The planner never emits one of these again."""
    intents: Mapping[int, str] = field(default_factory=dict)
    """Instance id -> what the job last asked of it (start, drain, notice, stop, …)."""
    deadlines: Mapping[int, float] = field(default_factory=dict)
    """Instance id -> its drain deadline."""
    marks: Mapping[str, float] = field(default_factory=dict)
    """Named moments: ``healthy/<instance>``, ``window``, ``paused``, ``gate``, …"""
    cancel: CancelMode | None = None
    resumes: int = 0
    """How many times an operator pressed resume (the API accepts it only while PAUSED);
    each Pause consumes one."""
    check_results: Mapping[str, bool] = field(default_factory=dict)
    """RunCheck key -> passed."""
    staged: frozenset[tuple[str, int]] = frozenset()
    """(host, version_id) pairs the agents report staged."""

    def __post_init__(self) -> None:
        # Read-only views: a planner cannot mutate the progress it was given by accident.
        for name in ("issued", "intents", "deadlines", "marks", "check_results"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))


@dataclass(frozen=True)
class Decision:
    """A planner's answer. Record ``progress`` first, then apply ``actions`` in order, then
    plan again at ``wake_at`` (or sooner, when an instance of the job changes);
    ``wake_at`` is None once the job is over."""

    actions: tuple[Action, ...]
    progress: JobProgress
    wake_at: float | None


__all__ = [
    "DEFAULT_TERMS",
    "PENDING",
    "Action",
    "BuildPair",
    "CancelMode",
    "Decision",
    "Finish",
    "InstanceView",
    "JobProgress",
    "JobSpec",
    "JobStatus",
    "MarkDraining",
    "Member",
    "Method",
    "Notify",
    "Pause",
    "ProfileTerms",
    "RollBack",
    "RunCheck",
    "StageBuild",
    "StartInstance",
    "StopInstance",
    "SwitchAllocation",
    "Undrain",
    "make_key",
]
