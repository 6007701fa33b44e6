"""10,000 instances: the dashboard's aggregate endpoints and /metrics answer in full,
with a few dozen summary rows whatever the fleet's size.

The instances are written straight into the server's database (an agent protocol run for
10,000 instances would test the agents, not the reads); every read goes through the real
server over HTTP, on SQLite and PostgreSQL. How long these reads take is measured by
``bench/dashboard.py`` (BENCHMARKS.md), not limited here: a one-shot time limit on a
shared machine fails for the machine's load, not for the code.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from changeover.control.db import Database
from changeover.control.fleet.models import Fleet, Host, Instance, Profile
from fleet_helpers import FakeAgent, catalogue, ok, profile, release

pytestmark = pytest.mark.timeout(300)
N = 10_000
STATES = [
    ("running", "ready"),
    ("running", "starting"),
    ("draining", "ready"),
    ("running", "failed"),
]


@pytest.fixture(scope="module")
def big_fleet(server: Any) -> dict[str, Any]:
    c = server.client()
    ok(c.post("/images", json={"name": "big"}), 201)
    release(c, "big", {"bin/game": b"1"}, "1.0")
    release(c, "big", {"bin/game": b"2"}, "2.0")
    regions = ("eu", "us", "ap", "sa")
    catalogue(c, "big", regions)
    profile(c, "big-v1", "big-game", "big", "1", capacity=8)
    profile(c, "big-v2", "big-game", "big", "2", capacity=8)
    hosts = [f"big-h{i}" for i in range(20)]
    agent = server.client(server.token("agent"))
    for i, name in enumerate(hosts):
        FakeAgent(agent, name, f"big-{regions[i % 4]}").register()
    ok(
        c.post(
            "/fleets",
            json={
                "name": "big-fleet",
                "application": "big-game",
                "environment": "big-prod",
                "hosts": hosts,
                "instances_per_host": 1,
            },
        ),
        201,
    )
    db = Database(server.database_url or f"sqlite:///{server.data / 'changeover.db'}")
    try:
        with db.write() as s:
            write_instances(s)
    finally:
        db.dispose()
    return {"regions": regions}


def write_instances(s: Session) -> None:
    fleet = s.query(Fleet).filter_by(name="big-fleet").one()
    profiles = [s.query(Profile).filter_by(name=n).one() for n in ("big-v1", "big-v2")]
    hosts = s.query(Host).filter(Host.name.like("big-h%")).all()
    t = time.time()
    s.add_all(
        Instance(
            fleet_id=fleet.id,
            profile_id=profiles[i % 3 == 0].id,
            host_id=hosts[i % len(hosts)].id,
            capacity=8,
            players=i % 5,
            desired=STATES[i % 4][0],
            state=STATES[i % 4][1],
            port=20000 + i,
            created_at=t,
            updated_at=t,
        )
        for i in range(N)
    )


def get(c: httpx.Client, path: str, **params: Any) -> Any:
    r = c.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json() if "json" in r.headers["content-type"] else r.text


def test_summary_pages_and_metrics_of_10000_instances(
    server: Any, big_fleet: dict[str, Any]
) -> None:
    c = server.client()
    summary = get(c, "/fleets/big-fleet/summary")
    assert summary["instances"] == N
    assert {r["region"] for r in summary["regions"]} == {f"big-{r}" for r in big_fleet["regions"]}
    assert sum(p["instances"] for p in summary["profiles"]) == N
    groups = sum(len(r["groups"]) for r in summary["regions"])
    assert groups <= 4 * 2 * 6  # a few dozen rows, whatever the fleet's size

    page = get(c, "/fleets/big-fleet/instance-page", limit=100, offset=9_950)
    assert (page["total"], len(page["instances"])) == (N, 50)
    failed = get(c, "/fleets/big-fleet/instance-page", state="failed", region="big-sa")
    assert failed["total"] == sum(
        g["instances"]
        for r in summary["regions"]
        if r["region"] == "big-sa"
        for g in r["groups"]
        if g["state"] == "failed"
    )
    assert failed["total"] > 0

    metrics_client = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}
    )
    with metrics_client:
        text = get(metrics_client, "/metrics")
    samples = [
        x for x in text.splitlines() if x.startswith('changeover_instances{fleet="big-fleet"')
    ]
    assert sum(float(x.rsplit(" ", 1)[1]) for x in samples) == N
