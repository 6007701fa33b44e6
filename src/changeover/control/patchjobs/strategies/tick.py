"""``Tick``: the scratch pad of one planning pass.

A planner is a pure function of (spec, progress, instances, now). Inside it, a ``Tick``
collects the actions decided so far and the progress fields they change, then
``decision()`` freezes both into a ``Decision``. It lives and dies within one call, so
the function stays pure however the pad is mutated.

``emit`` is where idempotency is enforced: an action whose key is already in
``progress.issued`` (or was emitted earlier in this pass) is dropped, and a second stop of
the same instance is refused whatever its key. Every emitted action is recorded in
``issued`` with the time, and in ``intents`` against the instance it concerns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Final

from changeover.control.patchjobs.actions import (
    Action,
    Finish,
    MarkDraining,
    Notify,
    ReleaseClient,
    StartInstance,
    StopInstance,
    Undrain,
    make_key,
)
from changeover.control.patchjobs.model import (
    Decision,
    InstanceView,
    JobProgress,
    JobSpec,
    JobStatus,
    Member,
)
from changeover.control.patchjobs.strategies.memo import Instances, JobInstances, Memo

POLL_S: Final = 5.0
"""Wake-up when nothing is timed but the job waits on the world (players leaving, an
instance becoming ready); the reconciler also re-plans on any change of the job's instances."""
STOP: Final = "stop"


def _intent(action: Action) -> tuple[int, str] | None:
    if isinstance(action, StopInstance):
        return action.instance_id, STOP
    if isinstance(action, MarkDraining):
        return action.instance_id, "drain"
    if isinstance(action, Undrain):
        return action.instance_id, "undrain"
    if isinstance(action, Notify):
        return action.instance_id, "notice"
    if isinstance(action, StartInstance) and action.replaces_id is not None:
        return action.replaces_id, "replace"
    return None


class Tick:
    """One planning pass over one job (see the module docstring)."""

    def __init__(
        self,
        spec: JobSpec,
        progress: JobProgress,
        instances: Instances,
        now: float,
        memo: Memo | None = None,
    ) -> None:
        self.spec = spec
        self.given = progress
        self.now = now
        changed: set[int] | None = None
        if isinstance(instances, JobInstances):
            self.instances: Mapping[int, InstanceView] = instances.by_id
            self.by_launch: Mapping[str, InstanceView] = instances.by_launch
            changed = instances.take_changed()
        else:
            self.instances = {i.instance_id: i for i in instances}
            self.by_launch = {i.launch_key: i for i in instances if i.launch_key}
        self.memo = memo
        """What earlier passes learned (``strategies.memo``), if the caller keeps it."""
        if memo is not None:
            memo.begin(spec, progress, instances, changed, now)
        self.actions: list[Action] = []
        self.new_keys: set[str] = set()
        # Copied on the first write (``_writable``): a pass that records little copies little.
        self.issued: Mapping[str, float] = progress.issued
        self.intents: Mapping[int, str] = progress.intents
        self.deadlines: Mapping[int, float] = progress.deadlines
        self.marks: Mapping[str, float] = progress.marks
        self._owned: set[str] = set()
        self.status = progress.status
        self.phase = progress.phase
        self.step = progress.step
        self.phase_since = progress.phase_since if progress.phase_since is not None else now
        self.started_at = progress.started_at
        self.finished_at = progress.finished_at
        self.reason = progress.reason
        self.selection: tuple[Member, ...] = progress.selection
        self.wakes: list[float] = []

    def _writable(self, name: str) -> dict[Any, Any]:
        if name not in self._owned:
            setattr(self, name, dict(getattr(self, name)))
            self._owned.add(name)
        value: dict[Any, Any] = getattr(self, name)
        return value

    def mark(self, name: str, at: float, *, first: bool = False) -> None:
        """Record the moment ``name`` (``first``: only if not recorded yet)."""
        if not (first and name in self.marks):
            self._writable("marks")[name] = at

    # -- keys and actions ------------------------------------------------------------------

    def key(self, step: str, kind: str, subject: object = "-") -> str:
        return make_key(self.spec.job_id, step, kind, subject)

    def done(self, key: str) -> bool:
        return key in self.issued

    def emit(self, action: Action) -> bool:
        """Take ``action`` unless its key was issued or it would stop an instance twice."""
        if action.key in self.issued:
            return False
        intent = _intent(action)
        stopped = intent is not None and self.intents.get(intent[0]) == STOP
        if stopped and not isinstance(action, StartInstance):
            return False  # a stop is final: nothing more is asked of that instance
        self.actions.append(action)
        self.new_keys.add(action.key)
        self._writable("issued")[action.key] = self.now
        if intent is not None and not stopped:
            self._writable("intents")[intent[0]] = intent[1]
        if isinstance(action, MarkDraining):
            self._writable("deadlines")[action.instance_id] = action.deadline
        if isinstance(action, Undrain):
            self._writable("deadlines").pop(action.instance_id, None)
        return True

    # -- what the world looks like -----------------------------------------------------------

    def alive(self, instance_id: int) -> InstanceView | None:
        """The instance, if it still runs (present and not stopped or lost)."""
        i = self.instances.get(instance_id)
        return None if i is None or i.gone else i

    def stopped(self, instance_id: int) -> bool:
        """The job asked for its stop (it may still be on its way down)."""
        return self.intents.get(instance_id) == STOP

    def draining(self, instance_id: int) -> bool:
        return instance_id in self.deadlines

    def launched(self, key: str) -> InstanceView | None:
        """The instance created by the StartInstance with this key, if it is visible."""
        return self.by_launch.get(key)

    def new_instances(self) -> list[InstanceView]:
        """Every instance this job started to replace its selection (not revert's)."""
        prefix = make_key(self.spec.job_id, "main", "start", "")
        return sorted(
            (i for k, i in self.by_launch.items() if k.startswith(prefix)),
            key=lambda i: i.instance_id,
        )

    # -- flow ------------------------------------------------------------------------------

    def wake(self, at: float) -> None:
        if at > self.now:
            self.wakes.append(at)

    def goto(self, phase: str, step: int = 0) -> None:
        self.phase, self.step, self.phase_since = phase, step, self.now

    def finish(self, outcome: JobStatus, reason: str) -> None:
        release = self.spec.client_release
        if release is not None and outcome is JobStatus.COMPLETED:
            # Seed 002: the servers are done, so the client goes out now; recorded with
            # the Finish and applied before it, so a completed job has released it.
            self.emit(
                ReleaseClient(
                    self.key("end", "release-client"),
                    release.image_id,
                    release.branch,
                    release.version_id,
                    release.client_version,
                )
            )
        elif release is not None:
            reason = (
                f"{reason}; the client {release.image}/{release.branch} was not released"
                f" ({release.client_version} waits for servers that completed)"
            )
        self.emit(Finish(self.key("end", "finish"), outcome, reason))
        self.status, self.reason, self.finished_at = outcome, reason, self.now
        self.phase = "done"

    def _frozen(self, name: str) -> Mapping[Any, Any]:
        value: Mapping[Any, Any] = getattr(self, name)
        # The pass's own copy is handed over as it is: the pad dies with the pass.
        return MappingProxyType(value) if name in self._owned else value

    def decision(self) -> Decision:
        progress = replace(
            self.given,
            status=self.status,
            phase=self.phase,
            step=self.step,
            phase_since=self.phase_since,
            started_at=self.started_at,
            finished_at=self.finished_at,
            reason=self.reason,
            selection=self.selection,
            issued=self._frozen("issued"),
            intents=self._frozen("intents"),
            deadlines=self._frozen("deadlines"),
            marks=self._frozen("marks"),
        )
        if self.memo is not None:
            self.memo.end(progress)
        if self.status.terminal:
            wake: float | None = None
        elif self.wakes:
            wake = min(self.wakes)
        elif self.status is JobStatus.PAUSED:
            wake = None  # only an operator's resume moves it on
        else:
            wake = self.now + POLL_S
        return Decision(tuple(self.actions), progress, wake)


__all__ = ["POLL_S", "STOP", "Tick"]
