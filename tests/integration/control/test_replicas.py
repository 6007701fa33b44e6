"""Several control-plane replicas (real ``changeover server`` processes) on one
PostgreSQL and one data directory: every replica serves the API, one leads
(``control.leadership``), and a patch job goes on when its leader is paused (SIGSTOP) in
the middle of it, with every action applied exactly once, the paused leader fenced when it
wakes up. (A leader killed mid-job, behind a balancer: ``test_balancer``.)"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from changeover.control.auth.services import TOKEN_CACHE_TTL_S
from crash_helpers import JobProgress, database, kill_mid_job, patch_job
from fleet_helpers import ok
from patchjob_helpers import actions, instances, job_body, two_build_fleet
from replica_helpers import assert_exactly_once, finished, leads, role, syncing_through
from tests_helpers import CLI, Server, release, start_server, stop_server, wait_for

pytestmark = [pytest.mark.ha, pytest.mark.timeout(300), pytest.mark.slow]

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


def test_a_job_survives_its_leader_paused(
    replicas: list[Server], pg_url: str, tmp_path: Path
) -> None:
    a, b = replicas
    with ExitStack() as stack:
        engine = stack.enter_context(database(pg_url, tmp_path))
        c, agents = two_build_fleet(b, "pjr", ["pjr-h1", "pjr-h2", "pjr-h3"], per_host=2)
        bg = syncing_through(stack, agents, b.url)
        slow = {"healthy_deadline_s": 90, "progress_deadline_s": 120}
        body = job_body("pjr", "rolling")
        body["rolling"] = {**body["rolling"], **slow}

        # The leader (a) paused mid-job (its machine stops answering; its death by SIGKILL
        # behind a balancer is test_balancer's): b takes over once the lease runs out, and
        # when a wakes up believing it still leads, the fence stops it.
        job_row = ok(c.post("/patchjobs", json=body), 201)
        job = patch_job(engine, job_row["id"])
        paused = _pause_mid_job(a, job)
        wait_for(lambda: leads(b), 30, "the follower to lead while the leader is paused")
        a.process.send_signal(signal.SIGCONT)
        wait_for(lambda: not leads(a), 30, "the old leader to know it no longer leads")
        done = wait_for(finished(c, job_row["id"]), 120, "the job to finish")
        assert done["status_name"] == "Completed", done["reason"]
        assert_exactly_once(c, job_row["id"], "pjr-fleet", "pjr-v1")
        assert int(paused.done) < len(actions(c, job_row["id"]))  # the pause left work
        wait_for(
            lambda: Counter(i["profile"] for i in instances(c, "pjr-fleet")) == {"pjr-v2": 6},
            60,
            "six instances of the new build, and no other",
        )
        assert leads(b) and not leads(a)
        bg.check()


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


def test_a_push_goes_on_through_another_replica_when_its_own_dies(
    replicas: list[Server], tmp_path: Path
) -> None:
    """``changeover push --server a,b``: a dies (SIGKILL) with a file half uploaded; the
    push carries on through b from where the upload stands and completes."""
    a, b = replicas
    build = tmp_path / "build"
    build.mkdir()
    big = os.urandom(48 << 20)
    (build / "world.pak").write_bytes(big)
    (build / "game.txt").write_text("a game\n")
    part = tmp_path / "store" / "uploads" / f"{hashlib.sha256(big).hexdigest()}.part"
    ok(a.client().post("/images", json={"name": "pushed"}), 201)
    env = {**os.environ, "CHANGEOVER_URL": f"{a.url},{b.url}", "CHANGEOVER_TOKEN": a.admin_token}
    push = subprocess.Popen(
        [*CLI, "push", str(build), "--image", "pushed", "--label", "1.0", "--wait", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def upload() -> JobProgress:
        size = part.stat().st_size if part.exists() else 0
        done = size >= len(big) or (size == 0 and _stored(tmp_path, big))
        return JobProgress(started=size > 0, finished=done, done=size, detail=f"{size} B")

    at_kill = kill_mid_job(a.process, upload, "the upload", at=1, timeout_s=60)
    assert 0 < at_kill.done < len(big)
    out, err = push.communicate(timeout=120)
    assert push.returncode == 0, err
    update = json.loads(out)
    assert update["status_name"] == "Completed", update
    assert _stored(tmp_path, big)


def _stored(data: Path, content: bytes) -> bool:
    sha = hashlib.sha256(content).hexdigest()
    return (data / "store" / "content" / "blobs" / sha[:2] / sha).exists()
