"""Seed 001's PatchJob API as it is written: ``/v3/patchJob…``, a facade over ``services``.

Each endpoint reads the seed's JSON (``v3_schemas``), resolves its ids (``v3_ids``), maps
it to our body (``v3_mapping.to_body``), calls the same service as ``/api/v1`` (so the
same rules: 5-minute start, edit lock at T-5 except e-mails, the wait behind an
overlapping job, cancel with revert or wrap-up, the application type kept on an edit),
and maps the job back (``v3_mapping.from_job``). Our errors leave with the seed's field
names (``v3_mapping.translate``). An element is answered as a one-item list, as the seed
does. docs/patchjobs.md, "The /v3 facade", says what maps to what and what is left out.

``/api/v1/v3-ids`` registers the ids a studio's scripts already hold (``v3_ids``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from changeover.control.auth.views import Admin, Reader, ctx
from changeover.control.db import now
from changeover.control.fleet.models import Region
from changeover.control.http_input import INT64_MAX, EdgeRoute
from changeover.control.patchjobs import methods_table, services, statuses_table, v3_ids
from changeover.control.patchjobs.records import PatchJob, PatchJobEmail, PatchJobEvent
from changeover.control.patchjobs.storage import stored_spec
from changeover.control.patchjobs.v3_mapping import (
    READ_ONLY,
    JobIds,
    from_job,
    preview_regions,
    ref_ids,
    stop_methods,
    to_body,
    translate,
)
from changeover.control.patchjobs.v3_schemas import (
    V3CancelIn,
    V3IdIn,
    V3IdOut,
    V3NamedOut,
    V3PatchJobEdit,
    V3PatchJobIn,
    V3PatchJobOut,
    V3PreviewIn,
    V3RegionOut,
)
from changeover.errors import ChangeoverError, Conflict

router = APIRouter(prefix="/v3", tags=["patch jobs (seed 001, /v3)"], route_class=EdgeRoute)
ids_router = APIRouter(prefix="/api/v1", tags=["patch jobs"], route_class=EdgeRoute)

SeedIdPath = Annotated[str, Path(min_length=1, max_length=19, pattern=r"^[0-9]+$")]
"""An id in a path, a string of digits as the seed writes ids."""


@contextmanager
def _seed_names() -> Iterator[None]:
    try:
        yield
    except ChangeoverError as e:
        raise translate(e) from e


def _sent(body: BaseModel) -> dict[str, Any]:
    """The fields a body sent, less the read-only ones."""
    return {k: v for k, v in body.model_dump(exclude_unset=True).items() if k not in READ_ONLY}


def _names(s: Session, fields: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """(kind, seed id) -> our name, for every id ``fields`` names."""
    out = {}
    for ref in ref_ids(fields):
        local = v3_ids.resolve(s, ref.kind, ref.id, ref.field)
        out[ref.kind, ref.id] = v3_ids.name_of(s, ref.kind, local)
    return out


def _job_id(value: str) -> int:
    return v3_ids.parse_id(value, "patchJobId")


def _element(s: Session, job: PatchJob, t: float) -> dict[str, Any]:
    d = services.job_dict(s, job, t)
    stored = stored_spec(job)
    fleet_ids = [int(f) for f in stored["fleet_ids"]]
    profiles = [b["old_id"] for b in d["builds"]] + [b["new_id"] for b in d["builds"]]
    fleets = v3_ids.public_ids(s, "fleet", fleet_ids)
    ids = JobIds(
        environment=v3_ids.public_ids(s, "deploymentEnvironment", [job.environment_id])[
            job.environment_id
        ],
        application=v3_ids.public_ids(s, "application", [job.application_id])[job.application_id],
        profiles=v3_ids.public_ids(s, "applicationBuild", profiles),
        fleets=[fleets[f] for f in fleet_ids],
        emails=dict(
            s.execute(
                select(PatchJobEmail.email, PatchJobEmail.id).where(PatchJobEmail.job_id == job.id)
            ).all()
        ),
        edited_at=s.scalar(
            select(func.max(PatchJobEvent.at)).where(
                PatchJobEvent.job_id == job.id, PatchJobEvent.kind == "updated"
            )
        ),
    )
    return from_job(d, ids, stored.get("body", {}))


# -- tables --------------------------------------------------------------------------------


@router.get("/patchJob/type", response_model=list[V3NamedOut])
def list_types(_: Reader) -> list[dict[str, object]]:
    """The patching methods (``patchJobMethodId``)."""
    return methods_table()


@router.get("/patchJob/status", response_model=list[V3NamedOut])
def list_statuses(_: Reader) -> list[dict[str, object]]:
    """The job statuses (``status``)."""
    return statuses_table()


@router.get("/application/stopMethod", response_model=list[V3NamedOut])
def list_stop_methods(_: Reader) -> list[dict[str, object]]:
    """The stop methods (``stopMethodId``)."""
    return stop_methods()


@router.post("/patchJob/applicationInstancePreview", response_model=list[V3RegionOut])
def preview(body: V3PreviewIn, request: Request, _: Reader) -> list[dict[str, Any]]:
    """The instances a job with this selection would move, per region."""
    fields = _sent(body)
    with _seed_names(), ctx(request).db.read() as s:
        p = services.preview(s, to_body(fields, _names(s, fields)), now())
        names = [r["region"] for r in p["regions"]]
        region_ids = dict(
            s.execute(select(Region.name, Region.id).where(Region.name.in_(names))).all()
        )
        return preview_regions(p, region_ids)


# -- jobs ----------------------------------------------------------------------------------


@router.post("/patchJob", response_model=list[V3PatchJobOut])
def create_job(body: V3PatchJobIn, request: Request, who: Admin) -> list[dict[str, Any]]:
    c = ctx(request)
    fields = _sent(body)
    with _seed_names(), c.db.write() as s:
        t = now()
        ours = {k: v for k, v in to_body(fields, _names(s, fields)).items() if v is not None}
        job = services.create(s, ours, who.actor, t)
        out = _element(s, job, t)
    c.runner.wake()
    return [out]


@router.get("/patchJob", response_model=list[V3PatchJobOut])
def list_jobs(
    request: Request,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=services.MAX_LIST)] = 100,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> list[dict[str, Any]]:
    """Newest first."""
    with _seed_names(), ctx(request).db.read() as s:
        rows, _total = services.list_jobs(s, None, limit, offset)
        t = now()
        return [_element(s, j, t) for j in rows]


@router.get("/patchJob/{patchJobId}", response_model=list[V3PatchJobOut])
def show_job(patchJobId: SeedIdPath, request: Request, _: Reader) -> list[dict[str, Any]]:  # noqa: N803
    with _seed_names(), ctx(request).db.read() as s:
        return [_element(s, services.get_job(s, _job_id(patchJobId)), now())]


@router.put("/patchJob/{patchJobId}", response_model=list[V3PatchJobOut])
def edit_job(
    patchJobId: SeedIdPath,  # noqa: N803
    body: V3PatchJobEdit,
    request: Request,
    who: Admin,
) -> list[dict[str, Any]]:
    """The fields sent change (only ``email`` from 5 minutes before the start on)."""
    c = ctx(request)
    fields = _sent(body)
    with _seed_names(), c.db.write() as s:
        t = now()
        job = services.get_job(s, _job_id(patchJobId), lock=True)
        patch = to_body(fields, _names(s, fields), stored_spec(job).get("body", {}))
        job = services.update(s, job, patch, who.actor, t)
        out = _element(s, job, t)
    c.runner.wake()
    return [out]


def _cancel(
    request: Request, job_id: int, mode: str, actor: str, *, before_start: bool = False
) -> list[dict[str, Any]]:
    c = ctx(request)
    with _seed_names():
        services.cancel(c.db, job_id, mode, actor, now(), before_start=before_start)
        c.runner.wake()
        with c.db.read() as s:
            return [_element(s, services.get_job(s, job_id), now())]


@router.post("/patchJob/{patchJobId}/cancel", response_model=list[V3PatchJobOut])
def cancel_job(
    patchJobId: SeedIdPath,  # noqa: N803
    body: V3CancelIn,
    request: Request,
    who: Admin,
) -> list[dict[str, Any]]:
    """Cancel and revert (``"revert": 1``) or cancel and wrap up (``"revert": 0``)."""
    mode = "revert" if body.revert else "wrap_up"
    return _cancel(request, _job_id(patchJobId), mode, who.actor)


@router.delete("/patchJob/{patchJobId}", response_model=list[V3PatchJobOut])
def delete_job(patchJobId: SeedIdPath, request: Request, who: Admin) -> list[dict[str, Any]]:  # noqa: N803
    """A job that has not started is cancelled (it never runs; its record stays). One that
    has started needs the choice the seed gives: ``POST …/cancel``."""
    job_id = _job_id(patchJobId)
    try:
        return _cancel(request, job_id, "wrap_up", who.actor, before_start=True)
    except Conflict as e:
        if not e.facts.get("started"):
            raise
        raise Conflict(
            f'{e.message}: POST /v3/patchJob/{job_id}/cancel with {{"revert": 1}} or'
            ' {"revert": 0}',
            **e.facts,
        ) from e


# -- ids -----------------------------------------------------------------------------------


@ids_router.put("/v3-ids/{kind}/{public_id}", response_model=V3IdOut)
def register_id(
    kind: Annotated[str, Path(max_length=32)],
    public_id: SeedIdPath,
    body: V3IdIn,
    request: Request,
    _: Admin,
) -> dict[str, object]:
    """Give an environment, application, build (profile) or fleet, by name, the seed id
    the studio's scripts use for it (``v3_ids``)."""
    with ctx(request).db.write() as s:
        return v3_ids.register(s, kind, public_id, body.name, now())


@ids_router.get("/v3-ids", response_model=list[V3IdOut])
def list_ids(request: Request, _: Reader) -> list[dict[str, object]]:
    with ctx(request).db.read() as s:
        return v3_ids.listing(s)
