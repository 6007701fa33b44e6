"""The control plane killed with SIGKILL in the middle of each job of the builds flow (the
update check, the diff analysis, the version's publication) resumes it after a restart."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from crash_helpers import assert_landed_mid_job, build_job, database, kill_mid_job
from tests_helpers import Server, build_manifest, start_server, stop_server, wait_for

pytestmark = pytest.mark.timeout(300)
LEASE = {"CHANGEOVER_JOB_LEASE_S": "1"}
"""A dead worker's job goes back to the queue after 1 s (15 s by default)."""
FILES = 300
"""Enough files that each job runs for some milliseconds: long enough to be killed in."""


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_jobs_resume_after_sigkill_mid_job(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if db == "postgres" else None
    rng = random.Random(7)
    srv = start_server(tmp_path, url, env=LEASE)
    token = srv.admin_token
    try:
        with database(url, tmp_path) as engine:
            c = srv.client()
            c.post("/images", json={"name": "crashy"})
            # Two rounds: the first version publishes blobs only, the second patches too.
            for round_ in range(2):
                # Every file changes a little each round, so each version has patches to make.
                files = {f"f{i:03d}": rng.randbytes(2000) + bytes([round_]) for i in range(FILES)}
                upd = _push(c, files, f"v{round_}")
                srv = _kill_and_restart(srv, build_job(engine, "updates", upd), "update check")
                c = srv.client()
                assert _wait_done(c, f"/updates/{upd}")["status_name"] == "Completed"
                diff = c.post("/images/crashy/diffs", json={"update_id": upd}).json()["id"]
                srv = _kill_and_restart(srv, build_job(engine, "diffs", diff), "diff analysis")
                c = srv.client()
                done = _wait_done(c, f"/diffs/{diff}")
                assert done["status_name"] == "Completed", done
                version = c.post(f"/diffs/{diff}/accept").json()["id"]
                srv = _kill_and_restart(srv, build_job(engine, "versions", version), "publish")
                c = srv.client()
                assert _wait_done(c, f"/versions/{version}")["status_name"] == "Completed"
                image = c.get("/images/crashy").json()
                assert image["current_version"] == round_ + 1
                assert image["locked_by_diff"] is None
            versions = c.get("/images/crashy/versions").json()
            assert [v["number"] for v in versions] == [1, 2]
    finally:
        srv.admin_token = token
        stop_server(srv)


def _push(c: httpx.Client, files: dict[str, bytes], label: str) -> int:
    r = c.post("/images/crashy/updates", json={"label": label, "manifest": build_manifest(files)})
    assert r.status_code == 201, r.text
    upd = r.json()
    by_sha = {hashlib.sha256(b).hexdigest(): b for b in files.values()}
    for m in upd["missing"]:
        body = by_sha[m["sha256"]]
        put = c.put(
            f"/uploads/{m['sha256']}", params={"offset": 0, "size": len(body)}, content=body
        )
        assert put.status_code == 200, put.text
    assert c.post(f"/updates/{upd['id']}/complete").status_code == 200
    return int(upd["id"])


def _kill_and_restart(srv: Server, job: Any, what: str) -> Server:
    at_kill = kill_mid_job(srv.process, job, what)
    assert_landed_mid_job(at_kill, job(), what)
    srv.close()
    port = int(srv.url.rsplit(":", 1)[1])
    new = start_server(srv.data, srv.database_url, port=port, env=LEASE)
    new.admin_token = srv.admin_token
    return new


def _wait_done(c: httpx.Client, path: str) -> Any:
    def done() -> Any:
        job = c.get(path).json()
        return job if job["status"] in (5, 6) else None

    return wait_for(done, 60, f"{path} to finish after a restart")
