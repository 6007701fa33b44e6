"""One instance's Agones SDK calls, translated to its Changeover SDK state.

Both wire protocols (``grpc_server``, ``gateway``) call these methods on the host's event
loop; each change goes through ``SDKServer.apply`` with a method of ``InstanceSDKState``,
so the rules (what a label may be, when a reservation ends) are those of the Changeover
SDK. A failure is an ``AgonesError`` carrying the gRPC status Agones' own SDK server gives
for it:

    INVALID_ARGUMENT  a bad label or annotation, a negative Reserve, a bad player id or capacity
    UNAVAILABLE       the instance is not (or no longer) registered: it was stopped
    UNKNOWN           PlayerConnect at capacity ("players are already at capacity", as Agones)

and, for counters and lists, the codes of ``counts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import TypeVar

import grpc

from changeover.agones import counts, gameserver
from changeover.agones._pb import sdk_pb2
from changeover.errors import ChangeoverError, Conflict, InvalidInput, NotFound
from changeover.sdk.server import SDKServer
from changeover.sdk.state import InstanceSDKState

log = logging.getLogger(__name__)
T = TypeVar("T")


class AgonesError(Exception):
    """A failed call, as the gRPC status an Agones SDK expects."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _translate(exc: ChangeoverError) -> AgonesError:
    if isinstance(exc, InvalidInput):
        return AgonesError(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
    if isinstance(exc, NotFound):
        return AgonesError(grpc.StatusCode.UNAVAILABLE, "the game server is stopped")
    if isinstance(exc, Conflict):
        return AgonesError(grpc.StatusCode.UNKNOWN, exc.message)
    return AgonesError(grpc.StatusCode.INTERNAL, exc.message)


class AgonesInstance:
    """The Agones view of one registered instance (``instance_id`` in ``sdk``)."""

    def __init__(self, sdk: SDKServer, instance_id: str, ident: gameserver.Identity) -> None:
        self.sdk = sdk
        self.instance_id = instance_id
        self.ident = ident
        self.closed = False
        self._generation = 0
        self._last: sdk_pb2.GameServer | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._watches: set[asyncio.Queue[InstanceSDKState | None]] = set()

    # -- plumbing -----------------------------------------------------------------------

    def _apply(self, change: Callable[[InstanceSDKState], T]) -> T:
        if self.closed:
            raise AgonesError(grpc.StatusCode.UNAVAILABLE, "the game server is stopped")
        try:
            return self.sdk.apply(self.instance_id, change)
        except ChangeoverError as e:
            raise _translate(e) from e

    def _state(self) -> InstanceSDKState:
        if self.closed:
            raise AgonesError(grpc.StatusCode.UNAVAILABLE, "the game server is stopped")
        try:
            return self.sdk.state(self.instance_id)
        except ChangeoverError as e:
            raise _translate(e) from e

    def _object(self, st: InstanceSDKState) -> sdk_pb2.GameServer:
        """The GameServer of ``st``, its generation counted up when it changed."""
        gs = gameserver.game_server(self.ident, st, self._generation or 1)
        if self._last is None or not gameserver.same_object(gs, self._last):
            self._generation += 1
            gs.object_meta.generation = self._generation
            gs.object_meta.resource_version = str(self._generation)
            self._last = gs
        return gs

    def close(self) -> None:
        """No more calls; open watch streams end with UNAVAILABLE. On the host's loop."""
        self.closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for queue in self._watches:
            queue.put_nowait(None)

    def schedule_reservation_end(self, st: InstanceSDKState) -> None:
        """Back to Ready when the reservation's time is up (as Agones does)."""
        if not st.reserved or st.reserved_until is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, st.reserved_until - st.clock())
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(loop.call_later(delay + 0.01, self._end_reservation))

    def _end_reservation(self) -> None:
        if self.closed:
            return
        with contextlib.suppress(ChangeoverError):
            self.sdk.apply(self.instance_id, InstanceSDKState.end_reservation)

    # -- the SDK service ----------------------------------------------------------------

    def ready(self) -> None:
        self._apply(InstanceSDKState.mark_ready)

    def allocate(self) -> None:
        self._apply(InstanceSDKState.allocate)

    def shutdown(self) -> None:
        self._apply(InstanceSDKState.request_shutdown)

    def health(self) -> None:
        self._apply(InstanceSDKState.heartbeat)

    def health_stream(self) -> None:
        """A ping on the gRPC ``Health`` stream (the REST gateway's are ``health``)."""
        self._apply(InstanceSDKState.stream_heartbeat)

    def set_label(self, key: str, value: str) -> None:
        self._apply(lambda s: s.set_labels({key: value}))

    def set_annotation(self, key: str, value: str) -> None:
        self._apply(lambda s: s.set_annotations({key: value}))

    def reserve(self, seconds: int) -> None:
        if seconds < 0:
            raise AgonesError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a reservation cannot last a negative time ({seconds} s)",
            )
        self._apply(lambda s: s.reserve(seconds))
        self.schedule_reservation_end(self._state())

    def get_game_server(self) -> sdk_pb2.GameServer:
        return self._object(self._state())

    async def watch(self) -> AsyncGenerator[sdk_pb2.GameServer]:
        """The GameServer now, then again after every change, until the instance stops
        (then UNAVAILABLE, as when Agones' sidecar goes). A stream the game drops only
        unsubscribes that stream."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[InstanceSDKState | None] = asyncio.Queue()

        def listener(st: InstanceSDKState | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(queue.put_nowait, st)

        if self.closed:
            raise AgonesError(grpc.StatusCode.UNAVAILABLE, "the game server is stopped")
        try:
            unwatch = self.sdk.watch(self.instance_id, listener)
        except ChangeoverError as e:
            raise _translate(e) from e
        self._watches.add(queue)
        try:
            last = self._object(self._state())
            yield last
            while True:
                st = await queue.get()
                if st is None or self.closed:
                    raise AgonesError(grpc.StatusCode.UNAVAILABLE, "the game server is stopped")
                gs = self._object(st)
                if not gameserver.same_object(gs, last):
                    last = gs
                    yield gs
        finally:
            self._watches.discard(queue)
            unwatch()

    # -- alpha: player tracking -----------------------------------------------------------

    def _capacity(self, st: InstanceSDKState) -> int:
        return gameserver.player_capacity(self.ident, st)

    def player_connect(self, player_id: str) -> bool:
        limit = self._capacity(self._state())
        return self._apply(lambda s: s.connect_player(player_id, limit))

    def player_disconnect(self, player_id: str) -> bool:
        return self._apply(lambda s: s.disconnect_player(player_id))

    def set_player_capacity(self, count: int) -> None:
        self._apply(lambda s: s.set_player_capacity(count))

    def get_player_capacity(self) -> int:
        return self._capacity(self._state())

    def get_player_count(self) -> int:
        return len(self._state().players)

    def is_player_connected(self, player_id: str) -> bool:
        return player_id in self._state().players

    def connected_players(self) -> list[str]:
        return sorted(self._state().players)

    # -- beta: counters and lists (``counts``) ----------------------------------------------

    def _count(self, change: Callable[[InstanceSDKState], T], write: bool) -> T:
        try:
            return self._apply(change) if write else change(self._state())
        except counts.CountError as e:
            raise AgonesError(e.code, e.message) from e

    def get_counter(self, name: str) -> tuple[int, int]:
        return self._count(lambda s: counts.counter(self.ident.counts, s, name), write=False)

    def update_counter(
        self, name: str, count: int | None, capacity: int | None, diff: int
    ) -> tuple[int, int]:
        return self._count(
            lambda s: counts.update_counter(
                self.ident.counts, s, name, count=count, capacity=capacity, diff=diff
            ),
            write=True,
        )

    def get_list(self, name: str) -> tuple[int, list[str]]:
        return self._count(lambda s: counts.get_list(self.ident.counts, s, name), write=False)

    def update_list(
        self, name: str, mask: list[str], capacity: int, values: list[str]
    ) -> tuple[int, list[str]]:
        return self._count(
            lambda s: counts.update_list(self.ident.counts, s, name, mask, capacity, values),
            write=True,
        )

    def add_list_value(self, name: str, value: str) -> tuple[int, list[str]]:
        return self._count(
            lambda s: counts.add_list_value(self.ident.counts, s, name, value), write=True
        )

    def remove_list_value(self, name: str, value: str) -> tuple[int, list[str]]:
        return self._count(
            lambda s: counts.remove_list_value(self.ident.counts, s, name, value), write=True
        )
