"""HTTP endpoints of patch jobs, exactly as docs/patchjobs.md lists them.

Reading needs a ``viewer`` token, writing ``admin``. Bodies are checked twice: pydantic
bounds their shape and size (``extra="forbid"``, lengths, list sizes), then
``services``/``specs`` apply the rules and name the field that breaks one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from changeover.control.auth.views import Admin, Reader, ctx
from changeover.control.db import now
from changeover.control.http_input import INT64_MAX, EdgeRoute, Id, Int64, Number
from changeover.control.patchjobs import (
    methods_table,
    services,
    simulate_db,
    specs,
    statuses_table,
)
from changeover.control.patchjobs.fleet_view import MAX_MEMBERS_PAGE, member_views
from changeover.control.patchjobs.schemas import (
    ActionOut,
    EventList,
    JobInstanceList,
    JobList,
    JobOut,
    MethodOut,
    PreviewOut,
    SimulateOut,
    StatusOut,
    StopMethodOut,
)

router = APIRouter(prefix="/api/v1", tags=["patch jobs"], route_class=EdgeRoute)

Name = Annotated[str, Field(min_length=1, max_length=200)]
Knobs = dict[str, Any]


class BuildBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    old: Annotated[str, Field(min_length=1, max_length=64)]
    new: Annotated[str, Field(min_length=1, max_length=64)]


class StopBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signal: Annotated[str, Field(max_length=16)] | None = None
    method: Int64 | None = None
    timeout_s: Number | None = None


class EmailBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[str, Field(max_length=254)]
    progress: bool = True
    result: bool = True


class ClientReleaseBody(BaseModel):
    """The client to release once the job's servers are done (docs/patchjobs.md)."""

    model_config = ConfigDict(extra="forbid")
    image: Annotated[str, Field(min_length=1, max_length=100)]
    branch: Annotated[str, Field(min_length=1, max_length=64)]
    version: Int64 | Annotated[str, Field(min_length=1, max_length=100)]
    compat: bool = True


class _Fields(BaseModel):
    """Every field of a job, all optional (PATCH); ``JobCreate`` requires the core ones."""

    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    environment: Annotated[str, Field(max_length=64)] | None = None
    application: Annotated[str, Field(max_length=64)] | None = None
    method: Int64 | Annotated[str, Field(max_length=40)] | None = None
    builds: Annotated[list[BuildBody], Field(max_length=specs.MAX_BUILDS)] | None = None
    fleets: (
        Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=specs.MAX_FLEETS)]
        | None
    ) = None
    stop: StopBody | None = None
    comments: Annotated[str, Field(max_length=services.MAX_COMMENTS)] | None = None
    scheduled_start: Number | None = None
    max_run_time: Number | None = None
    max_run_time_unit: Int64 | Annotated[str, Field(max_length=16)] | None = None
    rolling: Annotated[Knobs, Field(max_length=20)] | None = None
    drain: Annotated[Knobs, Field(max_length=20)] | None = None
    canary: Annotated[Knobs, Field(max_length=20)] | None = None
    ab: Annotated[Knobs, Field(max_length=20)] | None = None
    failure_threshold: Number | None = None
    steps: Annotated[list[Knobs], Field(max_length=100)] | None = None
    emails: Annotated[list[EmailBody], Field(max_length=specs.MAX_EMAILS)] | None = None
    client_release: ClientReleaseBody | None = None


class JobCreate(_Fields):
    name: Name
    environment: Annotated[str, Field(max_length=64)]
    application: Annotated[str, Field(max_length=64)]
    method: Int64 | Annotated[str, Field(max_length=40)]
    builds: Annotated[list[BuildBody], Field(min_length=1, max_length=specs.MAX_BUILDS)]
    fleets: Annotated[
        list[Annotated[str, Field(max_length=64)]],
        Field(min_length=1, max_length=specs.MAX_FLEETS),
    ]


class JobPatch(_Fields):
    pass


class PreviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    environment: Annotated[str, Field(max_length=64)]
    application: Annotated[str, Field(max_length=64)]
    builds: Annotated[list[BuildBody], Field(min_length=1, max_length=specs.MAX_BUILDS)]
    fleets: Annotated[
        list[Annotated[str, Field(max_length=64)]],
        Field(min_length=1, max_length=specs.MAX_FLEETS),
    ]


class SessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    share: Number
    median_s: Number
    sigma: Number = 0.0


class PlayersBody(BaseModel):
    """An explicit player model (``player_model.PlayerModel``); the service checks ranges."""

    model_config = ConfigDict(extra="forbid")
    arrivals_per_s: Annotated[list[Number], Field(min_length=1, max_length=1440)]
    sessions: Annotated[list[SessionBody], Field(min_length=1, max_length=64)]
    friend_join_share: Number = 0.0
    notice_leave_share: Number = 0.0


class SimulateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job: JobCreate
    players: PlayersBody | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    runs: Annotated[int, Field(ge=1, le=simulate_db.MAX_RUNS)] = 5
    compare: bool = False


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Annotated[str, Field(max_length=16)]


def _plain(body: BaseModel, *, unset: bool) -> dict[str, Any]:
    """The body as the services take it; a PATCH keeps only what was sent."""
    data: dict[str, Any] = body.model_dump(exclude_unset=unset, exclude_none=not unset)
    if data.get("stop") is not None:
        data["stop"] = {k: v for k, v in data["stop"].items() if v is not None}
    return data


@router.get("/patchjobs/methods", response_model=list[MethodOut])
def list_methods(_: Reader) -> list[dict[str, object]]:
    return methods_table()


@router.get("/patchjobs/statuses", response_model=list[StatusOut])
def list_statuses(_: Reader) -> list[dict[str, object]]:
    return statuses_table()


@router.get("/patchjobs/stop-methods", response_model=list[StopMethodOut])
def list_stop_methods(_: Reader) -> list[dict[str, object]]:
    return specs.stop_methods_table()


@router.post("/patchjobs/preview", response_model=PreviewOut)
def preview(body: PreviewBody, request: Request, _: Reader) -> dict[str, Any]:
    """The instances a job would move, per region and fleet (seed 001's preview)."""
    with ctx(request).db.read() as s:
        return services.preview(s, _plain(body, unset=False), now())


@router.post("/patchjobs/simulate", response_model=SimulateOut)
def simulate(body: SimulateBody, request: Request, _: Reader) -> dict[str, Any]:
    """What the job would cost players, simulated on the live fleet; nothing is created
    (docs/patchjobs.md, "Simulating a job before it runs")."""
    plain = {
        "job": _plain(body.job, unset=False),
        "players": None if body.players is None else body.players.model_dump(),
        "seed": body.seed,
        "runs": body.runs,
        "compare": body.compare,
    }
    with ctx(request).db.read() as s:
        return simulate_db.simulate_job(s, plain, now())


@router.post("/patchjobs", status_code=201, response_model=JobOut)
def create_job(body: JobCreate, request: Request, who: Admin) -> dict[str, Any]:
    c = ctx(request)
    with c.db.write() as s:
        t = now()
        job = services.create(s, _plain(body, unset=False), who.actor, t)
        out = services.job_dict(s, job, t)
    c.runner.wake()
    return out


@router.get("/patchjobs", response_model=JobList)
def list_jobs(
    request: Request,
    _: Reader,
    status: Int64 | None = None,
    limit: Annotated[int, Query(ge=1, le=services.MAX_LIST)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        rows, total = services.list_jobs(s, status, limit, offset)
        t = now()
        return {"jobs": [services.job_dict(s, j, t) for j in rows], "total": total}


@router.get("/patchjobs/{job_id}", response_model=JobOut)
def show_job(job_id: Id, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return services.job_dict(s, services.get_job(s, job_id), now())


@router.patch("/patchjobs/{job_id}", response_model=JobOut)
def update_job(job_id: Id, body: JobPatch, request: Request, who: Admin) -> dict[str, Any]:
    c = ctx(request)
    with c.db.write() as s:
        t = now()
        job = services.update(
            s, services.get_job(s, job_id, lock=True), _plain(body, unset=True), who.actor, t
        )
        out = services.job_dict(s, job, t)
    c.runner.wake()
    return out


@router.post("/patchjobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: Id, body: CancelBody, request: Request, who: Admin) -> dict[str, Any]:
    c = ctx(request)
    services.cancel(c.db, job_id, body.mode, who.actor, now())
    c.runner.wake()
    with c.db.read() as s:
        return services.job_dict(s, services.get_job(s, job_id), now())


@router.post("/patchjobs/{job_id}/resume", response_model=JobOut)
def resume_job(job_id: Id, request: Request, who: Admin) -> dict[str, Any]:
    c = ctx(request)
    services.resume(c.db, job_id, who.actor, now())
    c.runner.wake()
    with c.db.read() as s:
        return services.job_dict(s, services.get_job(s, job_id), now())


@router.get("/patchjobs/{job_id}/events", response_model=EventList)
def job_events(
    job_id: Id,
    request: Request,
    _: Reader,
    after: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=services.MAX_EVENTS)] = 200,
) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return {"events": services.events(s, services.get_job(s, job_id), after, limit)}


@router.get("/patchjobs/{job_id}/instances", response_model=JobInstanceList)
def job_instances(
    job_id: Id,
    request: Request,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_MEMBERS_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> dict[str, Any]:
    """Each instance of the job: its old one, its replacement, a revert's, and how each
    one's last process ended (``fleet_view.member_views``)."""
    with ctx(request).db.read() as s:
        return member_views(s, services.get_job(s, job_id), now(), limit, offset)


@router.get("/patchjobs/{job_id}/actions", response_model=list[ActionOut])
def job_actions(job_id: Id, request: Request, _: Reader) -> list[dict[str, Any]]:
    """The recorded actions, in order, each with ``applied_at`` (null until applied)."""
    with ctx(request).db.read() as s:
        return services.actions(s, services.get_job(s, job_id))
