"""Several control-plane replicas (real ``changeover server`` processes) on one
PostgreSQL and one data directory: every replica serves the API, one leads
(``control.leadership``), and a patch job goes on when its leader is killed (SIGKILL) or
paused (SIGSTOP) in the middle of it, with every action applied exactly once, the paused
leader fenced when it wakes up."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from changeover.control.auth.services import TOKEN_CACHE_TTL_S
from crash_helpers import JobProgress, assert_landed_mid_job, database, kill_mid_job, patch_job
from fleet_helpers import ok
from patchjob_helpers import Agents, actions, instances, job_body, two_build_fleet
from replica_helpers import assert_exactly_once, finished, leads, point, role
from tests_helpers import Server, release, start_server, stop_server, wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

REPLICA = {"CHANGEOVER_PATCH_TICK_S": "0.1", "CHANGEOVER_LEADER_LEASE_S": "2"}


@pytest.fixture
def replicas(pg_url: str, tmp_path: Path) -> Iterator[list[Server]]:
    """Two replicas, the first one started first (so it leads)."""
    started: list[Server] = []
    try:
        started.append(start_server(tmp_path, pg_url, env=REPLICA))
        wait_for(lambda: leads(started[0]), 30, "the first replica to lead")
        started.append(start_server(tmp_path, pg_url, env=REPLICA))
        yield started
    finally:
        for srv in started:
            if srv.process.poll() is None:
                srv.process.send_signal(signal.SIGCONT)  # a paused one must hear its stop
            stop_server(srv)


def test_replicas_serve_the_api_and_tokens_are_revoked_everywhere(replicas: list[Server]) -> None:
    a, b = replicas
    assert leads(a) and not leads(b)
    assert role(a)["term"] >= 1 and role(b)["term"] is None
    # A token made through one replica works through the other; revoked through one, the
    # other refuses it once its cache has let go of it (TOKEN_CACHE_TTL_S).
    made = ok(a.client().post("/tokens", json={"name": "ops", "scope": "viewer"}), 201)
    reader = b.client(made["token"])
    assert reader.get("/images").status_code == 200
    ok(a.client().delete(f"/tokens/{made['id']}"))
    wait_for(
        lambda: reader.get("/images").status_code == 401,
        TOKEN_CACHE_TTL_S * 5,
        "the follower to refuse the token revoked through the leader",
    )
    # A branch moved through the follower is published: signed by the leader, the
    # follower only records it.
    c = b.client()
    ok(c.post("/images", json={"name": "ha-img"}), 201)
    version = release(c, "ha-img", {"a": b"1"}, "1.0")
    ok(c.put("/images/ha-img/branches/live", json={"version": str(version["number"])}))

    def published() -> bool:
        # The pointer, as a signed target, under its hash (the store both replicas share).
        pointers = (b.data / "store/content/targets/branches/ha-img").glob("*.live.json")
        return any(json.loads(p.read_text())["version"] == version["number"] for p in pointers)

    wait_for(published, 30, "the leader to publish the branch moved through the follower")


def test_a_job_survives_its_leader_killed_then_paused(
    replicas: list[Server], pg_url: str, tmp_path: Path
) -> None:
    a, b = replicas
    stack = ExitStack()
    bg: Agents | None = None
    third: Server | None = None
    engine = stack.enter_context(database(pg_url, tmp_path))
    agent_http = httpx.Client(timeout=10)
    try:
        c, agents = two_build_fleet(b, "pjr", ["pjr-h1", "pjr-h2", "pjr-h3"], per_host=2)
        agent_http.headers["Authorization"] = agents[0].client.headers["Authorization"]
        point(agents, agent_http, b.url)
        bg = Agents(agents, tolerate_down=True).start()
        slow = {"healthy_deadline_s": 90, "progress_deadline_s": 120}
        body = job_body("pjr", "rolling")
        body["rolling"] = {**body["rolling"], **slow}

        # 1. The leader (a) killed mid-job: b takes over and finishes it.
        first = ok(c.post("/patchjobs", json=body), 201)
        job = patch_job(engine, first["id"])
        at_kill = kill_mid_job(a.process, job, "the patch job", at=2, timeout_s=120)
        assert_landed_mid_job(at_kill, job(), "the patch job")
        wait_for(lambda: leads(b), 30, "the follower to lead once the leader died")
        done = wait_for(finished(c, first["id"]), 120, "the job to finish on the new leader")
        assert done["status_name"] == "Completed", done["reason"]
        assert_exactly_once(c, first["id"], "pjr-fleet", "pjr-v1")
        assert int(at_kill.done) < len(actions(c, first["id"]))  # the kill left work to do

        # 2. The new leader (b) paused mid-job: a third replica takes over; when b wakes
        # up believing it still leads, the fence stops it.
        third = start_server(tmp_path, pg_url, env=REPLICA)
        assert not leads(third)
        point(agents, agent_http, third.url)
        back = job_body("pjr", "rolling", builds=[{"old": "pjr-v2", "new": "pjr-v1"}])
        back["rolling"] = {**back["rolling"], **slow}
        second = ok(third.client().post("/patchjobs", json=back), 201)
        job = patch_job(engine, second["id"])
        paused = _pause_mid_job(b, job)
        wait_for(lambda: leads(third), 30, "the third replica to lead while b is paused")
        b.process.send_signal(signal.SIGCONT)
        wait_for(lambda: not leads(b), 30, "b to know it no longer leads")
        c3 = third.client()
        done = wait_for(finished(c3, second["id"]), 120, "the second job to finish")
        assert done["status_name"] == "Completed", done["reason"]
        assert_exactly_once(c3, second["id"], "pjr-fleet", "pjr-v2")
        assert int(paused.done) < len(actions(c3, second["id"]))
        wait_for(
            lambda: Counter(i["profile"] for i in instances(c3, "pjr-fleet")) == {"pjr-v1": 6},
            60,
            "six instances of the first build again, and no other",
        )
        assert leads(third) and not leads(b)
        bg.check()
    finally:
        if bg is not None:
            bg.stop()
        agent_http.close()
        if third is not None:
            stop_server(third)
        stack.close()


def _pause_mid_job(srv: Server, job: Callable[[], JobProgress | None]) -> JobProgress:
    """SIGSTOP ``srv`` once the job applied an action; the record at the pause shows it
    unfinished (nothing the frozen process does can change it)."""

    def started() -> JobProgress | None:
        now = job()
        if now is not None and now.finished:
            raise AssertionError(f"the job finished before the pause: {now.detail}")
        return now if now is not None and now.done >= 1 else None

    wait_for(started, 60, "the job to apply an action")
    srv.process.send_signal(signal.SIGSTOP)
    at_pause = job()
    assert at_pause is not None and at_pause.started and not at_pause.finished, at_pause
    return at_pause
