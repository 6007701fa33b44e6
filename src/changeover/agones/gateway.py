"""Agones' REST gateway for one instance: the paths and JSON of its grpc-gateway.

The routes are the ``google.api.http`` options of the vendored ``sdk.proto``,
``alpha.proto`` and ``beta.proto`` (a test checks them against the files). Bodies and
answers are protobuf JSON as Agones' gateway writes them: proto field names, every field
present, 64-bit integers as strings, unknown fields ignored. ``GET /watch/gameserver``
streams one ``{"result": GameServer}`` object per line. An error is ``{"code", "message",
"details"}`` with the HTTP status grpc-gateway gives its gRPC code.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from changeover.agones._pb import alpha_pb2, beta_pb2, sdk_pb2
from changeover.agones.service import AgonesError, AgonesInstance

MAX_BODY_BYTES = 64 * 1024

# grpc-gateway's runtime.HTTPStatusFromCode
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

ROUTES: list[tuple[str, str, str]] = [
    # (method, path, rpc) — from the protos' google.api.http options
    ("POST", "/ready", "Ready"),
    ("POST", "/allocate", "Allocate"),
    ("POST", "/shutdown", "Shutdown"),
    ("POST", "/health", "Health"),
    ("GET", "/gameserver", "GetGameServer"),
    ("GET", "/watch/gameserver", "WatchGameServer"),
    ("PUT", "/metadata/label", "SetLabel"),
    ("PUT", "/metadata/annotation", "SetAnnotation"),
    ("POST", "/reserve", "Reserve"),
    ("POST", "/alpha/player/connect", "PlayerConnect"),
    ("POST", "/alpha/player/disconnect", "PlayerDisconnect"),
    ("PUT", "/alpha/player/capacity", "SetPlayerCapacity"),
    ("GET", "/alpha/player/capacity", "GetPlayerCapacity"),
    ("GET", "/alpha/player/count", "GetPlayerCount"),
    ("GET", "/alpha/player/connected/{playerID}", "IsPlayerConnected"),
    ("GET", "/alpha/player/connected", "GetConnectedPlayers"),
    ("GET", "/v1beta1/counters/{name}", "GetCounter"),
    ("PATCH", "/v1beta1/counters/{counterUpdateRequest.name}", "UpdateCounter"),
    ("GET", "/v1beta1/lists/{name}", "GetList"),
    ("PATCH", "/v1beta1/lists/{list.name}", "UpdateList"),
    ("POST", "/v1beta1/lists/{name}:addValue", "AddListValue"),
    ("POST", "/v1beta1/lists/{name}:removeValue", "RemoveListValue"),
]


def starlette_path(path: str) -> str:
    """A proto path as a route: ``{counterUpdateRequest.name}`` is the ``{name}`` param."""
    return re.sub(r"\{(?:\w+\.)*(\w+)\}", r"{\1}", path)


def _json(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return out


def _error(code: grpc.StatusCode, message: str) -> JSONResponse:
    body = {"code": code.value[0], "message": message, "details": []}
    return JSONResponse(body, status_code=HTTP_STATUS.get(code, 500))


async def _body(request: Request, message: Message) -> Message:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise AgonesError(grpc.StatusCode.INVALID_ARGUMENT, "the request body is too large")
    if raw.strip():
        try:
            json_format.Parse(raw, message, ignore_unknown_fields=True)
        except json_format.ParseError as e:
            raise AgonesError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e
    return message


def build_app(i: AgonesInstance) -> Starlette:  # noqa: PLR0915 (one small handler per rpc)
    """The gateway's ASGI app over ``i``."""

    def unary(
        make: Callable[[Request], Any],
    ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                result = await make(request)
            except AgonesError as e:
                return _error(e.code, e.message)
            if isinstance(result, Response):
                return result
            return JSONResponse(_json(result))

        return endpoint

    async def empty(fn: Callable[[], object]) -> Message:
        fn()
        return sdk_pb2.Empty()

    async def ready(_: Request) -> Message:
        return await empty(i.ready)

    async def allocate(_: Request) -> Message:
        return await empty(i.allocate)

    async def shutdown(_: Request) -> Message:
        return await empty(i.shutdown)

    async def health(request: Request) -> Message:
        await request.body()  # one POST is one ping, whatever it carries
        return await empty(i.health)

    async def get_game_server(_: Request) -> Message:
        return i.get_game_server()

    async def set_label(request: Request) -> Message:
        kv = await _body(request, sdk_pb2.KeyValue())
        assert isinstance(kv, sdk_pb2.KeyValue)
        return await empty(lambda: i.set_label(kv.key, kv.value))

    async def set_annotation(request: Request) -> Message:
        kv = await _body(request, sdk_pb2.KeyValue())
        assert isinstance(kv, sdk_pb2.KeyValue)
        return await empty(lambda: i.set_annotation(kv.key, kv.value))

    async def reserve(request: Request) -> Message:
        d = await _body(request, sdk_pb2.Duration())
        assert isinstance(d, sdk_pb2.Duration)
        return await empty(lambda: i.reserve(d.seconds))

    async def watch(_: Request) -> Response:
        stream = i.watch()
        first = await anext(stream)  # errors before the stream starts are plain answers

        async def lines() -> AsyncIterator[bytes]:
            yield json.dumps({"result": _json(first)}).encode() + b"\n"
            try:
                async for gs in stream:
                    yield json.dumps({"result": _json(gs)}).encode() + b"\n"
            except AgonesError as e:
                error = {"code": e.code.value[0], "message": e.message, "details": []}
                yield json.dumps({"error": error}).encode() + b"\n"
            finally:
                await stream.aclose()

        return StreamingResponse(lines(), media_type="application/json")

    async def player_connect(request: Request) -> Message:
        p = await _body(request, alpha_pb2.PlayerID())
        assert isinstance(p, alpha_pb2.PlayerID)
        return alpha_pb2.Bool(bool=i.player_connect(p.playerID))

    async def player_disconnect(request: Request) -> Message:
        p = await _body(request, alpha_pb2.PlayerID())
        assert isinstance(p, alpha_pb2.PlayerID)
        return alpha_pb2.Bool(bool=i.player_disconnect(p.playerID))

    async def set_player_capacity(request: Request) -> Message:
        c = await _body(request, alpha_pb2.Count())
        assert isinstance(c, alpha_pb2.Count)
        i.set_player_capacity(c.count)
        return alpha_pb2.Empty()

    async def get_player_capacity(_: Request) -> Message:
        return alpha_pb2.Count(count=i.get_player_capacity())

    async def get_player_count(_: Request) -> Message:
        return alpha_pb2.Count(count=i.get_player_count())

    async def is_player_connected(request: Request) -> Message:
        return alpha_pb2.Bool(bool=i.is_player_connected(request.path_params["playerID"]))

    async def connected_players(_: Request) -> Message:
        return alpha_pb2.PlayerIDList(list=i.connected_players())

    def counter(name: str, value: tuple[int, int]) -> Message:
        return beta_pb2.Counter(name=name, count=value[0], capacity=value[1])

    def a_list(name: str, value: tuple[int, list[str]]) -> Message:
        return beta_pb2.List(name=name, capacity=value[0], values=value[1])

    async def get_counter(request: Request) -> Message:
        name = request.path_params["name"]
        return counter(name, i.get_counter(name))

    async def update_counter(request: Request) -> Message:
        u = await _body(request, beta_pb2.CounterUpdateRequest())
        assert isinstance(u, beta_pb2.CounterUpdateRequest)
        name = request.path_params["name"]
        count = u.count.value if u.HasField("count") else None
        capacity = u.capacity.value if u.HasField("capacity") else None
        return counter(name, i.update_counter(name, count, capacity, u.countDiff))

    async def get_list(request: Request) -> Message:
        name = request.path_params["name"]
        return a_list(name, i.get_list(name))

    async def update_list(request: Request) -> Message:
        raw = await request.body()
        body = await _body(request, beta_pb2.List())
        assert isinstance(body, beta_pb2.List)
        name = request.path_params["name"]
        asked = request.query_params.get("update_mask") or request.query_params.get("updateMask")
        if asked is not None:
            mask = [p.strip() for p in asked.split(",") if p.strip()]
        else:  # as grpc-gateway: the fields the body sets
            try:
                sent = json.loads(raw) if raw.strip() else {}
            except ValueError:
                sent = {}
            mask = [k for k in ("capacity", "values") if isinstance(sent, dict) and k in sent]
        return a_list(name, i.update_list(name, mask, body.capacity, list(body.values)))

    async def add_list_value(request: Request) -> Message:
        v = await _body(request, beta_pb2.AddListValueRequest())
        assert isinstance(v, beta_pb2.AddListValueRequest)
        name = request.path_params["name"]
        return a_list(name, i.add_list_value(name, v.value))

    async def remove_list_value(request: Request) -> Message:
        v = await _body(request, beta_pb2.RemoveListValueRequest())
        assert isinstance(v, beta_pb2.RemoveListValueRequest)
        name = request.path_params["name"]
        return a_list(name, i.remove_list_value(name, v.value))

    handlers: dict[str, Callable[[Request], Any]] = {
        "Ready": ready,
        "Allocate": allocate,
        "Shutdown": shutdown,
        "Health": health,
        "GetGameServer": get_game_server,
        "WatchGameServer": watch,
        "SetLabel": set_label,
        "SetAnnotation": set_annotation,
        "Reserve": reserve,
        "PlayerConnect": player_connect,
        "PlayerDisconnect": player_disconnect,
        "SetPlayerCapacity": set_player_capacity,
        "GetPlayerCapacity": get_player_capacity,
        "GetPlayerCount": get_player_count,
        "IsPlayerConnected": is_player_connected,
        "GetConnectedPlayers": connected_players,
        "GetCounter": get_counter,
        "UpdateCounter": update_counter,
        "GetList": get_list,
        "UpdateList": update_list,
        "AddListValue": add_list_value,
        "RemoveListValue": remove_list_value,
    }
    routes = [
        Route(starlette_path(path), unary(handlers[rpc]), methods=[method])
        for method, path, rpc in ROUTES
    ]

    async def http_error(_: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 405:
            return _error(grpc.StatusCode.UNIMPLEMENTED, "Method Not Allowed")
        return _error(grpc.StatusCode.NOT_FOUND, "Not Found")

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
