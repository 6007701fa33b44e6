"""The control plane killed with SIGKILL at random moments of the builds flow resumes it."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests_helpers import build_manifest, start_server, stop_server, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_jobs_resume_after_sigkill(db: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    os.environ["CHANGEOVER_JOB_LEASE_S"] = "1"
    url = request.getfixturevalue("pg_url") if db == "postgres" else None
    rng = random.Random(7)
    srv = start_server(tmp_path, url)
    token = srv.admin_token
    try:
        c = srv.client()
        c.post("/images", json={"name": "crashy"})
        for round_ in range(4):
            files = {f"f{i}": os.urandom(2000) + bytes([round_]) for i in range(20)}
            r = c.post(
                "/images/crashy/updates",
                json={"label": f"v{round_}", "manifest": build_manifest(files)},
            )
            upd = r.json()
            by_sha = {m["sha256"]: m for m in upd["missing"]}
            import hashlib

            for body in files.values():
                sha = hashlib.sha256(body).hexdigest()
                if sha in by_sha:
                    c.put(f"/uploads/{sha}", params={"offset": 0, "size": len(body)}, content=body)
            c.post(f"/updates/{upd['id']}/complete")
            diff = c.post("/images/crashy/diffs", json={"update_id": upd["id"]}).json()
            # Kill at a random instant while the update check and the diff run.
            srv = _crash_and_restart(srv, tmp_path, url, token, rng.uniform(0, 0.05))
            c = srv.client()
            done = _wait_done(c, f"/diffs/{diff['id']}")
            assert done["status_name"] == "Completed", done
            version = c.post(f"/diffs/{diff['id']}/accept").json()
            srv = _crash_and_restart(srv, tmp_path, url, token, rng.uniform(0, 0.05))
            c = srv.client()
            assert _wait_done(c, f"/versions/{version['id']}")["status_name"] == "Completed"
            image = c.get("/images/crashy").json()
            assert image["current_version"] == round_ + 1
            assert image["locked_by_diff"] is None
        versions = c.get("/images/crashy/versions").json()
        assert [v["number"] for v in versions] == [1, 2, 3, 4]
    finally:
        del os.environ["CHANGEOVER_JOB_LEASE_S"]
        stop_server(srv)


def _crash_and_restart(srv: Any, data: Path, url: str | None, token: str, delay: float) -> Any:
    import time

    time.sleep(delay)  # a random kill point, not a wait for anything
    srv.process.send_signal(signal.SIGKILL)
    srv.process.wait()
    srv.close()
    new = start_server(data, url)
    new.admin_token = token
    return new


def _wait_done(c: httpx.Client, path: str) -> Any:
    def done() -> Any:
        job = c.get(path).json()
        return job if job["status"] in (5, 6) else None

    return wait_for(done, 60, f"{path} to finish after a restart")
