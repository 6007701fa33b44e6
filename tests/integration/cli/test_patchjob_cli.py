"""``changeover patchjob …`` as a user types it, against a real server (SQLite and
PostgreSQL) with simulated agents: the happy paths, ``--wait``, and every bad flag refused
with one clear line, a non-zero exit code, and nothing created."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from patchjob_helpers import FAST, running, two_build_fleet

pytestmark = pytest.mark.timeout(240)


SERVER_ENV = {"CHANGEOVER_PATCH_TICK_S": "0.1"}
"""The reconciler looks at jobs every 0.1 s in these servers (0.5 s by default)."""


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def refused(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """One ``error:`` line on stderr naming ``words``, exit ``code``, nothing on stdout."""
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    err = " ".join(result.stderr.split())
    assert err.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for w in words:
        assert w in err, err
    return err


def job_count(server: Any) -> int:
    return int(ok_json(server.cli("patchjob", "list", "--json"))["total"])


def flags(prefix: str, *extra: str) -> list[str]:
    return [
        "--name",
        f"{prefix} to v2",
        "--env",
        f"{prefix}-prod",
        "--app",
        f"{prefix}-game",
        "--build",
        f"{prefix}-v1={prefix}-v2",
        "--fleet",
        f"{prefix}-fleet",
        *extra,
    ]


def test_methods_and_statuses(server: Any) -> None:
    methods = ok_json(server.cli("patchjob", "methods", "--json"))
    assert [m["id"] for m in methods] == [1, 2, 3, 4, 5, 6]
    assert methods[0]["name"] == "Forced deployment"
    table = ok(server.cli("patchjob", "methods"))
    assert "Bleed-off" in table and "Canary" in table
    statuses = ok_json(server.cli("patchjob", "statuses", "--json"))
    assert {s["id"]: s["name"] for s in statuses}[10] == "Cancelled"
    assert "Rolled back" in ok(server.cli("patchjob", "statuses"))


def test_preview_per_region_creates_nothing(server: Any) -> None:
    two_build_fleet(server, "pcv", ["pcv-h1", "pcv-h2", "pcv-h3"], per_host=1, regions=("eu", "us"))
    before = job_count(server)
    selection = [
        "--env",
        "pcv-prod",
        "--app",
        "pcv-game",
        "--build",
        "pcv-v1=pcv-v2",
        "--fleet",
        "pcv-fleet",
    ]
    out = ok_json(server.cli("patchjob", "preview", *selection, "--json"))
    assert out["total"] == 3
    assert {r["region"]: r["instances"] for r in out["regions"]} == {"pcv-eu": 2, "pcv-us": 1}
    assert out["fleets"] == [{"fleet": "pcv-fleet", "instances": 3}]
    text = ok(server.cli("patchjob", "preview", *selection))
    assert "3 instance(s) would be moved" in text and "pcv-us" in text
    # create --preview: the same answer, and still no job.
    shown = ok(server.cli("patchjob", "create", *flags("pcv", "--method", "forced"), "--preview"))
    assert "3 instance(s) would be moved" in shown
    assert job_count(server) == before
    refused(server.cli("patchjob", "preview", "--env", "pcv-prod"), 3, "--application", "--fleet")


def test_create_show_list_update_cancel(server: Any) -> None:
    two_build_fleet(server, "pcs", ["pcs-h1", "pcs-h2"], per_host=1, regions=("eu", "us"))
    job = ok_json(
        server.cli(
            "patchjob",
            "create",
            *flags(
                "pcs",
                "--method",
                "bleed-off",
                "--start",
                "+1h",
                "--max-run-time",
                "2h",
                "--stop-signal",
                "sigint",
                "--stop-timeout",
                "20s",
                "--drain-deadline",
                "30m",
                "--notice-before",
                "10m,1m",
                "--comments",
                "fixes a number of bugs",
                "--email",
                "ops@example.com:progress",
                "--email",
                "boss@example.com",
            ),
            "--json",
        )
    )
    job_id = job["id"]
    assert (job["method"], job["method_name"]) == (4, "Bleed-off")
    assert job["status_name"] == "Scheduled"
    assert job["builds"][0]["old"] == "pcs-v1" and job["builds"][0]["new"] == "pcs-v2"
    assert job["fleets"] == ["pcs-fleet"]
    assert job["max_run_time_s"] == 7200
    assert job["stop"] == {"signal": "SIGINT", "timeout_s": 20}
    assert job["knobs"]["drain"]["deadline_s"] == 1800
    assert job["knobs"]["drain"]["notice_before_s"] == [600, 60]
    assert job["comments"] == "fixes a number of bugs"
    assert {(e["email"], e["progress"], e["result"]) for e in job["emails"]} == {
        ("ops@example.com", True, False),
        ("boss@example.com", True, True),
    }

    shown = ok(server.cli("patchjob", "show", str(job_id)))
    assert f"patch job {job_id} 'pcs to v2': Scheduled (1)" in shown
    assert "Bleed-off (4)" in shown and "pcs-v1 -> pcs-v2" in shown
    assert "progress by region" in shown and "pcs-eu" in shown and "pcs-us" in shown
    assert ok_json(server.cli("patchjob", "show", str(job_id), "--json"))["id"] == job_id
    members = ok_json(server.cli("patchjob", "show", str(job_id), "--instances", "--json"))
    assert members["instances"] and len(members["instances"]) == members["progress"]["total"]
    listed_members = ok(server.cli("patchjob", "show", str(job_id), "--instances"))
    for m in members["instances"]:
        assert m["host"] in listed_members and f"#{m['old']['id']}" in listed_members

    listed = ok_json(server.cli("patchjob", "list", "--json"))
    assert job_id in [j["id"] for j in listed["jobs"]]
    assert job_id in [
        j["id"]
        for j in ok_json(server.cli("patchjob", "list", "--status", "scheduled", "--json"))["jobs"]
    ]
    assert "pcs to v2" in ok(server.cli("patchjob", "list"))

    updated = ok_json(
        server.cli(
            "patchjob",
            "update",
            str(job_id),
            "--comments",
            "now with a canary",
            "--email",
            "ops@example.com:result",
            "--json",
        )
    )
    assert updated["comments"] == "now with a canary"
    assert [(e["email"], e["progress"], e["result"]) for e in updated["emails"]] == [
        ("ops@example.com", False, True)
    ]
    refused(server.cli("patchjob", "update", str(job_id), "--start", "+2m"), 3, "5 minutes")
    refused(server.cli("patchjob", "update", str(job_id)), 3, "nothing to change")
    refused(server.cli("patchjob", "cancel", str(job_id)), 3, "--revert or --wrap-up")
    refused(server.cli("patchjob", "show", "999999"), 4, "999999")

    # The command prints how the job ended, not the state it was in when asked.
    said = ok(server.cli("patchjob", "cancel", str(job_id), "--wrap-up"))
    assert f"patch job {job_id} 'pcs to v2': Cancelled (10)" in said, said
    assert ok_json(server.cli("patchjob", "show", str(job_id), "--json"))["status"] == 10
    kinds = [e["kind"] for e in ok_json(server.cli("patchjob", "events", str(job_id), "--json"))]
    assert kinds[0] == "created" and "updated" in kinds and "cancel" in kinds
    text = ok(server.cli("patchjob", "events", str(job_id)))
    assert "created" in text and "Cancelled" in text
    # Following a finished job prints what happened and ends at once: it did not complete.
    followed = server.cli("patchjob", "events", str(job_id), "--follow")
    assert followed.returncode == 1 and "Cancelled (10)" in followed.stdout


def test_create_from_a_file_and_wait_for_the_end(server: Any, tmp_path: Path) -> None:
    _, agents = two_build_fleet(server, "pcw", ["pcw-h1", "pcw-h2"], per_host=1)
    spec = tmp_path / "job.json"
    spec.write_text(
        json.dumps(
            {
                "name": "from the file",
                "environment": "pcw-prod",
                "application": "pcw-game",
                "method": "rolling",
                "builds": [{"old": "pcw-v1", "new": "pcw-v2"}],
                "fleets": ["pcw-fleet"],
                **FAST,
            }
        )
    )
    with running(agents):
        result = server.cli(
            "patchjob", "create", "--file", str(spec), "--name", "pcw rolling", "--wait"
        )
    out = ok(result)
    assert "'pcw rolling'" in out  # the flag overrode the file
    assert "created; following its events" in out
    assert "finished" in out
    assert "Completed (7)" in out.strip().splitlines()[-1]
    job = ok_json(server.cli("patchjob", "list", "--json"))["jobs"][0]
    assert (job["name"], job["method"], job["status_name"]) == ("pcw rolling", 2, "Completed")
    assert job["progress"]["by_state"] == {"new": 2}


def test_wait_exits_non_zero_when_the_job_rolls_back(server: Any) -> None:
    _, agents = two_build_fleet(server, "pcf", ["pcf-h1"], per_host=2)
    failing = shlex.join([sys.executable, "-c", "raise SystemExit(7)"])
    with running(agents):
        result = server.cli(
            "patchjob",
            "create",
            *flags("pcf", "--method", "ab", "--verify-command", failing),
            "--max-surge",
            "1",
            "--wait",
            "--json",
        )
    assert result.returncode == 1, result.stdout + result.stderr
    job = json.loads(result.stdout)
    assert job["status_name"] == "Rolled back"
    assert job["knobs"]["ab"]["verify_command"] == failing


def test_bad_input_is_refused_before_anything_is_created(server: Any, tmp_path: Path) -> None:
    two_build_fleet(server, "pcb", ["pcb-h1"], per_host=1)
    before = job_count(server)

    def create(*extra: str) -> subprocess.CompletedProcess[str]:
        return server.cli("patchjob", "create", *extra)

    refused(
        create(*flags("pcb", "--method", "sideways")),
        3,
        "unknown method 'sideways'",
        "bleed-off",
    )
    refused(
        create(
            "--name",
            "x",
            "--env",
            "pcb-prod",
            "--app",
            "pcb-game",
            "--method",
            "forced",
            "--build",
            "pcb-v1",
            "--fleet",
            "pcb-fleet",
        ),
        3,
        "--build 'pcb-v1' must read OLD=NEW",
    )
    refused(create(*flags("pcb", "--method", "forced", "--start", "+1m")), 3, "5 minutes")
    refused(create(*flags("pcb", "--method", "forced", "--start", "tomorrow")), 3, "ISO 8601")
    refused(
        create(*flags("pcb", "--method", "forced", "--email", "not-an-address")),
        3,
        "'not-an-address' is not an e-mail address",
    )
    refused(
        create(*flags("pcb", "--method", "forced", "--email", "ops@example.com:weekly")),
        3,
        "not weekly",
    )
    refused(create(*flags("pcb", "--method", "forced", "--max-run-time", "soon")), 3, "duration")
    refused(create(*flags("pcb", "--method", "forced", "--max-unavailable", "lots")), 3, "count")
    refused(create(*flags("pcb", "--method", "canary", "--canary-share", "150%")), 3, "100%")
    refused(
        create("--name", "only a name"),
        3,
        "missing --environment, --application, --method, --build OLD=NEW, --fleet",
    )
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    refused(create("--file", str(bad)), 3, "cannot read the job spec")
    # Caught by the server: names it does not know, a knob out of range.
    refused(create(*flags("pcb", "--method", "forced"), "--build", "nope=pcb-v2"), 4, "nope")
    refused(create(*flags("pcb", "--method", "forced", "--stop-signal", "SIGFOO")), 3, "SIGFOO")
    assert job_count(server) == before
