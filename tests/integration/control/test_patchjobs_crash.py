"""A patch job survives its control plane being killed (SIGKILL) at random moments in the
middle of it (after a random number of its actions were applied, before it finished):
after each restart it resumes, and in the end every action was applied exactly once."""

from __future__ import annotations

import random
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from crash_helpers import assert_landed_mid_job, database, kill_mid_job, patch_job
from fleet_helpers import ok
from patchjob_helpers import Agents, actions, events, instances, job_body, two_build_fleet
from tests_helpers import Server, start_server, stop_server, wait_for

pytestmark = pytest.mark.timeout(300)


TICKS = {"CHANGEOVER_PATCH_TICK_S": "0.1"}


def _restart(srv: Server, data: Path, url: str | None, job: Any, at: int) -> tuple[Server, int]:
    """Kill the server once the job has applied ``at`` actions, prove the kill landed
    mid-job, start it again; returns the new server and how many actions were applied."""
    at_kill = kill_mid_job(srv.process, job, "the patch job", at=at, timeout_s=120)
    assert_landed_mid_job(at_kill, job(), "the patch job")
    token = srv.admin_token
    srv.close()
    new = start_server(data, url, env=TICKS)
    new.admin_token = token
    return new, int(at_kill.done)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_rolling_job_completes_across_sigkills(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if db == "postgres" else None
    rng = random.Random(11)
    srv = start_server(tmp_path, url, env=TICKS)
    bg: Agents | None = None
    agent_http: httpx.Client
    stack = ExitStack()
    engine = stack.enter_context(database(url, tmp_path))
    try:
        c, agents = two_build_fleet(srv, "pjz", ["pjz-h1", "pjz-h2", "pjz-h3"], per_host=2)
        # The agents' own client: a restart closes every client the server object made.
        agent_http = httpx.Client(
            base_url=srv.url + "/api/v1",
            headers={"Authorization": agents[0].client.headers["Authorization"]},
            timeout=10,
        )
        for a in agents:
            a.client = agent_http
        bg = Agents(agents, tolerate_down=True).start()
        body = job_body("pjz", "rolling")
        # Deadlines are absolute: the restarts below take a while, and a replacement must
        # not fail its gate just because nobody could hear it was ready.
        body["rolling"] = {**body["rolling"], "healthy_deadline_s": 90, "progress_deadline_s": 120}
        job = ok(c.post("/patchjobs", json=body), 201)
        applied, kills = 0, []
        for _ in range(3):
            at = applied + rng.randint(1, 3)
            srv, applied = _restart(srv, tmp_path, url, patch_job(engine, job["id"]), at)
            kills.append(applied)
            for a in agents:  # the restarted server listens on another port
                a.client.base_url = srv.url + "/api/v1"
        c = srv.client()

        def finished() -> Any:
            got = ok(c.get(f"/patchjobs/{job['id']}"))
            return got if got["status"] >= 7 else None

        done = wait_for(finished, 120, "the job to finish after the restarts")
        assert done["status_name"] == "Completed", done["reason"]
        wait_for(
            lambda: Counter(i["profile"] for i in instances(c, "pjz-fleet")) == {"pjz-v2": 6},
            60,
            "six instances of the new build, and no old one",
        )
        acts = actions(c, job["id"])
        assert all(a["applied_at"] is not None for a in acts)
        assert kills[-1] < len(acts), (kills, len(acts))  # every kill left work to resume
        # Exactly once: one action event per key (written with the effect), no instance
        # stopped twice, every old instance stopped, one new instance per start.
        applied = Counter(e["data"]["key"] for e in events(c, job["id"]) if e["kind"] == "action")
        assert set(applied.values()) == {1}
        assert len(applied) == sum(1 for a in acts if a["action"]["type"] != "Finish")
        stops = Counter(
            a["action"]["instance_id"] for a in acts if a["action"]["type"] == "StopInstance"
        )
        assert len(stops) == 6 and set(stops.values()) == {1}
        everything = ok(c.get("/fleets/pjz-fleet/instances", params={"all": "true"}))
        launched = Counter(i["launch_key"] for i in everything if i.get("launch_key"))
        starts = [a["key"] for a in acts if a["action"]["type"] == "StartInstance"]
        assert sorted(launched) == sorted(starts) and set(launched.values()) == {1}
        stopped_old = {i["id"] for i in everything if i["profile"] == "pjz-v1"}
        assert stopped_old == set(stops)
    finally:
        if bg is not None:
            bg.stop()
            agent_http.close()
        stop_server(srv)
        stack.close()
