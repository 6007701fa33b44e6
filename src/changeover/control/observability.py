"""Request ids, access log, metrics at the HTTP edge, and ``/metrics``, ``/readyz``.

:class:`RequestMiddleware` wraps every request: it takes the caller's ``X-Request-ID`` (or
makes one), puts it in the logging context (``control.logs``) and on the response, counts
the request in ``control.metrics`` and writes one access-log line. Counting here rather
than in the handlers keeps the domain code free of metrics and measures what a client sees.

``/healthz`` (in ``app.py``) says the process answers: liveness. ``/readyz`` says it can do
its work: the database answers, its schema is at the newest migration, and the job runner
runs; otherwise 503 and which check failed, for a load balancer to route around it.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from changeover.control import logs
from changeover.control.auth.views import Reader, ctx
from changeover.control.context import Context
from changeover.control.http_input import EdgeRoute
from changeover.control.http_output import Out
from changeover.control.metrics import Metrics

log = logging.getLogger("changeover.access")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
"""A caller's id is kept only if it is short and plain: it goes into every log line."""
HEARTBEAT_RE = re.compile(r"^/api/v1/agents/\d+/sync$")
QUIET_PATHS = ("/healthz", "/readyz", "/metrics")
"""Polled all the time; logged only when they fail. Agent heartbeats likewise, and
successful allocations (a matchmaker makes thousands a second; the metrics count them)."""
ALLOCATIONS_PATH = "/api/v1/allocations"
INTERNAL_CLIENT = "changeover-internal"
"""The client address of requests the server makes to itself (``web.stream`` polls the API
twice a second per open stream): not counted, and logged only when they fail. No request
from a socket can carry it."""


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers") or []:
        if name == b"x-request-id":
            candidate = bytes(value).decode("latin-1")
            if REQUEST_ID_RE.match(candidate):
                return candidate
            break
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & _ID_MASK:016x}"


_ID_PREFIX = secrets.token_hex(8)
"""Made ids are this process's random prefix and a counter: unique, and cheaper than a
``uuid4`` each (a ``getrandom`` system call, measured at 7 % of the server's time under
allocation load)."""
_ID_COUNTER = itertools.count()
_ID_MASK = (1 << 64) - 1


ARRIVED_KEY = "changeover.arrived"
"""Where a request's arrival time (``db.now``) is kept in its ASGI scope: before it waits
for a worker thread or a lock, so that a host's heartbeat counts from when it called
(``fleet.views.sync_agent``), not from when a busy control plane got round to it."""


class RequestMiddleware:
    """Request id, metrics and one access-log line per HTTP request (pure ASGI)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[ARRIVED_KEY] = time.time()
        rid = _request_id(scope)
        token = logs.request_id.set(rid)
        path: str = scope["path"]
        is_upload = path.startswith("/api/v1/uploads/")
        is_content = path.startswith("/content/")
        status = 500
        sent = 0
        received = 0
        started = time.perf_counter()

        async def counting_receive() -> MutableMapping[str, Any]:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def tagging_send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        internal = (scope.get("client") or ("",))[0] == INTERNAL_CLIENT
        try:
            await self.app(scope, counting_receive if is_upload else receive, tagging_send)
        finally:
            took = time.perf_counter() - started
            if not internal:
                self._count(scope, status, took, received, sent, is_upload, is_content)
            self._log(scope, status, took, quiet=internal)
            logs.request_id.reset(token)

    def _count(
        self,
        scope: Scope,
        status: int,
        took: float,
        received: int,
        sent: int,
        is_upload: bool,
        is_content: bool,
    ) -> None:
        m = self.metrics
        method, path = scope["method"], scope["path"]
        route = getattr(scope.get("route"), "path", None) or ("/content" if is_content else "-")
        m.child(m.requests, route, method, f"{status // 100}xx").inc()
        if method == "POST" and path == ALLOCATIONS_PATH:
            result = "ok" if status < 300 else "refused" if status < 500 else "error"
            m.child(m.allocations, result).inc()
            m.allocation_seconds.observe(took)
        elif method == "POST" and HEARTBEAT_RE.match(path):
            m.child(m.heartbeats, "ok" if status < 300 else "error").inc()
        elif is_upload and status < 300:
            m.upload_bytes.inc(received)
        elif is_content and method == "GET" and status < 300:
            m.content_bytes.inc(sent)
            m.content_seconds.observe(took)

    @staticmethod
    def _log(scope: Scope, status: int, took: float, *, quiet: bool) -> None:
        path: str = scope["path"]
        quiet = (
            quiet
            or path in QUIET_PATHS
            or path == ALLOCATIONS_PATH
            or bool(HEARTBEAT_RE.match(path))
            or path.startswith("/content/")
        )
        if quiet and status < 400:
            return
        log.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "%s %s %d %.1f ms",
            scope["method"],
            path,
            status,
            took * 1000,
            extra={
                "method": scope["method"],
                "path": path,
                "status": status,
                "duration_ms": round(took * 1000, 2),
            },
        )


# -- /metrics and /readyz ------------------------------------------------------------------

router = APIRouter(tags=["health"], route_class=EdgeRoute)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
def metrics(request: Request, _: Reader) -> Response:
    """Prometheus text format; needs a token that may read (scrape with ``authorization``)."""
    m: Metrics = request.app.state.metrics
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


_script_heads: set[str] = set()


def _head_revisions() -> set[str]:
    """The newest migration(s) this code ships; read once, the files do not change."""
    if not _script_heads:
        cfg = Config()
        cfg.set_main_option(
            "script_location", str(resources.files("changeover.control") / "migrations")
        )
        _script_heads.update(ScriptDirectory.from_config(cfg).get_heads())
    return _script_heads


def readiness(c: Context) -> dict[str, str]:
    """Each check's verdict: ``ok`` or what is wrong."""
    checks: dict[str, str] = {}
    try:
        with c.db.engine.connect() as conn:
            conn.execute(text("select 1"))
            current = set(MigrationContext.configure(conn).get_current_heads())
        checks["database"] = "ok"
        heads = _head_revisions()
        checks["migrations"] = (
            "ok"
            if current == heads
            else f"schema at {sorted(current) or 'nothing'}, code expects {sorted(heads)}"
        )
    except Exception as e:  # noqa: BLE001 (any failure to reach the database is the answer)
        checks["database"] = f"unreachable: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
        checks["migrations"] = "unknown: the database is unreachable"
    checks["job_runner"] = "ok" if c.runner.alive else "not running"
    return checks


class ReadinessChecks(Out):
    """Each check's verdict: ``ok`` or what is wrong."""

    database: str
    migrations: str
    job_runner: str


class ReplicaRole(Out):
    """This replica among those serving one database (``control.leadership``)."""

    name: str
    """Host, process and URL."""
    leader: bool
    """Whether it runs the work that runs once (reconciler, publishing, reports,
    pruning). Every replica, leader or not, serves the whole API."""
    term: int | None
    """The term it leads in; None on a follower."""
    can_lead: bool
    """Whether it may take the lead: it holds every signing key the current root lists."""
    runner: str
    """Its job runner's id: the ``lease_owner`` of the build jobs it runs."""


class Readiness(Out):
    status: str
    """``ready`` or ``not ready``."""
    checks: ReadinessChecks
    replica: ReplicaRole


class Health(Out):
    status: str
    version: str


@router.get(
    "/readyz",
    responses={
        200: {"model": Readiness, "description": "Ready: every check is ok"},
        503: {"model": Readiness, "description": "Not ready: each check's verdict"},
    },
)
def readyz(request: Request) -> JSONResponse:
    c = ctx(request)
    checks = readiness(c)
    ready = all(v == "ok" for v in checks.values())
    term = c.leadership.term
    eligible = c.leadership.eligible
    replica = {
        "name": c.leadership.name,
        "leader": term is not None,
        "term": term,
        "can_lead": eligible is None or eligible(),
        "runner": c.runner.owner,
    }
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks, "replica": replica},
        status_code=200 if ready else 503,
    )
