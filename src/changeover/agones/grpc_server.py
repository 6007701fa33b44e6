"""Agones' gRPC services (``agones.dev.sdk.SDK``, ``agones.dev.sdk.alpha.SDK`` and
``agones.dev.sdk.beta.SDK``) for one instance, on ``grpc.aio``: each call goes to
``service.AgonesInstance``; its ``AgonesError`` becomes the call's status."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, TypeVar

import grpc

from changeover.agones._pb import (
    alpha_pb2,
    alpha_pb2_grpc,
    beta_pb2,
    beta_pb2_grpc,
    sdk_pb2,
    sdk_pb2_grpc,
)
from changeover.agones.service import AgonesError, AgonesInstance

T = TypeVar("T")
Context = Any  # grpc.aio.ServicerContext: grpcio ships no type hints


async def _call(context: Context, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except AgonesError as e:
        await context.abort(e.code, e.message)
        raise  # abort raises; this is for the type checker


class SDKServicer(sdk_pb2_grpc.SDKServicer):
    def __init__(self, instance: AgonesInstance) -> None:
        self.i = instance

    async def _empty(self, context: Context, fn: Callable[[], object]) -> sdk_pb2.Empty:
        await _call(context, fn)
        return sdk_pb2.Empty()

    async def Ready(self, request: sdk_pb2.Empty, context: Context) -> sdk_pb2.Empty:  # noqa: N802
        return await self._empty(context, self.i.ready)

    async def Allocate(self, request: sdk_pb2.Empty, context: Context) -> sdk_pb2.Empty:  # noqa: N802
        return await self._empty(context, self.i.allocate)

    async def Shutdown(self, request: sdk_pb2.Empty, context: Context) -> sdk_pb2.Empty:  # noqa: N802
        return await self._empty(context, self.i.shutdown)

    async def Health(  # noqa: N802
        self, request_iterator: AsyncIterator[sdk_pb2.Empty], context: Context
    ) -> sdk_pb2.Empty:
        async for _ in request_iterator:
            await _call(context, self.i.health_stream)
        return sdk_pb2.Empty()

    async def GetGameServer(  # noqa: N802
        self, request: sdk_pb2.Empty, context: Context
    ) -> sdk_pb2.GameServer:
        return await _call(context, self.i.get_game_server)

    async def WatchGameServer(  # noqa: N802
        self, request: sdk_pb2.Empty, context: Context
    ) -> AsyncIterator[sdk_pb2.GameServer]:
        try:
            async for gs in self.i.watch():
                yield gs
        except AgonesError as e:
            await context.abort(e.code, e.message)

    async def SetLabel(self, request: sdk_pb2.KeyValue, context: Context) -> sdk_pb2.Empty:  # noqa: N802
        return await self._empty(context, lambda: self.i.set_label(request.key, request.value))

    async def SetAnnotation(  # noqa: N802
        self, request: sdk_pb2.KeyValue, context: Context
    ) -> sdk_pb2.Empty:
        return await self._empty(context, lambda: self.i.set_annotation(request.key, request.value))

    async def Reserve(self, request: sdk_pb2.Duration, context: Context) -> sdk_pb2.Empty:  # noqa: N802
        return await self._empty(context, lambda: self.i.reserve(request.seconds))


class AlphaServicer(alpha_pb2_grpc.SDKServicer):
    def __init__(self, instance: AgonesInstance) -> None:
        self.i = instance

    async def PlayerConnect(  # noqa: N802
        self, request: alpha_pb2.PlayerID, context: Context
    ) -> alpha_pb2.Bool:
        answer: bool = await _call(context, partial(self.i.player_connect, request.playerID))
        return alpha_pb2.Bool(bool=answer)

    async def PlayerDisconnect(  # noqa: N802
        self, request: alpha_pb2.PlayerID, context: Context
    ) -> alpha_pb2.Bool:
        answer: bool = await _call(context, partial(self.i.player_disconnect, request.playerID))
        return alpha_pb2.Bool(bool=answer)

    async def SetPlayerCapacity(  # noqa: N802
        self, request: alpha_pb2.Count, context: Context
    ) -> alpha_pb2.Empty:
        await _call(context, lambda: self.i.set_player_capacity(request.count))
        return alpha_pb2.Empty()

    async def GetPlayerCapacity(  # noqa: N802
        self, request: alpha_pb2.Empty, context: Context
    ) -> alpha_pb2.Count:
        return alpha_pb2.Count(count=await _call(context, self.i.get_player_capacity))

    async def GetPlayerCount(  # noqa: N802
        self, request: alpha_pb2.Empty, context: Context
    ) -> alpha_pb2.Count:
        return alpha_pb2.Count(count=await _call(context, self.i.get_player_count))

    async def IsPlayerConnected(  # noqa: N802
        self, request: alpha_pb2.PlayerID, context: Context
    ) -> alpha_pb2.Bool:
        answer: bool = await _call(context, partial(self.i.is_player_connected, request.playerID))
        return alpha_pb2.Bool(bool=answer)

    async def GetConnectedPlayers(  # noqa: N802
        self, request: alpha_pb2.Empty, context: Context
    ) -> alpha_pb2.PlayerIDList:
        return alpha_pb2.PlayerIDList(list=await _call(context, self.i.connected_players))


class BetaServicer(beta_pb2_grpc.SDKServicer):
    """Counters and lists (``counts``)."""

    def __init__(self, instance: AgonesInstance) -> None:
        self.i = instance

    async def GetCounter(  # noqa: N802
        self, request: beta_pb2.GetCounterRequest, context: Context
    ) -> beta_pb2.Counter:
        count, capacity = await _call(context, partial(self.i.get_counter, request.name))
        return beta_pb2.Counter(name=request.name, count=count, capacity=capacity)

    async def UpdateCounter(  # noqa: N802
        self, request: beta_pb2.UpdateCounterRequest, context: Context
    ) -> beta_pb2.Counter:
        u = request.counterUpdateRequest
        count = u.count.value if u.HasField("count") else None
        capacity = u.capacity.value if u.HasField("capacity") else None
        now, cap = await _call(
            context, partial(self.i.update_counter, u.name, count, capacity, u.countDiff)
        )
        return beta_pb2.Counter(name=u.name, count=now, capacity=cap)

    async def GetList(  # noqa: N802
        self, request: beta_pb2.GetListRequest, context: Context
    ) -> beta_pb2.List:
        capacity, values = await _call(context, partial(self.i.get_list, request.name))
        return beta_pb2.List(name=request.name, capacity=capacity, values=values)

    async def UpdateList(  # noqa: N802
        self, request: beta_pb2.UpdateListRequest, context: Context
    ) -> beta_pb2.List:
        lst = request.list
        mask = list(request.update_mask.paths)
        capacity, values = await _call(
            context,
            partial(self.i.update_list, lst.name, mask, lst.capacity, list(lst.values)),
        )
        return beta_pb2.List(name=lst.name, capacity=capacity, values=values)

    async def AddListValue(  # noqa: N802
        self, request: beta_pb2.AddListValueRequest, context: Context
    ) -> beta_pb2.List:
        capacity, values = await _call(
            context, partial(self.i.add_list_value, request.name, request.value)
        )
        return beta_pb2.List(name=request.name, capacity=capacity, values=values)

    async def RemoveListValue(  # noqa: N802
        self, request: beta_pb2.RemoveListValueRequest, context: Context
    ) -> beta_pb2.List:
        capacity, values = await _call(
            context, partial(self.i.remove_list_value, request.name, request.value)
        )
        return beta_pb2.List(name=request.name, capacity=capacity, values=values)


async def start(instance: AgonesInstance, port: int) -> tuple[Any, int]:
    """A started ``grpc.aio`` server for ``instance`` on 127.0.0.1:``port`` (0: any free
    port), and the port it listens on.

    Raises:
        OSError: the port cannot be bound.
    """
    server = grpc.aio.server()
    sdk_pb2_grpc.add_SDKServicer_to_server(SDKServicer(instance), server)  # type: ignore[no-untyped-call]
    alpha_pb2_grpc.add_SDKServicer_to_server(AlphaServicer(instance), server)  # type: ignore[no-untyped-call]
    beta_pb2_grpc.add_SDKServicer_to_server(BetaServicer(instance), server)  # type: ignore[no-untyped-call]
    try:
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
    except RuntimeError as e:  # grpc reports a port it cannot bind so
        raise OSError(f"cannot listen for Agones' gRPC SDK on port {port}: {e}") from e
    if not bound:
        raise OSError(f"cannot listen for Agones' gRPC SDK on port {port}")
    await server.start()
    return server, int(bound)


async def stop(server: Any, grace_s: float = 0.5) -> None:
    await server.stop(grace_s)
