"""Build machine trials (seed 000, step 1): run an update before its diff is made.

"Test the updated game image on your build machine before continuing any further." A
trial starts one instance of the update's build, with a profile's run spec, on a host of a
fleet (a ``development`` environment's build machine, say), and judges it (:func:`judge`,
pure): it passes once the game server has been ready for ``hold_s`` without a crash or a
restart; it fails if it crashes, fails its health check, restarts, never gets ready within
``ready_timeout_s``, or its host goes silent. Either way its instance is then stopped. The
update shows its latest trial, and an image can require a passed one before a diff
(``Image.require_trial``).

The instance is an ordinary row for its agent (staged, started, health-checked, stopped
as any other, with the update's manifest instead of its profile's version), but it is no
member of the fleet (``models.fleet_member``): placement neither counts nor stops it, no
switch, patch job or stand-in touches it, and it takes no players (capacity 0; a tester
connects to its address directly). Like a switch, a trial is a job that takes one step per
run and waits in Pending between steps, so a restarted control plane resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from changeover.control.builds.models import Trial, Update
from changeover.control.db import now
from changeover.control.fleet import hosts as host_svc
from changeover.control.fleet import placement, services
from changeover.control.fleet.exits import describe_exit
from changeover.control.fleet.models import Fleet, FleetHost, Host, Instance, Profile, live_sql
from changeover.control.fleet.services import LOST_AFTER_S
from changeover.control.states import JobState, state_dict
from changeover.errors import Conflict, InvalidInput, NotFound

HOLD_S = 60.0
"""How long a trial's game server must stay ready to pass, by default."""
READY_TIMEOUT_S = 300.0
"""How long it may take to get ready (as a switch's replacement: Nomad's healthy_deadline)."""
MAX_S = 24 * 3600.0
STEP_WAIT_S = 0.5


# -- the rule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """The trial's instance as its agent last reported it."""

    state: str
    restarts: int
    ready_at: float | None
    error: str | None = None
    exit: str | None = None
    """How its last process ended, in words (``exits.exit_record``), if it did."""


@dataclass(frozen=True)
class Verdict:
    over: bool
    passed: bool
    message: str


def judge(
    seen: Seen, started_at: float, hold_s: float, ready_timeout_s: float, host_alive: bool, t: float
) -> Verdict:
    """Where a running trial stands at ``t``."""
    if seen.state == "failed" or seen.restarts > 0:
        why = seen.error or seen.exit or "no reason given"
        what = "failed" if seen.state == "failed" else f"restarted {seen.restarts} time(s)"
        return Verdict(True, False, f"the game server {what}: {why}")
    if not host_alive:
        return Verdict(True, False, "its host stopped answering")
    if seen.state == "ready" and seen.ready_at is not None:
        held = t - seen.ready_at
        if held >= hold_s:
            return Verdict(
                True,
                True,
                f"ready {seen.ready_at - started_at:.1f} s after it was asked for"
                f" and healthy for {hold_s:g} s",
            )
        return Verdict(False, False, f"ready; healthy for {held:.0f} of {hold_s:g} s")
    if t - started_at > ready_timeout_s:
        return Verdict(True, False, f"not ready within {ready_timeout_s:g} s (still {seen.state})")
    return Verdict(False, False, f"{seen.state}; waiting until it is ready")


# -- the records ---------------------------------------------------------------------------


def _duration(value: float, what: str, low: float) -> float:
    if not low <= value <= MAX_S:
        raise InvalidInput(f"{what} must be {low:g} to {MAX_S:g} seconds")
    return value


def create(
    s: Session,
    update: Update,
    fleet: Fleet,
    *,
    profile_name: str | None,
    host_name: str | None,
    hold_s: float,
    ready_timeout_s: float,
    actor: str,
) -> Trial:
    """Queue a trial of ``update`` on ``fleet`` (with its active profile's run spec unless
    ``profile_name``; on any live host of it unless ``host_name``).

    Raises:
        InvalidInput: a profile of another application, a host not in the fleet, bad times.
        Conflict: the update's upload is not complete; a trial of it is still running.
        NotFound: an unknown profile.
    """
    if update.status != JobState.COMPLETED:
        raise Conflict(
            f"update {update.id} is {JobState(update.status).label}; only an update whose"
            " upload completed can be tried"
        )
    if profile_name is not None:
        profile = services.get_profile(s, profile_name)
    elif fleet.active_profile_id is not None:
        profile = s.get_one(Profile, fleet.active_profile_id)
    else:
        raise InvalidInput(f"fleet {fleet.name} has no active profile: name one with profile")
    if profile.application_id != fleet.application_id:
        raise InvalidInput(
            f"profile {profile.name} belongs to another application than fleet {fleet.name}"
        )
    if host_name is not None and host_name not in services.fleet_host_names(s, fleet.id):
        raise InvalidInput(f"host {host_name} is not a host of fleet {fleet.name}")
    busy = s.scalar(
        select(Trial.id).where(
            Trial.update_id == update.id,
            Trial.status.not_in((JobState.COMPLETED, JobState.FAILED)),
        )
    )
    if busy is not None:
        raise Conflict(f"trial {busy} of update {update.id} is still running", trial_id=busy)
    row = Trial(
        update_id=update.id,
        fleet_id=fleet.id,
        profile_id=profile.id,
        host_name=host_name,
        hold_s=_duration(hold_s, "hold_s", 0),
        ready_timeout_s=_duration(ready_timeout_s, "ready_timeout_s", 1),
        message="queued",
        status=JobState.QUEUED,
        created_at=now(),
        updated_at=now(),
        created_by=actor,
    )
    s.add(row)
    s.flush()
    return row


def get(s: Session, trial_id: int) -> Trial:
    row = s.get(Trial, trial_id)
    if row is None:
        raise NotFound(f"no trial with id {trial_id}")
    return row


def of_update(s: Session, update_id: int) -> list[Trial]:
    return list(s.scalars(select(Trial).where(Trial.update_id == update_id).order_by(Trial.id)))


def trial_dict(s: Session, row: Trial) -> dict[str, Any]:
    inst = s.get(Instance, row.instance_id) if row.instance_id is not None else None
    host = s.get(Host, inst.host_id) if inst is not None else None
    return {
        "id": row.id,
        **state_dict(row.status),
        "update_id": row.update_id,
        "fleet": s.get_one(Fleet, row.fleet_id).name,
        "profile": s.get_one(Profile, row.profile_id).name,
        "host": host.name if host is not None else row.host_name,
        "instance_id": row.instance_id,
        "address": host.address if host is not None else None,
        "port": inst.port if inst is not None else None,
        "hold_s": row.hold_s,
        "ready_timeout_s": row.ready_timeout_s,
        "result": row.result,
        "message": row.message,
        "error": row.error,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "created_by": row.created_by,
    }


# -- the job -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    done: bool
    failure: str | None = None


def _pick_host(s: Session, row: Trial, fleet: Fleet, t: float) -> Host | None:
    """The first live host of the fleet (or the one asked for) with a free slot."""
    names = [row.host_name] if row.host_name else services.fleet_host_names(s, fleet.id)
    candidates = s.scalars(
        select(Host)
        .join(FleetHost, FleetHost.host_name == Host.name)
        .where(FleetHost.fleet_id == fleet.id, Host.name.in_(names))
        .where(Host.last_seen_at > t - LOST_AFTER_S)
        .order_by(Host.name)
    )
    for host in candidates:
        running = s.scalar(
            select(func.count()).where(
                Instance.host_id == host.id, live_sql(), Instance.desired != "stopped"
            )
        )
        if (running or 0) < host.slots:
            return host
    return None


def _finish(s: Session, row: Trial, inst: Instance | None, passed: bool, message: str) -> Outcome:
    t = now()
    if inst is not None and inst.desired != "stopped":
        host_svc.apply(s, inst, placement.Stop(inst.id, f"trial {row.id} over", t), t)
    row.result = "passed" if passed else "failed"
    row.message = message
    row.ended_at = t
    return Outcome(True, None if passed else f"trial failed: {message}")


def step(s: Session, row: Trial, t: float) -> Outcome:
    """Take the next step of a running trial and record it on ``row``."""
    fleet = s.get_one(Fleet, row.fleet_id)
    if row.instance_id is None:
        host = _pick_host(s, row, fleet, t)
        if host is None:
            where = f"host {row.host_name}" if row.host_name else f"no host of fleet {fleet.name}"
            return _finish(s, row, None, False, f"{where} is alive with a free slot to run it")
        inst = host_svc.new_instance(s, fleet.id, row.profile_id, host.id, t, None)
        inst.trial_id = row.id
        inst.capacity = 0
        s.flush()
        row.instance_id = inst.id
        row.started_at = t
        row.message = f"starting instance {inst.id} on {host.name}"
        return Outcome(False)
    inst = s.get_one(Instance, row.instance_id)
    host = s.get_one(Host, inst.host_id)
    seen = Seen(
        state=inst.state,
        restarts=inst.restarts,
        ready_at=inst.ready_at,
        error=inst.error,
        exit=describe_exit(inst) if inst.exit_how is not None else None,
    )
    verdict = judge(
        seen,
        row.started_at or t,
        row.hold_s,
        row.ready_timeout_s,
        t - host.last_seen_at < LOST_AFTER_S,
        t,
    )
    if verdict.over:
        return _finish(s, row, inst, verdict.passed, verdict.message)
    row.message = verdict.message
    return Outcome(False)


def manifests(s: Session, trial_ids: set[int]) -> dict[int, str]:
    """The build each trial runs: trial id -> the update's manifest id."""
    return dict(
        s.execute(
            select(Trial.id, Update.manifest_id)
            .join(Update, Update.id == Trial.update_id)
            .where(Trial.id.in_(trial_ids))
        ).all()
    )


__all__ = [
    "Seen",
    "Verdict",
    "create",
    "get",
    "judge",
    "manifests",
    "of_update",
    "step",
    "trial_dict",
]
