"""Three control-plane replicas behind HAProxy, started with the repository's own
``deploy/haproxy.cfg`` as an operator would: requests are spread over every replica, a
replica killed (SIGKILL) stops getting requests, and the clients behind the balancer see
at most the request that was in flight. (The drills through the balancer, jobs of every
method among them: ``tests/ha``.)"""

from __future__ import annotations

import signal

import httpx
import pytest

from replica_helpers import (
    role,
    up_behind,
)
from tests_helpers import Server, wait_for

pytestmark = [pytest.mark.ha, pytest.mark.timeout(300), pytest.mark.slow]


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
