"""Agones' SDK servers of one instance, over real sockets: gRPC (with stubs generated from
the official protos) and the REST gateway with plain HTTP (httpx), both translating to the
same Changeover SDK state that ``SDKServer`` keeps and its own HTTP protocol shows."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2, wrappers_pb2

from changeover.agones import gameserver
from changeover.agones._pb import (
    alpha_pb2,
    alpha_pb2_grpc,
    beta_pb2,
    beta_pb2_grpc,
    sdk_pb2,
    sdk_pb2_grpc,
)
from changeover.agones.counts import Declared
from changeover.agones.gateway import ROUTES
from changeover.agones.host import AgonesHost
from changeover.runspec import CounterSpec, ListSpec
from changeover.sdk.server import SDKServer
from tests_helpers import wait_for

pytestmark = pytest.mark.timeout(60)

PROTOS = Path(gameserver.__file__).parent / "proto"


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    changes: list[Any] = []
    sdk = SDKServer(on_change=lambda _, st: changes.append(st))
    sdk.start()
    host = AgonesHost(sdk)
    host.start()
    sdk.register("g1")
    ident = gameserver.Identity(
        name="arena-1",
        uid="7d1c0e9a-0000-4000-8000-000000000001",
        created_at=1_767_225_000.5,
        address="127.0.0.1",
        ports={"game": 7001},
        capacity=4,
        labels={"agones.dev/fleet": "arena"},
        counts=Declared({"rooms": CounterSpec(0, 3)}, {"party": ListSpec(2, ())}),
    )
    grpc_port, http_port = host.open("g1", ident)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10)
    try:
        yield {
            "sdk": sdk,
            "host": host,
            "stub": sdk_pb2_grpc.SDKStub(channel),
            "alpha": alpha_pb2_grpc.SDKStub(channel),
            "beta": beta_pb2_grpc.SDKStub(channel),
            "http": http,
            "changes": changes,
            "channel": channel,
        }
    finally:
        http.close()
        channel.close()
        host.stop()
        sdk.stop()


def test_rest_paths_are_those_of_the_official_protos() -> None:
    """grpc-gateway's paths: read from the google.api.http options of the vendored files."""
    declared = set()
    for name in ("sdk.proto", "alpha.proto", "beta.proto"):
        text = (PROTOS / name).read_text()
        for rpc, verb, path in re.findall(
            r"rpc\s+(\w+)\s*\(.*?option \(google\.api\.http\) = \{\s*(\w+):\s*\"([^\"]+)\"",
            text,
            re.S,
        ):
            declared.add((verb.upper(), path, rpc))
    assert declared == set(ROUTES)


def test_grpc_calls_drive_the_changeover_state(world: dict[str, Any]) -> None:
    stub, alpha, sdk = world["stub"], world["alpha"], world["sdk"]
    gs = stub.GetGameServer(sdk_pb2.Empty(), timeout=5)
    assert gs.status.state == "Scheduled"
    assert gs.object_meta.uid == "7d1c0e9a-0000-4000-8000-000000000001"
    assert gs.object_meta.creation_timestamp == 1_767_225_000
    assert gs.status.address == "127.0.0.1"
    assert [(p.name, p.port) for p in gs.status.ports] == [("game", 7001)]

    stub.Ready(sdk_pb2.Empty(), timeout=5)
    stub.Health(iter([sdk_pb2.Empty()] * 3), timeout=5)
    stub.SetLabel(sdk_pb2.KeyValue(key="map", value="dust"), timeout=5)
    stub.SetAnnotation(sdk_pb2.KeyValue(key="match", value="m-1"), timeout=5)
    st = sdk.state("g1")
    assert st.ready and st.last_heartbeat is not None
    assert st.labels == {"map": "dust"} and st.annotations == {"match": "m-1"}

    gs = stub.GetGameServer(sdk_pb2.Empty(), timeout=5)
    assert gs.status.state == "Ready"
    assert gs.object_meta.labels["agones.dev/sdk-map"] == "dust"
    assert gs.object_meta.labels["agones.dev/fleet"] == "arena"
    assert gs.object_meta.annotations["agones.dev/sdk-match"] == "m-1"
    assert gs.object_meta.uid == "7d1c0e9a-0000-4000-8000-000000000001"  # stable

    stub.Allocate(sdk_pb2.Empty(), timeout=5)
    assert sdk.state("g1").allocated
    assert stub.GetGameServer(sdk_pb2.Empty(), timeout=5).status.state == "Allocated"
    stub.Reserve(sdk_pb2.Duration(seconds=1), timeout=5)
    st = sdk.state("g1")
    assert st.reserved and not st.allocated
    assert stub.GetGameServer(sdk_pb2.Empty(), timeout=5).status.state == "Reserved"
    # Back to Ready once the time is up, as under Agones.
    assert wait_for(lambda: not sdk.state("g1").reserved, timeout_s=5)
    assert stub.GetGameServer(sdk_pb2.Empty(), timeout=5).status.state == "Ready"

    # Player tracking: the same players as the Changeover SDK's, bounded by the capacity.
    assert alpha.GetPlayerCapacity(alpha_pb2.Empty(), timeout=5).count == 4
    alpha.SetPlayerCapacity(alpha_pb2.Count(count=2), timeout=5)
    assert alpha.PlayerConnect(alpha_pb2.PlayerID(playerID="ann"), timeout=5).bool
    assert not alpha.PlayerConnect(alpha_pb2.PlayerID(playerID="ann"), timeout=5).bool
    assert alpha.PlayerConnect(alpha_pb2.PlayerID(playerID="bob"), timeout=5).bool
    with pytest.raises(grpc.RpcError) as full:
        alpha.PlayerConnect(alpha_pb2.PlayerID(playerID="cy"), timeout=5)
    assert full.value.code() == grpc.StatusCode.UNKNOWN
    assert "at capacity" in (full.value.details() or "")
    assert alpha.GetPlayerCount(alpha_pb2.Empty(), timeout=5).count == 2
    assert alpha.IsPlayerConnected(alpha_pb2.PlayerID(playerID="bob"), timeout=5).bool
    assert list(alpha.GetConnectedPlayers(alpha_pb2.Empty(), timeout=5).list) == ["ann", "bob"]
    assert alpha.PlayerDisconnect(alpha_pb2.PlayerID(playerID="ann"), timeout=5).bool
    st = sdk.state("g1")
    assert st.players == {"bob"} and st.player_capacity == 2
    gs = stub.GetGameServer(sdk_pb2.Empty(), timeout=5)
    assert (gs.status.players.count, gs.status.players.capacity) == (1, 2)
    assert list(gs.status.players.ids) == ["bob"]

    stub.Shutdown(sdk_pb2.Empty(), timeout=5)
    assert sdk.state("g1").shutdown_requested
    assert stub.GetGameServer(sdk_pb2.Empty(), timeout=5).status.state == "Shutdown"
    # Every change was reported to the agent as a Changeover SDK call would be.
    assert world["changes"][-1].shutdown_requested


def test_grpc_bad_input_gets_agones_status_codes_and_changes_nothing(
    world: dict[str, Any],
) -> None:
    stub, sdk = world["stub"], world["sdk"]
    stub.Ready(sdk_pb2.Empty(), timeout=5)
    before = sdk.state("g1").to_dict()
    for call, arg in [
        (stub.Reserve, sdk_pb2.Duration(seconds=-5)),
        (stub.SetLabel, sdk_pb2.KeyValue(key="Not A Key!", value="x")),
        (stub.SetAnnotation, sdk_pb2.KeyValue(key="k", value="\n")),
        (world["alpha"].PlayerConnect, alpha_pb2.PlayerID(playerID="")),
    ]:
        with pytest.raises(grpc.RpcError) as bad:
            call(arg, timeout=5)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, call
    # A service Changeover does not serve: the status any gRPC server gives.
    unknown = world["channel"].unary_unary("/agones.dev.sdk.gamma.SDK/GetThing")
    with pytest.raises(grpc.RpcError) as unserved:
        unknown(b"", timeout=5)
    assert unserved.value.code() == grpc.StatusCode.UNIMPLEMENTED
    after = sdk.state("g1").to_dict()
    assert {k: v for k, v in after.items() if k != "last_heartbeat"} == {
        k: v for k, v in before.items() if k != "last_heartbeat"
    }


def test_watch_streams_every_change_and_a_dropped_watch_disturbs_nothing(
    world: dict[str, Any],
) -> None:
    stub, sdk = world["stub"], world["sdk"]
    seen: list[Any] = []
    first = stub.WatchGameServer(sdk_pb2.Empty())

    def follow(stream: Any, into: list[Any]) -> None:
        try:
            for gs in stream:
                into.append(gs)
        except grpc.RpcError as e:
            into.append(e.code())

    reader = threading.Thread(target=follow, args=(first, seen), daemon=True)
    reader.start()
    assert wait_for(lambda: len(seen) >= 1, timeout_s=5)
    assert seen[0].status.state == "Scheduled"  # the object as it is, first
    stub.Ready(sdk_pb2.Empty(), timeout=5)
    assert wait_for(lambda: len(seen) >= 2 and seen[1].status.state == "Ready", timeout_s=5)
    # The game drops its stream and opens another: the new one starts with the object as
    # it is now, and the calls go on.
    first.cancel()
    reader.join(timeout=5)
    again: list[Any] = []
    second = stub.WatchGameServer(sdk_pb2.Empty())
    threading.Thread(target=follow, args=(second, again), daemon=True).start()
    assert wait_for(lambda: len(again) >= 1, timeout_s=5)
    assert again[0].status.state == "Ready"
    stub.SetLabel(sdk_pb2.KeyValue(key="round", value="2"), timeout=5)
    stub.Health(iter([sdk_pb2.Empty()]), timeout=5)  # no change of the object: no message
    sdk.notify_shutdown("g1", "new build 42", deadline=1_767_226_000.0)
    assert wait_for(lambda: len(again) >= 3, timeout_s=5)
    assert again[1].object_meta.labels["agones.dev/sdk-round"] == "2"
    notice = again[2]
    assert notice.status.state == "Shutdown"
    assert notice.object_meta.annotations[gameserver.NOTICE_REASON] == "new build 42"
    assert notice.object_meta.annotations[gameserver.NOTICE_DEADLINE] == "2026-01-01T00:06:40Z"
    gens = [g.object_meta.generation for g in again[:3]]
    assert gens == sorted(set(gens))  # every version numbered anew
    # The instance stops: the stream ends as when Agones' sidecar goes.
    sdk.unregister("g1")
    assert wait_for(lambda: again[-1] == grpc.StatusCode.UNAVAILABLE, timeout_s=5)
    with pytest.raises(grpc.RpcError) as gone:
        stub.Ready(sdk_pb2.Empty(), timeout=5)
    assert gone.value.code() == grpc.StatusCode.UNAVAILABLE


def test_rest_gateway_with_plain_http(world: dict[str, Any]) -> None:
    http, sdk = world["http"], world["sdk"]
    assert http.post("/ready", json={}).json() == {}
    assert http.post("/health", json={}).status_code == 200
    assert http.put("/metadata/label", json={"key": "mode", "value": "ranked"}).json() == {}
    r = http.put("/metadata/annotation", json={"key": "match", "value": "m-7", "extra": 1})
    assert r.status_code == 200  # unknown fields are ignored, as by grpc-gateway
    gs = http.get("/gameserver").json()
    assert gs["status"]["state"] == "Ready"
    assert gs["object_meta"]["uid"] == "7d1c0e9a-0000-4000-8000-000000000001"
    assert gs["object_meta"]["creation_timestamp"] == "1767225000"  # int64: a string
    assert gs["object_meta"]["labels"]["agones.dev/sdk-mode"] == "ranked"
    assert gs["object_meta"]["annotations"]["agones.dev/sdk-match"] == "m-7"
    assert gs["status"]["ports"] == [{"name": "game", "port": 7001}]
    assert gs["spec"]["health"]["disabled"] is False  # every field present

    assert http.post("/alpha/player/connect", json={"playerID": "ann"}).json() == {"bool": True}
    assert http.get("/alpha/player/connected/ann").json() == {"bool": True}
    assert http.get("/alpha/player/connected").json() == {"list": ["ann"]}
    assert http.get("/alpha/player/count").json() == {"count": "1"}
    assert http.put("/alpha/player/capacity", json={"count": "3"}).json() == {}
    assert http.get("/alpha/player/capacity").json() == {"count": "3"}
    assert http.post("/allocate", json={}).json() == {}
    assert http.post("/reserve", json={"seconds": "30"}).json() == {}
    st = sdk.state("g1")
    assert st.players == {"ann"} and st.reserved and st.labels == {"mode": "ranked"}

    bad = http.post("/reserve", json={"seconds": -1})
    assert bad.status_code == 400 and bad.json()["code"] == 3  # INVALID_ARGUMENT
    assert http.put("/metadata/label", content=b"{nope").status_code == 400
    missing = http.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["code"] == 5
    assert sdk.state("g1").reserved  # nothing disturbed

    with http.stream("GET", "/watch/gameserver") as dropped:  # opened, then dropped
        assert json.loads(next(dropped.iter_lines()))["result"]["status"]["state"] == "Reserved"
    with http.stream("GET", "/watch/gameserver") as stream:
        lines = stream.iter_lines()
        first = json.loads(next(lines))["result"]
        assert first["status"]["state"] == "Reserved"
        http.post("/ready", json={})
        assert json.loads(next(lines))["result"]["status"]["state"] == "Ready"
        sdk.notify_shutdown("g1", "maintenance", deadline=time.time() + 60)
        notice = json.loads(next(lines))["result"]
        assert notice["status"]["state"] == "Shutdown"
        assert notice["object_meta"]["annotations"][gameserver.NOTICE_REASON] == "maintenance"
        world["host"].close("g1")
        assert json.loads(next(lines))["error"]["code"] == 14  # UNAVAILABLE


def _code(call: Any, arg: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as bad:
        call(arg, timeout=5)
    code: grpc.StatusCode = bad.value.code()
    return code


def test_counters_and_lists_over_grpc(world: dict[str, Any]) -> None:
    """Agones' beta CountsAndLists: the profile's declarations, Agones' rules and codes;
    a refused call changes nothing; the GameServer's status shows them."""
    beta, sdk = world["beta"], world["sdk"]

    def update(**kw: Any) -> beta_pb2.Counter:
        for k in ("count", "capacity"):
            if k in kw:
                kw[k] = wrappers_pb2.Int64Value(value=kw[k])
        req = beta_pb2.UpdateCounterRequest(
            counterUpdateRequest=beta_pb2.CounterUpdateRequest(name="rooms", **kw)
        )
        out: beta_pb2.Counter = beta.UpdateCounter(req, timeout=5)
        return out

    got = beta.GetCounter(beta_pb2.GetCounterRequest(name="rooms"), timeout=5)
    assert (got.name, got.count, got.capacity) == ("rooms", 0, 3)
    assert update(countDiff=2).count == 2
    too_many = beta_pb2.CounterUpdateRequest(name="rooms", countDiff=2)
    assert (
        _code(beta.UpdateCounter, beta_pb2.UpdateCounterRequest(counterUpdateRequest=too_many))
        == grpc.StatusCode.OUT_OF_RANGE
    )
    assert beta.GetCounter(beta_pb2.GetCounterRequest(name="rooms"), timeout=5).count == 2
    assert update(countDiff=-1).count == 1
    assert update(count=3).count == 3
    lowered = update(capacity=2)  # the count follows a lower capacity down
    assert (lowered.count, lowered.capacity) == (2, 2)
    assert (
        _code(beta.GetCounter, beta_pb2.GetCounterRequest(name="nope")) == grpc.StatusCode.NOT_FOUND
    )

    def add(value: str) -> list[str]:
        req = beta_pb2.AddListValueRequest(name="party", value=value)
        return list(beta.AddListValue(req, timeout=5).values)

    assert add("ann") == ["ann"]
    assert _code(beta.AddListValue, beta_pb2.AddListValueRequest(name="party", value="ann")) == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    assert add("bob") == ["ann", "bob"]
    assert _code(beta.AddListValue, beta_pb2.AddListValueRequest(name="party", value="cy")) == (
        grpc.StatusCode.OUT_OF_RANGE
    )
    assert _code(beta.AddListValue, beta_pb2.AddListValueRequest(name="party", value="")) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    gone = beta_pb2.RemoveListValueRequest(name="party", value="zed")
    assert _code(beta.RemoveListValue, gone) == grpc.StatusCode.NOT_FOUND
    removed = beta.RemoveListValue(
        beta_pb2.RemoveListValueRequest(name="party", value="ann"), timeout=5
    )
    assert list(removed.values) == ["bob"]
    grown = beta.UpdateList(
        beta_pb2.UpdateListRequest(
            list=beta_pb2.List(name="party", capacity=5, values=["x", "y", "x"]),
            update_mask=field_mask_pb2.FieldMask(paths=["capacity", "values"]),
        ),
        timeout=5,
    )
    assert (grown.capacity, list(grown.values)) == (5, ["x", "y"])
    bad_mask = beta_pb2.UpdateListRequest(
        list=beta_pb2.List(name="party"), update_mask=field_mask_pb2.FieldMask(paths=["size"])
    )
    assert _code(beta.UpdateList, bad_mask) == grpc.StatusCode.INVALID_ARGUMENT
    # An empty mask changes nothing, as Agones' sidecar (and is what Agones' Node.js SDK
    # sends from setListCapacity); a capacity out of range is refused all the same.
    empty = beta_pb2.UpdateListRequest(list=beta_pb2.List(name="party", capacity=1))
    assert list(beta.UpdateList(empty, timeout=5).values) == ["x", "y"]
    huge = beta_pb2.UpdateListRequest(list=beta_pb2.List(name="party", capacity=1001))
    assert _code(beta.UpdateList, huge) == grpc.StatusCode.OUT_OF_RANGE
    assert _code(beta.GetList, beta_pb2.GetListRequest(name="nope")) == grpc.StatusCode.NOT_FOUND

    st = sdk.state("g1")
    assert st.counters == {"rooms": {"count": 2, "capacity": 2}}
    assert st.lists == {"party": {"capacity": 5, "values": ["x", "y"]}}
    gs = world["stub"].GetGameServer(sdk_pb2.Empty(), timeout=5)
    assert (gs.status.counters["rooms"].count, gs.status.counters["rooms"].capacity) == (2, 2)
    assert list(gs.status.lists["party"].values) == ["x", "y"]
    assert world["changes"][-1].lists["party"]["values"] == ["x", "y"]  # reported


def test_counters_and_lists_over_rest(world: dict[str, Any]) -> None:
    http = world["http"]
    assert http.get("/v1beta1/counters/rooms").json() == {
        "name": "rooms",
        "count": "0",
        "capacity": "3",
    }
    assert http.patch("/v1beta1/counters/rooms", json={"countDiff": "2"}).json()["count"] == "2"
    out = http.patch("/v1beta1/counters/rooms", json={"count": "5"})
    assert out.status_code == 400 and out.json()["code"] == 11  # OUT_OF_RANGE
    assert http.patch("/v1beta1/counters/rooms", json={"capacity": "1"}).json() == {
        "name": "rooms",
        "count": "1",
        "capacity": "1",
    }
    assert http.get("/v1beta1/counters/nope").json()["code"] == 5  # NOT_FOUND

    add = http.post("/v1beta1/lists/party:addValue", json={"value": "ann"})
    assert add.json() == {"name": "party", "capacity": "2", "values": ["ann"]}
    dup = http.post("/v1beta1/lists/party:addValue", json={"value": "ann"})
    assert dup.status_code == 409 and dup.json()["code"] == 6  # ALREADY_EXISTS
    # No update_mask: grpc-gateway's, the fields the body sets.
    assert http.patch("/v1beta1/lists/party", json={"capacity": "4"}).json()["capacity"] == "4"
    masked = http.patch(
        "/v1beta1/lists/party", params={"update_mask": "values"}, json={"values": ["a", "b"]}
    )
    assert masked.json() == {"name": "party", "capacity": "4", "values": ["a", "b"]}
    assert http.post("/v1beta1/lists/party:removeValue", json={"value": "a"}).json()["values"] == [
        "b"
    ]
    assert http.get("/v1beta1/lists/party").json()["values"] == ["b"]
    gs = http.get("/gameserver").json()
    assert gs["status"]["counters"] == {"rooms": {"count": "1", "capacity": "1"}}
    assert gs["status"]["lists"] == {"party": {"capacity": "4", "values": ["b"]}}
