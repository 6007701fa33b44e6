"""Every patch-job method, end to end, with real processes and a control plane killed mid-job.

One control plane, two agents as separate processes (hosts h1 in eu, h2 in us), the sample
game (examples/arena, builds 1 and 2 as profiles arena-v1 and arena-v2) and
``changeover bots`` playing it. Each test moves the fleet to the other build with one
method while the bots play; once the job has acted, the control plane is killed with
SIGKILL, with the job's rows proving the kill landed mid-job (``crash_helpers``), and
started again on the same port (agents and players keep their URL). Then:

- the job finishes as Completed and every instance runs the new build;
- each of its actions was applied exactly once (no instance stopped twice, none forgotten:
  every old instance of the selection is stopped);
- for rolling, A/B, bleed-off, canary and custom, no session was dropped without notice;
  forced is the baseline (its downtime is the stop and the start) and only reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from crash_helpers import assert_landed_mid_job, database, kill_mid_job, patch_job
from fleet_helpers import AgentProc, arena_fleet, ok
from tests_helpers import CLI, Server, start_server, stop_server, wait_for

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

HOSTS = (("h1", "eu"), ("h2", "us"))
PER_HOST = 2
DRAIN = {"deadline_s": 20, "notice_before_s": [10, 4]}
STOP = {"signal": "SIGTERM", "timeout_s": 10}
CHECK = (
    f'{sys.executable} -c "import os, socket; '
    "[socket.create_connection((h, int(p)), 5).close() for h, p in "
    "(t.rsplit(':', 1) for t in os.environ['CHANGEOVER_CHECK_TARGETS'].split(','))]\""
)
FAST_ROLLING = {
    "max_unavailable": 1,
    "max_surge": 1,
    "min_healthy_time_s": 1,
    "healthy_deadline_s": 60,
    "progress_deadline_s": 120,
}
KNOBS: dict[str, dict[str, Any]] = {
    "forced": {"stop": STOP},
    "rolling": {"rolling": FAST_ROLLING, "drain": DRAIN, "stop": STOP},
    "ab": {
        "ab": {"verify_command": CHECK, "verify_timeout_s": 30},
        "rolling": FAST_ROLLING,
        "drain": DRAIN,
        "stop": STOP,
    },
    "bleed-off": {"rolling": FAST_ROLLING, "drain": DRAIN, "stop": STOP},
    "canary": {
        "canary": {"share": 0.25, "analysis_window_s": 3},
        "rolling": FAST_ROLLING,
        "drain": DRAIN,
        "stop": STOP,
    },
    "custom": {
        "steps": [
            {"kind": "start_new", "share": 1.0},
            {"kind": "wait_healthy", "timeout_s": 60},
            {"kind": "run_check", "command": CHECK, "timeout_s": 30},
            {"kind": "switch_allocation", "weight": 1.0},
            {"kind": "drain", "deadline_s": 20},
            {"kind": "stop_old"},
        ],
        "rolling": FAST_ROLLING,
        "stop": STOP,
    },
}


@dataclass
class Rig:
    server: Server
    data: Path
    port: int
    agents: list[AgentProc]
    token: str

    def client(self) -> httpx.Client:
        return self.server.client(self.token)

    def crash_and_restart(self, job_id: int) -> None:
        """SIGKILL the control plane in the middle of patch job ``job_id`` (proven by its
        rows: an action applied, the job not finished) and start it again on the same
        port and data."""
        with database(None, self.data) as engine:
            job = patch_job(engine, job_id)
            at_kill = kill_mid_job(self.server.process, job, "the patch job")
            assert_landed_mid_job(at_kill, job(), "the patch job")
        self.server.close()
        self.server = start_server(self.data, None, port=self.port)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    data = tmp_path_factory.mktemp("patchjob-e2e")
    srv = start_server(data, None)
    rig = Rig(srv, data, int(srv.url.rsplit(":", 1)[1]), [], srv.admin_token)
    try:
        c = rig.client()
        arena_fleet(c, HOSTS, PER_HOST)
        agent_token = srv.token("agent")
        for name, region in HOSTS:
            rig.agents.append(
                AgentProc(srv, agent_token, name, region, data / name, slots=8).start()
            )
        wait_for(lambda: _settled(c, "arena-v1"), 120, "4 ready v1 instances")
        yield rig
    finally:
        for a in rig.agents:
            a.cleanup()
            print(f"--- agent {a.name}\n{a.log()[-3000:]}")
        print(f"--- server\n{rig.data.joinpath('server.log').read_text()[-6000:]}")
        stop_server(rig.server)


def _instances(c: httpx.Client) -> list[dict[str, Any]]:
    return list(ok(c.get("/fleets/arena/instances", params={"all": "true"})))


def _settled(c: httpx.Client, profile: str) -> bool:
    live = [i for i in _instances(c) if i["state"] not in ("stopped", "lost")]
    return sorted((i["profile"], i["state"]) for i in live) == [(profile, "ready")] * (
        PER_HOST * len(HOSTS)
    )


def _current_profile(c: httpx.Client) -> str:
    return str(ok(c.get("/fleets/arena"))["profile"])


def _start_bots(rig: Rig, seconds: int) -> subprocess.Popen[str]:
    env = {**os.environ, "CHANGEOVER_URL": rig.server.url, "CHANGEOVER_TOKEN": rig.token}
    return subprocess.Popen(
        [
            *CLI,
            "bots",
            "--fleet",
            "arena",
            "--players",
            "8",
            "--duration",
            str(seconds),
            "--session-min",
            "2",
            "--session-max",
            "8",
            "--seed",
            "11",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _job(c: httpx.Client, job_id: int) -> dict[str, Any]:
    return dict(ok(c.get(f"/patchjobs/{job_id}")))


@pytest.mark.parametrize("method", list(KNOBS))
def test_method_moves_the_fleet_through_a_control_plane_crash(rig: Rig, method: str) -> None:
    c = rig.client()
    old = _current_profile(c)
    new = "arena-v2" if old == "arena-v1" else "arena-v1"
    wait_for(lambda: _settled(c, old), 120, f"a settled fleet on {old}")
    old_ids = {i["id"] for i in _instances(c) if i["state"] == "ready"}
    bots = _start_bots(rig, 30)
    try:
        wait_for(lambda: any(i["players"] > 0 for i in _instances(c)), 30, "players")
        body = {
            "name": f"{method} to {new}",
            "environment": "production",
            "application": "arena",
            "method": method,
            "builds": [{"old": old, "new": new}],
            "fleets": ["arena"],
            **KNOBS[method],
        }
        job = ok(c.post("/patchjobs", json=body), 201)

        def acted() -> bool:
            actions = ok(c.get(f"/patchjobs/{job['id']}/actions"))
            return any(
                a["applied_at"] is not None and a["action"]["type"] != "StageBuild" for a in actions
            )

        wait_for(acted, 120, f"the {method} job to change an instance")
        rig.crash_and_restart(job["id"])
        c = rig.client()

        def finished() -> dict[str, Any] | None:
            j = _job(c, job["id"])
            return j if j["status"] >= 7 else None

        done = wait_for(finished, 240, f"the {method} job to finish")
        assert done["status_name"] == "Completed", done
        wait_for(lambda: _settled(c, new), 120, f"every instance on {new}")
        assert _current_profile(c) == new

        actions = ok(c.get(f"/patchjobs/{job['id']}/actions"))
        assert all(a["applied_at"] is not None for a in actions), actions
        stopped = Counter(
            a["action"]["instance_id"] for a in actions if a["action"]["type"] == "StopInstance"
        )
        assert all(n == 1 for n in stopped.values()), stopped  # never stopped twice
        after = {i["id"]: i for i in _instances(c)}
        for instance_id in old_ids:  # none forgotten
            assert after[instance_id]["state"] in ("stopped", "lost"), after[instance_id]
        events = ok(c.get(f"/patchjobs/{job['id']}/events"))["events"]
        assert events[-1]["kind"] == "finished", events[-1]

        out, err = bots.communicate(timeout=120)
        assert bots.returncode == 0, err
        report = json.loads(out)
        print(method, json.dumps(report))
        assert report["completed"] + report["moved"] >= 8, report
        if method != "forced":
            assert report["dropped_without_notice"] == 0, report
    finally:
        if bots.poll() is None:
            bots.kill()
            bots.wait()
