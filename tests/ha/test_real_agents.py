"""A release with real agents and real players through the balancer, losing the leader
and then a follower mid-job (``make test-ha``).

Three replicas on one PostgreSQL behind HAProxy (``deploy/haproxy.cfg``); two
``changeover agent`` processes (hosts h1 in eu, h2 in us) running the sample game
(examples/arena, builds 1 and 2), both pointed at the balancer alone; ``changeover bots``
playing it through the balancer. A job moves the fleet to the other build while they play;
the leader is killed (SIGKILL) once the job has acted (its rows prove it), then a follower
once it acted again. Then: the job completes, every instance runs the new build, each
action applied once, no old instance forgotten, and no player's session dropped without
notice.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from crash_helpers import assert_landed_mid_job, database, kill_mid_job, patch_job
from fleet_helpers import AgentProc, arena_fleet, ok
from replica_helpers import assert_exactly_once, finished, leader, leads
from tests_helpers import CLI, Server, wait_for

pytestmark = [pytest.mark.ha, pytest.mark.timeout(420), pytest.mark.slow]

HOSTS = (("h1", "eu"), ("h2", "us"))
PER_HOST = 2
DRAIN = {"deadline_s": 20, "notice_before_s": [10, 4]}
STOP = {"signal": "SIGTERM", "timeout_s": 10}
ROLLING = {
    "max_unavailable": 1,
    "max_surge": 1,
    "min_healthy_time_s": 1,
    "healthy_deadline_s": 60,
    "progress_deadline_s": 120,
}


@pytest.fixture
def fleet(
    cluster: tuple[str, list[Server]], tmp_path: Path
) -> Iterator[tuple[str, list[Server], httpx.Client]]:
    """The arena fleet on two real agents, every one of them through the balancer."""
    balancer, replicas = cluster
    auth = {"Authorization": f"Bearer {replicas[0].admin_token}"}
    with ExitStack() as stack:
        c = stack.enter_context(
            httpx.Client(base_url=balancer + "/api/v1", headers=auth, timeout=60)
        )
        arena_fleet(c, HOSTS, PER_HOST)
        token = ok(c.post("/tokens", json={"scope": "agent", "name": "agents"}), 201)["token"]
        through = SimpleNamespace(url=balancer)  # the agents know the balancer alone
        agents = []
        for name, region in HOSTS:
            agent = AgentProc(through, token, name, region, tmp_path / name, slots=8)
            agents.append(agent.start())
            stack.callback(agent.cleanup)
        wait_for(lambda: _settled(c, "arena-v1"), 120, "4 ready v1 instances")
        yield balancer, replicas, c
        for a in agents:
            print(f"--- agent {a.name}\n{a.log()[-3000:]}")


def _instances(c: httpx.Client) -> list[dict[str, Any]]:
    return list(ok(c.get("/fleets/arena/instances", params={"all": "true"})))


def _settled(c: httpx.Client, profile: str) -> bool:
    live = [i for i in _instances(c) if i["state"] not in ("stopped", "lost")]
    want = [(profile, "ready")] * (PER_HOST * len(HOSTS))
    return sorted((i["profile"], i["state"]) for i in live) == want


def _bots(balancer: str, token: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CHANGEOVER_URL": balancer, "CHANGEOVER_TOKEN": token}
    args = ["--fleet", "arena", "--players", "8", "--duration", "40", "--seed", "7"]
    return subprocess.Popen(
        [*CLI, "bots", *args, "--session-min", "2", "--session-max", "8"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("method", ["rolling", "bleed-off"])
def test_players_keep_playing_through_the_deaths_of_the_leader_and_a_follower(
    fleet: tuple[str, list[Server], httpx.Client], pg_url: str, tmp_path: Path, method: str
) -> None:
    balancer, replicas, c = fleet
    bots = _bots(balancer, replicas[0].admin_token)
    try:
        wait_for(lambda: any(i["players"] > 0 for i in _instances(c)), 30, "players")
        old_ids = {i["id"] for i in _instances(c) if i["state"] == "ready"}
        body = {
            "name": f"{method} to v2",
            "environment": "production",
            "application": "arena",
            "method": method,
            "builds": [{"old": "arena-v1", "new": "arena-v2"}],
            "fleets": ["arena"],
            "rolling": ROLLING,
            "drain": DRAIN,
            "stop": STOP,
        }
        job = ok(c.post("/patchjobs", json=body), 201)
        with database(pg_url, tmp_path) as engine:
            progress = patch_job(engine, job["id"])
            head = leader(replicas)
            first = kill_mid_job(head.process, progress, "the job, for its leader", at=1)
            assert_landed_mid_job(first, progress(), "the job")
            follower = next(r for r in replicas if r.process.poll() is None and not leads(r))
            second = kill_mid_job(
                follower.process, progress, "the job, for a follower", at=first.done + 1
            )
            assert_landed_mid_job(second, progress(), "the job")
        done = wait_for(finished(c, job["id"]), 240, f"the {method} job to finish")
        assert done["status_name"] == "Completed", done["reason"]
        wait_for(lambda: _settled(c, "arena-v2"), 120, "every instance on arena-v2")
        assert_exactly_once(c, job["id"], "arena", "arena-v1")
        after = {i["id"]: i for i in _instances(c)}
        assert all(after[i]["state"] in ("stopped", "lost") for i in old_ids)  # none forgotten
        out, err = bots.communicate(timeout=120)
        assert bots.returncode == 0, err
        report = json.loads(out)
        print(method, json.dumps(report))
        assert report["completed"] + report["moved"] >= 8, report
        assert report["dropped_without_notice"] == 0, report
    finally:
        if bots.poll() is None:
            bots.kill()
            bots.wait()
