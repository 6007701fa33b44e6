"""Patch jobs, the operations behind the API and the CLI: create, show, list, edit, cancel,
resume, preview, and the job's events and actions.

Names are resolved here (environment, application, profiles, fleets) and checked against
each other (profiles and fleets of the job's application, fleets of its environment);
``specs`` checks the rest and ``JobSpec`` every rule of the pure core. Writes to a job's
progress (cancel, resume) go through ``storage.mutate_progress``, the compare-and-set the
reconciler uses too, so an operator's act is never lost to a planning pass nor the
reverse.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from changeover.content import client_versions
from changeover.control.builds import services as builds
from changeover.control.builds.models import Branch, Image, Version
from changeover.control.db import Database
from changeover.control.fleet.models import (
    Application,
    Environment,
    Fleet,
    Profile,
    VersionCompat,
)
from changeover.control.fleet.services import (
    LOST_AFTER_S,
    get_application,
    get_environment,
    get_fleet,
    get_profile,
    run_spec,
)
from changeover.control.patchjobs import client_release, specs
from changeover.control.patchjobs.fleet_view import live_selection, progress_summary
from changeover.control.patchjobs.model import PENDING, JobProgress
from changeover.control.patchjobs.records import (
    PatchJob,
    PatchJobAction,
    PatchJobEmail,
    PatchJobEvent,
)
from changeover.control.patchjobs.schedule import (
    check_application_type,
    check_edit,
    check_start_time,
    edit_locked,
)
from changeover.control.patchjobs.states import CancelMode, JobStatus, Method
from changeover.control.patchjobs.storage import (
    add_event,
    cas_write,
    dump_progress,
    get_job,
    mutate_progress,
    progress_of,
    spec_of,
    stored_spec,
)
from changeover.control.states import JobState
from changeover.errors import Conflict, InvalidInput
from changeover.times import utc

MAX_PREVIEW: Final = 1000
MAX_LIST: Final = 500
MAX_EVENTS: Final = 1000
MAX_COMMENTS: Final = specs.MAX_COMMENTS
BODY_FIELDS: Final = specs.BODY_FIELDS


@dataclass(frozen=True)
class Resolved:
    environment: Environment
    application: Application
    builds: list[tuple[Profile, Profile]]
    fleets: list[Fleet]


def _names(raw: object, what: str, limit: int) -> list[str]:
    if not isinstance(raw, list) or not raw:
        raise InvalidInput(f"{what} must list at least one name", field=what)
    if len(raw) > limit:
        raise InvalidInput(f"{what}: at most {limit}", field=what)
    if not all(isinstance(n, str) for n in raw):
        raise InvalidInput(f"{what} must be names", field=what)
    return list(raw)


def resolve(s: Session, body: Mapping[str, Any]) -> Resolved:
    """Names to rows, checked against each other.

    Raises:
        InvalidInput: a missing field, a profile or fleet of another application, a fleet
            of another environment. NotFound: an unknown name (the message lists the
            known ones).
    """
    for name in ("environment", "application"):
        if not isinstance(body.get(name), str):
            raise InvalidInput(f"{name} is required (a name)", field=name)
    env = get_environment(s, body["environment"])
    app = get_application(s, body["application"])
    raw_builds = body.get("builds")
    if not isinstance(raw_builds, list) or not raw_builds:
        raise InvalidInput("builds must list at least one {old, new} pair of profiles")
    if len(raw_builds) > specs.MAX_BUILDS:
        raise InvalidInput(f"builds: at most {specs.MAX_BUILDS} pairs")
    builds: list[tuple[Profile, Profile]] = []
    for i, pair in enumerate(raw_builds):
        if not isinstance(pair, Mapping) or set(pair) != {"old", "new"}:
            raise InvalidInput(f'builds[{i}] must be {{"old": profile, "new": profile}}')
        rows = []
        for side in ("old", "new"):
            if not isinstance(pair[side], str):
                raise InvalidInput(f"builds[{i}].{side} must be a profile name")
            p = get_profile(s, pair[side])
            if p.application_id != app.id:
                raise InvalidInput(
                    f"builds[{i}].{side}: profile {p.name} belongs to another application "
                    f"than {app.name}",
                    field=f"builds[{i}].{side}",
                )
            rows.append(p)
        builds.append((rows[0], rows[1]))
    fleets = []
    for name in _names(body.get("fleets"), "fleets", specs.MAX_FLEETS):
        f = get_fleet(s, name)
        if f.application_id != app.id:
            raise InvalidInput(
                f"fleet {f.name} runs another application than {app.name}", field="fleets"
            )
        if f.environment_id != env.id:
            raise InvalidInput(f"fleet {f.name} is not in environment {env.name}", field="fleets")
        fleets.append(f)
    return Resolved(env, app, builds, fleets)


def _validated(
    s: Session, body: Mapping[str, Any], t: float
) -> tuple[Resolved, dict[str, Any], float]:
    specs.check_body(body)
    r = resolve(s, body)
    start_at = check_start_time(body.get("scheduled_start"), t)
    runs = {p.id: (p.name, run_spec(p)) for pair in r.builds for p in pair}
    stored = specs.stored_spec(
        body, [(old.id, new.id) for old, new in r.builds], [f.id for f in r.fleets], runs
    )
    release = resolve_client_release(s, body.get("client_release"), r)
    if release is not None:
        stored["client_release"] = release.to_dict()
    return r, stored, start_at


def declared_range(s: Session, version_id: int) -> client_release.Range | None:
    """The client range a server version declares, or None when it declares none."""
    row = s.get(VersionCompat, version_id)
    return None if row is None else (row.client_min, row.client_max)


def resolve_client_release(
    s: Session, raw: object, r: Resolved
) -> client_release.ClientRelease | None:
    """A body's ``client_release`` with its names resolved, checked against the job's
    server builds (``client_release`` module docstring).

    Raises:
        InvalidInput: a malformed field, a version that is not completed, the servers' own
            image, or (``compat`` on) a new server version whose declared client range
            refuses the released client. NotFound: an unknown image or version.
    """
    given = client_release.check_body(raw)
    if given is None:
        return None
    image = builds.get_image(s, given["image"])
    version = builds.resolve_version(s, image, given["version"])
    if version.status != JobState.COMPLETED:
        raise InvalidInput(
            f"client_release.version: version {version.number} of {image.name} is"
            f" {JobState(version.status).label}; only a completed version can be released",
            field="client_release.version",
        )
    try:
        branch = builds.check_name(given["branch"], "client_release.branch")
    except InvalidInput as e:
        raise InvalidInput(e.message, field="client_release.branch") from None
    servers = {p.id: s.get_one(Version, p.version_id) for pair in r.builds for p in pair}
    if any(v.image_id == image.id for v in servers.values()):
        raise InvalidInput(
            f"client_release.image {image.name} is the image of the job's servers; name the"
            " client's image",
            field="client_release.image",
        )
    client = client_versions.of_build(version.number, version.label)
    if given["compat"]:
        new = {new_p.version_id: declared_range(s, new_p.version_id) for _, new_p in r.builds}
        bad = client_release.refusing(new, client)
        if bad:
            names = ", ".join(_version_name(s, vid) for vid in bad)
            raise InvalidInput(
                f"client_release: the new server build(s) ({names}) declare client ranges"
                f" that refuse the client {client} this job releases; widen their range"
                ' or set "compat": false',
                field="client_release",
            )
    return client_release.ClientRelease(
        image_id=image.id,
        image=image.name,
        branch=branch,
        version_id=version.id,
        version_number=version.number,
        client_version=client,
        compat=given["compat"],
    )


def _version_name(s: Session, version_id: int) -> str:
    v = s.get_one(Version, version_id)
    return f"{s.get_one(Image, v.image_id).name} version {v.number}"


def client_release_dict(s: Session, stored: Mapping[str, Any]) -> dict[str, Any] | None:
    """A job's client release as the API shows it, with where its branch points now."""
    raw = stored.get("client_release")
    if not raw:
        return None
    release = client_release.ClientRelease.from_dict(raw)
    branch = s.scalar(
        select(Branch).where(Branch.image_id == release.image_id, Branch.name == release.branch)
    )
    current = s.get(Version, branch.version_id) if branch is not None else None
    return {
        "image": release.image,
        "branch": release.branch,
        "version": release.version_number,
        "client_version": release.client_version,
        "compat": release.compat,
        "branch_version": None if current is None else current.number,
        "released": current is not None and current.id == release.version_id,
    }


def create(s: Session, body: Mapping[str, Any], actor: str, t: float) -> PatchJob:
    """A new job from its create body (see docs/patchjobs.md).

    Raises:
        InvalidInput, NotFound: see ``resolve`` and ``specs.normalise``; a start less than
            5 minutes ahead.
    """
    r, stored, start_at = _validated(s, body, t)
    job = PatchJob(
        name=str(body["name"]).strip(),
        environment_id=r.environment.id,
        application_id=r.application.id,
        method=stored["method"],
        spec=json.dumps(stored, sort_keys=True),
        comments=str(body.get("comments", "")),
        start_at=start_at,
        status=int(JobStatus.SCHEDULED),
        progress=dump_progress(JobProgress()),
        reason="scheduled" if body.get("scheduled_start") is not None else "queued to start",
        waiting_for="[]",
        wake_at=t,
        revision=0,
        created_at=t,
        updated_at=t,
        created_by=actor[:200],
    )
    s.add(job)
    s.flush()
    _set_emails(s, job, stored["emails"], t)
    add_event(
        s,
        job,
        "created",
        f"patch job {job.name!r} created by {actor}",
        t,
        {"method": job.method, "start_at": start_at},
    )
    return job


def _set_emails(s: Session, job: PatchJob, emails: Sequence[Mapping[str, Any]], t: float) -> None:
    current = {
        e.email: e for e in s.scalars(select(PatchJobEmail).where(PatchJobEmail.job_id == job.id))
    }
    wanted = {e["email"]: e for e in emails}
    for email, gone in current.items():
        if email not in wanted:
            s.delete(gone)
    for email, e in wanted.items():
        row = current.get(email)
        if row is None:
            s.add(
                PatchJobEmail(
                    job_id=job.id,
                    email=email,
                    progress_report=e["progress"],
                    result_report=e["result"],
                    created_at=t,
                    changed_at=None,
                )
            )
        elif (row.progress_report, row.result_report) != (e["progress"], e["result"]):
            row.progress_report, row.result_report, row.changed_at = (e["progress"], e["result"], t)


def update(s: Session, job: PatchJob, patch: Mapping[str, Any], actor: str, t: float) -> PatchJob:
    """Edit a job: anything until 5 minutes before its start, then only ``emails``; another
    application only of the same type (game or utility).

    Raises:
        Conflict: the job is locked (the message names the fields) or over.
        InvalidInput, NotFound: as ``create``; another application of another type.
    """
    unknown = sorted(set(patch) - BODY_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(unknown)}")
    if JobStatus(job.status).terminal:
        raise Conflict(f"patch job {job.id} is over ({JobStatus(job.status).label})", job_id=job.id)
    stored = stored_spec(job)
    before = stored["body"]
    changed = sorted(k for k, v in patch.items() if before.get(k) != v)
    if not changed:
        return job
    locked = [k for k in changed if k != "emails"]
    started = progress_of(job).phase != PENDING
    if locked and (started or edit_locked(job.start_at, t)):
        raise Conflict(
            f"patch job {job.id} is locked since {utc(job.start_at - 300)} (5 minutes before "
            f"its start): only emails can still change, not {', '.join(locked)}",
            job_id=job.id,
            fields=locked,
            locked_at=job.start_at - 300,
        )
    merged = {**before, **patch}
    if not locked:  # emails only: nothing else is validated again
        new_stored = {**stored, "emails": specs.parse_emails(merged.get("emails")), "body": merged}
        r = None
        start_at = job.start_at
    else:
        if isinstance(merged.get("application"), str):  # first: whatever else is wrong
            app = get_application(s, merged["application"])
            if app.id != job.application_id:
                current = s.get_one(Application, job.application_id)
                check_application_type(current.type, app.type)
        r, new_stored, start_at = _validated(s, merged, t)
        check_edit(spec_of(job), specs.to_spec(job.id, new_stored), job.start_at, t)
    values: dict[str, Any] = {
        "spec": json.dumps(new_stored, sort_keys=True),
        "updated_at": t,
        "start_at": start_at,
    }
    if r is not None:
        values.update(
            name=str(merged["name"]).strip(),
            environment_id=r.environment.id,
            application_id=r.application.id,
            method=new_stored["method"],
            comments=str(merged.get("comments", "")),
        )
    if not cas_write(s, job, job.revision, **values):
        raise Conflict(f"patch job {job.id} changed meanwhile; try again", job_id=job.id)
    s.refresh(job)
    _set_emails(s, job, new_stored["emails"], t)
    add_event(s, job, "updated", f"edited by {actor}: {', '.join(changed)}", t, {"fields": changed})
    return job


def cancel(
    db: Database,
    job_id: int,
    mode: str,
    actor: str,
    t: float,
    *,
    before_start: bool = False,
) -> PatchJob:
    """Ask the job to stop: ``revert`` (back to the old builds) or ``wrap_up`` (as is).
    ``before_start``: only if the job has not started (checked in the same
    compare-and-set as the cancel, so a job that starts meanwhile is left alone).

    Raises:
        InvalidInput: an unknown mode. Conflict: the job is over, or was cancelled with
            the other mode, or (``before_start``) has started (the fact ``started``).
            NotFound: no such job.
    """
    try:
        chosen = CancelMode(mode)
    except ValueError as e:
        raise InvalidInput(f"mode must be revert or wrap_up, got {mode!r}") from e

    def change(s: Session, job: PatchJob, progress: JobProgress) -> JobProgress | None:
        if JobStatus(job.status).terminal:
            raise Conflict(
                f"patch job {job.id} is over ({JobStatus(job.status).label})", job_id=job.id
            )
        if before_start and progress.phase != PENDING:
            raise Conflict(
                f"patch job {job.id} has started: cancelling it needs a choice, revert (back"
                " to the old builds) or wrap up (leave every instance as it is)",
                job_id=job.id,
                started=True,
            )
        if progress.cancel is chosen:
            return None
        if progress.cancel is not None:
            raise Conflict(
                f"patch job {job.id} is already being cancelled ({progress.cancel.value})",
                job_id=job.id,
            )
        add_event(
            s, job, "cancel", f"cancel ({chosen.value}) asked by {actor}", t, {"mode": chosen.value}
        )
        return replace(progress, cancel=chosen)

    return mutate_progress(db, job_id, change, t)


def resume(db: Database, job_id: int, actor: str, t: float) -> PatchJob:
    """Resume a paused job (a canary awaiting promotion, a custom pause step).

    Raises:
        Conflict: the job is not paused. NotFound: no such job.
    """

    def change(s: Session, job: PatchJob, progress: JobProgress) -> JobProgress | None:
        if job.status != JobStatus.PAUSED:
            raise Conflict(
                f"patch job {job.id} is {JobStatus(job.status).label.lower()}, not paused",
                job_id=job.id,
                status=job.status,
            )
        if progress.resumes > int(progress.marks.get("resumes_used", 0)):
            return None  # resumed already; the reconciler has not seen it yet
        add_event(s, job, "resume", f"resumed by {actor}", t)
        return replace(progress, resumes=progress.resumes + 1)

    return mutate_progress(db, job_id, change, t)


# -- reading -------------------------------------------------------------------------------


def preview(s: Session, body: Mapping[str, Any], t: float) -> dict[str, Any]:
    """The instances a job with these builds and fleets would move, per region and fleet.

    Raises:
        InvalidInput, NotFound: see ``resolve``.
    """
    unknown = sorted(set(body) - {"environment", "application", "builds", "fleets"})
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(unknown)}")
    r = resolve(s, body)
    fleet_ids = [f.id for f in r.fleets]
    old_ids = [old.id for old, _ in r.builds]
    rows = live_selection(s, fleet_ids, old_ids, t)
    regions = Counter(row[3] for row in rows)
    fleets = Counter(row[1] for row in rows)
    return {
        "total": len(rows),
        "regions": [{"region": k, "instances": v} for k, v in sorted(regions.items())],
        "fleets": [{"fleet": k, "instances": v} for k, v in sorted(fleets.items())],
        "instances": [
            {
                "id": i,
                "fleet": f,
                "host": h,
                "region": reg,
                "profile": p,
                "players": n,
                "state": "lost" if t - seen >= LOST_AFTER_S else state,
            }
            for i, f, h, reg, p, n, state, _desired, seen in rows[:MAX_PREVIEW]
        ],
        "truncated": len(rows) > MAX_PREVIEW,
    }


def job_dict(s: Session, job: PatchJob, t: float) -> dict[str, Any]:
    stored = stored_spec(job)
    progress = progress_of(job)
    body = stored.get("body", {})
    profiles = {
        p.id: p.name
        for p in s.scalars(
            select(Profile).where(
                Profile.id.in_({int(v) for pair in stored["builds"] for v in pair})
            )
        )
    }
    fleets = {
        f.id: f.name for f in s.scalars(select(Fleet).where(Fleet.id.in_(stored["fleet_ids"])))
    }
    emails = [
        {
            "email": e.email,
            "progress": e.progress_report,
            "result": e.result_report,
            "created_at": e.created_at,
            "changed_at": e.changed_at,
        }
        for e in s.scalars(
            select(PatchJobEmail).where(PatchJobEmail.job_id == job.id).order_by(PatchJobEmail.id)
        )
    ]
    status = JobStatus(job.status)
    return {
        "id": job.id,
        "name": job.name,
        "environment": s.get_one(Environment, job.environment_id).name,
        "application": s.get_one(Application, job.application_id).name,
        "method": job.method,
        "method_name": Method(job.method).label,
        "status": int(status),
        "status_name": status.label,
        "phase": progress.phase,
        "step": progress.step,
        "reason": job.reason,
        "waiting_for": json.loads(job.waiting_for),
        "builds": [
            {
                "old": profiles.get(int(o)),
                "new": profiles.get(int(n)),
                "old_id": int(o),
                "new_id": int(n),
            }
            for o, n in stored["builds"]
        ],
        "fleets": [fleets.get(int(f)) for f in stored["fleet_ids"]],
        "stop": stored["stop"],
        "comments": job.comments,
        "scheduled_start": stored.get("scheduled_start"),
        "start_at": job.start_at,
        "started_at": progress.started_at,
        "finished_at": progress.finished_at,
        "max_run_time": body.get("max_run_time"),
        "max_run_time_unit": body.get("max_run_time_unit", "seconds"),
        "max_run_time_s": stored.get("max_run_time_s"),
        "emails": emails,
        "client_release": client_release_dict(s, stored),
        "knobs": {
            "rolling": stored["rolling"],
            "drain": stored["drain"],
            "canary": stored["canary"],
            "ab": stored["ab"],
            "failure_threshold": stored["failure_threshold"],
            "steps": stored["steps"],
        },
        "cancel": None if progress.cancel is None else progress.cancel.value,
        "edit_locked": status.terminal or progress.phase != PENDING or edit_locked(job.start_at, t),
        "progress": progress_summary(s, job, t, progress),
        "wake_at": job.wake_at,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "created_by": job.created_by,
    }


def list_jobs(
    s: Session, status: int | None, limit: int, offset: int
) -> tuple[list[PatchJob], int]:
    """Newest first. Raises: InvalidInput: a bad status, limit or offset."""
    if status is not None and status not in set(JobStatus):
        raise InvalidInput(f"status must be one of 1..{len(JobStatus)}, got {status}")
    if not 1 <= limit <= MAX_LIST or offset < 0:
        raise InvalidInput(f"limit must be 1..{MAX_LIST} and offset >= 0")
    q = select(PatchJob)
    count = select(func.count()).select_from(PatchJob)
    if status is not None:
        q = q.where(PatchJob.status == status)
        count = count.where(PatchJob.status == status)
    total = s.scalar(count) or 0
    rows = list(s.scalars(q.order_by(PatchJob.id.desc()).limit(limit).offset(offset)))
    return rows, total


def events(s: Session, job: PatchJob, after: int, limit: int) -> list[dict[str, Any]]:
    """Raises: InvalidInput: a bad limit."""
    if not 1 <= limit <= MAX_EVENTS:
        raise InvalidInput(f"limit must be 1..{MAX_EVENTS}")
    rows = s.scalars(
        select(PatchJobEvent)
        .where(PatchJobEvent.job_id == job.id, PatchJobEvent.id > after)
        .order_by(PatchJobEvent.id)
        .limit(limit)
    )
    return [
        {
            "id": e.id,
            "at": e.at,
            "kind": e.kind,
            "status": e.status,
            "status_name": JobStatus(e.status).label,
            "message": e.message,
            "data": json.loads(e.data or "{}"),
        }
        for e in rows
    ]


def actions(s: Session, job: PatchJob) -> list[dict[str, Any]]:
    rows = s.scalars(
        select(PatchJobAction).where(PatchJobAction.job_id == job.id).order_by(PatchJobAction.seq)
    )
    return [
        {
            "key": a.key,
            "seq": a.seq,
            "action": json.loads(a.action),
            "recorded_at": a.recorded_at,
            "applied_at": a.applied_at,
            "result": a.result,
        }
        for a in rows
    ]


__all__ = [
    "actions",
    "cancel",
    "create",
    "events",
    "get_job",
    "job_dict",
    "list_jobs",
    "preview",
    "progress_summary",
    "resolve",
    "resume",
    "update",
]
