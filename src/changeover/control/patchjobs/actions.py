"""What a patch-job planner asks the reconciler to do, one frozen dataclass per kind.

Every action is a *desired-state write* (the agent and the allocator converge on it), never
a fire-and-forget RPC, and carries an idempotency ``key`` built by ``make_key``:

    job<job id>/<step>/<kind>/<subject>        e.g.  job7/main/stop/42

``step`` is the part of the job that asked (``main`` for the replacement of the selection,
``revert`` for a rollback, ``s3`` for a custom job's fourth step, ``stage`` for pre-staging);
``subject`` is an instance id, ``host:version`` or ``-``. The planner records the key in
``JobProgress.issued`` before the reconciler acts, and never emits a key twice; the
reconciler stores the action under its key (unique), so applying it again after a crash
finds the row and does nothing twice. ``StartInstance`` in particular must create the
instance row with ``launch_key = key``: that is how the planner finds the instance later.
"""

from __future__ import annotations

from dataclasses import dataclass

from changeover.control.patchjobs.states import JobStatus


def make_key(job_id: int, step: str, kind: str, subject: object = "-") -> str:
    """The idempotency key of one action of one job (see the module docstring)."""
    return f"job{job_id}/{step}/{kind}/{subject}"


@dataclass(frozen=True)
class StageBuild:
    """Have ``host`` stage ``version_id`` beside what it runs (hard links; nothing stops)."""

    key: str
    host: str
    version_id: int


@dataclass(frozen=True)
class StartInstance:
    """Create an instance of ``version_id`` on ``host`` with ``launch_key = key``.

    ``replaces_id`` names the instance it stands in for, so the fleet counts the pair once.
    """

    key: str
    host: str
    fleet_id: int
    version_id: int
    replaces_id: int | None


@dataclass(frozen=True)
class MarkDraining:
    """No new players except friends of those on it; stopped when empty or at ``deadline``."""

    key: str
    instance_id: int
    deadline: float
    reason: str


@dataclass(frozen=True)
class Undrain:
    """Take a draining instance back into allocation (a revert keeps the old build)."""

    key: str
    instance_id: int


@dataclass(frozen=True)
class Notify:
    """SDK shutdown notice: the server will stop at ``deadline``; save and tell players."""

    key: str
    instance_id: int
    reason: str
    deadline: float


@dataclass(frozen=True)
class StopInstance:
    """Stop with ``signal`` (graceful unless SIGKILL), then SIGKILL after ``timeout_s``;
    either None: the instance's profile's (resolved when applied).

    ``require_empty``: apply as a compare-and-set on ``players = 0``. If a player got in
    first, write ``desired = draining`` with ``drain_deadline = fallback_deadline`` instead;
    the fleet's drain rules then stop it when empty or at that deadline.
    ``state_saved``: the server acknowledged "state saved" after its notice (for reports).
    """

    key: str
    instance_id: int
    signal: str | None
    graceful: bool
    timeout_s: float | None
    require_empty: bool
    fallback_deadline: float
    state_saved: bool
    reason: str


@dataclass(frozen=True)
class SwitchAllocation:
    """Set the allocation weight of each version in ``fleet_ids`` (0 = no new players)."""

    key: str
    fleet_ids: tuple[int, ...]
    weights: tuple[tuple[int, float], ...]
    """(version_id, weight) pairs, sorted by version id."""

    def weight_of(self, version_id: int) -> float | None:
        return dict(self.weights).get(version_id)


@dataclass(frozen=True)
class RunCheck:
    """Run ``command`` against ``instance_ids``; record pass/fail in
    ``JobProgress.check_results[key]``. No player reaches them while it runs."""

    key: str
    command: str
    instance_ids: tuple[int, ...]
    timeout_s: float


@dataclass(frozen=True)
class Pause:
    """The job waits for an operator's resume (``JobProgress.resumes`` goes up by one)."""

    key: str
    reason: str


@dataclass(frozen=True)
class RollBack:
    """The job starts reverting to the old builds (status: rolling back; report it)."""

    key: str
    reason: str


@dataclass(frozen=True)
class DeclareClientRange:
    """Give the job's server versions client ranges where they declare none
    (``client_release.default_ranges``): the new ones accept ``client_version``, the old
    ones nothing newer than what the client ``branch`` of ``image_id`` points at now.
    Profile ids: the applier reads their image versions and declared ranges."""

    key: str
    old_profiles: tuple[int, ...]
    new_profiles: tuple[int, ...]
    image_id: int
    branch: str
    client_version: str


@dataclass(frozen=True)
class ReleaseClient:
    """Move the client ``branch`` of ``image_id`` to ``version_id`` (the job's servers are
    done); left as it is when it already points there or at a newer version."""

    key: str
    image_id: int
    branch: str
    version_id: int
    client_version: str


@dataclass(frozen=True)
class Finish:
    """The job is over with ``outcome`` (a terminal ``JobStatus``); report it."""

    key: str
    outcome: JobStatus
    reason: str


Action = (
    StageBuild
    | StartInstance
    | MarkDraining
    | Undrain
    | Notify
    | StopInstance
    | SwitchAllocation
    | RunCheck
    | Pause
    | RollBack
    | DeclareClientRange
    | ReleaseClient
    | Finish
)

ACTION_TYPES: tuple[type[Action], ...] = (
    StageBuild,
    StartInstance,
    MarkDraining,
    Undrain,
    Notify,
    StopInstance,
    SwitchAllocation,
    RunCheck,
    Pause,
    RollBack,
    DeclareClientRange,
    ReleaseClient,
    Finish,
)

__all__ = [
    "ACTION_TYPES",
    "Action",
    "DeclareClientRange",
    "Finish",
    "MarkDraining",
    "Notify",
    "Pause",
    "ReleaseClient",
    "RollBack",
    "RunCheck",
    "StageBuild",
    "StartInstance",
    "StopInstance",
    "SwitchAllocation",
    "Undrain",
    "make_key",
]
