"""The Python clients against a real SDK server: calls land, errors arrive as our types."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from changeover.errors import AuthError, InvalidInput, NotFound, RemoteError
from changeover.sdk import (
    SDK_TOKEN_ENV,
    SDK_URL_ENV,
    AsyncGameServerSDK,
    GameServerSDK,
    ShutdownNotice,
)
from changeover.sdk.server import SDKServer
from tests_helpers import free_port


@pytest.fixture(scope="module")
def server() -> Iterator[SDKServer]:
    with SDKServer() as srv:
        yield srv


@pytest.fixture
def instance(server: SDKServer, request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    instance_id = f"i-{request.node.name[-40:].replace('[', '-').replace(']', '')}"
    url, token = server.register(instance_id)
    yield instance_id, url, token
    server.unregister(instance_id)


def test_sync_client_full_cycle(server: SDKServer, instance: tuple[str, str, str]) -> None:
    instance_id, url, token = instance
    env = {SDK_URL_ENV: url, SDK_TOKEN_ENV: token}
    with GameServerSDK.from_env(env) as sdk:
        sdk.ready()
        sdk.health()
        sdk.player_connected("ann")
        sdk.player_connected("bob")
        sdk.player_disconnected("bob")
        sdk.set_labels({"map.name": "dust"}, mode="ranked")
        assert sdk.wait_for_shutdown(0) is None
        timer = threading.Timer(0.2, server.notify_shutdown, (instance_id, "patch", 4_000.0))
        timer.start()
        try:
            assert sdk.wait_for_shutdown(10) == ShutdownNotice("patch", 4_000.0)
        finally:
            timer.cancel()
        sdk.state_saved()
        assert sdk.state()["players"] == ["ann"]
    seen = server.state(instance_id)
    assert seen.ready
    assert seen.labels == {"map.name": "dust", "mode": "ranked"}
    assert seen.state_saved


def test_wait_for_shutdown_gives_up_after_its_timeout(instance: tuple[str, str, str]) -> None:
    _, url, token = instance
    with GameServerSDK(url, token) as sdk:
        started = time.monotonic()
        assert sdk.wait_for_shutdown(0.3) is None
        assert 0.25 < time.monotonic() - started < 5


def test_async_client_full_cycle(server: SDKServer, instance: tuple[str, str, str]) -> None:
    instance_id, url, token = instance

    async def game() -> ShutdownNotice | None:
        async with AsyncGameServerSDK(url, token) as sdk:
            await sdk.ready()
            await sdk.health()
            await sdk.player_connected("ann")
            await sdk.player_disconnected("ann")
            await sdk.set_labels(mode="casual")
            loop = asyncio.get_running_loop()
            loop.call_later(0.2, server.notify_shutdown, instance_id, "drain", 7_000.0)
            notice = await sdk.wait_for_shutdown(10)
            await sdk.state_saved()
            assert (await sdk.state())["state_saved"] is True
            return notice

    assert asyncio.run(game()) == ShutdownNotice("drain", 7_000.0)
    assert server.state(instance_id).labels == {"mode": "casual"}


def test_errors_map_to_changeover_types(server: SDKServer, instance: tuple[str, str, str]) -> None:
    _, url, token = instance
    with GameServerSDK(url, "wrong-token-wrong-token") as sdk, pytest.raises(AuthError):
        sdk.ready()
    with GameServerSDK(url, token) as sdk:
        with pytest.raises(InvalidInput, match="player_id"):
            sdk.player_connected("")
        with pytest.raises(InvalidInput, match="label key"):
            sdk.set_labels(Bad="x")
    with GameServerSDK(f"{server.base_url}/sdk/v1/instances/ghost", token) as sdk:
        with pytest.raises(NotFound, match="unknown instance 'ghost'") as caught:
            sdk.ready()
        assert caught.value.facts["status"] == 404


def test_an_unreachable_agent_is_a_remote_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/sdk/v1/instances/x"
    with GameServerSDK(url, "t" * 20, timeout=2) as sdk, pytest.raises(RemoteError, match=url):
        sdk.health()

    async def async_health() -> None:
        async with AsyncGameServerSDK(url, "t" * 20, timeout=2) as sdk:
            await sdk.health()

    with pytest.raises(RemoteError, match="is the host agent running"):
        asyncio.run(async_health())


def test_from_env_needs_both_variables() -> None:
    with pytest.raises(InvalidInput, match=SDK_TOKEN_ENV):
        GameServerSDK.from_env({SDK_URL_ENV: "http://127.0.0.1:1/sdk/v1/instances/x"})
    with pytest.raises(InvalidInput, match=SDK_URL_ENV):
        AsyncGameServerSDK.from_env({})
