"""Failure drills with a PostgreSQL of the test's own (``pg_helpers``): two replicas (one
data directory: any replica may run a build job, and they need the same content) see
a rolling patch job through a restart of the database in the middle of it, and through
their leader being cut off from the database (a network partition) and let back. Every
action is applied exactly once; the cut-off leader does nothing while cut off, says it is
not ready (a balancer drops it), and comes back as a follower."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from crash_helpers import JobProgress, database, patch_job
from fleet_helpers import ok
from patchjob_helpers import Agents, actions, instances, job_body, two_build_fleet
from pg_helpers import Cuttable, PrivatePostgres, private_postgres
from replica_helpers import assert_exactly_once, finished, leads, role, syncing_through
from tests_helpers import Server, start_server, stop_server, wait_for

pytestmark = [pytest.mark.ha, pytest.mark.timeout(300), pytest.mark.slow]

REPLICA = {"CHANGEOVER_PATCH_TICK_S": "0.1", "CHANGEOVER_LEADER_LEASE_S": "2"}
SLOW = {"healthy_deadline_s": 90, "progress_deadline_s": 120}


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as pg:
        yield pg


def _started(job: Callable[[], JobProgress | None]) -> JobProgress:
    def applied() -> JobProgress | None:
        now = job()
        if now is not None and now.finished:
            raise AssertionError(f"the job finished before the drill: {now.detail}")
        return now if now is not None and now.done >= 1 else None

    got: JobProgress = wait_for(applied, 60, "the job to apply an action")
    return got


def _ready(srv: Server) -> bool:
    try:
        return httpx.get(srv.url + "/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _run_job(
    stack: ExitStack, follower: Server, db_url: str, data: Path
) -> tuple[httpx.Client, Agents, int, Callable[[], JobProgress | None]]:
    """A two-build fleet made through the follower, agents syncing with it, and a rolling
    job started: (client, agents' background, job id, its progress)."""
    engine = stack.enter_context(database(db_url, data))
    c, agents = two_build_fleet(follower, "drl", ["drl-h1", "drl-h2", "drl-h3"], per_host=2)
    bg = syncing_through(stack, agents, follower.url)
    body = job_body("drl", "rolling")
    body["rolling"] = {**body["rolling"], **SLOW}
    job = ok(c.post("/patchjobs", json=body), 201)
    return c, bg, job["id"], patch_job(engine, job["id"])


def _completes(c: httpx.Client, job_id: int, bg: Agents, at: JobProgress) -> None:
    done = wait_for(finished(c, job_id), 120, "the job to finish")
    assert done["status_name"] == "Completed", done["reason"]
    assert_exactly_once(c, job_id, "drl-fleet", "drl-v1")
    assert int(at.done) < len(actions(c, job_id))  # the drill left work to do
    wait_for(
        lambda: Counter(i["profile"] for i in instances(c, "drl-fleet")) == {"drl-v2": 6},
        60,
        "six instances of the new build",
    )
    bg.check()


def test_a_database_restart_mid_job(postgres: PrivatePostgres, tmp_path: Path) -> None:
    with ExitStack() as stack:
        a = start_server(tmp_path / "data", postgres.url, env=REPLICA)
        stack.callback(stop_server, a)
        wait_for(lambda: leads(a), 30, "the first replica to lead")
        b = start_server(tmp_path / "data", postgres.url, env=REPLICA)
        stack.callback(stop_server, b)
        c, bg, job_id, job = _run_job(stack, b, postgres.url, tmp_path)
        at = _started(job)
        postgres.restart()
        wait_for(lambda: _ready(a) and _ready(b), 60, "both replicas ready again")
        _completes(c, job_id, bg, at)
        assert leads(a) != leads(b)  # one leader again


def test_a_leader_cut_off_from_the_database_mid_job(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    relay = Cuttable(postgres.port)
    through_relay = postgres.url.replace(f":{postgres.port}/", f":{relay.port}/")
    with ExitStack() as stack:
        stack.callback(relay.cut)
        a = start_server(tmp_path / "data", through_relay, env=REPLICA)
        stack.callback(stop_server, a)
        wait_for(lambda: leads(a), 30, "the replica behind the relay to lead")
        b = start_server(tmp_path / "data", postgres.url, env=REPLICA)
        stack.callback(stop_server, b)
        c, bg, job_id, job = _run_job(stack, b, postgres.url, tmp_path)
        fresh = ok(b.client().post("/tokens", json={"name": "fresh", "scope": "viewer"}), 201)
        at = _started(job)
        relay.cut()
        wait_for(lambda: leads(b), 30, "the replica still connected to lead")
        # A request a needs the database for is refused as unavailable (503: retry,
        # elsewhere), not as a bug of the server (500).
        r = httpx.get(
            a.url + "/api/v1/images",
            headers={"Authorization": f"Bearer {fresh['token']}"},
            timeout=60,
        )
        assert r.status_code == 503 and r.json()["error"] == "unavailable", r.text
        # Cut off, a is not ready (a balancer drops it) and does not lead.
        answer = httpx.get(a.url + "/readyz", timeout=10)
        assert answer.status_code == 503 and answer.json()["replica"]["leader"] is False
        assert answer.json()["checks"]["database"].startswith("unreachable")
        _completes(c, job_id, bg, at)
        relay.restore()
        wait_for(lambda: _ready(a), 60, "the cut-off replica to be ready again")
        assert role(a)["leader"] is False and leads(b)
