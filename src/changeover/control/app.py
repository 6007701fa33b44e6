"""The control plane's FastAPI application: routers, error mapping, background runner.

Errors are mapped to HTTP status codes here and only here; every error body has the same
shape: ``{"error": code, "message": text, ...facts}``, the framework's own answers (no such
route, wrong method, unparsable body) and a bug's 500 included. What a request may carry is
bounded once for all routes (``http_input``); its token is checked before its body is read
(``auth.edge``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from changeover import __version__
from changeover.content.patch_choice import Calibration, PublishBudget
from changeover.content.store import LocalStore
from changeover.control import content_place, logs
from changeover.control import openapi as api_schema
from changeover.control.auth import services as auth_services
from changeover.control.auth import views as auth_views
from changeover.control.auth.edge import Authenticate
from changeover.control.builds import tasks as build_tasks
from changeover.control.builds import views as build_views
from changeover.control.content_views import router as content_router
from changeover.control.context import Context
from changeover.control.db import CHECKPOINT_EVERY_S, Database
from changeover.control.fleet import allocator as fleet_allocator
from changeover.control.fleet import mirror_views, trial_views
from changeover.control.fleet import tasks as fleet_tasks
from changeover.control.fleet import views as fleet_views
from changeover.control.fleet.lanes import FastLanes
from changeover.control.fleet.quiet import SyncMemory
from changeover.control.http_errors import (
    database_unavailable,
    http_error_body,
    internal_error_body,
    status_for,
    validation_message,
)
from changeover.control.http_input import EdgeRoute, foreign_routes, unbounded_inputs
from changeover.control.jobs import JobRunner
from changeover.control.leadership import Leadership, replica_name
from changeover.control.metrics import AllocatorCollector, DatabaseCollector, Metrics
from changeover.control.news import views as news_views
from changeover.control.observability import Health, RequestMiddleware
from changeover.control.observability import router as observability_router
from changeover.control.patchjobs import v3_views as patchjob_v3_views
from changeover.control.patchjobs import views as patchjob_views
from changeover.control.patchjobs.notify import Notifier, NotifierConfig
from changeover.control.patchjobs.reconciler import Reconciler
from changeover.control.publishing import Publisher, open_store
from changeover.errors import ChangeoverError
from changeover.settings import Settings
from changeover.web import api_docs
from changeover.web import routes as web_routes

log = logging.getLogger("changeover.control")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuse request bodies over a limit before they are read into memory.

    Uploads are exempt: they stream to disk and are bounded by their declared size.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/api/v1/uploads/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > self.limit
        ):
            await self._refuse(send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"error": "too_large", "message": f"request body over {self.limit} bytes"},
            status_code=413,
        )
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass


def _without_framework_telemetry() -> dict[str, Any]:
    """FastAPI 0.16x records an OpenTelemetry span, metrics and log records for every
    request unless told not to. We count, time and log requests ourselves
    (``observability``), and with no exporter configured that work is thrown away:
    measured on ``/healthz``, 1.7 ms of server CPU per request with it, 1.4 without.
    Older FastAPI versions take no such option."""
    if "telemetry" not in inspect.signature(FastAPI).parameters:
        return {}
    off = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    return {"telemetry": off}


class ControlPlane(FastAPI):
    """FastAPI with our own middleware around it rather than inside it.

    A framework's middleware stack always starts with its own layers (error pages, its
    telemetry and body limit, five calls deep in FastAPI 0.16x), each paid per request.
    Our request ids, metrics, access log and body limit wrap the whole application
    instead (``edge``), so the allocation lane inside them reaches the framework only for
    what it does not answer itself. Everything else (state, routes, OpenAPI) is FastAPI's.
    """

    edge: ASGIApp | None = None
    api_routes: list[APIRoute] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self.edge or self.framework)(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The application as FastAPI alone would answer it."""
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema, with the error answers of every operation (``openapi``)."""
        return api_schema.document_errors(super().openapi(), self.api_routes)


def _include_routers(app: ControlPlane) -> list[APIRouter]:
    """Every router of the API, the dashboard and the API docs, included in ``app``;
    returns them, for the startup check of their routes."""
    # The framework tries each route in turn: the fleet's (agents' syncs every few
    # seconds from every host, allocations on a cold token) come first.
    routers = [
        fleet_views.router,
        auth_views.router,
        build_views.router,
        content_router,
        mirror_views.router,
        trial_views.router,
        news_views.router,
        patchjob_views.router,
        patchjob_v3_views.router,
        patchjob_v3_views.ids_router,
        observability_router,
    ]
    for router in routers:
        app.include_router(router)
    web_routes.mount(app)
    api_docs.mount(app)
    return [*routers, web_routes.stream.router]  # the stream: included by mount()


def _map_errors(app: ControlPlane) -> None:
    """Every error to its HTTP answer: here and only here (see the module docstring)."""

    @app.exception_handler(ChangeoverError)
    async def on_error(_: Request, exc: ChangeoverError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=status_for(exc))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        body = {"error": "invalid_input", "message": validation_message(exc.errors())}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(HTTPException)
    async def on_framework_error(_: Request, exc: HTTPException) -> JSONResponse:
        body = http_error_body(exc.status_code, exc.detail)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(OperationalError)
    async def on_database_away(_: Request, exc: OperationalError) -> JSONResponse:
        body = database_unavailable(exc)
        log.warning("answered 503: %s", body["message"])
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def on_bug(_: Request, exc: Exception) -> JSONResponse:
        # The framework logs the exception and its traceback after this answer is sent.
        return JSONResponse(internal_error_body(logs.request_id.get()), status_code=500)


def _runner(
    settings: Settings,
    db: Database,
    store: LocalStore,
    publisher: Publisher,
    leadership: Leadership,
    notifier: Notifier,
    sync_memory: SyncMemory,
) -> JobRunner:
    """The job runner: the jobs any replica may run, the chores of each replica, and the
    work that runs once, on the leader."""
    reconciler = Reconciler(
        db, on_release=publisher.sync, heard=sync_memory.heard, answering=sync_memory.answering
    )

    def on_elected() -> None:
        reconciler.forget()
        publisher.on_elected()

    return JobRunner(
        db,
        build_tasks.build_job_kinds(
            db,
            store,
            on_version=leadership.only(publisher.sync),
            budget=PublishBudget(
                cpu_s=settings.publish_budget_cpu_s, methods=settings.patch_methods
            ),
            calibration=Calibration(),
        )
        + fleet_tasks.build_job_kinds(db),
        poll_s=settings.job_poll_s,
        lease_s=settings.job_lease_s,
        periodic=[
            # SQLite's checkpoints, here rather than in a writer's commit (db.CHECKPOINT_*).
            *([(CHECKPOINT_EVERY_S, db.checkpoint)] if db.is_sqlite else []),
        ],
        leadership=leadership,
        on_elected=on_elected,
        leader_periodic=[
            (settings.publish_every_s, publisher.sync),
            # Patch jobs: plan, record, apply; a pass with nothing new only reads.
            (settings.patch_tick_s, reconciler.tick),
            # Patch-job reports: tick() only starts a pass on its own thread, so a slow
            # mail server or webhook never holds up the jobs.
            (settings.report_every_s, notifier.tick),
            # Sessions and instances past their retention (every allocation adds a session,
            # every replaced instance a stopped row).
            (
                fleet_tasks.PRUNE_EVERY_S,
                lambda: fleet_tasks.prune_history(db, settings.retention_s),
            ),
        ],
    )


def create_app(settings: Settings) -> ControlPlane:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    db.migrate()
    content_place.agree(db, settings)  # before anything is written to the content tree
    store, repo = open_store(settings)
    repo.ensure_initialised()
    publisher = Publisher(db, store, repo, settings.cdn_purge_url)
    notifier = Notifier(db, NotifierConfig.from_settings(settings))
    # Any number of replicas may serve one database; the work that must run once runs on
    # the one that holds the lease (``leadership``).
    leadership = Leadership(
        db,
        lease_s=settings.leader_lease_s,
        name=replica_name(f"http://{settings.host}:{settings.port}"),
        # Only a replica that can sign may lead: one without the keys serves the API.
        eligible=repo.can_sign,
    )
    sync_memory = SyncMemory()
    runner = _runner(settings, db, store, publisher, leadership, notifier, sync_memory)
    ctx = Context(
        settings=settings,
        db=db,
        store=store,
        runner=runner,
        publisher=publisher,
        leadership=leadership,
        sync_memory=sync_memory,
    )
    # Server Allocate's group commit: one thread, many allocations per transaction.
    allocations = fleet_allocator.Allocator(db)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        leadership.start()
        runner.start()
        allocations.start()
        ctx.sync_memory.start(db)
        try:
            yield
        finally:
            # First: queued allocations are answered (503) before the database goes away;
            # on a thread, so that the event loop delivers those answers meanwhile.
            await asyncio.to_thread(allocations.stop)
            ctx.sync_memory.stop(db)
            runner.stop()
            leadership.stop()
            notifier.close()
            db.dispose()

    app = ControlPlane(
        title="Changeover control plane",
        version=__version__,
        lifespan=lifespan,
        description="Builds, diff analyses, versions and branches; see the README.",
        docs_url=None,  # web.api_docs serves them, without a CDN
        redoc_url=None,
        **_without_framework_telemetry(),
    )
    app.router.route_class = EdgeRoute
    app.state.ctx = ctx
    app.state.allocator = allocations
    metrics = Metrics()
    metrics.registry.register(DatabaseCollector(db, runner))
    metrics.registry.register(AllocatorCollector(allocations))
    app.state.metrics = metrics

    # Before the routers: probes ask for it every few seconds, and a route is found by
    # trying each one before it.
    @app.get("/healthz", tags=["health"], response_model=Health)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    routers = _include_routers(app)

    _map_errors(app)

    app.api_routes = [
        route
        for route in [*app.routes, *(r for router in routers for r in router.routes)]
        if isinstance(route, APIRoute)
    ]
    # Refuse to start with a route whose input is not bounded (see http_input).
    if problems := foreign_routes(app.api_routes) + unbounded_inputs(app.api_routes):
        raise TypeError("API inputs without bounds:\n  " + "\n  ".join(problems))

    # Allocations and syncs by a cached token skip the framework (see fleet.lanes), and still get
    # the body limit, the request id, the metrics and the access log around them.
    def read_token(header: str | None) -> auth_services.Principal:
        with db.read() as s:
            return auth_services.authenticate(s, header)

    lane = FastLanes(
        app.framework,
        group=lambda: app.state.allocator,
        sync=lambda host_id, body, arrived: fleet_views.answer_sync(
            app.state.ctx, host_id, body, arrived
        ),
        principals=lambda: auth_views.app_principals(app.state),
        read_token=read_token,
    )
    # Outermost, so that a refused body (413) also gets a request id, a count and a log line;
    # then the token, so that a request without a valid one gets 401 whatever its body.
    authenticated = Authenticate(
        BodyLimit(lane, limit=settings.max_json_bytes),
        principals=lambda: auth_views.app_principals(app.state),
        read_token=read_token,
    )
    app.edge = RequestMiddleware(authenticated, metrics=metrics)
    return app
