"""The patch-job API: tables, creation and its refusals, edits and the edit lock,
scheduling and pre-staging, queueing behind an overlapping job, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fleet_helpers import ok, profile
from patchjob_helpers import events, job_body, running, two_build_fleet, wait_done, wait_status
from tests_helpers import wait_for

pytestmark = pytest.mark.timeout(180)


SERVER_ENV = {"CHANGEOVER_PATCH_TICK_S": "0.1"}
"""The reconciler looks at jobs every 0.1 s in these servers (0.5 s by default)."""


def test_tables_and_permissions(server: Any) -> None:
    viewer = server.client(server.token("viewer"))
    methods = ok(viewer.get("/patchjobs/methods"))
    assert [m["id"] for m in methods] == [1, 2, 3, 4, 5, 6]
    assert methods[0]["name"] == "Forced deployment"
    statuses = ok(viewer.get("/patchjobs/statuses"))
    assert {"id": 7, "name": "Completed"} in statuses
    stops = ok(viewer.get("/patchjobs/stop-methods"))
    assert stops[0] == {"id": 0, "name": "Hard kill", "signal": "SIGKILL"}
    assert viewer.post("/patchjobs", json={}).status_code == 403
    assert viewer.get("/patchjobs/999999").status_code == 404


def test_preview_and_bad_input(server: Any) -> None:
    c, _agents = two_build_fleet(server, "pja", ["pja-h1", "pja-h2"], per_host=2)
    ok(c.post("/applications", json={"name": "pja-other", "type": "game"}), 201)
    profile(c, "pja-alien", "pja-other", "pj-arena", "2")
    preview = ok(
        c.post(
            "/patchjobs/preview",
            json={
                "environment": "pja-prod",
                "application": "pja-game",
                "builds": [{"old": "pja-v1", "new": "pja-v2"}],
                "fleets": ["pja-fleet"],
            },
        )
    )
    assert preview["total"] == 4
    assert preview["regions"] == [{"region": "pja-eu", "instances": 4}]
    assert preview["fleets"] == [{"fleet": "pja-fleet", "instances": 4}]
    assert len(preview["instances"]) == 4 and preview["truncated"] is False
    assert {i["profile"] for i in preview["instances"]} == {"pja-v1"}

    base = job_body("pja", "rolling")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**base, "fleets": ["nope"]}, 404, "unknown fleet 'nope'"),
        ({**base, "builds": [{"old": "pja-v1", "new": "nope"}]}, 404, "unknown profile 'nope'"),
        (
            {**base, "builds": [{"old": "pja-v1", "new": "pja-alien"}]},
            400,
            "belongs to another application",
        ),
        ({**base, "environment": "mars"}, 404, "unknown environment 'mars'"),
        ({**base, "method": "teleport"}, 400, "unknown method 'teleport'"),
        ({**base, "method": 9}, 400, "unknown method 9"),
        ({**base, "scheduled_start": time.time() + 60}, 400, "at least 5 minutes"),
        ({**base, "max_run_time": -1}, 400, "max_run_time must be >= 0"),
        ({**base, "max_run_time": 1, "max_run_time_unit": "weeks"}, 400, "max_run_time_unit"),
        ({**base, "rolling": {"max_surge": "300%"}}, 400, "rolling.max_surge"),
        ({**base, "rolling": {"speed": 9}}, 400, "unknown field(s) speed"),
        ({**base, "stop": {"signal": "SIGSEGV"}}, 400, "stop.signal must be one of"),
        ({**base, "steps": [{"kind": "start_new"}]}, 400, "only for the custom method"),
        ({**base, "method": "custom", "steps": [{"kind": "fly"}]}, 400, "steps[0].kind"),
        ({**base, "emails": [{"email": "not-an-address"}]}, 400, "is not an e-mail address"),
        ({**base, "builds": [{"old": "pja-v1", "new": "pja-v1"}]}, 400, "both"),
        ({**base, "failure_threshold": 1.5}, 400, "failure_threshold"),
        ({**base, "colour": "red"}, 422, "colour"),
        ({**base, "name": "x" * 5000}, 422, "name"),
        ({**base, "fleets": ["f"] * 5000}, 422, "fleets"),
        ({**base, "comments": "c" * 20_000}, 422, "comments"),
        ({**base, "steps": [{"kind": "pause"}] * 500, "method": 6}, 422, "steps"),
        ({k: v for k, v in base.items() if k != "builds"}, 422, "builds"),
    ]
    for body, status, text in cases:
        r = c.post("/patchjobs", json=body)
        assert r.status_code == status, (text, r.text)
        assert text in r.json()["message"], (text, r.text)
    hostile = c.post(
        "/patchjobs",
        content=b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert hostile.status_code in (400, 413, 422)
    assert ok(c.get("/patchjobs", params={"status": 4}))["jobs"] == []


def test_scheduled_job_waits_prestages_and_locks_its_edits(server: Any) -> None:
    c, agents = two_build_fleet(server, "pjs", ["pjs-h1", "pjs-h2"], per_host=1)
    with running(agents) as bg:
        later = ok(
            c.post(
                "/patchjobs",
                json=job_body(
                    "pjs",
                    "forced",
                    scheduled_start=time.time() + 3600,
                    emails=[{"email": "ops@example.com", "progress": True, "result": True}],
                ),
            ),
            201,
        )
        assert later["status_name"] == "Scheduled" and later["edit_locked"] is False
        assert later["progress"] == {
            "total": 2,
            "by_state": {"old": 2},
            "regions": [{"region": "pjs-eu", "old": 2}],
        }
        # Far from its start: anything may change, the start time too (but not too soon).
        edited = ok(c.patch(f"/patchjobs/{later['id']}", json={"comments": "take two"}))
        assert edited["comments"] == "take two"
        too_soon = c.patch(f"/patchjobs/{later['id']}", json={"scheduled_start": time.time() + 10})
        assert too_soon.status_code == 400
        # Starting in just over 5 minutes: inside the pre-stage window at once.
        soon = ok(
            c.post(
                "/patchjobs",
                json={**job_body("pjs", "forced"), "scheduled_start": time.time() + 302},
            ),
            201,
        )
        # The two jobs overlap (same fleet and builds): the later one waits for the first.
        waiting = wait_status(c, later["id"], {2}, bg)
        assert waiting["waiting_for"] == [soon["id"]] and f"job {soon['id']}" in waiting["reason"]
        prestaging = wait_status(c, soon["id"], {3}, bg)
        assert prestaging["edit_locked"] is True
        # The new build is staged on both hosts before the start.
        manifests = wait_for(
            lambda: all(len(a.last.get("versions", [])) == 2 for a in agents) and agents,
            30,
            "both hosts to be asked to stage the new build",
        )
        assert manifests
        stage = [e for e in events(c, soon["id"]) if e["kind"] == "action"]
        assert len(stage) == 2 and all("StageBuild" in e["message"] for e in stage)
        locked = c.patch(f"/patchjobs/{soon['id']}", json={"name": "renamed", "comments": "x"})
        assert locked.status_code == 409
        assert locked.json()["fields"] == ["comments", "name"]
        assert "only emails can still change" in locked.json()["message"]
        mails = ok(
            c.patch(
                f"/patchjobs/{soon['id']}",
                json={"emails": [{"email": "dev@example.com", "progress": False, "result": True}]},
            )
        )
        assert [(e["email"], e["progress"]) for e in mails["emails"]] == [
            ("dev@example.com", False)
        ]
        # Cancelling before the start: it never runs; the waiting job moves up.
        ok(c.post(f"/patchjobs/{soon['id']}/cancel", json={"mode": "revert"}))
        cancelled = wait_done(c, soon["id"], bg)
        assert cancelled["status_name"] == "Cancelled" and "never ran" in cancelled["reason"]
        assert wait_status(c, later["id"], {1}, bg)["waiting_for"] == []
        ok(c.post(f"/patchjobs/{later['id']}/cancel", json={"mode": "wrap_up"}))
        wait_done(c, later["id"], bg)
    kinds = [e["kind"] for e in events(c, soon["id"])]
    assert kinds[0] == "created" and "cancel" in kinds and kinds[-1] == "finished"
    assert "updated" in kinds


def test_overlapping_running_job_blocks_the_next(server: Any) -> None:
    c, agents = two_build_fleet(server, "pjo", ["pjo-h1"], per_host=1)
    slow = "sleep 60"
    with running(agents) as bg:
        first = ok(
            c.post("/patchjobs", json=job_body("pjo", "ab", ab={"verify_command": slow})), 201
        )
        wait_for(lambda: ok(c.get(f"/patchjobs/{first['id']}"))["phase"] == "verify", 30, "verify")
        second = ok(c.post("/patchjobs", json=job_body("pjo", "forced")), 201)
        waiting = wait_status(c, second["id"], {2}, bg)
        assert waiting["waiting_for"] == [first["id"]]
        ok(c.post(f"/patchjobs/{first['id']}/cancel", json={"mode": "revert"}))
        assert wait_done(c, first["id"], bg)["status_name"] == "Cancelled"
        # Once the first is over, the second runs (from the state the revert left).
        done = wait_done(c, second["id"], bg)
    assert done["status_name"] == "Completed", done
    listed = ok(c.get("/patchjobs", params={"limit": 500}))
    assert {first["id"], second["id"]} <= {j["id"] for j in listed["jobs"]}
    assert listed["total"] == len(listed["jobs"])
    # A viewer reads the same list.
    seen = ok(server.client(server.token("viewer")).get("/patchjobs", params={"limit": 500}))
    assert seen["total"] == listed["total"]
    assert [j["id"] for j in seen["jobs"]] == [j["id"] for j in listed["jobs"]]


def test_max_run_time_finalizes_by_force(server: Any) -> None:
    c, agents = two_build_fleet(server, "pjm", ["pjm-h1"], per_host=1)
    seated = ok(c.post("/allocations", json={"fleet": "pjm-fleet", "players": ["eve"]}), 201)
    agents[0].players[seated["instance_id"]] = ["eve"]  # eve never leaves
    body = job_body(
        "pjm",
        "bleed-off",
        drain={"deadline_s": 600, "notice_before_s": [60]},
        max_run_time=3,
        max_run_time_unit="seconds",
    )
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=body), 201)
        assert job["max_run_time_s"] == 3
        done = wait_done(c, job["id"], bg)
    assert done["status_name"] == "Finalized by force", done
    assert "max run time of 3 s passed" in done["reason"]
    # Left as it is: eve's old server still drains, the new one serves, and the fleet's
    # active profile did not move (the job did not complete).
    states = {i["profile"]: i["desired"] for i in ok(c.get("/fleets/pjm-fleet/instances"))}
    assert states == {"pjm-v1": "draining", "pjm-v2": "running"}
    assert ok(c.get("/fleets/pjm-fleet"))["profile"] == "pjm-v1"


def test_each_instance_of_a_job_with_how_it_ended(server: Any) -> None:
    c, agents = two_build_fleet(server, "pji", ["pji-h1", "pji-h2"], per_host=1)
    for a in agents:
        a.report_exits = True
    viewer = server.client(server.token("viewer"))
    # Before its start: the instances it would take, all still old.
    later = ok(
        c.post(
            "/patchjobs",
            json=job_body("pji", "forced", scheduled_start=time.time() + 3600),
        ),
        201,
    )
    before = ok(viewer.get(f"/patchjobs/{later['id']}/instances"))
    assert before["total"] == 2
    assert [(m["state"], m["new"], m["revert"]) for m in before["instances"]] == [
        ("old", None, None)
    ] * 2
    assert {m["fleet"] for m in before["instances"]} == {"pji-fleet"}
    ok(c.post(f"/patchjobs/{later['id']}/cancel", json={"mode": "revert"}))

    job = ok(c.post("/patchjobs", json=job_body("pji", "forced")), 201)
    with running(agents) as bg:
        done = wait_done(c, job["id"], bg)
    assert done["status_name"] == "Completed", done
    page = ok(viewer.get(f"/patchjobs/{job['id']}/instances"))
    assert page["total"] == 2 and len(page["instances"]) == 2
    for m in page["instances"]:
        assert m["state"] is None  # over: the instances as they are, no verdict from now
        old, new = m["old"], m["new"]
        assert (old["id"], old["profile"], old["state"]) == (m["instance_id"], "pji-v1", "stopped")
        assert old["exit"] == {
            "how": "exited",
            "code": 0,
            "signal": None,
            "reason": "stop",
            "at": 1.0,
        }
        assert old["exit_text"] == "exited by itself with code 0 after it was asked to stop (stop)"
        assert (new["profile"], new["state"], new["exit"], new["exit_text"]) == (
            "pji-v2",
            "ready",
            None,
            None,
        )
        assert m["revert"] is None
    # Paged in the selection's order.
    second = ok(viewer.get(f"/patchjobs/{job['id']}/instances", params={"offset": 1, "limit": 1}))
    assert [m["instance_id"] for m in second["instances"]] == [page["instances"][1]["instance_id"]]
    assert viewer.get(f"/patchjobs/{job['id']}/instances?limit=0").status_code == 422
    assert viewer.get("/patchjobs/999999/instances").status_code == 404


def test_a_crash_in_a_job_says_what_the_game_last_logged(server: Any) -> None:
    c, agents = two_build_fleet(server, "pjc", ["pjc-h1"], per_host=1)
    error = "exited at once with code 1 (log /w/7.log: OSError: [Errno 98] address in use)"
    agents[0].crashes["pjc-v2"] = error
    job = ok(c.post("/patchjobs", json=job_body("pjc", "rolling")), 201)
    with running(agents) as bg:
        done = wait_done(c, job["id"], bg)
    assert done["status_name"] == "Rolled back", done
    crashed = [
        e["message"]
        for e in events(c, job["id"])
        if e["kind"] == "instance" and "crashed" in e["message"]
    ]
    assert crashed, events(c, job["id"])
    assert crashed[0].endswith(f"crashed (code 1) while meant to run: {error}"), crashed
