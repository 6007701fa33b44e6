"""Metrics, request ids, JSON logs, liveness and readiness against a real server."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet_helpers import FakeAgent, catalogue, ok, profile, release
from tests_helpers import push_files, run_cli, start_server, stop_server, wait_for

pytestmark = pytest.mark.timeout(120)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    found = False
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
            found = True
    assert found, f"no sample {name}{labels} in /metrics"
    return total


def scrape(server: Any, token: str | None = None) -> str:
    r = httpx.get(
        server.url + "/metrics",
        headers={"Authorization": f"Bearer {token or server.admin_token}"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


@pytest.fixture(scope="module")
def world(server: Any) -> dict[str, Any]:
    """A fleet of 3 instances on one fake agent, with two allocations made."""
    c = server.client()
    ok(c.post("/images", json={"name": "obs"}), 201)
    release(c, "obs", {"bin/game": b"v1"}, "1.0")
    catalogue(c, "obs")
    profile(c, "obs-v1", "obs-game", "obs", "1.0", capacity=4)
    ok(
        c.post(
            "/fleets",
            json={
                "name": "obs-fleet",
                "application": "obs-game",
                "environment": "obs-prod",
                "hosts": ["obs-h1"],
                "instances_per_host": 3,
                "profile": "obs-v1",
            },
        ),
        201,
    )
    agent = FakeAgent(server.client(server.token("agent")), "obs-h1", "obs-eu")
    agent.register()
    agent.sync(2)
    for player in ("p1", "p2"):
        ok(c.post("/allocations", json={"fleet": "obs-fleet", "players": [player]}), 201)
    return {"agent": agent}


def test_metrics_need_a_token_and_report_the_fleet(server: Any, world: dict[str, Any]) -> None:
    assert httpx.get(server.url + "/metrics").status_code == 401
    viewer = server.token("viewer")
    text = scrape(server, viewer)
    labels = {"fleet": "obs-fleet", "region": "obs-eu", "profile": "obs-v1", "version": "1"}
    assert metric(text, "changeover_instances", **labels) == 3
    # Allocation fills the fullest instance with room first: both players share one.
    assert metric(text, "changeover_instances", **labels, state="allocated") == 1
    assert metric(text, "changeover_players", **labels) == 2
    assert metric(text, "changeover_hosts", region="obs-eu", state="alive") == 1
    assert metric(text, "changeover_jobs", kind="version", status="completed") >= 1
    assert metric(text, "changeover_job_runner_alive") == 1
    assert metric(text, "changeover_db_metrics_up") == 1


def test_counters_move_with_traffic(server: Any, world: dict[str, Any]) -> None:
    c = server.client()
    started = time.monotonic()
    before = scrape(server)
    ok(c.post("/allocations", json={"fleet": "obs-fleet", "players": ["p3"]}), 201)
    refused = c.post("/allocations", json={"fleet": "no-such-fleet", "players": ["p4"]})
    assert refused.status_code == 404
    world["agent"].sync()
    pushed = {"blob": b"x" * 5000}
    push_files(c, "obs", pushed, None)
    content = httpx.get(server.url + "/content/metadata/timestamp.json")
    assert content.status_code == 200
    after = scrape(server)

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("changeover_allocations_total", result="ok") == 1
    assert metric(after, "changeover_allocations_total", result="refused") >= 1
    assert grew("changeover_allocation_duration_seconds_count") >= 2
    # Both went through the allocator's batches (a refusal too); none had to run apart.
    assert grew("changeover_allocator_requests_total") == 2
    assert grew("changeover_allocator_batches_total", run="together") in (1, 2)
    assert metric(after, "changeover_allocator_batches_total", run="apart") == 0
    assert metric(after, "changeover_allocator_lost_races_total") == 0
    assert metric(after, "changeover_allocator_pending") == 0
    # The batches took some time, less than the test so far.
    assert 0 < grew("changeover_allocator_busy_seconds_total") < time.monotonic() - started
    assert grew("changeover_agent_heartbeats_total", result="ok") >= 1
    assert grew("changeover_upload_bytes_total") >= 5000
    assert metric(after, "changeover_content_bytes_total") >= len(content.content)
    assert metric(after, "changeover_content_request_duration_seconds_count") >= 1
    assert metric(after, "changeover_http_requests_total", route="/api/v1/allocations") >= 3


def test_request_ids_are_echoed_or_made(server: Any) -> None:
    headers = {"Authorization": f"Bearer {server.admin_token}", "X-Request-ID": "trace-42.a"}
    r = httpx.get(server.url + "/api/v1/whoami", headers=headers)
    assert r.headers["x-request-id"] == "trace-42.a"
    made = httpx.get(server.url + "/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    # A hostile id (too long, or with characters that would break a log line) is replaced.
    for bad in ("x" * 500, "a b\tc", 'quote"inject'):
        r = httpx.get(server.url + "/healthz", headers={"X-Request-ID": bad})
        assert r.headers["x-request-id"] != bad
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    # Errors carry one too, so a user's report can be found in the logs.
    r = httpx.get(server.url + "/api/v1/images", headers={"X-Request-ID": "denied-1"})
    assert (r.status_code, r.headers["x-request-id"]) == (401, "denied-1")


def test_healthz_and_readyz(server: Any) -> None:
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    r = httpx.get(server.url + "/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {
        "status": "ready",
        "checks": {"database": "ok", "migrations": "ok", "job_runner": "ok"},
        "replica": {
            "name": body["replica"]["name"],
            "leader": True,
            "term": 1,
            "can_lead": True,
            "runner": body["replica"]["runner"],
        },
    }
    assert body["replica"]["name"].endswith(server.url)  # host:pid and the URL it serves
    assert len(body["replica"]["runner"]) == 32


def test_readyz_says_what_is_wrong(tmp_path: Path) -> None:
    """A schema behind the code (someone restored an old backup) makes the server unready."""
    srv = start_server(tmp_path, None)
    try:
        db = sqlite3.connect(tmp_path / "changeover.db")
        (head,) = db.execute("select version_num from alembic_version").fetchone()
        with db:
            db.execute("update alembic_version set version_num = '0001'")
        r = httpx.get(srv.url + "/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "not ready"
        assert "schema at ['0001']" in body["checks"]["migrations"]
        assert body["checks"]["database"] == "ok"
        with db:
            db.execute("update alembic_version set version_num = ?", (head,))
        db.close()
        assert httpx.get(srv.url + "/readyz").status_code == 200
    finally:
        stop_server(srv)


def test_json_logs_carry_request_and_job_ids(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("CHANGEOVER_LOG_FORMAT", "json")
    srv = start_server(tmp_path, None)
    try:
        c = srv.client()
        headers = {"X-Request-ID": "json-log-1"}
        assert c.post("/images", json={"name": "logged"}, headers=headers).status_code == 201
        assert c.get("/images/nope", headers={"X-Request-ID": "json-log-2"}).status_code == 404
        push_files(c, "logged", {"f": b"data"}, None)

        def lines() -> list[dict[str, Any]]:
            out = []
            for raw in srv.log.read_text().splitlines():
                if raw.startswith("{"):
                    out.append(json.loads(raw))
            return out

        def logged() -> list[dict[str, Any]]:
            got = lines()
            by_request = [x for x in got if x.get("request_id") in ("json-log-1", "json-log-2")]
            by_job = [x for x in got if str(x.get("job_id", "")).startswith("update:")]
            return got if len(by_request) == 2 and by_job else []

        got = wait_for(logged, 30, "access and job lines in the JSON log")
        access = {x["request_id"]: x for x in got if x.get("logger") == "changeover.access"}
        assert access["json-log-1"]["status"] == 201
        assert access["json-log-1"]["path"] == "/api/v1/images"
        assert access["json-log-2"]["status"] == 404
        job = next(x for x in got if str(x.get("job_id", "")).startswith("update:"))
        assert job["level"] == "info" and "ran in" in job["message"]
        # Every line of the log is one JSON object (uvicorn's own lines included).
        non_json = [raw for raw in srv.log.read_text().splitlines() if not raw.startswith("{")]
        assert non_json == []
    finally:
        stop_server(srv)


def test_aggregate_endpoints_refuse_bad_input(server: Any, world: dict[str, Any]) -> None:
    c = server.client()
    summary = ok(c.get("/fleets/obs-fleet/summary"))
    assert summary["instances"] == 3
    assert summary["regions"][0]["region"] == "obs-eu"
    page = ok(c.get("/fleets/obs-fleet/instance-page", params={"limit": 2}))
    assert (page["total"], len(page["instances"])) == (3, 2)
    rest = ok(c.get("/fleets/obs-fleet/instance-page", params={"limit": 2, "offset": 2}))
    assert len(rest["instances"]) == 1
    only = ok(c.get("/fleets/obs-fleet/instance-page", params={"state": "allocated"}))
    assert only["total"] >= 1 and {i["state"] for i in only["instances"]} == {"allocated"}
    for params, status in [
        ({"limit": 100000}, 400),
        ({"limit": 0}, 400),
        ({"offset": -1}, 400),
        ({"limit": "lots"}, 422),
        ({"state": "x" * 5000}, 422),
    ]:
        r = c.get("/fleets/obs-fleet/instance-page", params=params)
        assert r.status_code == status, (params, r.text)
        assert r.json()["message"]
    assert c.get("/fleets/nope/summary").status_code == 404
    stats = ok(c.get("/stats/players", params={"window_s": 600, "buckets": 10}))
    series = {x["profile"]: x for x in stats["series"]}
    assert series["obs-v1"]["players"][-1] >= 2
    assert sum(series["obs-v1"]["allocations"]) >= 2
    for params in ({"window_s": 1}, {"buckets": 100000}, {"fleet": "nope"}):
        assert c.get("/stats/players", params=params).status_code in (400, 404)
    assert httpx.get(server.url + "/api/v1/fleets/obs-fleet/summary").status_code == 401


def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    out = run_cli("server", "--log-format", "xml", "--data", str(tmp_path))
    assert out.returncode == 3
    assert "the log format must be text or json, got 'xml'" in out.stderr
