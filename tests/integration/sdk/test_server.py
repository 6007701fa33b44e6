"""The SDK server on a real loopback socket, spoken to as any language would: raw HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from changeover.errors import Conflict, InvalidInput, NotFound
from changeover.sdk.server import MAX_BODY_BYTES, SDKServer
from changeover.sdk.state import InstanceSDKState
from tests_helpers import wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Game:
    """One registered instance and an HTTP client holding its token."""

    instance_id: str
    url: str
    token: str
    http: httpx.Client


@dataclass
class Hub:
    server: SDKServer
    clock: FakeClock
    changes: list[tuple[str, InstanceSDKState]]


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    # One server for the module (stopping one takes uvicorn ~0.2 s); tests use fresh instances.
    clock, changes = FakeClock(), []
    with SDKServer(clock=clock, on_change=lambda i, s: changes.append((i, s))) as srv:
        yield Hub(srv, clock, changes)


@pytest.fixture
def server(hub: Hub) -> Iterator[SDKServer]:
    hub.clock.now = 1_000.0
    hub.changes.clear()
    yield hub.server
    for instance_id in hub.server.instance_ids():
        hub.server.unregister(instance_id)


@pytest.fixture
def clock(hub: Hub) -> FakeClock:
    return hub.clock


@pytest.fixture
def changes(hub: Hub) -> list[tuple[str, InstanceSDKState]]:
    return hub.changes


@pytest.fixture
def game(server: SDKServer) -> Iterator[Game]:
    url, token = server.register("arena-1")
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as http:
        yield Game("arena-1", url, token, http)


def test_start_returns_listening_and_urls_name_the_instance(server: SDKServer) -> None:
    url, token = server.register("arena-9")
    assert url == f"http://127.0.0.1:{server.port}/sdk/v1/instances/arena-9"
    assert len(token) >= 32
    assert server.instance_ids() == ["arena-9"]


def test_ready_health_players_labels_and_state(
    game: Game, server: SDKServer, clock: FakeClock, changes: list[tuple[str, InstanceSDKState]]
) -> None:
    assert game.http.post("/ready").json()["ready"] is True
    clock.now = 1_003.0
    assert game.http.post("/health").json()["last_heartbeat"] == 1_003.0
    game.http.post("/players/connect", json={"player_id": "ann"}).raise_for_status()
    game.http.post("/players/connect", json={"player_id": "bob"}).raise_for_status()
    game.http.post("/players/disconnect", json={"player_id": "ann"}).raise_for_status()
    r = game.http.put("/labels", json={"mode": "ranked", "map.name": "dust"})
    assert r.status_code == 200
    assert r.json()["labels"] == {"map.name": "dust", "mode": "ranked"}

    body = game.http.get("/state").json()
    assert body["instance_id"] == "arena-1"
    assert body["ready"] is True
    assert body["ready_at"] == 1_000.0
    assert body["players"] == ["bob"]
    assert body["shutdown"] is None
    assert body["state_saved"] is False

    seen = server.state("arena-1")
    assert seen.players == {"bob"}
    assert seen.labels == {"map.name": "dust", "mode": "ranked"}
    assert [i for i, _ in changes] == ["arena-1"] * 6
    assert changes[2][1].players == {"ann"}  # each report is a snapshot of that moment


def test_shutdown_handshake(game: Game, server: SDKServer, clock: FakeClock) -> None:
    assert game.http.get("/shutdown").json() == {"notice": None}
    server.notify_shutdown("arena-1", "new build 42", 5_000.0)
    assert game.http.get("/shutdown", params={"wait": 30}).json() == {
        "notice": {"reason": "new build 42", "deadline": 5_000.0}
    }
    clock.now = 1_010.0
    assert game.http.post("/state-saved").json()["state_saved_at"] == 1_010.0
    assert server.state("arena-1").state_saved


def test_long_poll_returns_when_another_thread_notifies(game: Game, server: SDKServer) -> None:
    timer = threading.Timer(0.3, server.notify_shutdown, ("arena-1", "bleed-off", 9_999.0))
    started = time.monotonic()
    timer.start()
    try:
        # wait=1000 is above the 60 s cap: accepted, capped, and cut short by the notice.
        body = game.http.get("/shutdown", params={"wait": 1000}).json()
    finally:
        timer.cancel()
    elapsed = time.monotonic() - started
    assert body == {"notice": {"reason": "bleed-off", "deadline": 9_999.0}}
    assert 0.2 < elapsed < 5


def test_long_poll_times_out_with_no_notice(game: Game) -> None:
    started = time.monotonic()
    assert game.http.get("/shutdown", params={"wait": 0.3}).json() == {"notice": None}
    assert 0.25 < time.monotonic() - started < 5


def parked(server: SDKServer, instance_id: str) -> bool:
    """Whether a long-poll is waiting on the instance (white-box, to avoid sleeping)."""
    return bool(server._instances[instance_id].waiters)


def test_unregister_answers_pending_long_polls_with_404(game: Game, server: SDKServer) -> None:
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(game.http.get, "/shutdown", params={"wait": 30})
        wait_for(lambda: parked(server, "arena-1"), 10, "the long-poll to park")
        assert server.unregister("arena-1")
        r = pending.result(timeout=10)
    assert r.status_code == 404
    assert not server.unregister("arena-1")


def test_stop_answers_pending_long_polls_quickly() -> None:
    with SDKServer() as server:
        url, token = server.register("arena-2")
        headers = {"Authorization": f"Bearer {token}"}
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.get, url + "/shutdown?wait=60", headers=headers, timeout=30)
            wait_for(lambda: parked(server, "arena-2"), 10, "the long-poll to park")
            started = time.monotonic()
            server.stop()
            assert pending.result(timeout=10).json() == {"notice": None}
        assert time.monotonic() - started < 5


def test_unknown_instance_is_a_clear_404(server: SDKServer, game: Game) -> None:
    r = httpx.post(
        f"{server.base_url}/sdk/v1/instances/ghost/ready",
        headers={"Authorization": f"Bearer {game.token}"},
    )
    assert r.status_code == 404
    body = r.json()
    assert body["error"] == "not_found"
    assert "unknown instance 'ghost'" in body["message"]
    with pytest.raises(NotFound):
        server.state("ghost")
    with pytest.raises(NotFound):
        server.notify_shutdown("ghost", "r", 1.0)


def test_unknown_endpoint_is_a_clear_404(game: Game) -> None:
    r = game.http.post("/dance")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "authorization",
    [None, b"Bearer wrong-token", b"Basic dXNlcjpwYXNz", b"Bearer", "Bearer ü".encode()],
    ids=["missing", "wrong", "basic", "empty", "non-ascii"],
)
def test_wrong_or_missing_token_is_401(game: Game, authorization: bytes | None) -> None:
    headers = {b"Authorization": authorization} if authorization else {}
    r = httpx.post(game.url + "/ready", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert game.token not in r.text
    assert r.headers["www-authenticate"] == "Bearer"


def test_one_instances_token_does_not_open_another(server: SDKServer, game: Game) -> None:
    other_url, _ = server.register("arena-2")
    r = httpx.post(other_url + "/ready", headers={"Authorization": f"Bearer {game.token}"})
    assert r.status_code == 401
    assert not server.state("arena-2").ready


def _ten_megabytes() -> Iterator[bytes]:
    chunk = b"x" * 65536
    for _ in range(160):
        yield chunk


@pytest.mark.parametrize(
    ("method", "path", "request_kwargs", "status"),
    [
        ("POST", "/players/connect", {"content": b"{" * (10 * 1024 * 1024)}, 413),
        ("POST", "/players/connect", {"content": _ten_megabytes}, 413),  # chunked, no length
        ("PUT", "/labels", {"json": {f"k{i}": "v" * 200 for i in range(1000)}}, 413),
        ("POST", "/players/connect", {"json": {"player_id": "p" * 100_000}}, 413),
        ("POST", "/players/connect", {"json": {"player_id": "p" * 1000}}, 400),
        ("POST", "/players/connect", {"json": {"player_id": ""}}, 400),
        ("POST", "/players/connect", {"json": {"player_id": 7}}, 400),
        ("POST", "/players/connect", {"json": {"player_id": "ann", "admin": True}}, 400),
        ("POST", "/players/connect", {"json": ["ann"]}, 400),
        ("POST", "/players/connect", {"content": b"{not json"}, 400),
        ("POST", "/players/connect", {}, 400),
        ("PUT", "/labels", {"json": {"Bad Key": "v"}}, 400),
        ("PUT", "/labels", {"json": {"k": {"nested": 1}}}, 400),
        ("PUT", "/labels", {"json": {f"k{i}": "v" for i in range(65)}}, 400),
        ("GET", "/shutdown?wait=-1", {}, 400),
        ("GET", "/shutdown?wait=nan", {}, 400),
        ("GET", "/shutdown?wait=soon", {}, 400),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_hostile_requests_get_a_clear_4xx_and_change_nothing(
    game: Game,
    server: SDKServer,
    method: str,
    path: str,
    request_kwargs: dict[str, object],
    status: int,
) -> None:
    game.http.post("/players/connect", json={"player_id": "ann"}).raise_for_status()
    game.http.put("/labels", json={"mode": "ranked"}).raise_for_status()
    before = server.state("arena-1").to_dict()
    kwargs = dict(request_kwargs)
    if callable(kwargs.get("content")):
        kwargs["content"] = kwargs["content"]()  # type: ignore[operator]
    r = game.http.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == "invalid_input"
    assert body["message"]
    assert len(r.content) < 2048  # errors never echo the hostile input back
    assert server.state("arena-1").to_dict() == before
    if status == 413:
        assert str(MAX_BODY_BYTES) in body["message"]


def test_the_agent_side_validates_too(server: SDKServer, game: Game) -> None:
    with pytest.raises(Conflict):
        server.register("arena-1")
    for bad in ["", "../etc", "a/b", "x" * 200, "-leading-dash"]:
        with pytest.raises(InvalidInput):
            server.register(bad)
    with pytest.raises(InvalidInput):
        server.register("arena-3", token="short")
    with pytest.raises(InvalidInput):
        server.notify_shutdown("arena-1", "", 1.0)
    assert server.state("arena-1").shutdown is None


def test_a_restored_token_keeps_an_old_game_process_working(server: SDKServer) -> None:
    # An agent restarting re-registers its adopted instances with the tokens it saved.
    token = "t" * 43
    url, same = server.register("arena-4", token=token)
    assert same == token
    r = httpx.post(url + "/ready", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


def test_a_failing_on_change_callback_does_not_fail_the_game(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(instance_id: str, state: InstanceSDKState) -> None:
        raise RuntimeError("agent bookkeeping broke")

    with SDKServer(on_change=explode) as server:
        url, token = server.register("arena-5")
        r = httpx.post(url + "/ready", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert server.state("arena-5").ready
    assert "on_change callback failed" in caplog.text


def test_stop_is_idempotent_and_closes_the_port() -> None:
    server = SDKServer()
    server.start()
    with pytest.raises(Conflict):
        server.start()
    port = server.port
    server.stop()
    server.stop()
    with pytest.raises(Conflict):
        _ = server.port
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/sdk/v1/instances/x/state", timeout=2)


def test_a_stopped_server_can_start_again_and_long_poll() -> None:
    server = SDKServer()
    server.start()
    server.stop()
    with server:
        url, token = server.register("arena-6")
        headers = {"Authorization": f"Bearer {token}"}
        started = time.monotonic()
        r = httpx.get(url + "/shutdown?wait=0.3", headers=headers)
        assert r.json() == {"notice": None}
        assert time.monotonic() - started > 0.25
