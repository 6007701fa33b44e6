"""Drills on a build's way in, through the balancer (``make test-ha``): three replicas
behind HAProxy (``deploy/haproxy.cfg``) on one PostgreSQL and one data directory.

- A push by the real CLI, pointed at the balancer alone, through the SIGKILL of the leader
  while a file is half uploaded, then of the replica receiving a file (caught holding its
  part file open): the push resumes and completes, every file stored whole.
- A diff analysed, then the version accepted from it built, each through the SIGKILL of
  the replica running its job (caught at work by the job's row): another replica takes
  each job over once its lease runs out; the version is published with its patches.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import sqlalchemy

from changeover.client import ApiClient
from changeover.content.store import LocalStore
from crash_helpers import JobProgress, database
from fleet_helpers import ok
from replica_helpers import REPLICA, balanced_replicas, kill_the_one_at_work, leader, role
from tests_helpers import CLI, Server, push_files, release, wait_job

pytestmark = [pytest.mark.ha, pytest.mark.timeout(300), pytest.mark.slow]


def _holding(replicas: list[Server], path: Path) -> Server | None:
    """The live replica with ``path`` open (receiving an upload into it), if any."""
    for r in replicas:
        if r.process.poll() is not None:
            continue
        fds = Path(f"/proc/{r.process.pid}/fd")
        try:
            for fd in fds.iterdir():
                try:
                    if os.readlink(fd) == str(path):
                        return r
                except OSError:
                    continue  # closed while we looked
        except OSError:
            continue
    return None


def test_a_push_through_the_deaths_of_the_leader_and_of_its_receiver(
    cluster: tuple[str, list[Server]], tmp_path: Path
) -> None:
    balancer, replicas = cluster
    build = tmp_path / "build"
    build.mkdir()
    big = {name: os.urandom(40 << 20) for name in ("world.pak", "music.pak")}
    for name, content in big.items():
        (build / name).write_bytes(content)
    (build / "game.txt").write_text("a game\n")
    parts = {
        tmp_path / "store" / "uploads" / f"{hashlib.sha256(c).hexdigest()}.part": len(c)
        for c in big.values()
    }
    ok(replicas[0].client().post("/images", json={"name": "hap"}), 201)
    env = {**os.environ, "CHANGEOVER_URL": balancer, "CHANGEOVER_TOKEN": replicas[0].admin_token}
    push = subprocess.Popen(
        [*CLI, "push", str(build), "--image", "hap", "--label", "1.0", "--wait"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def midway(
        victim: Callable[[Path], Server | None],
    ) -> Callable[[], tuple[JobProgress, Server | None]]:
        """A look at the uploads: at work once a file is part uploaded and ``victim``
        names a replica to kill for it; finished once the push exited."""

        def look() -> tuple[JobProgress, Server | None]:
            sizes = {p: p.stat().st_size if p.exists() else 0 for p in parts}
            for p, size in sizes.items():
                if 0 < size < parts[p] and (who := victim(p)) is not None:
                    return JobProgress(True, False, size, f"{p.name}: {size} B"), who
            done = push.poll() is not None
            return JobProgress(False, done, 0, f"parts {sizes}, exit {push.returncode}"), None

        return look

    head = leader(replicas)
    try:
        first, killed = kill_the_one_at_work(
            replicas, midway(lambda _: head), "the push, for the leader", timeout_s=120
        )
        assert killed is head
        second, receiver = kill_the_one_at_work(
            replicas,
            midway(lambda p: _holding(replicas, p)),
            "the push, for its receiver",
            timeout_s=120,
        )
    finally:
        out, err = push.communicate(timeout=180)
    assert receiver is not head and second.done > 0
    print(f"killed the leader at {first.detail}, then a receiver at {second.detail}")
    assert push.returncode == 0, err
    assert "Completed" in out, out
    store = LocalStore(tmp_path / "store")
    for content in big.values():
        store.verify_blob(hashlib.sha256(content).hexdigest())  # whole, or IntegrityError


def test_a_diff_and_its_version_through_the_deaths_of_their_replicas(
    pg_url: str, tmp_path: Path
) -> None:
    env = {**REPLICA, "CHANGEOVER_JOB_LEASE_S": "3"}
    with balanced_replicas(pg_url, tmp_path, env) as (balancer, replicas), ExitStack() as stack:
        engine = stack.enter_context(database(pg_url, tmp_path))
        runners = {role(r)["runner"]: r for r in replicas}
        api = httpx.Client(
            base_url=balancer + "/api/v1",
            headers={"Authorization": f"Bearer {replicas[0].admin_token}"},
            timeout=60,
        )
        stack.callback(api.close)

        def at_work(table: str, job_id: int) -> Callable[[], tuple[JobProgress, Server | None]]:
            query = sqlalchemy.text(f"SELECT status, lease_owner FROM {table} WHERE id = :id")

            def look() -> tuple[JobProgress, Server | None]:
                with engine.connect() as c:
                    status, owner = c.execute(query, {"id": job_id}).one()
                seen = JobProgress(status == 4, status in (5, 6), 0, f"{table} {job_id}: {status}")
                return seen, runners.get(owner)

            return look

        # Many files make the diff's analysis long enough to be caught at work; a big one
        # makes the version's patch take a while to build.
        ok(api.post("/images", json={"name": "hav"}), 201)
        levels = [random.Random(n).randbytes(2048) for n in range(64)]
        world = random.Random(5).randbytes(24 << 20)
        v1 = {f"levels/{n:05}.lvl": levels[n % 64] for n in range(6000)}
        release(api, "hav", {**v1, "world.pak": world, "game": b"1"}, "v1")
        v2 = {f"levels/{n:05}.lvl": levels[(n + n // 7) % 64] for n in range(6000)}
        changed = world[: 12 << 20] + b"new level" + world[12 << 20 :]
        upd = push_files(api, "hav", {**v2, "world.pak": changed, "game": b"2"}, "v2")
        assert wait_job(api, f"/updates/{upd['id']}")["status"] == 5

        diff = ok(api.post("/images/hav/diffs", json={"update_id": upd["id"]}), 201)
        _, analyst = kill_the_one_at_work(replicas, at_work("diffs", diff["id"]), "the diff")
        # From here on through the CLI's client, as an operator's commands would go.
        cho = stack.enter_context(ApiClient(balancer, replicas[0].admin_token))
        analysed = cho.wait_job(f"/diffs/{diff['id']}", timeout_s=120)
        assert analysed["status"] == 5, analysed
        assert analysed["report"]["totals"]["changed"]["files"] == 5904  # 5,902 levels, world, game

        version = cho.post(f"/diffs/{diff['id']}/accept")
        _, builder = kill_the_one_at_work(
            replicas, at_work("versions", version["id"]), "the version build"
        )
        built = cho.wait_job(f"/versions/{version['id']}", timeout_s=120)
        assert built["status_name"] == "Completed", built
        with engine.connect() as c:
            owners = c.exec_driver_sql(
                f"SELECT (SELECT lease_owner FROM diffs WHERE id = {int(diff['id'])}),"
                f" (SELECT lease_owner FROM versions WHERE id = {int(version['id'])})"
            ).one()
        assert runners[owners[0]] is not analyst and runners[owners[1]] is not builder
        manifest = built["manifest_id"]
        index = cho.http.get(f"{balancer}/content/patches/index/{manifest}.json")
        assert index.status_code == 200, index.text
        assert index.json().get("patches") or index.json().get("method_patches"), index.text
