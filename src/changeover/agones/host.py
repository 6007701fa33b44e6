"""The Agones SDK servers of one agent: per instance a gRPC server and a REST gateway.

All of them run on one event-loop thread. The agent opens an instance's pair right after
registering it with its ``SDKServer`` (``open`` returns the two ports for the game's
``AGONES_SDK_GRPC_PORT`` / ``AGONES_SDK_HTTP_PORT``) and closes it once the process has
ended; an agent that restarts opens them again on the same ports, so a running game's SDK
reconnects to the same address. Calls from the agent's threads wait for the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import uvicorn

from changeover.agones import gameserver, gateway, grpc_server
from changeover.agones.service import AgonesInstance
from changeover.errors import ChangeoverError, Conflict, RemoteError
from changeover.sdk.server import HOST, SDKServer

log = logging.getLogger(__name__)

GRPC_PORT_ENV = "AGONES_SDK_GRPC_PORT"
HTTP_PORT_ENV = "AGONES_SDK_HTTP_PORT"


@dataclass
class _Open:
    instance: AgonesInstance
    grpc: Any
    http: uvicorn.Server
    http_task: asyncio.Task[None]
    grpc_port: int
    http_port: int


class AgonesHost:
    """Start it, then ``open``/``close`` each instance; ``stop`` ends them all."""

    def __init__(self, sdk: SDKServer, *, call_timeout_s: float = 10.0) -> None:
        self.sdk = sdk
        self._timeout = call_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._open: dict[str, _Open] = {}

    def start(self) -> None:
        if self._thread is not None:
            raise Conflict("the Agones SDK host is already started")
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="changeover-agones", daemon=True)
        self._thread.start()
        ready.wait(self._timeout)

    def _run(self, coro: Any) -> Any:
        loop = self._loop
        if loop is None or not loop.is_running():
            coro.close()
            raise Conflict("the Agones SDK host is not started")
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, loop)
        return future.result(self._timeout)

    def stop(self) -> None:
        """Close every instance's servers and end the thread. Idempotent."""
        if self._thread is None or self._loop is None:
            return
        for instance_id in list(self._open):
            with contextlib.suppress(Exception):
                self.close(instance_id)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

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

    def ports(self, instance_id: str) -> tuple[int, int] | None:
        o = self._open.get(instance_id)
        return (o.grpc_port, o.http_port) if o else None

    def open(
        self,
        instance_id: str,
        ident: gameserver.Identity,
        grpc_port: int = 0,
        http_port: int = 0,
    ) -> tuple[int, int]:
        """Serve Agones' SDK for a registered instance; its ``(grpc_port, http_port)``.
        Ports not free (a restarted agent's old ones, taken meanwhile) fall back to any.

        Raises:
            Conflict: the instance is open already, or the host is not started.
            RemoteError: the servers could not be started (no port, a timeout).
        """
        if instance_id in self._open:
            raise Conflict(f"instance {instance_id} has its Agones SDK servers already")
        try:
            opened: _Open = self._run(self._open_async(instance_id, ident, grpc_port, http_port))
        except ChangeoverError:
            raise
        except Exception as e:  # grpc, the loop or a timeout: the agent's loop must go on
            raise RemoteError(f"cannot serve Agones' SDK for instance {instance_id}: {e!r}") from e
        self._open[instance_id] = opened
        return opened.grpc_port, opened.http_port

    async def _open_async(
        self, instance_id: str, ident: gameserver.Identity, grpc_port: int, http_port: int
    ) -> _Open:
        instance = AgonesInstance(self.sdk, instance_id, ident)
        try:
            grpc, bound_grpc = await grpc_server.start(instance, grpc_port)
        except OSError:
            if not grpc_port:
                raise RemoteError("cannot listen for Agones' gRPC SDK on any port") from None
            grpc, bound_grpc = await grpc_server.start(instance, 0)
        try:
            sock = socket.create_server((HOST, http_port))
        except OSError:
            sock = socket.create_server((HOST, 0))
        config = uvicorn.Config(
            gateway.build_app(instance),
            lifespan="off",
            http="h11",
            ws="none",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        http = uvicorn.Server(config)
        task = asyncio.get_running_loop().create_task(http.serve(sockets=[sock]))
        for _ in range(1000):
            if http.started or task.done():
                break
            await asyncio.sleep(0.005)
        if not http.started:
            await grpc_server.stop(grpc, 0)
            sock.close()
            raise RemoteError(f"the Agones REST gateway of {instance_id} did not start")
        with contextlib.suppress(Exception):
            instance.schedule_reservation_end(self.sdk.state(instance_id))
        port: int = sock.getsockname()[1]
        return _Open(instance, grpc, http, task, bound_grpc, port)

    def close(self, instance_id: str) -> bool:
        """Stop serving an instance (its watch streams end); False if it was not open."""
        opened = self._open.pop(instance_id, None)
        if opened is None:
            return False
        try:
            self._run(self._close_async(opened))
        except Exception:  # closing must never fail the agent's loop
            log.warning("closing the Agones SDK servers of %s failed", instance_id, exc_info=True)
        return True

    async def _close_async(self, opened: _Open) -> None:
        opened.instance.close()
        opened.http.should_exit = True
        await grpc_server.stop(opened.grpc, 0.1)
        try:
            await asyncio.wait_for(opened.http_task, timeout=3)
        except Exception:  # a stuck connection must not stop the agent's loop
            log.warning("the Agones REST gateway did not stop in time", exc_info=True)
