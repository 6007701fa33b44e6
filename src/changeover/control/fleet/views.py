"""HTTP endpoints of the fleet domain: catalogue, fleets, switches, allocation, agents.

Reading needs a ``read`` token; changing the catalogue and switching need ``admin``;
allocating and ending sessions need ``matchmaker`` (or ``admin``), which is all a game
backend's token should hold; the agent endpoints need ``agent``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from changeover.control.auth.edge import PRINCIPAL_KEY
from changeover.control.auth.services import Permission, Principal
from changeover.control.auth.views import Admin, Allocator, Reader, ctx, principals, requires
from changeover.control.builds.models import Version
from changeover.control.builds.services import get_image, resolve_version
from changeover.control.context import Context
from changeover.control.db import now
from changeover.control.fleet import (
    aggregates,
    allocate_db,
    allocator,
    quiet,
    services,
    sessions,
    switches,
)
from changeover.control.fleet import hosts as host_svc
from changeover.control.fleet.exits import exit_record
from changeover.control.fleet.models import (
    Application,
    Environment,
    Fleet,
    Host,
    Instance,
    Profile,
    Region,
)
from changeover.control.fleet.pacing import SYNC_INTERVAL_S
from changeover.control.fleet.schemas import (
    AllocationOut,
    ApplicationOut,
    CompatOut,
    FleetOut,
    FleetSummary,
    HostDesired,
    HostOut,
    HostRegistered,
    InstanceOut,
    InstancePage,
    NamedOut,
    PlayerSeries,
    ProfileOut,
    SessionOut,
    SwitchOut,
)
from changeover.control.http_input import (
    INT64_MAX,
    INT64_MIN,
    MAX_FLOAT,
    EdgeRoute,
    Id,
    Int64,
    Number,
)
from changeover.control.observability import ARRIVED_KEY

router = APIRouter(prefix="/api/v1", tags=["fleet"], route_class=EdgeRoute)
AgentAuth = Annotated[Principal, Depends(requires(Permission.AGENT))]


class NameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class ApplicationCreate(NameBody):
    type: str | None = None


class ApplicationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str


class ProfileCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    application: str
    image: str
    version: str = "latest"
    command: list[str]
    ports: list[dict[str, Any]] | None = None
    env: dict[str, str] | None = None
    health: dict[str, Any] | None = None
    stop_signal: str | None = None
    stop_timeout_s: Number | None = None
    capacity: Int64 | None = None
    state: str | None = None
    """instance (default) or exclusive: how an instance's state directory passes on."""
    counters: dict[str, Any] | None = None
    """Agones' counters: name -> {count, capacity} (``changeover.runspec``)."""
    lists: dict[str, Any] | None = None
    """Agones' lists: name -> {capacity, values}."""


class CompatSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_min: str | None = None
    client_max: str | None = None


class FleetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    application: str
    environment: str
    hosts: list[str] = Field(default_factory=list)
    instances_per_host: Int64 = 1
    profile: str | None = None


class FleetPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hosts: list[str] | None = None
    instances_per_host: Int64 | None = None


class SwitchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: str
    drain_s: Number = host_svc.DRAIN_S


class AllocationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fleet: str | None = None
    profile: str | None = None
    regions: list[str] = Field(default_factory=list, max_length=20)
    client_version: str | None = None
    players: list[str] = Field(min_length=1, max_length=allocate_db.MAX_PARTY)
    party: str | None = None
    join_session: str | None = None

    def to_request(self) -> allocate_db.AllocationRequest:
        return allocate_db.AllocationRequest(
            fleet=self.fleet,
            profile=self.profile,
            regions=tuple(self.regions),
            client_version=self.client_version,
            players=tuple(self.players),
            party=self.party,
            join_session=self.join_session,
        )


class AgentRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    region: str
    slots: Int64 = 10
    agent_uid: str
    address: str = "127.0.0.1"
    agent_version: str = ""


class AgentSync(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_uid: str
    instances: list[dict[str, Any]] = Field(default_factory=list, max_length=10000)
    staged: list[str] = Field(default_factory=list, max_length=1000)
    since: float | None = Field(default=None, ge=0, le=1e12)
    """The ``revision`` of the answer the agent last applied: it then lists only the
    instances whose observation changed since, and gets only the desired changes."""


# -- serialisation -------------------------------------------------------------------------


def named(row: Environment | Region) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "created_at": row.created_at}


def app_dict(row: Application) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "type": row.type, "created_at": row.created_at}


def profile_dict(s: Session, row: Profile) -> dict[str, Any]:
    version = s.get_one(Version, row.version_id)
    lo, hi = services.get_compat(s, version.id)
    return {
        "id": row.id,
        "name": row.name,
        "application": s.get_one(Application, row.application_id).name,
        "version": version.number,
        "version_label": version.label,
        "manifest_id": version.manifest_id,
        "client_min": lo,
        "client_max": hi,
        **json.loads(row.spec),
        "created_at": row.created_at,
        "created_by": row.created_by,
        "rebound_at": row.rebound_at,
        "rebound_by": row.rebound_by,
    }


def display_state(i: Instance) -> str:
    """The one state a person reads: the agent's, refined by intent and sessions."""
    if i.desired == "stopped" and i.state not in ("stopped", "failed"):
        return "stopping"
    if i.desired == "draining" and i.state == "ready":
        return "draining"
    if i.state == "ready" and (i.players > 0 or i.sdk_allocated):
        return "allocated"  # players on it, or its game says so (Agones' Allocate)
    return i.state


def instance_dict(
    s: Session,
    i: Instance,
    host: Host | None = None,
    *,
    fleet: str | None = None,
    profiles: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """One instance as the API shows it. A list passes its host, fleet name and profile
    names, read once for all: looked up here, each row would cost three queries (the
    session's identity map holds only what something still references)."""
    host = host or s.get_one(Host, i.host_id)
    t = now()
    return {
        "id": i.id,
        "fleet": fleet if fleet is not None else s.get_one(Fleet, i.fleet_id).name,
        "profile": (
            profiles[i.profile_id]
            if profiles is not None
            else s.get_one(Profile, i.profile_id).name
        ),
        "version": i.version_number,  # kept equal to the profile's version's number
        "host": host.name,
        "host_alive": t - host.last_seen_at < services.LOST_AFTER_S,
        "address": host.address,
        "port": i.port,
        "ports": json.loads(i.ports or "{}"),
        "state": display_state(i),
        "observed_state": i.state,
        "desired": i.desired,
        "players": i.players,
        "capacity": i.capacity,
        "replaces": i.replaces_id,
        "standin_for": i.standin_for,
        "trial_id": i.trial_id,
        "slot": i.slot,
        "exit": exit_record(i),
        "drain_deadline": i.drain_deadline,
        "notice": (
            {"reason": i.notice_reason, "deadline": i.notice_deadline}
            if i.notice_deadline is not None
            else None
        ),
        "sdk": {
            "ready": i.sdk_ready,
            "players": json.loads(i.sdk_players or "[]"),
            "labels": json.loads(i.sdk_labels or "{}"),
            "state_saved": i.sdk_state_saved,
            "annotations": json.loads(i.sdk_annotations or "{}"),
            "allocated": i.sdk_allocated,
            "reserved": i.sdk_reserved,
            "player_capacity": i.sdk_player_capacity,
        },
        "pid": i.pid,
        "restarts": i.restarts,
        "error": i.error,
        "launch_key": i.launch_key,
        "state_saved_at": i.state_saved_at,
        "created_at": i.created_at,
        "ready_at": i.ready_at,
        "stopped_at": i.stopped_at,
    }


def fleet_dict(s: Session, f: Fleet) -> dict[str, Any]:
    profile = s.get(Profile, f.active_profile_id) if f.active_profile_id else None
    return {
        "id": f.id,
        "name": f.name,
        "application": s.get_one(Application, f.application_id).name,
        "environment": s.get_one(Environment, f.environment_id).name,
        "profile": profile.name if profile else None,
        "hosts": services.fleet_host_names(s, f.id),
        "instances_per_host": f.instances_per_host,
        "instances": services.instance_counts(s, f),
        "created_at": f.created_at,
        "updated_at": f.updated_at,
    }


def host_dict(s: Session, h: Host) -> dict[str, Any]:
    t = now()
    return {
        "id": h.id,
        "name": h.name,
        "region": s.get_one(Region, h.region_id).name,
        "address": h.address,
        "slots": h.slots,
        "alive": t - h.last_seen_at < services.LOST_AFTER_S,
        "last_seen_at": h.last_seen_at,
        "registered_at": h.registered_at,
        "agent_version": h.agent_version,
        "staged": json.loads(h.staged or "[]"),
    }


# -- environments, regions, applications ---------------------------------------------------


@router.post("/environments", status_code=201, response_model=NamedOut)
def create_environment(body: NameBody, request: Request, _: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        return named(services.create_environment(s, body.name))


@router.get("/environments", response_model=list[NamedOut])
def list_environments(request: Request, _: Reader) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        return [named(e) for e in services.list_environments(s)]


@router.post("/regions", status_code=201, response_model=NamedOut)
def create_region(body: NameBody, request: Request, _: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        return named(services.create_region(s, body.name))


@router.get("/regions", response_model=list[NamedOut])
def list_regions(request: Request, _: Reader) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        return [named(r) for r in services.list_regions(s)]


@router.post("/applications", status_code=201, response_model=ApplicationOut)
def create_application(body: ApplicationCreate, request: Request, _: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        return app_dict(services.create_application(s, body.name, body.type))


@router.get("/applications", response_model=list[ApplicationOut])
def list_applications(request: Request, _: Reader) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        return [app_dict(a) for a in services.list_applications(s)]


@router.get("/applications/{name}", response_model=ApplicationOut)
def show_application(name: str, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return app_dict(services.get_application(s, name))


@router.patch("/applications/{name}", response_model=ApplicationOut)
def patch_application(
    name: str, body: ApplicationPatch, request: Request, _: Admin
) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        app = services.get_application(s, name)
        return app_dict(services.set_application_type(app, body.type))


# -- profiles and compatibility ------------------------------------------------------------


@router.post("/profiles", status_code=201, response_model=ProfileOut)
def create_profile(body: ProfileCreate, request: Request, who: Admin) -> dict[str, Any]:
    c = ctx(request)
    spec = body.model_dump(
        include={
            "command",
            "ports",
            "env",
            "health",
            "stop_signal",
            "stop_timeout_s",
            "capacity",
            "state",
            "counters",
            "lists",
        },
        exclude_none=True,
    )
    with c.db.write() as s:
        row = services.create_profile(
            s,
            c.store,
            name=body.name,
            application=services.get_application(s, body.application),
            image_name=body.image,
            version_ref=body.version,
            spec=spec,
            actor=who.actor,
        )
        return profile_dict(s, row)


@router.get("/profiles", response_model=list[ProfileOut])
def list_profiles(
    request: Request, _: Reader, application: str | None = None
) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        app = services.get_application(s, application) if application else None
        return [profile_dict(s, p) for p in services.list_profiles(s, app)]


@router.get("/profiles/{name}", response_model=ProfileOut)
def show_profile(name: str, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return profile_dict(s, services.get_profile(s, name))


@router.put("/images/{name}/versions/{ref}/compat", response_model=CompatOut)
def set_compat(name: str, ref: str, body: CompatSet, request: Request, _: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        version = resolve_version(s, get_image(s, name), ref)
        row = services.set_compat(s, version, body.client_min, body.client_max)
        return {
            "image": name,
            "version": version.number,
            "client_min": row.client_min,
            "client_max": row.client_max,
        }


@router.get("/images/{name}/versions/{ref}/compat", response_model=CompatOut)
def show_compat(name: str, ref: str, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        version = resolve_version(s, get_image(s, name), ref)
        lo, hi = services.get_compat(s, version.id)
        return {"image": name, "version": version.number, "client_min": lo, "client_max": hi}


# -- fleets, instances, hosts --------------------------------------------------------------


@router.post("/fleets", status_code=201, response_model=FleetOut)
def create_fleet(body: FleetCreate, request: Request, _: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        row = services.create_fleet(
            s,
            name=body.name,
            application=services.get_application(s, body.application),
            environment=services.get_environment(s, body.environment),
            hosts=body.hosts,
            instances_per_host=body.instances_per_host,
            profile_name=body.profile,
        )
        return fleet_dict(s, row)


@router.get("/fleets", response_model=list[FleetOut])
def list_fleets(request: Request, _: Reader) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        return [fleet_dict(s, f) for f in services.list_fleets(s)]


@router.get("/fleets/{name}", response_model=FleetOut)
def show_fleet(name: str, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return fleet_dict(s, services.get_fleet(s, name))


@router.patch("/fleets/{name}", response_model=FleetOut)
def patch_fleet(name: str, body: FleetPatch, request: Request, _: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        fleet = services.get_fleet(s, name)
        services.update_fleet(
            s, fleet, hosts=body.hosts, instances_per_host=body.instances_per_host
        )
        return fleet_dict(s, fleet)


@router.get("/fleets/{name}/instances", response_model=list[InstanceOut])
def list_instances(
    name: str, request: Request, _: Reader, all_: bool = Query(default=False, alias="all")
) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        fleet = services.get_fleet(s, name)
        rows = services.fleet_instances(s, fleet, include_stopped=all_)
        hosts = services.hosts_by_id(s, {i.host_id for i in rows})
        profiles = services.profile_names(s, {i.profile_id for i in rows})
        return [
            instance_dict(s, i, hosts[i.host_id], fleet=fleet.name, profiles=profiles) for i in rows
        ]


@router.get("/instances/{instance_id}", response_model=InstanceOut)
def show_instance(instance_id: Id, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return instance_dict(s, services.get_instance(s, instance_id))


@router.get("/hosts", response_model=list[HostOut])
def list_hosts(request: Request, _: Reader) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        return [host_dict(s, h) for h in host_svc.list_hosts(s)]


# -- profile switch ------------------------------------------------------------------------


@router.post("/fleets/{name}/switch", status_code=201, response_model=SwitchOut)
def switch_profile(name: str, body: SwitchCreate, request: Request, who: Admin) -> dict[str, Any]:
    """Fleet Profile Switch: make ``profile`` active and move the instances to it."""
    c = ctx(request)
    with c.db.write() as s:
        fleet = services.get_fleet(s, name)
        out = switches.switch_dict(
            s, switches.create_switch(s, fleet, body.profile, body.drain_s, who.actor)
        )
    c.runner.wake()
    return out


@router.get("/fleets/{name}/switch", response_model=SwitchOut)
def switch_status(name: str, request: Request, _: Reader) -> dict[str, Any]:
    """Fleet Profile Switch Status: the fleet's latest switch."""
    with ctx(request).db.read() as s:
        return switches.switch_dict(s, switches.latest_switch(s, services.get_fleet(s, name)))


@router.get("/switches/{switch_id}", response_model=SwitchOut)
def show_switch(switch_id: Id, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return switches.switch_dict(s, switches.get_switch(s, switch_id))


# -- allocation and sessions ---------------------------------------------------------------


_allocate_principal = requires(Permission.ALLOCATE)


async def allocating_principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """``requires(Permission.ALLOCATE)``, on the event loop when the token is cached.

    A cached token costs a hash and a dict look-up, not worth a hop to a worker thread; a
    miss reads the database there, as every other endpoint does. (With a cached token the
    request rarely gets here at all: ``fleet.lanes`` answers it first.)
    """
    principal = request.scope.get(PRINCIPAL_KEY) or principals(request).cached(authorization)
    if principal is None:
        return await run_in_threadpool(_allocate_principal, request, authorization)
    principal.require(Permission.ALLOCATE)
    return principal


@router.post(
    "/allocations",
    status_code=201,
    response_class=Response,
    # Documented, not validated: the answer is serialised here (and in ``fleet.lanes``).
    responses={
        201: {"model": AllocationOut, "description": "Where the players play"},
        503: {"description": "Overloaded or stopping: retry later"},
    },
)
async def allocate(
    body: AllocationCreate,
    request: Request,
    _: Annotated[Principal, Depends(allocating_principal)],
) -> Response:
    """Server Allocate: where a player or party plays (host, port, session id).

    Async: the request waits on the allocator (``fleet.allocator``: many allocations per
    transaction, on one thread) without holding a worker thread of its own meanwhile.
    A caller whose token is cached is answered by ``fleet.lanes`` before this
    route, in the same way.
    """
    group: allocator.Allocator = request.app.state.allocator
    result = await group.allocate(body.to_request())
    # Serialised here: plain JSON types, so FastAPI's response validation adds nothing.
    return Response(json.dumps(result), status_code=201, media_type="application/json")


@router.get("/sessions/{session_id}", response_model=SessionOut)
def show_session(session_id: str, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return sessions.session_dict(sessions.get_session(s, session_id))


@router.delete("/sessions/{session_id}", response_model=SessionOut)
def end_session(session_id: str, request: Request, _: Allocator) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        return sessions.session_dict(sessions.end_session(s, session_id, now()))


# -- agents --------------------------------------------------------------------------------


@router.post("/agents/register", response_model=HostRegistered)
def register_agent(body: AgentRegister, request: Request, _: AgentAuth) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        host = host_svc.register(
            s,
            name=body.name,
            region=body.region,
            slots=body.slots,
            agent_uid=body.agent_uid,
            address=body.address,
            agent_version=body.agent_version,
            now=now(),
        )
        return {**host_dict(s, host), "sync_interval_s": SYNC_INTERVAL_S}


@router.post(
    "/agents/{host_id}/sync",
    response_class=Response,
    # Documented, not validated: checking a big host's answer against the model took an
    # eighth of a busy control plane's CPU. The tests' agents validate every answer.
    responses={200: {"model": HostDesired, "description": "The host's desired state"}},
)
async def sync_agent(host_id: Id, body: AgentSync, request: Request, _: AgentAuth) -> Response:
    """The agent's heartbeat: observed state in, the host's desired state out (whole, or
    the changes since the revision the agent gives). A sync with nothing new is answered
    from one read (``quiet``). The host is heard from (``SyncMemory.calling``) from
    before the sync waits for a worker thread until it is answered."""
    arrived = float(request.scope.get(ARRIVED_KEY) or 0.0)
    answer = await answer_sync(ctx(request), host_id, body, arrived)
    return Response(answer, media_type="application/json")


async def answer_sync(c: Context, host_id: int, body: AgentSync, arrived: float) -> bytes:
    """A sync's answer, serialised; the route's work, and ``fleet.lanes``' for a cached
    token. ``arrived``: when the request arrived (0: now)."""
    arrived = arrived or now()
    with c.sync_memory.calling(host_id, body.agent_uid, arrived):
        return await run_in_threadpool(_sync, c, host_id, body, arrived)


def _sync(c: Context, host_id: int, body: AgentSync, arrived: float) -> bytes:
    """The answer to a sync, serialised (on the worker thread, off the event loop)."""
    return json.dumps(_desired(c, host_id, body, arrived)).encode()


def _desired(c: Context, host_id: int, body: AgentSync, arrived: float) -> dict[str, Any]:
    if body.since is not None and not body.instances:
        with c.db.read() as s:
            started = now()
            answer = quiet.answer(
                s,
                c.sync_memory,
                c.sync_pacer,
                host_id=host_id,
                agent_uid=body.agent_uid,
                since=body.since,
                staged_json=host_svc.staged_list(body.staged),
                now=started,
            )
        if answer is not None:
            c.sync_memory.beat(host_id, arrived)
            c.sync_pacer.record(now() - started)
            return answer
    with c.db.write() as s:
        started = now()
        answer = host_svc.sync(
            s,
            host_id=host_id,
            agent_uid=body.agent_uid,
            observed=body.instances,
            staged=body.staged,
            now=started,
            heard_at=arrived,
            pacer=c.sync_pacer,
            replace_lost_after_s=c.settings.replace_lost_after_s,
            since=body.since,
            memory=c.sync_memory,
        )
    c.sync_pacer.record(now() - started)
    return answer


# -- aggregates for the dashboard (control.fleet.aggregates) ------------------------------


@router.get("/fleets/{name}/summary", response_model=FleetSummary)
def fleet_summary(name: str, request: Request, _: Reader) -> dict[str, Any]:
    """Instances and players per region, profile (version) and state: a few dozen rows."""
    with ctx(request).db.read() as s:
        return aggregates.fleet_summary(s, services.get_fleet(s, name))


@router.get("/fleets/{name}/instance-page", response_model=InstancePage)
def fleet_instance_page(
    name: str,
    request: Request,
    _: Reader,
    limit: int = Query(default=100, ge=INT64_MIN, le=INT64_MAX),
    offset: int = Query(default=0, ge=INT64_MIN, le=INT64_MAX),
    region: str | None = Query(default=None, max_length=64),
    profile: str | None = Query(default=None, max_length=64),
    state: str | None = Query(default=None, max_length=16),
) -> dict[str, Any]:
    """One page of a fleet's live instances (``limit`` ≤ 500), filtered, with the total."""
    with ctx(request).db.read() as s:
        fleet = services.get_fleet(s, name)
        return aggregates.instance_page(
            s, fleet, limit=limit, offset=offset, region=region, profile=profile, state=state
        )


@router.get("/stats/players", response_model=PlayerSeries)
def player_stats(
    request: Request,
    _: Reader,
    fleet: str | None = Query(default=None, max_length=64),
    window_s: float = Query(default=3600.0, ge=-MAX_FLOAT, le=MAX_FLOAT),
    buckets: int = Query(default=30, ge=INT64_MIN, le=INT64_MAX),
) -> dict[str, Any]:
    """Allocations and players per profile (version) over the last ``window_s`` seconds."""
    with ctx(request).db.read() as s:
        row = services.get_fleet(s, fleet) if fleet else None
        return aggregates.player_series(s, now=now(), window_s=window_s, buckets=buckets, fleet=row)
