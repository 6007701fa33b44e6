"""The host agent as a real process against a real control plane (SQLite), with real games.

One server and one agent host (``h1``) for the module; each test adds its own fleets. The
agent-independent rules are tested on both databases in ``control/test_fleet_api.py``.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, start_server, stop_server
from fleet_helpers import AgentProc, arena_files, ok, release
from tests_helpers import wait_for

pytestmark = pytest.mark.timeout(180)

PY = sys.executable


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("agent-server"), None)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def setup(srv: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    c = srv.client()
    ok(c.post("/images", json={"name": "arena"}), 201)
    release(c, "arena", arena_files("build-v1"), "v1")
    ok(c.post("/applications", json={"name": "arena", "type": "game"}), 201)
    ok(c.post("/environments", json={"name": "prod"}), 201)
    ok(c.post("/regions", json={"name": "eu"}), 201)
    token = srv.token("agent")
    agent = AgentProc(srv, token, "h1", "eu", tmp_path_factory.mktemp("agents") / "h1").start()
    try:
        yield {"c": c, "token": token, "agent": agent, "work": agent.work}
    finally:
        agent.cleanup()
        print(agent.log()[-5000:])  # shown by pytest on failure


def fleet(c: httpx.Client, name: str, command: list[str], per_host: int = 1, **spec: Any) -> None:
    body = {"name": name, "application": "arena", "image": "arena", "version": "v1"}
    ok(c.post("/profiles", json={**body, "command": command, **spec}), 201)
    ok(
        c.post(
            "/fleets",
            json={
                "name": name,
                "application": "arena",
                "environment": "prod",
                "hosts": ["h1"],
                "instances_per_host": per_host,
                "profile": name,
            },
        ),
        201,
    )


def instances(c: httpx.Client, name: str) -> list[dict[str, Any]]:
    return list(ok(c.get(f"/fleets/{name}/instances")))


def all_ready(c: httpx.Client, name: str, n: int) -> list[dict[str, Any]] | None:
    rows = instances(c, name)
    return rows if len(rows) == n and all(r["state"] == "ready" for r in rows) else None


def player(port: int, name: str, session: str) -> tuple[socket.socket, Any]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = sock.makefile("rb")
    sock.sendall(json.dumps({"hello": name, "session": session}).encode() + b"\n")
    assert json.loads(lines.readline())["welcome"] == name
    return sock, lines


def score(sock: socket.socket, lines: Any, n: int) -> int:
    sock.sendall(json.dumps({"score": n}).encode() + b"\n")
    return int(json.loads(lines.readline())["score"])


def test_agent_runs_the_game_and_readopts_it_after_kill_9(
    srv: Server, setup: dict[str, Any]
) -> None:
    c, agent = setup["c"], setup["agent"]
    fleet(c, "main", [PY, "arena_server.py"], per_host=2, capacity=4)
    rows = wait_for(lambda: all_ready(c, "main", 2), 60, "two arena instances ready")
    pids = {r["id"]: r["pid"] for r in rows}
    assert len({r["port"] for r in rows}) == 2
    staged = ok(c.get("/hosts"))[0]["staged"]
    assert len(staged) == 1

    got = ok(c.post("/allocations", json={"fleet": "main", "players": ["ann"]}), 201)
    sock, lines = player(got["port"], "ann", "match-1")
    try:
        wait_for(
            lambda: ok(c.get(f"/sessions/{got['session_id']}"))["status"] == "connected",
            20,
            "the session to connect",
        )
        assert score(sock, lines, 5) == 5
        agent.kill()
        assert score(sock, lines, 1) == 6  # the game plays on without its agent
        agent.start()

        def adopted() -> bool:
            now = {r["id"]: (r["pid"], r["state"]) for r in instances(c, "main")}
            return agent.log().count("registered as host") == 2 and all(
                now[i] == (pid, "ready" if i != got["instance_id"] else "allocated")
                for i, pid in pids.items()
            )

        wait_for(adopted, 60, "the restarted agent to adopt both instances")
        inst = ok(c.get(f"/instances/{got['instance_id']}"))
        assert inst["sdk"]["players"] == ["ann"]
        assert score(sock, lines, 1) == 7
        assert ok(c.get(f"/sessions/{got['session_id']}"))["status"] == "connected"
    finally:
        lines.close()  # the connection stays open while its file object does
        sock.close()
    wait_for(
        lambda: ok(c.get(f"/sessions/{got['session_id']}"))["status"] == "ended",
        20,
        "the session to end when ann leaves",
    )
    assert ok(c.get(f"/instances/{got['instance_id']}"))["players"] == 0


def test_bad_profiles_fail_clearly_and_disturb_nothing_else(
    srv: Server, setup: dict[str, Any]
) -> None:
    c = setup["c"]
    fleet(c, "steady", [PY, "arena_server.py"])
    steady = wait_for(lambda: all_ready(c, "steady", 1), 60, "the steady instance")
    fleet(c, "missing", ["no-such-game-binary", "--port", "{port}"], health={"type": "none"})
    fleet(c, "crashy", [PY, "-c", "import sys; print('bad config'); sys.exit(3)"])
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    try:
        fleet(c, "fixed", [PY, "arena_server.py"], ports=[{"name": "game", "port": taken}])

        def error(name: str) -> str | None:
            rows = instances(c, name)
            return rows[0]["error"] if rows and rows[0]["state"] == "failed" else None

        assert "'no-such-game-binary' does not exist" in wait_for(
            lambda: error("missing"), 30, "missing command"
        )
        crash = wait_for(lambda: error("crashy"), 30, "crash")
        assert "exited at once with code 3" in crash and "bad config" in crash
        assert f"port {taken}/tcp (fixed by profile fixed) is already in use" in wait_for(
            lambda: error("fixed"), 30, "taken port"
        )
    finally:
        blocker.close()
    # The steady game was not disturbed by any of it.
    assert [(r["pid"], r["state"], r["restarts"]) for r in instances(c, "steady")] == [
        (steady[0]["pid"], "ready", 0)
    ]
    for name in ("missing", "crashy", "fixed"):
        ok(c.patch(f"/fleets/{name}", json={"hosts": []}))
    wait_for(
        lambda: all(not instances(c, n) for n in ("missing", "crashy", "fixed")),
        30,
        "the bad fleets to stop",
    )


def test_stop_method_kills_a_game_that_ignores_sigterm(srv: Server, setup: dict[str, Any]) -> None:
    c, agent = setup["c"], setup["agent"]
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    fleet(c, "stubborn", [PY, "-c", stubborn], health={"type": "none"}, stop_timeout_s=1)
    wait_for(lambda: all_ready(c, "stubborn", 1), 30, "the stubborn game")
    started = time.monotonic()
    ok(c.patch("/fleets/stubborn", json={"instances_per_host": 0}))
    wait_for(lambda: not instances(c, "stubborn"), 30, "the stubborn game to be stopped")
    assert time.monotonic() - started >= 1.0
    assert "ignored SIGTERM for 1 s: killing it" in agent.log()


def test_bad_agents_and_unknown_sdk_callers(
    srv: Server, setup: dict[str, Any], tmp_path: Path
) -> None:
    token, work = setup["token"], setup["work"]
    cases = [
        (AgentProc(srv, "cho_1_" + "x" * 43, "h9", "eu", tmp_path / "a"), "not recognised", 6),
        (AgentProc(srv, token, "h9", "mars", tmp_path / "b"), "unknown region 'mars'", 4),
        (AgentProc(srv, token, "h1", "eu", tmp_path / "c"), "held by a live agent", 5),
        (AgentProc(srv, token, "h2", "eu", work), "another agent is running with the work", 5),
    ]
    for agent, _, _ in cases:
        agent.start()
    for agent, message, code in cases:
        assert agent.process is not None
        assert agent.process.wait(timeout=60) == code, agent.log()
        assert message in agent.log()
    sdk_port = json.loads((work / "agent.json").read_text())["sdk_port"]
    r = httpx.post(
        f"http://127.0.0.1:{sdk_port}/sdk/v1/instances/i999/ready",
        headers={"Authorization": "Bearer " + "t" * 20},
    )
    assert r.status_code == 404
    assert "unknown instance 'i999'" in r.json()["message"]
    assert setup["agent"].process.poll() is None  # the real agent did not notice
