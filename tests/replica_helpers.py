"""Helpers for the tests of several control-plane replicas (imported as
``replica_helpers``): who leads, and whether a job's actions were applied exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from fleet_helpers import ok
from patchjob_helpers import SimAgent, actions, events
from tests_helpers import Server


def role(srv: Server) -> dict[str, Any]:
    return dict(httpx.get(srv.url + "/readyz", timeout=5).json()["replica"])


def leads(srv: Server) -> bool:
    return bool(role(srv)["leader"])


def point(agents: list[SimAgent], client: httpx.Client, url: str) -> None:
    """The agents sync through ``client`` with the server at ``url`` from now on."""
    client.base_url = httpx.URL(url + "/api/v1")
    for a in agents:
        a.client = client


def finished(c: httpx.Client, job_id: int) -> Callable[[], Any]:
    def done() -> Any:
        got = ok(c.get(f"/patchjobs/{job_id}"))
        return got if got["status"] >= 7 else None

    return done


def assert_exactly_once(c: httpx.Client, job_id: int, fleet: str, old_profile: str) -> None:
    """Every action of the job applied once: one action event per key, each old instance
    stopped once, one new instance per start."""
    acts = actions(c, job_id)
    assert acts and all(a["applied_at"] is not None for a in acts)
    applied = Counter(e["data"]["key"] for e in events(c, job_id) if e["kind"] == "action")
    assert set(applied.values()) == {1}
    assert len(applied) == sum(1 for a in acts if a["action"]["type"] != "Finish")
    stops = Counter(
        a["action"]["instance_id"] for a in acts if a["action"]["type"] == "StopInstance"
    )
    assert set(stops.values()) == {1}
    everything = ok(c.get(f"/fleets/{fleet}/instances", params={"all": "true"}))
    starts = {a["key"] for a in acts if a["action"]["type"] == "StartInstance"}
    launched = Counter(i["launch_key"] for i in everything if i.get("launch_key") in starts)
    assert set(launched) == starts and set(launched.values()) == {1}
    assert {i["id"] for i in everything if i["profile"] == old_profile} >= set(stops)
