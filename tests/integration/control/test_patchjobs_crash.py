"""A patch job survives its control plane being killed (SIGKILL) at random moments: after
each restart it resumes, and in the end every action was applied exactly once."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet_helpers import ok
from patchjob_helpers import Agents, actions, events, instances, job_body, two_build_fleet
from tests_helpers import Server, start_server, stop_server, wait_for

pytestmark = pytest.mark.timeout(300)


def _restart(srv: Server, data: Path, url: str | None, delay: float) -> Server:
    time.sleep(delay)  # a random kill point, not a wait for anything
    srv.process.send_signal(signal.SIGKILL)
    srv.process.wait()
    token = srv.admin_token
    srv.close()
    new = start_server(data, url)
    new.admin_token = token
    return new


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_rolling_job_completes_across_sigkills(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if db == "postgres" else None
    rng = random.Random(11)
    os.environ["CHANGEOVER_PATCH_TICK_S"] = "0.1"
    srv = start_server(tmp_path, url)
    bg: Agents | None = None
    agent_http: httpx.Client
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
        for _ in range(3):
            srv = _restart(srv, tmp_path, url, rng.uniform(0.2, 1.5))
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
        del os.environ["CHANGEOVER_PATCH_TICK_S"]
        stop_server(srv)
