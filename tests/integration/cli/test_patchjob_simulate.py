"""``changeover patchjob simulate`` (issue 24) against a real server with simulated agents
and players on the fleet: the answer follows the fleet and the flags, every method can be
compared on it, nothing is created, and a body ``create`` refuses is refused alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from integration.cli.test_patchjob_cli import flags, job_count, ok, ok_json, refused
from patchjob_helpers import two_build_fleet

pytestmark = pytest.mark.timeout(240)

# Every session lasts 20 minutes, new players come once a minute on average.
PLAYERS = ["--arrivals", "0.0167", "--session", "1:20m"]


def test_simulate_answers_from_the_live_fleet_and_creates_nothing(server: Any) -> None:
    c, _agents = two_build_fleet(
        server, "pjs", ["pjs-h1", "pjs-h2"], per_host=2, regions=("eu", "us")
    )
    for p in ("ann", "bob", "cat"):
        assert (
            c.post("/allocations", json={"fleet": "pjs-fleet", "players": [p]}).status_code == 201
        )
    before = job_count(server)

    out = ok_json(
        server.cli(
            "patchjob",
            "simulate",
            *flags("pjs", "--method", "bleed-off", "--drain-deadline", "1h"),
            *PLAYERS,
            "--runs",
            "3",
            "--compare",
            "--json",
        )
    )
    assert out["fleet"] == {"instances": 4, "players": 3}
    assert out["model"]["source"] == "explicit"
    est = out["estimate"]
    assert est["runs"] == 3 and est["unfinished"] == 0
    first = est["first"]
    assert (first["method_name"], first["outcome_name"]) == ("Bleed-off", "Completed")
    assert first["selected"] == 4 and first["players_at_start"] == 3
    # Sessions of 20 minutes all end before a 1-hour deadline: a bleed-off kicks nobody,
    # and it cannot finish before the oldest session ends.
    assert first["kicked_at_deadline"] == 0 and first["kicked_by_stop"] == 0
    assert est["duration_p50_s"] is not None and 0 < est["duration_p50_s"] <= 3600 + 600
    assert set(first["region_finish_s"]) == {"pjs-eu", "pjs-us"}
    assert first["action_count"] == len(first["actions"]) > 0

    by_method = {r["method_name"]: r for r in out["methods"]}
    assert set(by_method) == {
        "Forced deployment",
        "Rolling update",
        "A/B deployment",
        "Bleed-off",
        "Canary",
    }
    assert all(r["outcome_name"] == "Completed" for r in by_method.values())
    # A forced deployment stops the old servers with their players on them.
    assert by_method["Forced deployment"]["kicked_by_stop"] >= 3
    # Same fleet, same seed: the same actions in the same order (their times follow the
    # sessions' ages, which grew between the two requests).
    again = ok_json(
        server.cli(
            "patchjob",
            "simulate",
            *flags("pjs", "--method", "bleed-off", "--drain-deadline", "1h"),
            *PLAYERS,
            "--runs",
            "3",
            "--compare",
            "--json",
        )
    )

    def steps(r: dict[str, Any]) -> list[tuple[str, int | None]]:
        return [(a["kind"], a["instance_id"]) for a in r["actions"]]

    assert steps(again["estimate"]["first"]) == steps(first)
    assert [steps(r) for r in again["methods"]] == [steps(r) for r in out["methods"]]

    shown = ok(server.cli("patchjob", "simulate", *flags("pjs", "--method", "forced"), *PLAYERS))
    assert "Forced deployment of 4 instance(s), 3 player(s) online" in shown
    assert "duration: p50" in shown and "players kicked" in shown
    assert "starts in" not in shown
    later = flags("pjs", "--method", "forced", "--start", "+2h")
    shown = ok(server.cli("patchjob", "simulate", *later, *PLAYERS))
    assert "starts in 2.0 h (its scheduled start)" in shown
    assert job_count(server) == before


def test_simulate_refuses_what_create_refuses(server: Any, tmp_path: Path) -> None:
    two_build_fleet(server, "pjr", ["pjr-h1"], per_host=1)
    before = job_count(server)
    bleed = flags("pjr", "--method", "bleed-off")
    # A fleet without session history and no player model: the answer says what to give.
    refused(server.cli("patchjob", "simulate", *bleed), 3, "ended sessions", "arrival")
    # The same body create refuses, refused with the same words.
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"method": "rolling", "rolling": {"max_unavailable": -3}}))
    created = refused(server.cli("patchjob", "create", "--file", str(spec), *flags("pjr")), 3)
    simulated = refused(
        server.cli("patchjob", "simulate", "--file", str(spec), *flags("pjr"), *PLAYERS), 3
    )
    assert simulated == created
    # An absurd player model names the field.
    refused(
        server.cli("patchjob", "simulate", *bleed, "--arrivals", "-1", "--session", "1:5m"),
        3,
        "arrivals_per_s",
    )
    refused(
        server.cli("patchjob", "simulate", *bleed, "--arrivals", "1", "--session", "0.5:5m"),
        3,
        "add up to 1",
    )
    refused(server.cli("patchjob", "simulate", *bleed, "--arrivals", "1"), 3, "--session")
    # Rates whose simulation would not end in a request's time: refused, not run for hours.
    flood = ["--arrivals", "1000", "--session", "1:1d", "--runs", "20", "--compare"]
    refused(server.cli("patchjob", "simulate", *bleed, *flood), 3, "players arrived")
    refused(server.cli("patchjob", "simulate", *bleed, *PLAYERS, "--runs", "0"), 3, "runs")
    refused(
        server.cli("patchjob", "simulate", *flags("pjx", "--method", "forced"), *PLAYERS),
        4,
        "pjx-prod",
    )
    assert job_count(server) == before
