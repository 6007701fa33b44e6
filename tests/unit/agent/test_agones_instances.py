"""The supervisor with Agones' SDK servers: ports in the environment, a game's Shutdown,
and a new agent re-adopting a game that spoke Agones. Fake processes and clock; the game's
calls are made through its REST gateway, over real sockets."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from changeover.agones.host import AgonesHost
from unit.agent.fake_processes import FakeProcesses
from unit.agent.test_instances import Host, desired, make_host


def with_agones(host: Host) -> AgonesHost:
    agones = AgonesHost(host.sdk)
    agones.start()
    host.sup.agones = agones
    return agones


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    h = make_host(tmp_path)
    agones = with_agones(h)
    yield h
    h.sup.close()
    agones.stop()
    h.sdk.stop()


def gateway(host: Host, n: int = -1) -> httpx.Client:
    env = host.procs.started[n].env
    return httpx.Client(base_url=f"http://127.0.0.1:{env['AGONES_SDK_HTTP_PORT']}", timeout=10)


def uid(host: Host) -> str:
    with gateway(host) as g:
        return str(g.get("/gameserver").json()["object_meta"]["uid"])


def test_every_instance_gets_its_own_agones_ports(host: Host) -> None:
    host.sup.apply([desired(1), desired(2)])
    host.tick()
    a, b = (host.procs.started[i].env for i in (0, 1))
    ports = {a["AGONES_SDK_GRPC_PORT"], a["AGONES_SDK_HTTP_PORT"]}
    ports |= {b["AGONES_SDK_GRPC_PORT"], b["AGONES_SDK_HTTP_PORT"]}
    assert len(ports) == 4
    with gateway(host, 0) as g:
        assert g.post("/ready", json={}).status_code == 200
        assert g.get("/gameserver").json()["object_meta"]["name"] == "f-1"
    host.tick(1)
    assert host.state(1)["sdk"]["ready"] and not host.state(2)["sdk"]["ready"]


def test_a_game_that_asks_to_shut_down_is_started_afresh(host: Host) -> None:
    host.sup.apply([desired()])
    host.tick()
    with gateway(host) as g:
        g.post("/ready", json={})
    first_uid = uid(host)
    host.tick(1)
    pid = next(iter(host.procs.running))
    with gateway(host) as g:
        g.post("/shutdown", json={})
    host.tick()
    assert host.procs.signals == [(pid, signal.SIGTERM)]
    host.tick()  # it has exited ...
    host.tick()  # ... and a fresh one starts at once, with no back-off
    st = host.state()
    assert len(host.procs.started) == 2 and st["state"] == "starting"
    assert (st["exit"]["how"], st["exit"]["reason"]) == ("exited", "sdk shutdown")
    assert st["error"] is None
    assert uid(host) != first_uid  # a new GameServer


def test_under_a_notice_a_game_that_asks_to_shut_down_stays_down(host: Host) -> None:
    host.sup.apply([desired()])
    host.tick()
    with gateway(host) as g:
        g.post("/ready", json={})
    host.tick(1)
    draining = desired()
    draining["notice"] = {"reason": "new build", "deadline": host.clock.t + 60}
    host.sup.apply([draining])
    host.tick()
    with gateway(host) as g:
        assert g.get("/gameserver").json()["status"]["state"] == "Shutdown"
        g.post("/shutdown", json={})
    host.tick()
    host.tick()
    host.tick(30)
    assert len(host.procs.started) == 1
    assert host.state()["state"] == "stopped"


def test_a_new_agent_serves_agones_again_on_the_same_ports(tmp_path: Path) -> None:
    first = make_host(tmp_path)
    first_agones = with_agones(first)
    first.sup.apply([desired()])
    first.tick()
    env = first.procs.started[0].env
    with gateway(first) as g:
        g.post("/ready", json={})
        g.put("/metadata/annotation", json={"key": "match", "value": "m-9"})
        g.put("/alpha/player/capacity", json={"count": "3"})
        g.post("/allocate", json={})
    before = uid(first)
    first.tick(1)
    port = first.sdk.port
    first.sup.close()  # the agent dies; the game does not
    first_agones.stop()
    first.sdk.stop()
    second = make_host(tmp_path, procs=first.procs, sdk_port=port)
    second_agones = with_agones(second)
    try:
        second.sup.load()
        second.tick()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{env['AGONES_SDK_HTTP_PORT']}", timeout=10
        ) as g:
            gs = g.get("/gameserver").json()
        assert gs["object_meta"]["uid"] == before
        assert gs["status"]["state"] == "Allocated"
        assert gs["object_meta"]["annotations"]["agones.dev/sdk-match"] == "m-9"
        assert gs["status"]["players"]["capacity"] == "3"
        sdk = second.state()["sdk"]
        assert sdk["allocated"] and sdk["player_capacity"] == 3
        assert len(second.procs.started) == 1
    finally:
        second.sup.close()
        second_agones.stop()
        second.sdk.stop()


def test_without_agones_nothing_changes(tmp_path: Path) -> None:
    h = make_host(tmp_path, FakeProcesses())
    try:
        h.sup.apply([desired()])
        h.tick()
        assert "AGONES_SDK_GRPC_PORT" not in h.procs.started[0].env
    finally:
        h.sup.close()
        h.sdk.stop()
