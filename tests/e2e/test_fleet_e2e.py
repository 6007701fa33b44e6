"""Zero downtime, end to end, with nothing faked.

A real control plane, two agents as separate processes (hosts h1 and h2), the sample game
(examples/arena, build 1 then build 2) and ``changeover bots`` playing it. While the bots
play, agent h1 is killed with SIGKILL and started again, and then the fleet is switched to
build 2. The bots' report must show every session alive to its end: completed, or moved
after a shutdown notice — none dropped without one.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import start_server, stop_server
from fleet_helpers import AgentProc, arena_fleet, ok
from tests_helpers import CLI, wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

BOT_ARGS = ["--session-min", "3", "--session-max", "12", "--seed", "7"]


def instances(c: httpx.Client) -> list[dict[str, Any]]:
    return list(ok(c.get("/fleets/arena/instances")))


def host(c: httpx.Client, name: str) -> dict[str, Any]:
    return next(h for h in ok(c.get("/hosts")) if h["name"] == name)


def start_fleet(
    srv: Any, c: httpx.Client, tmp_path: Path, agents: list[AgentProc]
) -> tuple[AgentProc, AgentProc]:
    """The arena fleet, agents h1 and h2 started (added to ``agents``), 4 instances ready."""
    arena_fleet(c, [("h1", "eu"), ("h2", "eu")], 2)
    token = srv.token("agent")
    h1, h2 = (AgentProc(srv, token, n, "eu", tmp_path / n) for n in ("h1", "h2"))
    agents += [h1.start(), h2.start()]
    wait_for(lambda: [i["state"] for i in instances(c)] == ["ready"] * 4, 90, "4 ready instances")
    return h1, h2


def test_players_survive_an_agent_kill_and_a_profile_switch(tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    srv = start_server(tmp_path / "server", None)
    agents: list[AgentProc] = []
    bots: subprocess.Popen[str] | None = None
    try:
        c = srv.client()
        h1, _ = start_fleet(srv, c, tmp_path, agents)

        bots = subprocess.Popen(
            [*CLI, "bots", "--fleet", "arena", "--players", "10", "--duration", "45", *BOT_ARGS],
            env={**os.environ, **srv.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(
            lambda: any(i["host"] == "h1" and i["players"] > 0 for i in instances(c)),
            30,
            "players on h1",
        )
        h1_games = h1.instance_pids()
        h1.kill()  # mid-play; its games (and their players) carry on
        wait_for(lambda: not host(c, "h1")["alive"], 30, "the control plane to see h1 lost")
        h1.start()
        wait_for(
            lambda: h1.log().count("registered as host") == 2 and host(c, "h1")["alive"],
            60,
            "h1's agent to come back",
        )
        assert h1.instance_pids() == h1_games  # re-adopted, not restarted

        switch = ok(c.post("/fleets/arena/switch", json={"profile": "arena-v2", "drain_s": 5}), 201)

        def switched() -> Any:
            sw = ok(c.get(f"/switches/{switch['id']}"))
            return sw if sw["status"] in (5, 6) else None

        done = wait_for(switched, 120, "the profile switch to finish")
        assert done["status_name"] == "Completed", done
        assert done["moved"] == 4

        out, err = bots.communicate(timeout=120)
        assert bots.returncode == 0, err
        report = json.loads(out)
        print(json.dumps(report, indent=2))
        assert report["dropped_without_notice"] == 0, report
        assert report["completed"] >= 10, report
        assert report["moved"] >= 1, report  # players left the drained v1 servers on notice
        assert set(report["by_host"]) == {"h1", "h2"}

        wait_for(
            lambda: (
                sorted((i["profile"], i["state"]) for i in instances(c))
                == [("arena-v2", "ready")] * 4
            ),
            60,
            "four v2 instances and no v1 left",
        )
        # Each host staged each build once: build 1 was pruned after the switch, not refetched.
        assert [a.log().count("staged version") for a in agents] == [2, 2]
    finally:
        if bots is not None and bots.poll() is None:
            bots.kill()
            bots.wait()
        for a in agents:
            a.cleanup()
            print(f"--- agent {a.name}\n{a.log()[-4000:]}")
        stop_server(srv)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_a_lost_host_is_stood_in_for_and_fenced_when_it_comes_back(tmp_path: Path) -> None:
    """Agent h2 dies (SIGKILL; its games run on, out of the control plane's reach). Past
    the replace deadline the fleet runs stand-ins for h2's instances on h1, and h2's own
    are marked stopped; when h2's agent comes back, it stops them (they never take players
    again beside the stand-ins), h2 gets instances of its own again and the stand-ins
    retire."""
    (tmp_path / "server").mkdir()
    srv = start_server(
        tmp_path / "server", None, env={"CHANGEOVER_REPLACE_LOST_AFTER_S": str(REPLACE_AFTER_S)}
    )
    agents: list[AgentProc] = []
    try:
        c = srv.client()
        _, h2 = start_fleet(srv, c, tmp_path, agents)
        h2_games = h2.instance_pids()
        assert len(h2_games) == 2
        h2.kill()

        def stood_in() -> list[dict[str, Any]] | None:
            now = instances(c)
            standins = [i for i in now if i["standin_for"] == "h2" and i["state"] == "ready"]
            return now if len(standins) == 2 else None

        now = wait_for(stood_in, 90, "two stand-ins for h2's instances, ready")
        assert {i["host"] for i in now if i["standin_for"] == "h2"} == {"h1"}
        fenced = {i["id"]: i for i in all_instances(c) if i["id"] in h2_games}
        assert {i["desired"] for i in fenced.values()} == {"stopped"}, fenced
        assert all("host h2 lost" in (i["notice"] or {}).get("reason", "") for i in fenced.values())
        assert all(_alive(pid) for pid in h2_games.values()), "its games ran on meanwhile"

        h2.start()  # the host comes back: its first sync tells it to stop the fenced ones
        wait_for(
            lambda: not any(_alive(pid) for pid in h2_games.values()),
            60,
            "h2's agent to stop the instances that were stood in for",
        )

        def settled() -> bool:
            live = instances(c)
            return sorted((i["host"], i["standin_for"] or "", i["state"]) for i in live) == [
                ("h1", "", "ready"),
                ("h1", "", "ready"),
                ("h2", "", "ready"),
                ("h2", "", "ready"),
            ]

        wait_for(settled, 90, "two instances of its own on each host, and no stand-in left")
        gone = {i["id"]: i for i in all_instances(c) if i["standin_for"] == "h2"}
        assert [i["desired"] for i in gone.values()] == ["stopped", "stopped"], gone
        assert all(
            "host h2 is back" in (i["notice"] or {}).get("reason", "") for i in gone.values()
        )
    finally:
        for a in agents:
            a.cleanup()
            print(f"--- agent {a.name}\n{a.log()[-4000:]}")
        stop_server(srv)


REPLACE_AFTER_S = 12


def all_instances(c: httpx.Client) -> list[dict[str, Any]]:
    return list(ok(c.get("/fleets/arena/instances", params={"all": "true"})))
