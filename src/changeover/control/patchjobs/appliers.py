"""Applying a patch job's actions to the fleet: each one a desired-state write.

``apply`` runs inside the transaction that also marks the action applied (see
``reconciler``), so an action's effect and its "applied" mark commit together or not at
all. Each applier is idempotent on its own as well (a second application finds its work
done and changes nothing), which is what makes a replay after a crash harmless:

    StageBuild        a host_stage_requests row (host, profile): the host's snapshot lists
                      the build among its versions; the agent stages it beside the others
    StartInstance     an instance row with launch_key = the action's key (unique index)
    MarkDraining      desired = draining with deadline and reason (running ones only)
    Undrain           desired = running again, drain and notice cleared
    Notify            the shutdown notice (reason, deadline) the agent passes to the game
    StopInstance      desired = stopped with the job's stop signal and timeout where it gave
                      them, the profile's otherwise (stored resolved on the row); with
                      require_empty a compare-and-set on players = 0, falling back to
                      draining until fallback_deadline when a player got in first
    SwitchAllocation  allocation_weights rows for each fleet and profile
    RunCheck          starts the command in a background thread (``checks``) after commit
    Pause, RollBack   events only (the status is the planner's)
    DeclareClientRange  version_compat rows for the job's server versions that declare
                      none (``client_release.default_ranges``); an existing row is left
    ReleaseClient     the client branch moved to the released version (a branch event by
                      "patchjob <id>"); left as it is at that version or a newer one
    Finish            the "finished" event; COMPLETED moves each fleet's active profile
                      from its old build to the new one; the job's allocation weights go
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from changeover.content import client_versions
from changeover.control.builds import services as builds
from changeover.control.builds.models import Branch, Image, Version
from changeover.control.db import among
from changeover.control.fleet import launch
from changeover.control.fleet import services as fleet_svc
from changeover.control.fleet.models import Fleet, Host, Instance, Profile, VersionCompat
from changeover.control.patchjobs.actions import (
    Action,
    DeclareClientRange,
    Finish,
    MarkDraining,
    Notify,
    Pause,
    ReleaseClient,
    RollBack,
    RunCheck,
    StageBuild,
    StartInstance,
    StopInstance,
    SwitchAllocation,
    Undrain,
)
from changeover.control.patchjobs.client_release import Range, default_ranges
from changeover.control.patchjobs.fleet_view import live_summary
from changeover.control.patchjobs.model import JobSpec, JobStatus
from changeover.control.patchjobs.records import AllocationWeight, HostStageRequest, PatchJob
from changeover.control.patchjobs.storage import event_row
from changeover.runspec import RunSpec
from changeover.times import utc

REASON_LEN: Final = 256


@dataclass(frozen=True)
class CheckRequest:
    """A verification to start once the transaction that recorded it commits."""

    job_id: int
    key: str
    command: str
    targets: tuple[str, ...]
    timeout_s: float


@dataclass(frozen=True)
class Applied:
    result: str
    check: CheckRequest | None = None
    event: dict[str, Any] | None = None
    """The job's event for this action (``storage.event_row``), if not the usual "action"
    one: the reconciler writes a batch's events together, in the actions' order."""


def _instance(s: Session, instance_id: int) -> Instance | None:
    return s.get(Instance, instance_id, populate_existing=True)


def _memo(s: Session, name: str) -> dict[Any, Any]:
    """A cache for the rest of this transaction (the reconciler applies a batch of actions
    in one): of what does not change within it, such as a host's id or a profile's run
    spec (profiles are immutable)."""
    memo: dict[Any, Any] = s.info.setdefault(f"changeover.appliers.{name}", {})
    return memo


def _host_ids(s: Session, names: set[str]) -> dict[str, int]:
    known: dict[str, int | None] = _memo(s, "host_ids")
    wanted = names - known.keys()
    if wanted:
        found = dict(s.execute(select(Host.name, Host.id).where(Host.name.in_(wanted))).all())
        known.update({name: found.get(name) for name in wanted})
    return {name: host_id for name in names if (host_id := known[name]) is not None}


def _run_spec(s: Session, profile_id: int | None) -> RunSpec:
    known = _memo(s, "run_specs")
    if profile_id not in known:
        spec = s.scalar(select(Profile.spec).where(Profile.id == profile_id))
        known[profile_id] = RunSpec.from_dict(json.loads(spec)) if spec else RunSpec(("?",))
    run: RunSpec = known[profile_id]
    return run


def apply(s: Session, job: PatchJob, spec: JobSpec, action: Action, now: float) -> Applied:
    """Write ``action``'s effect (see the module docstring); returns what happened."""
    return apply_all(s, job, spec, [action], now)[0]


def apply_all(
    s: Session, job: PatchJob, spec: JobSpec, actions: Sequence[Action], now: float
) -> list[Applied]:
    """Write the effects of ``actions`` in order; what happened to each.

    A run of starts, or of stops, is written as a set (a few statements for the whole run,
    see ``_starts`` and ``_stops``): a job moves thousands of instances."""
    out: list[Applied] = []
    for kind, run in itertools.groupby(actions, type):
        batch = _BATCHED.get(kind)
        if batch is not None:
            out += batch(s, job, spec, list(run), now)
        else:
            out += [_HANDLERS[kind](s, job, spec, a, now) for a in run]
    return out


def _stage(s: Session, job: PatchJob, spec: JobSpec, a: Action, now: float) -> Applied:
    assert isinstance(a, StageBuild)
    if s.get(HostStageRequest, (job.id, a.host, a.version_id)) is None:
        s.add(
            HostStageRequest(
                job_id=job.id, host_name=a.host, profile_id=a.version_id, created_at=now
            )
        )
        # Its next sync is not a quiet one: the build is among its versions from now on.
        s.execute(
            update(Host)
            .where(Host.name == a.host)
            .values(desired_at=now)
            .execution_options(synchronize_session=False)
        )
    return Applied(f"{a.host} asked to stage profile {a.version_id}")


def _starts(
    s: Session, job: PatchJob, spec: JobSpec, acts: Sequence[Action], now: float
) -> list[Applied]:
    """StartInstance, set-wise: one read of the launch keys already used, one INSERT."""
    starts = [a for a in acts if isinstance(a, StartInstance)]
    existing = dict(
        s.execute(
            select(Instance.launch_key, Instance.id).where(
                among(s, Instance.launch_key, [a.key for a in starts])
            )
        ).all()
    )
    host_ids = _host_ids(s, {a.host for a in starts})
    out: list[Applied | None] = [None] * len(starts)
    todo: list[tuple[int, launch.Launch]] = []
    for n, a in enumerate(starts):
        if a.key in existing:
            out[n] = Applied(f"instance {existing[a.key]} exists already")
        elif a.host not in host_ids:
            out[n] = Applied(f"host {a.host} is unknown: nothing started")
        else:
            x = launch.Launch(a.fleet_id, a.version_id, host_ids[a.host], a.replaces_id, a.key)
            todo.append((n, x))
    created = launch.create(s, [x for _, x in todo], now)
    for (n, _), instance_id in zip(todo, created, strict=True):
        out[n] = Applied(f"instance {instance_id} created on {starts[n].host}")
    return [applied for applied in out if applied is not None]


def _drain(s: Session, job: PatchJob, spec: JobSpec, a: Action, now: float) -> Applied:
    assert isinstance(a, MarkDraining)
    done = s.execute(
        update(Instance)
        .where(Instance.id == a.instance_id, Instance.desired == "running")
        .values(
            desired="draining",
            drain_deadline=a.deadline,
            drain_reason=a.reason[:REASON_LEN],
            updated_at=now,
        )
    ).rowcount  # type: ignore[attr-defined]
    return Applied("draining" if done else "not running: left as it is")


def _undrain(s: Session, job: PatchJob, spec: JobSpec, a: Action, now: float) -> Applied:
    assert isinstance(a, Undrain)
    done = s.execute(
        update(Instance)
        .where(Instance.id == a.instance_id, Instance.desired == "draining")
        .values(
            desired="running",
            drain_deadline=None,
            drain_reason=None,
            notice_deadline=None,
            notice_reason=None,
            stop_signal=None,  # no longer handed over: a later stop uses the profile's
            stop_timeout_s=None,
            updated_at=now,
        )
    ).rowcount  # type: ignore[attr-defined]
    return Applied("taken back into allocation" if done else "not draining: left as it is")


def _notify(s: Session, job: PatchJob, spec: JobSpec, a: Action, now: float) -> Applied:
    assert isinstance(a, Notify)
    done = s.execute(
        update(Instance)
        .where(Instance.id == a.instance_id, Instance.desired != "stopped")
        .values(notice_reason=a.reason[:REASON_LEN], notice_deadline=a.deadline, updated_at=now)
    ).rowcount  # type: ignore[attr-defined]
    return Applied(f"notice: stops at {utc(a.deadline)}" if done else "stopped already")


def _stop_method(a: StopInstance, run: RunSpec) -> tuple[str, float, str]:
    """The signal and timeout to stop ``a``'s instance with: the job's where it gave them,
    its profile's (``run``) otherwise; and words saying which."""
    signal = a.signal if a.signal is not None else run.stop_signal
    timeout_s = a.timeout_s if a.timeout_s is not None else run.stop_timeout_s
    theirs = " (the profile's)"
    words = (
        f"{signal}{'' if a.signal is not None else theirs}, {timeout_s:g} s timeout"
        f"{'' if a.timeout_s is not None else theirs}"
    )
    return signal, timeout_s, words


def _stops(
    s: Session, job: PatchJob, spec: JobSpec, acts: Sequence[Action], now: float
) -> list[Applied]:
    """StopInstance, set-wise: one compare-and-set UPDATE per stop method and reason (a
    job usually has one); the stops it did not take fall back one by one."""
    stops = [a for a in acts if isinstance(a, StopInstance)]
    profile_of = dict(
        s.execute(
            select(Instance.id, Instance.profile_id).where(
                among(s, Instance.id, [a.instance_id for a in stops])
            )
        ).all()
    )
    methods = [_stop_method(a, _run_spec(s, profile_of.get(a.instance_id))) for a in stops]
    groups: dict[tuple[str, float, str, bool], list[int]] = {}
    for a, (signal, timeout_s, _) in zip(stops, methods, strict=True):
        key = (signal, timeout_s, a.reason[:REASON_LEN], a.require_empty)
        groups.setdefault(key, []).append(a.instance_id)
    done: set[int] = set()
    for (signal, timeout_s, reason, require_empty), ids in groups.items():
        q = update(Instance).where(among(s, Instance.id, ids), Instance.desired != "stopped")
        if require_empty:
            # The compare-and-set: allocation's take (players + n <= capacity AND desired is
            # running or draining) and this stop exclude each other on the row.
            q = q.where(Instance.players == 0)
        stopped = q.values(
            desired="stopped",
            stop_signal=signal,
            stop_timeout_s=timeout_s,
            # A notice already given keeps its words; else "now" (the agent still waits a
            # few seconds for the game's save, see agent.instances).
            notice_reason=func.coalesce(Instance.notice_reason, reason),
            notice_deadline=func.coalesce(Instance.notice_deadline, now),
            updated_at=now,
        ).returning(Instance.id)
        done.update(s.scalars(stopped))
    out = []
    for a, (signal, timeout_s, words) in zip(stops, methods, strict=True):
        if a.instance_id in done:
            saved = "; state saved" if a.state_saved else ""
            out.append(Applied(f"stopping with {words}{saved}"))
        else:
            out.append(_stop_refused(s, a, signal, timeout_s, now))
    return out


def _stop_refused(
    s: Session, a: StopInstance, signal: str, timeout_s: float, now: float
) -> Applied:
    """Why a stop's compare-and-set did not take, and the fallback where one is due."""
    row = _instance(s, a.instance_id)
    if row is None or row.desired == "stopped":
        return Applied("stopped already")
    # A player got in first: drain instead; the fleet's drain rules stop it once empty,
    # or at the deadline (placement still applies those to a job's fleets).
    if row.desired == "running":
        row.desired = "draining"
        row.drain_deadline = a.fallback_deadline
        row.drain_reason = a.reason[:REASON_LEN]
        row.updated_at = now
    row.stop_signal = signal
    row.stop_timeout_s = timeout_s
    return Applied(
        f"{row.players} player(s) got in first: draining until "
        f"{utc(row.drain_deadline or a.fallback_deadline)}"
    )


def _switch(s: Session, job: PatchJob, spec: JobSpec, a: Action, now: float) -> Applied:
    assert isinstance(a, SwitchAllocation)
    for fleet_id in a.fleet_ids:
        for profile_id, weight in a.weights:
            row = s.get(AllocationWeight, (fleet_id, profile_id))
            if row is None:
                s.add(
                    AllocationWeight(
                        fleet_id=fleet_id, profile_id=profile_id, weight=weight, updated_at=now
                    )
                )
            else:
                row.weight, row.updated_at = weight, now
    shown = ", ".join(f"profile {p}: {w:g}" for p, w in a.weights)
    return Applied(f"allocation weights {shown}")


def _check(s: Session, job: PatchJob, spec: JobSpec, a: Action, now: float) -> Applied:
    assert isinstance(a, RunCheck)
    rows = s.execute(
        select(Instance.id, Host.address, Instance.port)
        .join(Host, Host.id == Instance.host_id)
        .where(Instance.id.in_(a.instance_ids))
        .order_by(Instance.id)
    )
    targets = tuple(f"{addr}:{port}" for _, addr, port in rows if port is not None)
    check = CheckRequest(job.id, a.key, a.command, targets, a.timeout_s)
    return Applied(f"running {a.command!r} against {len(targets)} instance(s)", check)


def _note(s: Session, job: PatchJob, spec: JobSpec, a: Action, now: float) -> Applied:
    assert isinstance(a, Pause | RollBack)
    return Applied(a.reason)


def _declared(s: Session, version_id: int) -> Range | None:
    row = s.get(VersionCompat, version_id)
    return None if row is None else (row.client_min, row.client_max)


def _client_of(s: Session, image_id: int, branch: str) -> Version | None:
    """The version the client ``branch`` of ``image_id`` points at now, if it exists."""
    return s.scalar(
        select(Version)
        .join(Branch, Branch.version_id == Version.id)
        .where(Branch.image_id == image_id, Branch.name == branch)
    )


def _declare(s: Session, job: PatchJob, spec: JobSpec, a: Action, now: float) -> Applied:
    assert isinstance(a, DeclareClientRange)

    def versions(profiles: tuple[int, ...]) -> dict[int, Range | None]:
        ids = s.scalars(select(Profile.version_id).where(Profile.id.in_(profiles)))
        return {v: _declared(s, v) for v in set(ids)}

    old, new = versions(a.old_profiles), versions(a.new_profiles)
    current = _client_of(s, a.image_id, a.branch)
    writes = default_ranges(
        old,
        new,
        a.client_version,
        None if current is None else client_versions.of_build(current.number, current.label),
    )
    said = []
    for w in writes:
        if s.get(VersionCompat, w.version_id) is not None:
            continue  # declared meanwhile: the operator's stands
        s.add(
            VersionCompat(
                version_id=w.version_id,
                client_min=w.client_min,
                client_max=w.client_max,
                updated_at=now,
            )
        )
        said.append(f"{_version_words(s, w.version_id)} {w.why}")
    kept = [v for v, rng in {**old, **new}.items() if rng is not None]
    if kept:
        said.append(
            "declared by the operator, left as they are: "
            + ", ".join(_version_words(s, v) for v in sorted(kept))
        )
    return Applied("; ".join(said) or "no server version to give a client range")


def _version_words(s: Session, version_id: int) -> str:
    v = s.get_one(Version, version_id)
    return f"{s.get_one(Image, v.image_id).name} version {v.number}"


def _release(s: Session, job: PatchJob, spec: JobSpec, a: Action, now: float) -> Applied:
    assert isinstance(a, ReleaseClient)
    image = s.get_one(Image, a.image_id)
    target = s.get_one(Version, a.version_id)
    current = _client_of(s, a.image_id, a.branch)
    where = f"client {image.name}/{a.branch}"
    if current is not None and current.id == target.id:
        return Applied(f"{where} points at version {target.number} already")
    if current is not None and current.number > target.number:
        return Applied(
            f"{where} points at the newer version {current.number}: left as it is"
            f" (this job releases {target.number})"
        )
    # Conflict (the version is not completed) leaves the action unapplied: tried again.
    builds.set_branch(s, image, a.branch, str(target.number), f"patchjob {job.id}")
    before = "" if current is None else f" from version {current.number}"
    return Applied(f"{where} moved{before} to version {target.number} (client {a.client_version})")


def _finish(s: Session, job: PatchJob, spec: JobSpec, a: Action, now: float) -> Applied:
    assert isinstance(a, Finish)
    moved = []
    if a.outcome is JobStatus.COMPLETED:
        new_of = spec.new_version_of
        for fleet in s.scalars(select(Fleet).where(Fleet.id.in_(spec.fleet_ids))):
            target = new_of.get(fleet.active_profile_id or 0)
            if target is not None:
                fleet.active_profile_id = target
                fleet.updated_at = now
                moved.append(fleet.name)
    # Placement takes the fleets back (and the builds to stage change): the hosts' next
    # syncs are not quiet ones.
    fleet_svc.touch_hosts(s, spec.fleet_ids, now)
    # The weights were this job's to steer its fleets; once it is over they would only
    # hold players off a build an operator may bring back later.
    profiles = spec.old_versions | spec.new_versions
    s.execute(
        delete(AllocationWeight).where(
            AllocationWeight.fleet_id.in_(spec.fleet_ids),
            AllocationWeight.profile_id.in_(profiles),
        )
    )
    # Where each member stood as the job ended, before later jobs move its instances on
    # and the stopped ones are pruned (``fleet_view``).
    summary = live_summary(s, job, now)
    # The job's final status (the reconciler records the decision without it), bumping the
    # revision so that an API write based on the running job fails its compare-and-set.
    s.execute(
        update(PatchJob)
        .where(PatchJob.id == job.id)
        .values(status=int(a.outcome), revision=PatchJob.revision + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    event = event_row(
        job,
        "finished",
        a.reason,
        now,
        {
            "outcome": int(a.outcome),
            "outcome_name": a.outcome.label,
            "fleets_moved": moved,
            "progress": summary,
        },
        status=int(a.outcome),
    )
    suffix = f"; active profile moved on {', '.join(moved)}" if moved else ""
    return Applied(f"{a.outcome.label}{suffix}", event=event)


Handler = Callable[[Session, PatchJob, JobSpec, Action, float], Applied]
Batch = Callable[[Session, PatchJob, JobSpec, Sequence[Action], float], list[Applied]]
_BATCHED: Final[dict[type, Batch]] = {StartInstance: _starts, StopInstance: _stops}
_HANDLERS: Final[dict[type, Handler]] = {
    StageBuild: _stage,
    MarkDraining: _drain,
    Undrain: _undrain,
    Notify: _notify,
    SwitchAllocation: _switch,
    RunCheck: _check,
    Pause: _note,
    RollBack: _note,
    DeclareClientRange: _declare,
    ReleaseClient: _release,
    Finish: _finish,
}

__all__ = ["Applied", "CheckRequest", "apply", "apply_all"]
