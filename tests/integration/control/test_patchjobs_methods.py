"""Patch jobs run against a fleet of simulated agents, one test per method, on SQLite and
PostgreSQL: each job is driven to its end by the reconciler with fast knobs."""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from typing import Any

import pytest

from fleet_helpers import ok
from patchjob_helpers import (
    actions,
    events,
    instances,
    job_body,
    running,
    server_errors,
    two_build_fleet,
    wait_done,
    wait_status,
)
from tests_helpers import wait_for

pytestmark = pytest.mark.timeout(180)


SERVER_ENV = {"CHANGEOVER_PATCH_TICK_S": "0.1"}
"""The reconciler looks at jobs every 0.1 s in these servers (0.5 s by default)."""


def assert_moved(c: Any, prefix: str, job: dict[str, Any], n: int) -> None:
    assert job["status_name"] == "Completed", job
    live = list(instances(c, f"{prefix}-fleet"))
    assert Counter(i["profile"] for i in live) == {f"{prefix}-v2": n}, live
    assert ok(c.get(f"/fleets/{prefix}-fleet"))["profile"] == f"{prefix}-v2"
    acts = actions(c, job["id"])
    assert acts and all(a["applied_at"] is not None for a in acts)
    # Each applied action's outcome is stored with it (a stop says how it was stopped).
    assert all(a["result"] for a in acts), [a for a in acts if not a["result"]]
    stops = Counter(
        a["action"]["instance_id"] for a in acts if a["action"]["type"] == "StopInstance"
    )
    assert stops and max(stops.values()) == 1  # no instance stopped twice
    kinds = [e["kind"] for e in events(c, job["id"])]
    assert kinds[0] == "created" and kinds[-1] == "finished"
    assert {"status", "phase", "action"} <= set(kinds)


def test_forced(server: Any) -> None:
    c, agents = two_build_fleet(server, "pjf", ["pjf-h1", "pjf-h2"], per_host=1)
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=job_body("pjf", "forced")), 201)
        assert (job["method"], job["method_name"]) == (1, "Forced deployment")
        done = wait_done(c, job["id"], bg)
    assert_moved(c, "pjf", done, 2)
    assert done["progress"]["by_state"] == {"new": 2}
    stops = [a["action"] for a in actions(c, done["id"]) if a["action"]["type"] == "StopInstance"]
    assert {(s["signal"], s["timeout_s"]) for s in stops} == {("SIGTERM", 5)}


def test_rolling(server: Any) -> None:
    c, agents = two_build_fleet(server, "pjr", ["pjr-h1", "pjr-h2"], per_host=2)
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=job_body("pjr", "rolling")), 201)
        done = wait_done(c, job["id"], bg)
    assert_moved(c, "pjr", done, 4)


def _check_command(script: str) -> str:
    return shlex.join([sys.executable, "-c", script])


def test_ab_with_verify_holds_players_on_a_until_the_switch(server: Any) -> None:
    c, agents = two_build_fleet(server, "pjab", ["pjab-h1", "pjab-h2"], per_host=1)
    gate = server.data / "pjab-gate"
    # The check passes once the test opens the gate, and only with both new targets.
    verify = _check_command(
        "import os, sys, time, pathlib\n"
        f"gate = pathlib.Path({str(gate)!r})\n"
        "while not gate.exists(): time.sleep(0.05)\n"
        "targets = os.environ['CHANGEOVER_CHECK_TARGETS'].split(',')\n"
        "sys.exit(0 if len(targets) == 2 and all(':' in t for t in targets) else 3)\n"
    )
    body = job_body("pjab", "ab", ab={"verify_command": verify, "verify_timeout_s": 60})
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=body), 201)
        wait_for(lambda: ok(c.get(f"/patchjobs/{job['id']}"))["phase"] == "verify", 30, "verify")
        # B runs beside A, but allocation holds every new player on A (weight 0 for B).
        live = instances(c, "pjab-fleet")
        assert Counter(i["profile"] for i in live) == {"pjab-v1": 2, "pjab-v2": 2}
        for n in range(4):
            r = c.post("/allocations", json={"fleet": "pjab-fleet", "players": [f"p{n}"]})
            assert r.status_code == 201, r.text + server_errors(server)[-300:]
            got = r.json()
            assert got["profile"] == "pjab-v1"
            ok(c.delete(f"/sessions/{got['session_id']}"))
        gate.write_text("go")
        done = wait_done(c, job["id"], bg)
    assert_moved(c, "pjab", done, 2)
    checks = [e for e in events(c, done["id"]) if e["kind"] == "check"]
    assert len(checks) == 1 and checks[0]["data"]["passed"] is True
    # The job's weights are gone with it: the fleet allocates as before.
    got = ok(c.post("/allocations", json={"fleet": "pjab-fleet", "players": ["late"]}), 201)
    assert got["profile"] == "pjab-v2"


def test_ab_failed_verify_rolls_back(server: Any) -> None:
    c, agents = two_build_fleet(server, "pjabf", ["pjabf-h1"], per_host=2)
    body = job_body("pjabf", 3, ab={"verify_command": _check_command("raise SystemExit(7)")})
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=body), 201)
        done = wait_done(c, job["id"], bg)
        wait_for(
            lambda: Counter(i["profile"] for i in instances(c, "pjabf-fleet")) == {"pjabf-v1": 2},
            30,
            "the new instances to be stopped",
        )
    assert done["status_name"] == "Rolled back", done
    assert "verification" in done["reason"]
    assert ok(c.get("/fleets/pjabf-fleet"))["profile"] == "pjabf-v1"
    check = next(e for e in events(c, done["id"]) if e["kind"] == "check")
    assert check["data"]["passed"] is False and "exit status 7" in check["message"]


def test_bleed_off_keeps_players_until_they_leave_or_the_deadline(server: Any) -> None:
    c, agents = two_build_fleet(
        server, "pjb", ["pjb-h1", "pjb-h2"], per_host=1, regions=("eu", "us")
    )
    a1, a2 = agents
    # One player on each old instance: one leaves, the other stays past the deadline.
    on = {}
    for name, region in (("ann", "eu"), ("bob", "us")):
        body = {"fleet": "pjb-fleet", "players": [name], "regions": [f"pjb-{region}"]}
        on[name] = ok(c.post("/allocations", json=body), 201)
    for a in agents:
        for name, got in on.items():
            if got["host"] == a.name:
                a.players[got["instance_id"]] = [name]
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=job_body("pjb", "bleed-off")), 201)
        wait_for(lambda: ok(c.get(f"/patchjobs/{job['id']}"))["phase"] == "bleed", 30, "bleed")
        # New players go to the new build; a friend still joins the old server.
        new = ok(c.post("/allocations", json={"fleet": "pjb-fleet", "players": ["cat"]}), 201)
        assert new["profile"] == "pjb-v2"
        friend = ok(
            c.post(
                "/allocations",
                json={
                    "fleet": "pjb-fleet",
                    "players": ["dan"],
                    "join_session": on["ann"]["session_id"],
                },
            ),
            201,
        )
        assert friend["instance_id"] == on["ann"]["instance_id"] and friend["joined_friend"]
        ok(c.delete(f"/sessions/{friend['session_id']}"))
        ann_host = a1 if on["ann"]["host"] == a1.name else a2
        ann_host.players[on["ann"]["instance_id"]] = []  # ann leaves: her server stops
        done = wait_done(c, job["id"], bg)
    assert_moved(c, "pjb", done, 2)
    by_key = {a["key"]: a["action"] for a in actions(c, done["id"])}
    bob = on["bob"]["instance_id"]
    notices = [a for a in by_key.values() if a["type"] == "Notify" and a["instance_id"] == bob]
    assert notices, "bob's server got its shutdown notice before the deadline"
    bob_stop = next(
        a for a in by_key.values() if a["type"] == "StopInstance" and a["instance_id"] == bob
    )
    assert not bob_stop["require_empty"] and "deadline" in bob_stop["reason"]
    ann_stop = next(
        a
        for a in by_key.values()
        if a["type"] == "StopInstance" and a["instance_id"] == on["ann"]["instance_id"]
    )
    assert ann_stop["require_empty"]


def test_canary_then_promote(server: Any) -> None:
    c, agents = two_build_fleet(
        server, "pjc", ["pjc-h1", "pjc-h2"], per_host=2, regions=("eu", "us")
    )
    body = job_body("pjc", "canary", canary={"share": 0.25, "analysis_window_s": 0.5})
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=body), 201)
        done = wait_done(c, job["id"], bg)
    assert_moved(c, "pjc", done, 4)
    phases = [e["data"]["to"] for e in events(c, done["id"]) if e["kind"] == "phase"]
    # In order (a phase that ends hands over within the same pass, so some may be skipped).
    order = [p for p in phases if p in ("stage", "gate", "window", "promote")]
    assert order == ["stage", "gate", "window", "promote"], phases
    regions = {r["region"] for r in done["progress"]["regions"]}
    assert regions == {"pjc-eu", "pjc-us"}


def test_canary_waits_for_an_operator_without_auto_promote(server: Any) -> None:
    c, agents = two_build_fleet(server, "pjcw", ["pjcw-h1"], per_host=2)
    body = job_body(
        "pjcw", "canary", canary={"share": 0.5, "analysis_window_s": 0.2, "auto_promote": False}
    )
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=body), 201)
        assert c.post(f"/patchjobs/{job['id']}/resume").status_code == 409  # not paused yet
        paused = wait_status(c, job["id"], {5}, bg)
        assert "resume to promote" in paused["reason"]
        ok(c.post(f"/patchjobs/{job['id']}/resume"))
        done = wait_done(c, job["id"], bg)
    assert_moved(c, "pjcw", done, 2)
    assert "resume" in [e["kind"] for e in events(c, done["id"])]


def test_custom_steps(server: Any) -> None:
    c, agents = two_build_fleet(server, "pjx", ["pjx-h1", "pjx-h2"], per_host=1)
    steps = [
        {"kind": "start_new", "share": 1},
        {"kind": "wait_healthy", "timeout_s": 20},
        {"kind": "run_check", "command": _check_command("pass"), "timeout_s": 20},
        {"kind": "switch_allocation", "weight": 1},
        {"kind": "stop_old"},
    ]
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=job_body("pjx", "custom", steps=steps)), 201)
        done = wait_done(c, job["id"], bg)
    assert_moved(c, "pjx", done, 2)
    assert done["reason"] == "all 5 steps done"


def test_cancel_revert_and_wrap_up(server: Any) -> None:
    c, agents = two_build_fleet(server, "pjk", ["pjk-h1"], per_host=1)
    _c2, agents2 = two_build_fleet(server, "pjk2", ["pjk2-h1"], per_host=1)
    slow = _check_command("import time; time.sleep(60)")
    with running(agents + agents2) as bg:
        job = ok(c.post("/patchjobs", json=job_body("pjk", "ab", ab={"verify_command": slow})), 201)
        other = ok(
            c.post("/patchjobs", json=job_body("pjk2", "ab", ab={"verify_command": slow})), 201
        )
        for j in (job, other):
            wait_for(
                lambda j=j: ok(c.get(f"/patchjobs/{j['id']}"))["phase"] == "verify", 30, "verify"
            )
        assert c.post(f"/patchjobs/{job['id']}/cancel", json={"mode": "later"}).status_code == 400
        ok(c.post(f"/patchjobs/{job['id']}/cancel", json={"mode": "revert"}))
        ok(c.post(f"/patchjobs/{job['id']}/cancel", json={"mode": "revert"}))  # idempotent
        clash = c.post(f"/patchjobs/{job['id']}/cancel", json={"mode": "wrap_up"})
        assert clash.status_code == 409
        ok(c.post(f"/patchjobs/{other['id']}/cancel", json={"mode": "wrap_up"}))
        reverted = wait_done(c, job["id"], bg)
        wrapped = wait_done(c, other["id"], bg)
        wait_for(
            lambda: Counter(i["profile"] for i in instances(c, "pjk-fleet")) == {"pjk-v1": 1},
            30,
            "the reverted job's new instance to stop",
        )
    assert reverted["status_name"] == "Cancelled" and "reverted" in reverted["reason"]
    assert wrapped["status_name"] == "Cancelled" and "wrapped up" in wrapped["reason"]
    # Wrap-up leaves both sets running, as they were.
    assert Counter(i["profile"] for i in instances(c, "pjk2-fleet")) == {
        "pjk2-v1": 1,
        "pjk2-v2": 1,
    }
    assert c.post(f"/patchjobs/{job['id']}/cancel", json={"mode": "revert"}).status_code == 409
