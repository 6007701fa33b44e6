"""A game server that knows only Agones' official Node.js SDK (``nodegame/game.js``,
``@google-cloud/agones-sdk`` from npm at the version ``nodegame/package-lock.json`` pins),
run by a real agent against a real control plane: Ready, Health, SetLabel, player tracking
and WatchGameServer through Agones' gRPC protocol, and Changeover's shutdown notice
arriving on the watch stream; then the same game moved to a new build by a patch job
while ``changeover bots`` play on it, dropping nobody."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import start_server, stop_server
from fleet_helpers import AgentProc, ok, release
from tests_helpers import CLI, wait_for

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).parents[3]
GAME = Path(__file__).parent / "nodegame"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are needed (Debian: apt-get install nodejs npm)")
    # The Makefile installs the pinned SDK (npm ci, from the lockfile) once.
    subprocess.run(["make", "-s", "agones-node"], cwd=ROOT, check=True, timeout=300)
    return GAME / "node_modules"


@pytest.fixture(scope="module")
def world(node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    server = start_server(tmp_path_factory.mktemp("agones-server"), None)
    c = server.client()
    ok(c.post("/images", json={"name": "nodegame"}), 201)
    game = (GAME / "game.js").read_bytes()
    release(c, "nodegame", {"game.js": game}, "v1")
    release(c, "nodegame", {"game.js": game + b"// build 2\n"}, "v2")
    ok(c.post("/applications", json={"name": "nodegame", "type": "game"}), 201)
    ok(c.post("/environments", json={"name": "prod"}), 201)
    ok(c.post("/regions", json={"name": "eu"}), 201)
    work = tmp_path_factory.mktemp("agones-agents") / "n1"
    agent = AgentProc(server, server.token("agent"), "n1", "eu", work).start()
    try:
        yield {
            "server": server,
            "c": c,
            "agent": agent,
            "work": work,
            "node_modules": node_modules,
        }
    finally:
        agent.cleanup()
        print(agent.log()[-6000:])  # shown by pytest on failure
        stop_server(server)


def game_log(work: Path, instance_id: int) -> list[dict[str, Any]]:
    path = work / "logs" / f"{instance_id}.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def instance(c: httpx.Client, fleet: str) -> dict[str, Any] | None:
    rows = list(ok(c.get(f"/fleets/{fleet}/instances")))
    return rows[0] if len(rows) == 1 else None


def profile(world: dict[str, Any], name: str, version: str, capacity: int, **extra: Any) -> None:
    body: dict[str, Any] = {
        "name": name,
        "application": "nodegame",
        "image": "nodegame",
        "version": version,
        "command": ["node", "game.js", "{port}"],
        "ports": [{"name": "game", "protocol": "tcp"}],
        "health": {"type": "sdk", "interval_s": 0.2, "timeout_s": 5, "start_grace_s": 30},
        "capacity": capacity,
        "env": {"NODE_PATH": str(world["node_modules"])},
    }
    body["env"].update(extra.pop("env", {}))
    ok(world["c"].post("/profiles", json={**body, **extra}), 201)


def fleet(c: httpx.Client, name: str, prof: str, per_host: int) -> None:
    body = {
        "name": name,
        "application": "nodegame",
        "environment": "prod",
        "hosts": ["n1"],
        "instances_per_host": per_host,
        "profile": prof,
    }
    ok(c.post("/fleets", json=body), 201)


def test_a_game_on_agones_node_sdk_runs_reports_and_hears_the_shutdown_notice(
    world: dict[str, Any],
) -> None:
    c, work = world["c"], world["work"]
    profile(world, "nodegame", "v1", capacity=2)
    fleet(c, "nodegame", "nodegame", 1)

    # Ready and Health pings through Agones' gRPC make the instance ready (health "sdk");
    # the label it set is in the API.
    row = wait_for(
        lambda: (i := instance(c, "nodegame")) and i["state"] == "ready" and i, 60, "ready"
    )
    row = wait_for(lambda: (i := instance(c, "nodegame")) and i["sdk"]["labels"] and i, 10)
    assert row["sdk"]["labels"] == {"mode": "ranked"}
    iid = row["id"]
    lines = wait_for(lambda: [x for x in game_log(work, iid) if "ready" in x], 10)
    assert lines[0] == {"ready": "Ready", "name": f"nodegame-{iid}"}
    watched = [x for x in game_log(work, iid) if "watch" in x]
    assert watched[-1]["watch"] == "Ready"
    assert watched[-1]["labels"]["agones.dev/sdk-mode"] == "ranked"
    assert watched[-1]["labels"]["agones.dev/fleet"] == "nodegame"
    uid = watched[0]["uid"]
    assert uid and all(x["uid"] == uid for x in watched)  # one GameServer, one uid

    # A player, reported with the SDK's player tracking, is in the API too.
    with socket.create_connection(("127.0.0.1", row["port"]), timeout=10) as player:
        player.sendall(b'{"hello": "ann", "session": "s1"}\n')
        assert json.loads(player.makefile().readline()) == {"welcome": "ann"}
        wait_for(lambda: ok(c.get(f"/instances/{iid}"))["sdk"]["players"] == ["ann"], 10)
    wait_for(lambda: ok(c.get(f"/instances/{iid}"))["sdk"]["players"] == [], 10)

    # Agones' allocation calls, here through the instance's REST gateway with plain HTTP:
    # Server Allocate places no one on an allocated server, and follows the player
    # capacity the game sets.
    record = json.loads((work / "instances" / f"{iid}.json").read_text())
    gateway = httpx.Client(
        base_url=f"http://127.0.0.1:{record['agones_ports']['http']}", timeout=10
    )
    assert gateway.get("/gameserver").json()["object_meta"]["uid"] == uid
    ok(gateway.post("/allocate", json={}))
    row = wait_for(lambda: (i := ok(c.get(f"/instances/{iid}")))["capacity"] == 0 and i, 10)
    assert row["sdk"]["allocated"] and row["state"] == "allocated"
    refused = c.post("/allocations", json={"fleet": "nodegame", "players": ["bob"]})
    assert refused.status_code == 409 and refused.json()["reason"] == "no_capacity"
    ok(gateway.put("/alpha/player/capacity", json={"count": "1"}))
    ok(gateway.post("/ready", json={}))
    wait_for(lambda: ok(c.get(f"/instances/{iid}"))["capacity"] == 1, 10)
    got = ok(c.post("/allocations", json={"fleet": "nodegame", "players": ["bob"]}), 201)
    assert got["instance_id"] == iid
    ok(c.delete(f"/sessions/{got['session_id']}"))
    assert [x["watch"] for x in game_log(work, iid) if "watch" in x][-2:] == [
        "Allocated",
        "Ready",
    ]

    # The game asks to end (Shutdown): stopped, and started afresh at once as a new
    # GameServer (a new uid, the profile's capacity again), on the same SDK ports.
    ok(gateway.post("/shutdown", json={}))
    gateway.close()
    row = wait_for(
        lambda: (
            (i := ok(c.get(f"/instances/{iid}")))["restarts"] == 1 and i["state"] == "ready" and i
        ),
        30,
        "restarted",
    )
    assert (row["exit"]["how"], row["exit"]["reason"]) == ("exited", "sdk shutdown")
    assert row["error"] is None and row["capacity"] == 2
    uids = [x["uid"] for x in game_log(work, iid) if "watch" in x]
    assert len(set(uids)) == 2 and uids[-1] != uid

    # Scaled down: Changeover's shutdown notice reaches the game on its watch stream, as
    # the Shutdown state with the deadline annotation; the game saves and calls Shutdown,
    # and is stopped at once rather than after the save grace.
    ok(c.patch("/fleets/nodegame", json={"instances_per_host": 0}))
    wait_for(lambda: ok(c.get(f"/instances/{iid}"))["state"] == "stopped", 30, "stopped")
    logged = game_log(work, iid)
    shutdown = next(
        x
        for x in logged
        if x.get("watch") == "Shutdown" and "changeover.dev/shutdown-reason" in x["annotations"]
    )
    assert shutdown["uid"] == uids[-1]
    assert shutdown["annotations"]["changeover.dev/shutdown-reason"] == "scaled down"
    assert shutdown["annotations"]["changeover.dev/shutdown-deadline"].endswith("Z")
    assert {"saved": True} in logged
    assert {"sigterm": True, "players": 0} in logged
    assert ok(c.get(f"/instances/{iid}"))["exit"]["how"] == "exited"
    # Its SDK servers went with it: a late call finds nobody, as when Agones' sidecar goes.
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{record['agones_ports']['http']}/ready", json={})


def test_a_patch_job_moves_the_agones_game_to_a_new_build_and_drops_nobody(
    world: dict[str, Any],
) -> None:
    """The "done when" of issue 21: players on the Agones-only game, a rolling patch job
    to build 2. Each old server hears the notice on its watch stream, tells its players,
    who move to a new server, and calls Shutdown once they have gone."""
    c, server = world["c"], world["server"]
    for v in ("v1", "v2"):
        profile(world, f"nodepatch-{v}", v, capacity=4)
    fleet(c, "nodepatch", "nodepatch-v1", 2)

    def live(prof: str) -> list[dict[str, Any]] | None:
        rows = [
            i
            for i in ok(c.get("/fleets/nodepatch/instances", params={"all": "true"}))
            if i["state"] not in ("stopped", "lost")
        ]
        ready = len(rows) == 2 and all(
            i["profile"] == prof and i["state"] in ("ready", "allocated") for i in rows
        )
        return rows if ready else None

    old = wait_for(lambda: live("nodepatch-v1"), 60, "two ready v1 servers")
    bots = subprocess.Popen(
        [
            *CLI,
            "bots",
            "--fleet",
            "nodepatch",
            "--players",
            "4",
            "--duration",
            "12",
            "--session-min",
            "2",
            "--session-max",
            "6",
            "--seed",
            "21",
        ],
        env={**os.environ, **server.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: any(i["players"] > 0 for i in live("nodepatch-v1") or []), 30)
        job = {
            "name": "agones game to build 2",
            "environment": "prod",
            "application": "nodegame",
            "method": "rolling",
            "builds": [{"old": "nodepatch-v1", "new": "nodepatch-v2"}],
            "fleets": ["nodepatch"],
            "rolling": {
                "max_unavailable": 1,
                "max_surge": 1,
                "min_healthy_time_s": 1,
                "healthy_deadline_s": 60,
                "progress_deadline_s": 120,
            },
            "drain": {"deadline_s": 20, "notice_before_s": [20]},
            "stop": {"signal": "SIGTERM", "timeout_s": 10},
        }
        created = ok(c.post("/patchjobs", json=job), 201)
        done = wait_for(
            lambda: (j := ok(c.get(f"/patchjobs/{created['id']}")))["status"] >= 7 and j,
            90,
            "the job to finish",
        )
        assert done["status_name"] == "Completed", done
        wait_for(lambda: live("nodepatch-v2"), 30, "two ready v2 servers")
        out, err = bots.communicate(timeout=60)
        assert bots.returncode == 0, err
        report = json.loads(out)
        print(json.dumps(report))
        assert report["dropped_without_notice"] == 0, report
        assert report["completed"] + report["moved"] >= 4, report
        assert report["moved"] >= 1, report  # players were on old servers at the notice
        # The old servers heard the notice through Agones' watch and asked to end.
        for i in old:
            logged = game_log(world["work"], i["id"])
            assert any(
                x.get("watch") == "Shutdown"
                and "changeover.dev/shutdown-deadline" in x["annotations"]
                for x in logged
            ), logged[-5:]
            assert {"saved": True} in logged
            assert ok(c.get(f"/instances/{i['id']}"))["state"] == "stopped"
    finally:
        if bots.poll() is None:
            bots.kill()
            bots.wait()


def test_a_restarted_agent_keeps_a_game_whose_health_stream_broke(world: dict[str, Any]) -> None:
    """Agones' SDKs open the gRPC Health stream once; it breaks when the agent restarts.
    The game is healthy all the same, and players may be on it: the new agent must not
    restart it for the pings it can no longer send."""
    c, work, agent = world["c"], world["work"], world["agent"]
    profile(world, "nodegame-r", "v1", capacity=2)  # sdk health: 5 s without a ping fails
    fleet(c, "noderestart", "nodegame-r", 1)
    row = wait_for(
        lambda: (i := instance(c, "noderestart")) and i["state"] == "ready" and i, 60, "ready"
    )
    record = work / "instances" / f"{row['id']}.json"

    def saved() -> dict[str, Any]:
        out: dict[str, Any] = json.loads(record.read_text())
        return out

    wait_for(lambda: saved()["sdk"].get("heartbeat_stream"), 10, "pings on the Health stream")
    pid = saved()["pid"]
    agent.kill()
    agent.start()
    lost_at = wait_for(lambda: saved()["health_stream_lost_at"], 60, "the game re-adopted")
    # A health check well past the point where its last ping (before the restart) would
    # have been too old: the game still runs, never failed a check, was not restarted.
    after = wait_for(
        lambda: (r := saved())["last_check_at"] > lost_at + 5 + 1 and r,
        30,
        "a health check past the heartbeat limit",
    )
    assert (after["pid"], after["restarts"], after["health_failures"]) == (pid, 0, 0)
    assert after["phase"] == "ready"
    assert after["health_stream_lost_at"] == lost_at  # no ping came since: the stream broke
    shown = ok(c.get(f"/instances/{row['id']}"))
    assert (shown["state"], shown["restarts"]) == ("ready", 0)
    ok(c.patch("/fleets/noderestart", json={"instances_per_host": 0}))
    wait_for(lambda: ok(c.get(f"/instances/{row['id']}"))["state"] == "stopped", 30, "stopped")


def test_a_game_uses_agones_counters_and_lists(world: dict[str, Any]) -> None:
    """Agones' beta counters and lists through the official Node.js SDK: as its profile
    declares them, with Agones' error codes, and on the GameServer it watches."""
    c, work = world["c"], world["work"]
    profile(
        world,
        "nodegame-c",
        "v1",
        capacity=2,
        env={"COUNTS": "1"},
        counters={"rooms": {"count": 0, "capacity": 5}},
        lists={"party": {"capacity": 2}},
    )
    shown = ok(c.get("/profiles/nodegame-c"))
    assert shown["counters"] == {"rooms": {"count": 0, "capacity": 5}}
    assert shown["lists"] == {"party": {"capacity": 2, "values": []}}
    fleet(c, "nodecounts", "nodegame-c", 1)
    row = wait_for(
        lambda: (i := instance(c, "nodecounts")) and i["state"] == "ready" and i, 60, "ready"
    )
    iid = row["id"]
    (done,) = wait_for(lambda: [x for x in game_log(work, iid) if "counts" in x], 30, "counts")
    # setListCapacity sends an empty update mask (the Node.js SDK's own doing), which
    # changes nothing, under Agones as here.
    assert done["counts"] == {
        "rooms": 2,
        "roomsCapacity": 5,
        "party": ["ann"],
        "partyCapacity": 2,
        "hasAnn": True,
    }
    refusals = {x["countsError"]: x["code"] for x in game_log(work, iid) if "countsError" in x}
    # OUT_OF_RANGE, NOT_FOUND, ALREADY_EXISTS: as Agones' own SDK server answers.
    assert refusals == {"decrement-too-far": 11, "unknown-counter": 5, "append-again": 6}
    last = wait_for(
        lambda: [x for x in game_log(work, iid) if x.get("lists", {}).get("party")][-1:], 10
    )[0]
    assert last["counters"] == {"rooms": {"count": 2, "capacity": 5}}
    assert last["lists"] == {"party": {"capacity": 2, "valuesList": ["ann"]}}

    # An agent restart keeps what the game counted and the agent recorded (its next pass
    # writes the record: docs/sdk-protocol.md), and its REST gateway, same port, again.
    # Both in the record before the kill: a pass may come between the game's counter
    # update and its list append (CI saw the kill land there, and the list come back empty).
    def recorded() -> Any:
        saved = json.loads((work / "instances" / f"{iid}.json").read_text())
        counted = saved["sdk"].get("counters", {}).get("rooms", {}).get("count") == 2
        listed = saved["sdk"].get("lists", {}).get("party", {}).get("values") == ["ann"]
        return saved if counted and listed else None

    gateway = wait_for(recorded, 10, "the counts and the list in the agent's record")[
        "agones_ports"
    ]
    world["agent"].kill()
    world["agent"].start()

    def served(path: str) -> Any:
        try:
            return httpx.get(f"http://127.0.0.1:{gateway['http']}{path}", timeout=2).json()
        except httpx.HTTPError:
            return None  # not re-adopted yet

    rooms = wait_for(lambda: served("/v1beta1/counters/rooms"), 60, "the re-adopted gateway")
    assert (rooms["count"], rooms["capacity"]) == ("2", "5")
    assert served("/v1beta1/lists/party")["values"] == ["ann"]
    ok(c.patch("/fleets/nodecounts", json={"instances_per_host": 0}))
    wait_for(lambda: ok(c.get(f"/instances/{iid}"))["state"] == "stopped", 30, "stopped")
