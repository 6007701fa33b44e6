"""A patch job's fleets as its planner and its readers see them.

``instance_views`` is the planner's input read in full (the reconciler keeps it up to date
from changes instead: ``job_view``); ``live_selection`` the instances a job would take if
it started now (its preview); ``summarize`` where each member of the selection stands
(before the start, the instances it would take), which the reconciler keeps in
``PatchJob.summary`` and ``progress_summary`` gives the API, the dashboard and the
reports; ``member_views`` the same per member (``GET /patchjobs/{id}/instances``): its old
instance, the replacement the job started and the old build a revert started again, each
with how its last process ended.

A finished job's summary is the one recorded with its "finished" event (``appliers``): its
instances go on to be replaced by later jobs and, stopped, are deleted after
``Settings.retention_s``, so reading them again would turn a completed job's "new" into
"failed" and then "stopped". For the same reason ``member_views`` gives no member state
once the job is over, only the instances as they are (while they are kept).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from changeover.control.fleet.exits import describe_exit, exit_record
from changeover.control.fleet.models import (
    Fleet,
    Host,
    Instance,
    Profile,
    Region,
    fleet_member,
)
from changeover.control.fleet.services import LOST_AFTER_S, profile_names
from changeover.control.patchjobs.job_view import lost_hosts, read_all, to_view
from changeover.control.patchjobs.model import InstanceView, JobProgress, JobSpec
from changeover.control.patchjobs.records import PatchJob, PatchJobEvent
from changeover.control.patchjobs.states import LOST, JobStatus
from changeover.control.patchjobs.storage import progress_of, spec_of


def instance_views(
    s: Session, job_id: int, spec: JobSpec, t: float, lost_from: float = 0.0
) -> list[InstanceView]:
    """The instances of the job's fleets as its planner sees them, read in full: every one
    that still runs (or is meant to), and every one this job launched (even stopped: its
    gate must see a failed start as failed, not as missing). The reconciler keeps the same
    up to date from what changed (``job_view.JobView``).

    An instance whose host has been silent for ``LOST_AFTER_S`` is ``lost`` (gone, to the
    planner), but only from ``lost_from`` on (``job_view.lost_hosts``).
    """
    lost = lost_hosts(s, t, lost_from)
    return [to_view(r, r[10] in lost) for r in read_all(s, job_id, spec.fleet_ids)]


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
            fleet_member(),
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
    or as the reconciler's last pass saw it (it keeps ``PatchJob.summary`` as it goes,
    so this reads no instance), or, before that first pass, counted now."""
    if JobStatus(job.status).terminal:
        recorded = finished_summary(s, job.id)
        if recorded is not None:
            return recorded
    elif job.summary is not None:
        kept = json.loads(job.summary)
        if isinstance(kept, dict):
            return kept
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
    """The summary from the instances as they are now, read in full."""
    spec = spec_of(job)
    progress = progress_of(job) if progress is None else progress
    if not progress.selection and JobStatus(job.status).terminal:
        return {"total": 0, "by_state": {}, "regions": []}
    return summarize(job.id, spec, progress, instance_views(s, job.id, spec, t))


def summarize(
    job_id: int, spec: JobSpec, progress: JobProgress, views: Sequence[InstanceView]
) -> dict[str, Any]:
    """Where each member of the job's selection stands (before it has one: the instances
    it would take, all "old"), in total and per region."""
    by_state: Counter[str] = Counter()
    regions: dict[str, Counter[str]] = {}
    if not progress.selection:
        old = spec.old_versions
        for v in views:
            if v.version_id in old and v.desired != "stopped" and v.state != "stopped":
                by_state["old"] += 1
                regions.setdefault(v.region, Counter())["old"] += 1
        total = by_state["old"]
    else:
        by_id = {v.instance_id: v for v in views}
        launched = {v.launch_key: v for v in views if v.launch_key}
        for m in progress.selection:
            new = launched.get(f"job{job_id}/main/start/{m.instance_id}")
            state = _member_state(by_id.get(m.instance_id), new)
            by_state[state] += 1
            regions.setdefault(m.region, Counter())[state] += 1
        total = len(progress.selection)
    return {
        "total": total,
        "by_state": dict(by_state),
        "regions": [{"region": k, **v} for k, v in sorted(regions.items())],
    }


MAX_MEMBERS_PAGE = 500


def member_views(s: Session, job: PatchJob, t: float, limit: int, offset: int) -> dict[str, Any]:
    """``{"total", "instances": [...]}``: one entry per member of the selection, in its
    order (before the start, the instances the job would take):

        {"instance_id", "fleet", "host", "region", "state", "old", "new", "revert"}

    ``state`` is the member's as in ``progress_summary`` while the job runs, None once it is
    over (its instances go on to live other lives); ``old``, ``new`` and ``revert`` are the
    instances as they are now (None: never started, or pruned after
    ``Settings.retention_s``), each ``{"id", "profile", "state", "desired", "slot",
    "players", "exit", "exit_text"}`` with ``exit`` as ``GET /instances/{id}`` gives it.
    """
    spec = spec_of(job)
    progress = progress_of(job)
    over = JobStatus(job.status).terminal
    fleets = dict(
        s.execute(select(Fleet.id, Fleet.name).where(Fleet.id.in_(spec.fleet_ids))).tuples().all()
    )
    members: list[tuple[int, str | None, str, str]]  # instance, fleet, host, region
    if progress.selection:
        members = [
            (m.instance_id, fleets.get(m.fleet_id), m.host, m.region)
            for m in progress.selection[offset : offset + limit]
        ]
        total = len(progress.selection)
    elif over:
        members, total = [], 0
    else:
        rows = live_selection(s, list(spec.fleet_ids), sorted(spec.old_versions), t)
        members = [(r[0], r[1], r[2], r[3]) for r in rows[offset : offset + limit]]
        total = len(rows)
    keys = {
        f"job{job.id}/{step}/start/{m[0]}": (m[0], side)
        for m in members
        for step, side in (("main", "new"), ("revert", "revert"))
    }
    found_rows = s.execute(
        select(Instance, Host.name, Host.last_seen_at)
        .join(Host, Host.id == Instance.host_id)
        .where(or_(Instance.id.in_([m[0] for m in members]), Instance.launch_key.in_(list(keys))))
    ).tuples()
    found: list[Instance] = []
    views: dict[int, InstanceView] = {}
    for i, host_name, last_seen in found_rows:
        found.append(i)
        lost = t - last_seen >= LOST_AFTER_S and i.state != "stopped"
        views[i.id] = InstanceView(
            i.id, i.fleet_id, host_name, i.profile_id, LOST if lost else i.state, desired=i.desired
        )
    by_id = {i.id: i for i in found}
    launched = {keys[i.launch_key]: i for i in found if i.launch_key in keys}
    profiles = profile_names(s, {i.profile_id for i in found})
    out = []
    for instance_id, fleet, host, region in members:
        old, new, back = (
            by_id.get(instance_id),
            launched.get((instance_id, "new")),
            launched.get((instance_id, "revert")),
        )
        state = None
        if not over:
            state = _member_state(
                views.get(instance_id), views.get(new.id) if new is not None else None
            )
        out.append(
            {
                "instance_id": instance_id,
                "fleet": fleet,
                "host": host,
                "region": region,
                "state": state,
                "old": _instance_brief(old, views, profiles),
                "new": _instance_brief(new, views, profiles),
                "revert": _instance_brief(back, views, profiles),
            }
        )
    return {"total": total, "instances": out}


def _instance_brief(
    row: Instance | None, views: dict[int, InstanceView], profiles: dict[int, str]
) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "id": row.id,
        "profile": profiles.get(row.profile_id),
        "state": views[row.id].state,  # "lost" once its host is silent
        "desired": row.desired,
        "slot": row.slot,
        "players": row.players,
        "exit": exit_record(row),
        "exit_text": describe_exit(row) if row.exit_how is not None else None,
    }
