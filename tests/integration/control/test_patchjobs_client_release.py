"""A patch job that carries a client release (seed 002), through the API on SQLite and
PostgreSQL: the default client ranges allocation then applies, the branch moved only once
the old servers are gone, and the refusals of a release that cannot work."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from client_release_helpers import allocate, branch_version, client_image, compat, server_fleet
from fleet_helpers import ok
from patchjob_helpers import (
    actions,
    events,
    job_body,
    running,
    wait_done,
    wait_status,
)
from tests_helpers import Server, wait_for

pytestmark = pytest.mark.timeout(180)

SERVER_ENV = {"CHANGEOVER_PATCH_TICK_S": "0.1"}


def test_bleed_off_releases_the_client_after_the_old_servers(server: Server) -> None:
    c, agents = server_fleet(server, "crb", ["crb-h1", "crb-h2"])
    client_image(c, "crb-client")
    # A 1.4 player on an old server before the job: it keeps the old server alive until the
    # drain deadline, so the release has something to wait for.
    busy = ok(allocate(c, "crb-fleet", "early", "1.4"), 201)
    body = job_body(
        "crb",
        "bleed-off",
        client_release={"image": "crb-client", "branch": "production", "version": "1.5"},
    )
    body["drain"] = {"deadline_s": 6, "notice_before_s": [3]}
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=body), 201)
        assert job["client_release"] == {
            "image": "crb-client",
            "branch": "production",
            "version": 2,
            "client_version": "1.5",
            "compat": True,
            "branch_version": 1,
            "released": False,
        }
        wait_for(
            lambda: ok(c.get(f"/patchjobs/{job['id']}"))["phase"] == "bleed",
            60,
            "the bleed-off to begin",
        )
        # The default ranges, declared before any new server started: the new build takes
        # the released client and every older one, the old build nothing newer than 1.4.
        assert compat(c, "crb-srv", 2) == (None, "1.5")
        assert compat(c, "crb-srv", 1) == (None, "1.4")
        # A 1.5 client lands on a new server, never on the old one, even joining a friend.
        new = ok(allocate(c, "crb-fleet", "fresh", "1.5"), 201)
        assert new["profile"] == "crb-v2"
        friend = ok(allocate(c, "crb-fleet", "pal", "1.5", join_session=busy["session_id"]), 201)
        assert friend["instance_id"] != busy["instance_id"]
        assert "does not accept this client version" in (friend["note"] or "")
        # The old 1.4 client still plays: with its friend on the old server, or a new one.
        assert ok(allocate(c, "crb-fleet", "old", "1.4"), 201)["profile"] == "crb-v2"
        # While an old server runs, the client is not released.
        still = ok(c.get(f"/patchjobs/{job['id']}"))
        assert still["status_name"] == "Running", still["reason"]
        assert branch_version(c, "crb-client") == 1
        done = wait_done(c, job["id"], bg, timeout_s=90)
    assert done["status_name"] == "Completed", done["reason"]
    assert done["client_release"]["released"] is True
    assert branch_version(c, "crb-client") == 2
    history = ok(c.get("/images/crb-client/branches/production/history"))
    by_job = [e for e in history if e["actor"] == f"patchjob {job['id']}"]
    assert len(by_job) == 1, history
    # Recorded like every action: once, applied, after the last old server stopped.
    acts = actions(c, job["id"])
    kinds = [a["action"]["type"] for a in acts]
    assert kinds.count("ReleaseClient") == 1 and kinds.count("DeclareClientRange") == 1
    assert kinds.index("DeclareClientRange") < kinds.index("StartInstance")
    assert kinds[-2:] == ["ReleaseClient", "Finish"]
    rel = acts[kinds.index("ReleaseClient")]
    assert rel["applied_at"] is not None
    assert "moved from version 1 to version 2 (client 1.5)" in rel["result"]
    last_stop = max(a["recorded_at"] for a in acts if a["action"]["type"] == "StopInstance")
    assert rel["recorded_at"] >= last_stop
    said = [e["message"] for e in events(c, job["id"]) if e["kind"] == "action"]
    assert any(m.startswith("ReleaseClient branch production") for m in said), said


def test_refusals_of_a_client_release(server: Server) -> None:
    c, _agents = server_fleet(server, "crr", ["crr-h1"])
    client_image(c, "crr-client")
    release_of = {"image": "crr-client", "branch": "production", "version": "1.5"}

    def refused(status: int, **release: Any) -> dict[str, Any]:
        body = job_body("crr", "rolling", client_release={**release_of, **release})
        r = c.post("/patchjobs", json=body)
        assert r.status_code == status, r.text
        out: dict[str, Any] = r.json()
        return out

    assert "no version '9.9'" in refused(404, version="9.9")["message"]
    assert refused(404, image="nope")["error"] == "not_found"
    own = refused(400, image="crr-srv", version="2")
    assert own["field"] == "client_release.image"
    assert refused(400, branch="bad name!")["field"] == "client_release.branch"
    assert c.post(
        "/patchjobs", json=job_body("crr", "rolling", client_release={"image": "crr-client"})
    ).status_code in (400, 422)
    # The operator's own range on the new build refuses 1.5: the release could reach
    # nobody, so the job is refused unless compat is off (the operator's to manage).
    ok(c.put("/images/crr-srv/versions/2/compat", json={"client_max": "1.4"}))
    narrow = refused(400)
    assert narrow["field"] == "client_release"
    assert "crr-srv version 2" in narrow["message"] and "1.5" in narrow["message"]
    job = ok(
        c.post(
            "/patchjobs",
            json=job_body(
                "crr",
                "rolling",
                client_release={**release_of, "compat": False},
                scheduled_start=time.time() + 3600,
            ),
        ),
        201,
    )
    assert job["client_release"]["compat"] is False
    # Edits: the release can be changed or dropped before the lock, like any field.
    moved = ok(
        c.patch(
            f"/patchjobs/{job['id']}",
            json={"client_release": {**release_of, "version": "1", "compat": False}},
        )
    )
    assert (moved["client_release"]["version"], moved["client_release"]["client_version"]) == (
        1,
        "1.4",
    )
    dropped = ok(c.patch(f"/patchjobs/{job['id']}", json={"client_release": None}))
    assert dropped["client_release"] is None
    ok(c.post(f"/patchjobs/{job['id']}/cancel", json={"mode": "wrap_up"}))
    wait_status(c, job["id"], {10})
    # The CLI's flags give the same body.
    made = server.cli(
        "patchjob", "create", "--name", "crr cli", "--env", "crr-prod", "--app", "crr-game",
        "--method", "rolling", "--build", "crr-v1=crr-v2", "--fleet", "crr-fleet",
        "--start", "+1h", "--client-image", "crr-client", "--client-version", "1",
        "--no-client-compat", "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    by_cli = json.loads(made.stdout)
    assert by_cli["client_release"]["client_version"] == "1.4"
    assert by_cli["client_release"]["branch"] == "production"
    shown = server.cli("patchjob", "show", str(by_cli["id"]))
    assert "client release: crr-client/production -> version 1 (client 1.4), released" in (
        shown.stdout
    ), shown.stdout
    ok(c.post(f"/patchjobs/{by_cli['id']}/cancel", json={"mode": "wrap_up"}))


def test_a_failed_job_releases_nothing(server: Server) -> None:
    c, agents = server_fleet(server, "crf", ["crf-h1"], broken="crf-v2")
    client_image(c, "crf-client")
    body = job_body(
        "crf",
        "forced",
        client_release={"image": "crf-client", "branch": "production", "version": "1.5"},
    )
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=body), 201)
        done = wait_done(c, job["id"], bg, timeout_s=90)
    assert done["status_name"] == "Rolled back", done["reason"]
    assert "was not released" in done["reason"]
    assert done["client_release"]["released"] is False
    assert branch_version(c, "crf-client") == 1
    assert "ReleaseClient" not in [a["action"]["type"] for a in actions(c, job["id"])]
