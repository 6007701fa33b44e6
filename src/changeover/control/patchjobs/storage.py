"""Reading and writing patch-job rows: spec, progress, events, and the compare-and-set that
guards every write of a job's progress.

Three writers touch a job's progress: the reconciler (a planning pass), a verification
check that ends (``check_results``) and the API (cancel, resume, edits). Each one reads
the row with its ``revision``, computes, and writes back with

    UPDATE patch_jobs SET …, revision = revision + 1 WHERE id = :id AND revision = :seen

so a write based on a stale read changes nothing (the writer reads again and retries, or,
for the reconciler, plans again at its next pass). Two control-plane processes can thus
never both record a decision taken from the same state.

The fleet side asks two things of running jobs here: which fleets they own (placement
leaves those alone) and which builds a host must stage for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from changeover.control.db import Database
from changeover.control.patchjobs import codec, specs
from changeover.control.patchjobs.model import JobProgress, JobSpec
from changeover.control.patchjobs.records import HostStageRequest, PatchJob, PatchJobEvent
from changeover.control.patchjobs.schedule import STARTED
from changeover.control.patchjobs.states import JobStatus
from changeover.errors import Conflict, NotFound

TERMINAL: Final = tuple(int(s) for s in JobStatus if s.terminal)
OWNING: Final = tuple(int(s) for s in STARTED)
CAS_ROUNDS: Final = 20


def spec_of(job: PatchJob) -> JobSpec:
    return specs.to_spec(job.id, json.loads(job.spec))


def stored_spec(job: PatchJob) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(job.spec)
    return data


_parsed: dict[tuple[int, float, int], JobProgress] = {}
_PARSED_MAX = 64


def progress_of(job: PatchJob) -> JobProgress:
    """The job's progress. A big job's is large (its selection, the keys it issued) and
    read on every pass and every ``GET``: parsed once per revision, which every write of
    it bumps (``cas_write``); ``JobProgress`` is immutable, so sharing it is safe."""
    key = (job.id, job.created_at, job.revision)
    found = _parsed.get(key)
    if found is None:
        found = codec.progress_from_dict(json.loads(job.progress))
        if len(_parsed) >= _PARSED_MAX:
            _parsed.pop(next(iter(_parsed)))
        _parsed[key] = found
    return found


def remember_progress(key: tuple[int, float, int], progress: JobProgress) -> None:
    """Note that the job ``key`` (id, created_at, revision) holds ``progress``, once the
    write of that revision has committed: its writer's next read of it need not parse
    what it has just serialised."""
    if len(_parsed) >= _PARSED_MAX:
        _parsed.pop(next(iter(_parsed)))
    _parsed[key] = progress


def dump_progress(progress: JobProgress) -> str:
    return json.dumps(codec.progress_to_dict(progress), sort_keys=True)


def get_job(s: Session, job_id: int, *, lock: bool = False) -> PatchJob:
    """The job; ``lock``: hold its row until the transaction ends (PostgreSQL; SQLite's
    writers are serialised anyway), so a planning pass cannot slip in between.

    Raises: NotFound: no such job.
    """
    job = s.get(PatchJob, job_id, with_for_update=lock)
    if job is None:
        raise NotFound(f"no patch job with id {job_id}", job_id=job_id)
    return job


def event_row(
    job: PatchJob,
    kind: str,
    message: str,
    at: float,
    data: Mapping[str, Any] | None = None,
    status: int | None = None,
) -> dict[str, Any]:
    """The columns of one of the job's events (``add_event``, ``add_events``)."""
    return {
        "job_id": job.id,
        "at": at,
        "kind": kind,
        "status": job.status if status is None else status,
        "message": message[:4000],
        "data": json.dumps(dict(data or {}), sort_keys=True, default=str),
        "attempts": 0,
    }


def add_event(
    s: Session,
    job: PatchJob,
    kind: str,
    message: str,
    at: float,
    data: Mapping[str, Any] | None = None,
    status: int | None = None,
) -> None:
    """Append to the job's outbox of events (reports and the dashboard read it in order)."""
    s.add(PatchJobEvent(**event_row(job, kind, message, at, data, status)))


def add_events(s: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append many ``event_row``s with one INSERT (a pass applying a batch of actions)."""
    if rows:
        s.execute(insert(PatchJobEvent), list(rows))


def cas_write(s: Session, job: PatchJob, seen_revision: int, **values: Any) -> bool:
    """Write ``values`` on ``job`` if nobody wrote it since ``seen_revision``."""
    done = s.execute(
        update(PatchJob)
        .where(PatchJob.id == job.id, PatchJob.revision == seen_revision)
        .values(revision=seen_revision + 1, **values)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if done:
        s.expire(job)
    return bool(done)


def mutate_progress(
    db: Database,
    job_id: int,
    change: Callable[[Session, PatchJob, JobProgress], JobProgress | None],
    now: float,
) -> PatchJob:
    """Apply ``change`` to the job's progress under the compare-and-set, retrying on a race.

    ``change`` returns the new progress (or None for no change) and may add events with
    ``s``; it may raise to refuse (a ChangeoverError reaches the caller untouched).

    Raises:
        NotFound: no such job. Conflict: the job kept changing under us.
    """
    for _ in range(CAS_ROUNDS):
        with db.write() as s:
            job = get_job(s, job_id, lock=True)
            seen = job.revision
            new = change(s, job, progress_of(job))
            if new is None:
                return job
            if cas_write(
                s,
                job,
                seen,
                progress=dump_progress(new),
                wake_at=now,  # the reconciler looks at it at its next pass
                updated_at=now,
            ):
                s.refresh(job)
                return job
            s.rollback()
    raise Conflict(f"patch job {job_id} changed too often to update it; try again", job_id=job_id)


def with_check_result(progress: JobProgress, key: str, passed: bool) -> JobProgress:
    return replace(progress, check_results={**progress.check_results, key: passed})


# -- asked by the fleet side ---------------------------------------------------------------


def owned_fleet_ids(s: Session) -> set[int]:
    """Fleets a started, unfinished job owns (placement leaves their instances alone)."""
    owned: set[int] = set()
    for raw in s.scalars(select(PatchJob.spec).where(PatchJob.status.in_(OWNING))):
        owned.update(int(f) for f in json.loads(raw).get("fleet_ids", ()))
    return owned


def owning_jobs(s: Session, fleet_id: int) -> list[PatchJob]:
    """The started, unfinished jobs that own ``fleet_id`` (one, unless specs overlap)."""
    return [
        job
        for job in s.scalars(select(PatchJob).where(PatchJob.status.in_(OWNING)))
        if fleet_id in json.loads(job.spec).get("fleet_ids", ())
    ]


def stage_requests(s: Session, host_name: str) -> set[int]:
    """Profiles unfinished jobs want staged on ``host_name``."""
    return set(
        s.scalars(
            select(HostStageRequest.profile_id)
            .join(PatchJob, PatchJob.id == HostStageRequest.job_id)
            .where(HostStageRequest.host_name == host_name, PatchJob.status.not_in(TERMINAL))
        )
    )


__all__ = [
    "OWNING",
    "TERMINAL",
    "add_event",
    "add_events",
    "cas_write",
    "dump_progress",
    "event_row",
    "get_job",
    "mutate_progress",
    "owned_fleet_ids",
    "owning_jobs",
    "progress_of",
    "spec_of",
    "stage_requests",
    "stored_spec",
    "with_check_result",
]
