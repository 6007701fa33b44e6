"""Three control-plane replicas behind HAProxy, started with the repository's own
``deploy/haproxy.cfg`` as an operator would: requests are spread over every replica, a
replica killed (SIGKILL) stops getting requests, the clients behind the balancer see at
most the request that was in flight, and a patch job whose agents sync through the
balancer completes, exactly once, when its leader is killed in the middle of it."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from crash_helpers import assert_landed_mid_job, database, kill_mid_job, patch_job
from fleet_helpers import ok
from patchjob_helpers import actions, job_body, two_build_fleet
from replica_helpers import (
    assert_exactly_once,
    balanced_replicas,
    finished,
    leads,
    role,
    syncing_through,
    up_behind,
)
from tests_helpers import Server, wait_for

pytestmark = [pytest.mark.ha, pytest.mark.timeout(300), pytest.mark.slow]

REPLICA = {"CHANGEOVER_PATCH_TICK_S": "0.1", "CHANGEOVER_LEADER_LEASE_S": "2"}


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[tuple[str, list[Server]]]:
    """Three replicas (the first leads) and HAProxy in front: the balancer's URL and them."""
    with balanced_replicas(pg_url, tmp_path, REPLICA) as got:
        yield got


def test_a_killed_replica_is_dropped_and_costs_at_most_the_request_in_flight(
    cluster: tuple[str, list[Server]],
) -> None:
    balancer, replicas = cluster
    victim = replicas[2]
    api = httpx.Client(
        base_url=balancer + "/api/v1",
        headers={"Authorization": f"Bearer {victim.admin_token}"},
        timeout=10,
    )
    statuses: list[int] = []
    try:
        for n in range(400):
            if n == 100:
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait()
            statuses.append(api.get("/images").status_code)
        # One client, one request at a time: at most the one in flight at the kill fails.
        failed = [s for s in statuses if s != 200]
        assert len(failed) <= 1, statuses
        assert statuses[:100] == [200] * 100 and statuses[-100:] == [200] * 100
        survivors = {role(srv)["name"] for srv in replicas[:2]}
        wait_for(lambda: up_behind(balancer) == survivors, 30, "the balancer to drop the dead")
    finally:
        api.close()


def test_agents_behind_the_balancer_see_a_job_through_its_leader_killed(
    cluster: tuple[str, list[Server]], pg_url: str, tmp_path: Path
) -> None:
    balancer, replicas = cluster
    leader = replicas[0]
    with ExitStack() as stack:
        engine = stack.enter_context(database(pg_url, tmp_path))
        c, agents = two_build_fleet(replicas[1], "pjb", ["pjb-h1", "pjb-h2", "pjb-h3"], 2)
        bg = syncing_through(stack, agents, balancer)
        body = job_body("pjb", "rolling")
        body["rolling"] = {**body["rolling"], "healthy_deadline_s": 90, "progress_deadline_s": 120}
        through = httpx.Client(base_url=balancer + "/api/v1", headers=dict(c.headers), timeout=10)
        stack.callback(through.close)
        job = ok(through.post("/patchjobs", json=body), 201)
        progress = patch_job(engine, job["id"])
        at_kill = kill_mid_job(leader.process, progress, "the patch job", at=2, timeout_s=120)
        assert_landed_mid_job(at_kill, progress(), "the patch job")
        wait_for(lambda: leads(replicas[1]) or leads(replicas[2]), 30, "a new leader")
        done = wait_for(finished(through, job["id"]), 120, "the job to finish")
        assert done["status_name"] == "Completed", done["reason"]
        assert_exactly_once(through, job["id"], "pjb-fleet", "pjb-v1")
        assert int(at_kill.done) < len(actions(through, job["id"]))
        bg.check()
