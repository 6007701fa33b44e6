"""Which requests ``fleet.lanes`` answers itself and which it hands to the framework: the
two hot endpoints for a cached token, everything else passed on untouched."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

from changeover.control.auth.services import Principal, PrincipalCache
from changeover.control.fleet.lanes import FastLanes
from changeover.control.fleet.views import AgentSync

AGENT = "Bearer agent-token"


class Recorder:
    """The framework: records the paths it was handed, answers 299."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def call(
    lanes: FastLanes, path: str, body: bytes, header: str = AGENT, method: str = "POST"
) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"authorization", header.encode())],
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(lanes(scope, receive, send))
    return int(sent[0]["status"]), bytes(sent[1]["body"])


def lanes_with(framework: Recorder, synced: list[tuple[int, AgentSync]]) -> FastLanes:
    cache = PrincipalCache()
    cache.authenticate(AGENT, lambda: Principal(1, "agent", "agent"))

    async def sync(host_id: int, body: AgentSync, arrived: float) -> bytes:
        synced.append((host_id, body))
        return json.dumps({"host": host_id}).encode()

    def refused(header: str) -> Principal:
        raise AssertionError("no refresh is due in a test this short")

    def no_allocator() -> Any:
        raise AssertionError("no allocation here")

    return FastLanes(
        framework,
        group=no_allocator,
        sync=sync,
        principals=lambda: cache,
        read_token=refused,
    )


def test_a_cached_tokens_sync_is_answered_by_the_lane() -> None:
    framework, synced = Recorder(), []
    lanes = lanes_with(framework, synced)
    body = b'{"agent_uid": "u1", "instances": [], "staged": []}'
    assert call(lanes, "/api/v1/agents/42/sync", body) == (200, b'{"host": 42}')
    assert framework.paths == [] and [(h, b.agent_uid) for h, b in synced] == [(42, "u1")]
    status, answer = call(lanes, "/api/v1/agents/42/sync", b'{"agent_uid": 5}')
    assert status == 422 and json.loads(answer)["error"] == "invalid_input"
    assert "agent_uid" in json.loads(answer)["message"]
    assert len(synced) == 1  # a malformed body never reaches the sync


def test_what_the_lane_does_not_take_goes_to_the_framework() -> None:
    framework, synced = Recorder(), []
    lanes = lanes_with(framework, synced)
    body = b'{"agent_uid": "u1"}'
    passed = [
        ("/api/v1/agents/42/sync", "Bearer unknown", "POST"),  # not cached: the route reads it
        ("/api/v1/agents/42/sync", AGENT, "GET"),
        ("/api/v1/agents/0/sync", AGENT, "POST"),  # no such id: the route's 422
        ("/api/v1/agents/1234567890123456789/sync", AGENT, "POST"),  # beyond the lane's ids
        ("/api/v1/agents/x/sync", AGENT, "POST"),
        ("/api/v1/agents/42/sync/", AGENT, "POST"),
        ("/api/v1/agents/42", AGENT, "POST"),
        ("/api/v1/agents/register", AGENT, "POST"),
    ]
    for path, header, method in passed:
        assert call(lanes, path, body, header, method)[0] == 299, path
    assert framework.paths == [p for p, _, _ in passed] and synced == []


def test_a_token_without_the_agent_scope_is_refused_by_the_lane_as_by_the_route() -> None:
    framework, synced = Recorder(), []
    lanes = lanes_with(framework, synced)
    viewer = "Bearer viewer-token"
    lanes.principals().authenticate(viewer, lambda: Principal(2, "v", "viewer"))
    status, answer = call(lanes, "/api/v1/agents/42/sync", b'{"agent_uid": "u"}', viewer)
    assert status == 403 and "agent" in json.loads(answer)["message"]
    assert framework.paths == [] and synced == []
