"""Fleet Profile Switch (seed 000, reservation fleets): make another profile active and move
the fleet's instances to it, with a status to follow.

Creating a switch sets the fleet's active profile at once (new instances, and so new
players, get the new version) and queues a job. The job (``tasks``) takes one step at a
time from ``placement.switch_step`` — start a replacement, wait for it, retire the old
instance — and goes back to Pending between steps, so a long switch never holds the job
runner and a control plane restarted mid-switch simply resumes from the database. If a
replacement fails, the switch fails and the fleet goes back to its previous profile
(auto-revert is on by default, docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from changeover.control.db import now
from changeover.control.fleet import hosts as host_svc
from changeover.control.fleet import placement, services
from changeover.control.fleet.models import Fleet, FleetHost, Host, Instance, Profile, ProfileSwitch
from changeover.control.fleet.services import LOST_AFTER_S, fleet_instances, get_profile, run_spec
from changeover.control.states import JobState, state_dict
from changeover.errors import Conflict, InvalidInput, NotFound

HEALTHY_DEADLINE_S = 300.0
"""How long a replacement may take to become ready (Nomad's healthy_deadline, 5 min)."""
STEP_WAIT_S = 0.5
MAX_DRAIN_S = 7 * 24 * 3600.0


def create_switch(
    s: Session, fleet: Fleet, profile_name: str, drain_s: float, actor: str
) -> ProfileSwitch:
    """Switch ``fleet`` to a profile.

    Raises:
        NotFound: unknown profile. InvalidInput: a profile of another application, a bad
            drain time. Conflict: a switch of this fleet is still running.
    """
    profile = get_profile(s, profile_name)
    if profile.application_id != fleet.application_id:
        raise InvalidInput(
            f"profile {profile.name} belongs to another application than fleet {fleet.name}"
        )
    if not 0 <= drain_s <= MAX_DRAIN_S:
        raise InvalidInput(f"drain_s must be 0 to {MAX_DRAIN_S:g} seconds")
    old = s.get(Profile, fleet.active_profile_id) if fleet.active_profile_id else None
    exclusive = [
        p.name for p in (old, profile) if p is not None and run_spec(p).state == "exclusive"
    ]
    if exclusive:
        # Its replacement would wait for the old instance's state slot, which the switch
        # only frees once the replacement is ready.
        raise InvalidInput(
            f"profile(s) {', '.join(exclusive)} declare exclusive state, but a switch runs each"
            " old instance beside its replacement; use a patch job with method forced, or"
            ' rolling with "max_surge": 0',
            profiles=exclusive,
        )
    busy = s.scalar(
        select(ProfileSwitch.id).where(
            ProfileSwitch.fleet_id == fleet.id,
            ProfileSwitch.status.not_in((JobState.COMPLETED, JobState.FAILED)),
        )
    )
    if busy is not None:
        raise Conflict(
            f"fleet {fleet.name} is being switched by switch {busy}; wait for it to finish",
            switch_id=busy,
        )
    total = sum(
        1 for i in _members(s, fleet) if i.desired == "running" and i.profile_id != profile.id
    )
    row = ProfileSwitch(
        fleet_id=fleet.id,
        from_profile_id=fleet.active_profile_id,
        to_profile_id=profile.id,
        drain_s=drain_s,
        total=total,
        moved=0,
        message="queued",
        status=JobState.QUEUED,
        created_at=now(),
        updated_at=now(),
        created_by=actor,
    )
    fleet.active_profile_id = profile.id
    fleet.updated_at = now()
    services.touch_hosts(s, [fleet.id], fleet.updated_at)  # they pre-stage the new build
    s.add(row)
    s.flush()
    return row


def latest_switch(s: Session, fleet: Fleet) -> ProfileSwitch:
    row = s.scalar(
        select(ProfileSwitch)
        .where(ProfileSwitch.fleet_id == fleet.id)
        .order_by(ProfileSwitch.id.desc())
        .limit(1)
    )
    if row is None:
        raise NotFound(f"fleet {fleet.name} was never switched", fleet=fleet.name)
    return row


def get_switch(s: Session, switch_id: int) -> ProfileSwitch:
    row = s.get(ProfileSwitch, switch_id)
    if row is None:
        raise NotFound(f"no profile switch with id {switch_id}")
    return row


def retiring(s: Session, row: ProfileSwitch) -> dict[str, Any]:
    """The fleet's old instances still on their way out: draining with players (until the
    last one leaves, or their deadline), or stopping. A switch completes once each old
    instance is retired, not once it is gone, so its status says what is still running."""
    fleet = s.get_one(Fleet, row.fleet_id)
    leaving = [
        i
        for i in _members(s, fleet)
        if i.profile_id != row.to_profile_id and i.desired != "running"
    ]
    deadlines = [i.drain_deadline for i in leaving if i.drain_deadline is not None]
    return {
        "instances": len(leaving),
        "players": sum(i.players for i in leaving),
        "deadline": max(deadlines) if deadlines else None,
    }


def switch_dict(s: Session, row: ProfileSwitch) -> dict[str, Any]:
    before = s.get(Profile, row.from_profile_id) if row.from_profile_id else None
    return {
        "id": row.id,
        **state_dict(row.status),
        "fleet": s.get_one(Fleet, row.fleet_id).name,
        "from_profile": before.name if before else None,
        "to_profile": s.get_one(Profile, row.to_profile_id).name,
        "drain_s": row.drain_s,
        "total": row.total,
        "moved": row.moved,
        "message": row.message,
        "error": row.error,
        "retiring": retiring(s, row),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "created_by": row.created_by,
    }


@dataclass(frozen=True)
class Outcome:
    done: bool
    failure: str | None = None


def step(s: Session, sw: ProfileSwitch, t: float) -> Outcome:
    """Take the next step of a running switch and record it on ``sw``."""
    fleet = s.get_one(Fleet, sw.fleet_id)
    if fleet.active_profile_id != sw.to_profile_id:
        return Outcome(True, "superseded: the fleet's active profile was changed meanwhile")
    rows = _members(s, fleet)
    host_rows = {
        h.id: h for h in s.scalars(select(Host).where(Host.id.in_({i.host_id for i in rows})))
    }
    by_name = {
        h.name: placement.HostView(h.name, t - h.last_seen_at < LOST_AFTER_S, h.slots)
        for h in host_rows.values()
    }
    views = [_view(i, host_rows[i.host_id]) for i in rows]
    names = frozenset(s.scalars(select(FleetHost.host_name).where(FleetHost.fleet_id == fleet.id)))
    decision = placement.switch_step(
        views, by_name, names, sw.to_profile_id, t, healthy_deadline_s=HEALTHY_DEADLINE_S
    )
    by_id = {i.id: i for i in rows}
    if isinstance(decision, placement.Done):
        sw.message = decision.message
        return Outcome(True)
    if isinstance(decision, placement.Wait):
        sw.message = decision.message
    elif isinstance(decision, placement.StartReplacement):
        old = by_id[decision.replaces_id]
        new = host_svc.new_instance(s, fleet.id, sw.to_profile_id, old.host_id, t, old.id)
        s.flush()
        sw.message = f"starting instance {new.id} on {decision.host} to replace {old.id}"
    elif isinstance(decision, placement.Retire):
        old = by_id[decision.instance_id]
        reason = f"fleet {fleet.name} switched to another profile"
        action: placement.Action = (
            placement.Drain(old.id, reason, t + sw.drain_s)
            if decision.busy
            else placement.Stop(old.id, reason, t)
        )
        host_svc.apply(s, old, action, t)
        sw.moved += 1
        sw.message = f"instance {old.id} {'draining' if decision.busy else 'stopping'}"
    elif isinstance(decision, placement.Fail):
        if decision.stop_instance_id is not None:
            bad = by_id[decision.stop_instance_id]
            host_svc.apply(s, bad, placement.Stop(bad.id, "switch failed", t), t)
        fleet.active_profile_id = sw.from_profile_id  # auto-revert
        services.touch_hosts(s, [fleet.id], t)
        sw.message = "failed; fleet reverted to its previous profile"
        return Outcome(True, decision.message + "; the fleet went back to its previous profile")
    return Outcome(False)


def _members(s: Session, fleet: Fleet) -> list[Instance]:
    """The fleet's live instances a switch moves: not a trial's (``trials``)."""
    return [i for i in fleet_instances(s, fleet) if i.trial_id is None]


def _view(i: Instance, host: Host) -> placement.InstanceView:
    return placement.InstanceView(
        instance_id=i.id,
        fleet_id=i.fleet_id,
        profile_id=i.profile_id,
        host=host.name,
        desired=i.desired,
        state=i.state,
        players=i.players,
        replaces_id=i.replaces_id,
        created_at=i.created_at,
        error=i.error,
    )
