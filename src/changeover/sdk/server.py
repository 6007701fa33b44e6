"""The host agent's local SDK endpoint: one HTTP server on 127.0.0.1 for all its instances.

The agent calls ``register(instance_id)`` before starting a game process and passes the
returned URL and token to it as ``CHANGEOVER_SDK_URL`` / ``CHANGEOVER_SDK_TOKEN``. The game
then reports ready, heartbeats, players and labels, long-polls for a shutdown notice and
acknowledges its save (see ``docs/sdk-protocol.md``). The agent reads it all back with
``state()`` or the ``on_change`` callback, and announces stops with ``notify_shutdown()``.
Other front ends of the same state (the Agones SDK servers, ``changeover.agones``) change
it with ``apply()`` and follow it with ``watch()``, so every protocol shares these rules.

Handlers are ``async`` and run on the server thread's event loop; the agent calls in from
its own threads, so every instance is guarded by one lock and long-poll waiters are woken
with ``call_soon_threadsafe``.
"""

# No ``from __future__ import annotations`` here: FastAPI must evaluate the handlers'
# annotations at definition time, and they name the closure's ``Authorized`` dependency.
import asyncio
import contextlib
import hmac
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Annotated, Any, Final, Self, TypeVar

import uvicorn
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from changeover.errors import (
    AuthError,
    ChangeoverError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RemoteError,
)
from changeover.sdk.state import Clock, InstanceSDKState

log = logging.getLogger(__name__)

HOST: Final = "127.0.0.1"
API_PREFIX: Final = "/sdk/v1/instances"
MAX_WAIT_S: Final = 60.0
MAX_BODY_BYTES: Final = 64 * 1024
# A too-large body is read and thrown away up to this size so the client sees our 413
# instead of a reset connection; beyond it we answer at once and let the socket drop.
_DRAIN_LIMIT_BYTES: Final = 64 * 1024 * 1024
INSTANCE_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,256}")

OnChange = Callable[[str, InstanceSDKState], None]
Listener = Callable[[InstanceSDKState | None], None]
"""Told every change of one instance (a snapshot), and None once it is unregistered."""
T = TypeVar("T")

_STATUS: Final[list[tuple[type[ChangeoverError], int]]] = [
    (InvalidInput, 400),
    (Forbidden, 403),
    (AuthError, 401),
    (NotFound, 404),
    (Conflict, 409),
]


def _status_of(exc: ChangeoverError) -> int:
    return next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)


def _error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


@dataclass(eq=False)
class _Instance:
    token: str
    state: InstanceSDKState
    # Long-polls waiting for a notice; resolved on the server loop, never awaited twice.
    waiters: set[asyncio.Future[None]] = field(default_factory=set)
    listeners: list[Listener] = field(default_factory=list)


class PlayerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    player_id: str


class _BodyLimit:
    """Reject request bodies over ``limit`` bytes with a 413 before any handler parses them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body: bytes = message.get("body", b"")
            size += len(body)
            if size <= self.limit:
                chunks.append(body)
            if not message.get("more_body", False) or size > _DRAIN_LIMIT_BYTES:
                break
        if size > self.limit:
            response = _error_response(
                413,
                InvalidInput.code,
                f"request body is larger than the SDK limit of {self.limit} bytes",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        # After the body only a disconnect can come; let the real channel report it.
        return await receive()

    return replayed


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where[:80]}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


class SDKServer:
    """The SDK endpoint of one host: start it, then register each instance it runs."""

    def __init__(
        self,
        *,
        port: int = 0,
        clock: Clock = time.time,
        on_change: OnChange | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        """``port=0`` picks a free port; an agent that must keep URLs valid across its own
        restarts passes a fixed one and re-registers instances with their saved tokens."""
        self._requested_port = port
        self._clock = clock
        self._on_change = on_change
        self._start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._instances: dict[str, _Instance] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._crash: BaseException | None = None
        self._stopping = False
        self.app = self._build_app()

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._sock is None:
            raise Conflict("the SDK server is not started")
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        """Bind, serve on a background thread, and return once requests are accepted."""
        if self._thread is not None:
            raise Conflict("the SDK server is already started")
        self._stopping = False
        self._sock = socket.create_server((HOST, self._requested_port))
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            http="h11",
            ws="none",
            log_config=None,  # an embedded server must not reconfigure the agent's logging
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(self._uvicorn, self._sock), name="changeover-sdk", daemon=True
        )
        self._thread.start()
        give_up = time.monotonic() + self._start_timeout_s
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > give_up:
                self.stop()
                raise RemoteError(f"the SDK server did not start: {self._crash!r}")
            time.sleep(0.005)

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            asyncio.run(self._serve(server, sock))
        except BaseException as exc:  # the thread must not die silently
            self._crash = exc
            log.exception("the SDK server stopped unexpectedly")

    async def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        await server.serve(sockets=[sock])

    def stop(self) -> None:
        """Answer pending long-polls, stop serving and join the thread. Idempotent."""
        if self._thread is None:
            return
        with self._lock:
            self._stopping = True
            for instance in self._instances.values():
                self._wake(instance)
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the agent's side ----------------------------------------------------------------

    def instance_url(self, instance_id: str) -> str:
        return f"{self.base_url}{API_PREFIX}/{instance_id}"

    def register(self, instance_id: str, token: str | None = None) -> tuple[str, str]:
        """Admit an instance; returns its ``(url, token)`` for the game's environment.

        ``token`` restores a known token (after an agent restart); by default a fresh
        random one is made.

        Raises:
            InvalidInput: a malformed instance id or token.
            Conflict: the instance is already registered, or the server is not started.
        """
        if not isinstance(instance_id, str) or not INSTANCE_ID_RE.fullmatch(instance_id):
            raise InvalidInput(
                f"instance id {str(instance_id)[:80]!r} must match [A-Za-z0-9][A-Za-z0-9_.-]"
                "{0,127}",
                instance_id=str(instance_id)[:80],
            )
        if token is None:
            token = secrets.token_urlsafe(32)
        elif not TOKEN_RE.fullmatch(token):
            raise InvalidInput("an SDK token must be 16-256 characters of [A-Za-z0-9_-]")
        url = self.instance_url(instance_id)
        with self._lock:
            if instance_id in self._instances:
                raise Conflict(
                    f"instance {instance_id} is already registered; unregister it first",
                    instance_id=instance_id,
                )
            state = InstanceSDKState(instance_id=instance_id, clock=self._clock)
            self._instances[instance_id] = _Instance(token=token, state=state)
        return url, token

    def unregister(self, instance_id: str) -> bool:
        """Forget an instance (its calls then get 404); False if it was not registered."""
        with self._lock:
            instance = self._instances.pop(instance_id, None)
            if instance is not None:
                self._wake(instance)
        if instance is not None:
            self._tell(instance.listeners, None)
        return instance is not None

    def instance_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._instances)

    def state(self, instance_id: str) -> InstanceSDKState:
        """A snapshot of what the instance has reported.

        Raises:
            NotFound: the instance is not registered.
        """
        with self._lock:
            return self._lookup(instance_id).state.snapshot()

    def notify_shutdown(self, instance_id: str, reason: str, deadline: float) -> None:
        """Give the instance a shutdown notice (``deadline`` is unix time) and wake its
        long-polls. Sending a new reason or deadline replaces the notice and asks for a
        new save.

        Raises:
            NotFound: the instance is not registered.
            InvalidInput: an empty or overlong reason, or a deadline that is not a number.
        """
        with self._lock:
            instance = self._lookup(instance_id)
            changed = instance.state.notify_shutdown(reason, deadline)
            snapshot = instance.state.snapshot()
            listeners = list(instance.listeners)
            self._wake(instance)
        if changed:
            self._report(snapshot)
            self._tell(listeners, snapshot)

    def apply(self, instance_id: str, change: Callable[[InstanceSDKState], T]) -> T:
        """Run ``change`` on the instance's state (one of its methods, with their rules),
        then report the new snapshot as a game's own call would be: ``on_change`` and the
        watchers. Returns what ``change`` returned.

        Raises:
            NotFound: the instance is not registered.
            ChangeoverError: whatever ``change`` raises (then nothing changed).
        """
        with self._lock:
            instance = self._lookup(instance_id)
            result = change(instance.state)
            snapshot = instance.state.snapshot()
            listeners = list(instance.listeners)
        self._report(snapshot)
        self._tell(listeners, snapshot)
        return result

    def watch(self, instance_id: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after every change of the instance, on the thread that made
        it (keep it quick: hand the snapshot to a queue or a loop), and with None once the
        instance is unregistered. Returns the function that stops it. Idempotent.

        Raises:
            NotFound: the instance is not registered.
        """
        with self._lock:
            instance = self._lookup(instance_id)
            instance.listeners.append(listener)

        def stop() -> None:
            with self._lock, contextlib.suppress(ValueError):
                instance.listeners.remove(listener)

        return stop

    # -- internals -----------------------------------------------------------------------

    def _lookup(self, instance_id: str) -> _Instance:
        instance = self._instances.get(instance_id)
        if instance is None:
            raise NotFound(
                f"unknown instance {instance_id[:128]!r}: it is not registered with this "
                "host's SDK server (was it stopped, or is CHANGEOVER_SDK_URL stale?)",
                instance_id=instance_id[:128],
            )
        return instance

    def _wake(self, instance: _Instance) -> None:
        loop = self._loop
        if loop is None:
            return
        for future in instance.waiters:
            # The loop may already be closed during stop(); its waiters are gone then too.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)

    @staticmethod
    def _tell(listeners: list[Listener], snapshot: InstanceSDKState | None) -> None:
        for listener in listeners:
            try:
                listener(snapshot)
            except Exception:
                log.exception("an SDK state listener failed")

    def _report(self, snapshot: InstanceSDKState) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(snapshot.instance_id, snapshot)
        except Exception:
            # The agent's bookkeeping failing must not fail the game's SDK call.
            log.exception("on_change callback failed for instance %s", snapshot.instance_id)

    def _apply(
        self, instance: _Instance, change: Callable[[InstanceSDKState], object]
    ) -> dict[str, object]:
        with self._lock:
            current = self._lookup(instance.state.instance_id)
            if current is not instance:  # unregistered (and maybe re-registered) meanwhile
                raise NotFound(f"instance {instance.state.instance_id} was unregistered")
            change(instance.state)
            snapshot = instance.state.snapshot()
            listeners = list(instance.listeners)
        self._report(snapshot)
        self._tell(listeners, snapshot)
        return snapshot.to_dict()

    async def _authorize(
        self,
        instance_id: str,
        authorization: Annotated[str | None, Header()] = None,
    ) -> _Instance:
        with self._lock:
            instance = self._lookup(instance_id)
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), instance.token.encode()
        ):
            raise AuthError(
                f"missing or wrong SDK token for instance {instance_id}: send "
                "'Authorization: Bearer $CHANGEOVER_SDK_TOKEN'",
                instance_id=instance_id,
            )
        return instance

    async def _wait_for_notice(self, instance: _Instance, wait: float) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] | None = None
        with self._lock:
            if instance.state.shutdown is None and wait > 0 and not self._stopping:
                future = loop.create_future()
                instance.waiters.add(future)
        if future is not None:
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, timeout=wait)
            finally:
                with self._lock:
                    instance.waiters.discard(future)
        with self._lock:
            if self._instances.get(instance.state.instance_id) is not instance:
                raise NotFound(f"instance {instance.state.instance_id} was unregistered")
            notice = instance.state.shutdown
        return {"notice": notice.to_dict() if notice else None}

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Changeover game-server SDK", version="1", docs_url=None)
        app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
        Authorized = Annotated[_Instance, Depends(self._authorize)]  # noqa: N806
        prefix = API_PREFIX + "/{instance_id}"

        @app.exception_handler(ChangeoverError)
        async def changeover_error(_: Request, exc: ChangeoverError) -> JSONResponse:
            status = _status_of(exc)
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return JSONResponse(exc.to_dict(), status_code=status, headers=headers)

        @app.exception_handler(RequestValidationError)
        async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
            return _error_response(400, InvalidInput.code, _validation_message(exc))

        @app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
            if exc.status_code == 404:
                message = f"no SDK endpoint {request.method} {request.url.path[:200]}"
                return _error_response(404, NotFound.code, message)
            return _error_response(exc.status_code, "http_error", str(exc.detail))

        @app.post(prefix + "/ready")
        async def ready(instance: Authorized) -> dict[str, object]:
            return self._apply(instance, InstanceSDKState.mark_ready)

        @app.post(prefix + "/health")
        async def health(instance: Authorized) -> dict[str, object]:
            return self._apply(instance, InstanceSDKState.heartbeat)

        @app.post(prefix + "/players/connect")
        async def connect(instance: Authorized, body: PlayerBody) -> dict[str, object]:
            return self._apply(instance, lambda s: s.connect_player(body.player_id))

        @app.post(prefix + "/players/disconnect")
        async def disconnect(instance: Authorized, body: PlayerBody) -> dict[str, object]:
            return self._apply(instance, lambda s: s.disconnect_player(body.player_id))

        @app.put(prefix + "/labels")
        async def labels(instance: Authorized, body: dict[str, str]) -> dict[str, object]:
            return self._apply(instance, lambda s: s.set_labels(body))

        @app.get(prefix + "/shutdown")
        async def shutdown(
            instance: Authorized,
            wait: Annotated[float, Query(ge=0, allow_inf_nan=False)] = 0.0,
        ) -> dict[str, object]:
            return await self._wait_for_notice(instance, min(wait, MAX_WAIT_S))

        @app.post(prefix + "/state-saved")
        async def state_saved(instance: Authorized) -> dict[str, object]:
            return self._apply(instance, InstanceSDKState.mark_state_saved)

        @app.get(prefix + "/state")
        async def state(instance: Authorized) -> dict[str, Any]:
            with self._lock:
                return instance.state.to_dict()

        return app
