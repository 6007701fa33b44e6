"""A patch job's fleets as its planner and its readers see them.

``instance_views`` is the planner's input, read on every pass; ``live_selection`` the
instances a job would take if it started now (its preview, and its progress before it
starts); ``progress_summary`` where each member of the selection stands, for the API, the
dashboard and the reports. A finished job's summary is the one recorded with its
"finished" event (``appliers``): its instances go on to be replaced by later jobs and,
stopped, are deleted after ``Settings.retention_s``, so reading them again would turn a
completed job's "new" into "failed" and then "stopped".
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from changeover.control.fleet.models import (
    Fleet,
    Host,
    Instance,
    Profile,
    Region,
    live_instances,
)
from changeover.control.fleet.services import LOST_AFTER_S
from changeover.control.patchjobs.model import InstanceView, JobProgress, JobSpec
from changeover.control.patchjobs.records import PatchJob, PatchJobEvent
from changeover.control.patchjobs.states import LOST, JobStatus
from changeover.control.patchjobs.storage import progress_of, spec_of


def instance_views(
    s: Session, job_id: int, spec: JobSpec, t: float, lost_from: float = 0.0
) -> list[InstanceView]:
    """The instances of the job's fleets as its planner sees them: every one that still
    runs (or is meant to), and every one this job launched (even stopped: its gate must
    see a failed start as failed, not as missing).

    An instance whose host has been silent for ``LOST_AFTER_S`` is ``lost`` (gone, to the
    planner), but only from ``lost_from`` on: a control plane that just started has not
    heard from any agent yet, and must not take its own absence for theirs.
    """
    prefix = f"job{job_id}/"
    # Plain columns, not ORM objects: this runs every pass over every instance of the job.
    q = (
        select(
            Instance.id,
            Instance.fleet_id,
            Instance.profile_id,
            Instance.state,
            Instance.desired,
            Instance.players,
            Instance.ready_at,
            Instance.restarts,
            Instance.launch_key,
            Instance.state_saved_at,
            Host.name.label("host"),
            Host.last_seen_at,
            Region.name.label("region"),
        )
        .join(Host, Host.id == Instance.host_id)
        .join(Region, Region.id == Host.region_id)
        .where(
            Instance.fleet_id.in_(spec.fleet_ids),
            or_(live_instances(), Instance.launch_key.like(prefix + "%")),
        )
        .order_by(Instance.id)
    )
    out = []
    for i in s.execute(q):
        lost = t >= lost_from and t - i.last_seen_at >= LOST_AFTER_S and i.state != "stopped"
        state = LOST if lost else i.state
        out.append(
            InstanceView(
                instance_id=i.id,
                fleet_id=i.fleet_id,
                host=i.host,
                version_id=i.profile_id,
                state=state,
                region=i.region,
                desired=i.desired,
                players=i.players,
                ready_since=i.ready_at if state == "ready" else None,
                restarts=i.restarts,
                launch_key=i.launch_key,
                state_saved_at=i.state_saved_at,
            )
        )
    return out


def live_selection(
    s: Session, fleet_ids: Sequence[int], old_ids: Sequence[int], t: float, limit: int | None = None
) -> list[Any]:
    q = (
        select(
            Instance.id,
            Fleet.name,
            Host.name,
            Region.name,
            Profile.name,
            Instance.players,
            Instance.state,
            Instance.desired,
            Host.last_seen_at,
        )
        .join(Fleet, Fleet.id == Instance.fleet_id)
        .join(Host, Host.id == Instance.host_id)
        .join(Region, Region.id == Host.region_id)
        .join(Profile, Profile.id == Instance.profile_id)
        .where(
            Instance.fleet_id.in_(fleet_ids),
            Instance.profile_id.in_(old_ids),
            Instance.desired != "stopped",
            Instance.state != "stopped",
        )
        .order_by(Instance.id)
    )
    if limit is not None:
        q = q.limit(limit)
    return list(s.execute(q))


def _member_state(old: Any, new: Any) -> str:
    """Where one member of the selection stands, for the progress summary."""
    if old is not None and not old.gone:
        if old.desired == "draining":
            return "draining"
        if old.desired == "stopped":
            return "stopping"
        if new is not None and not new.gone and new.state == "ready":
            return "new"  # replacement ready beside it (A/B, bleed-off before the switch)
        return "old"
    if new is None:
        return "stopped"
    if new.state == "ready":
        return "new"
    if new.gone or new.state == "failed":
        return "failed"
    return "starting"


def progress_summary(
    s: Session, job: PatchJob, t: float, progress: JobProgress | None = None
) -> dict[str, Any]:
    """``{"total", "by_state": {...}, "regions": [{"region", <state>: n}]}`` (``progress``:
    the job's, when the caller has parsed it already): as it was when the job finished,
    or now."""
    if JobStatus(job.status).terminal:
        recorded = finished_summary(s, job.id)
        if recorded is not None:
            return recorded
    return live_summary(s, job, t, progress)


def finished_summary(s: Session, job_id: int) -> dict[str, Any] | None:
    """The summary recorded with the job's "finished" event; None for a job that finished
    before summaries were recorded (or has not finished)."""
    data = s.scalar(
        select(PatchJobEvent.data)
        .where(PatchJobEvent.job_id == job_id, PatchJobEvent.kind == "finished")
        .order_by(PatchJobEvent.id.desc())
        .limit(1)
    )
    recorded = json.loads(data).get("progress") if data else None
    return recorded if isinstance(recorded, dict) else None


def live_summary(
    s: Session, job: PatchJob, t: float, progress: JobProgress | None = None
) -> dict[str, Any]:
    """The summary from the instances as they are now."""
    spec = spec_of(job)
    progress = progress_of(job) if progress is None else progress
    if not progress.selection:
        if JobStatus(job.status).terminal:
            return {"total": 0, "by_state": {}, "regions": []}
        rows = live_selection(s, list(spec.fleet_ids), sorted(spec.old_versions), t)
        per_region: dict[str, Counter[str]] = {}
        for row in rows:
            per_region.setdefault(row[3], Counter())["old"] += 1
        return {
            "total": len(rows),
            "by_state": {"old": len(rows)} if rows else {},
            "regions": [{"region": k, **v} for k, v in sorted(per_region.items())],
        }
    views = {v.instance_id: v for v in instance_views(s, job.id, spec, t)}
    launched = {v.launch_key: v for v in views.values() if v.launch_key}
    by_state: Counter[str] = Counter()
    regions: dict[str, Counter[str]] = {}
    for m in progress.selection:
        new = launched.get(f"job{job.id}/main/start/{m.instance_id}")
        state = _member_state(views.get(m.instance_id), new)
        by_state[state] += 1
        regions.setdefault(m.region, Counter())[state] += 1
    return {
        "total": len(progress.selection),
        "by_state": dict(by_state),
        "regions": [{"region": k, **v} for k, v in sorted(regions.items())],
    }
