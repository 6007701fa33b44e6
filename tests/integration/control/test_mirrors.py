"""Seed 000's mirror profiles against a real server, on SQLite and on PostgreSQL: a pair
of profiles takes turns at a branch's versions, a release is one call, and Server Allocate
by profile lands where the release put the new version.

Agents are ``FakeAgent``s: the real agent protocol over HTTP, without processes.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from fleet_helpers import FakeAgent, catalogue, ok, profile, release
from tests_helpers import wait_for

pytestmark = pytest.mark.timeout(180)


def _switched(c: httpx.Client, agent: FakeAgent, switch_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        agent.sync()
        sw = ok(c.get(f"/switches/{switch_id}"))
        return sw if sw["status"] in (5, 6) else None

    out: dict[str, Any] = wait_for(done, 60, f"switch {switch_id} to end")
    return out


def _allocate(c: httpx.Client, player: str, **where: str) -> httpx.Response:
    return c.post("/allocations", json={**where, "players": [player]})


def test_a_release_goes_to_the_idle_profile_and_back(server: Any) -> None:
    c = server.client()
    ok(c.post("/images", json={"name": "mirror"}), 201)
    for n in (1, 2, 3):
        release(c, "mirror", {"game": f"v{n}".encode()}, f"m{n}", executable=["game"])
    ok(c.put("/images/mirror/branches/production", json={"version": "1"}))
    catalogue(c, "mr")
    for name in ("mr-a", "mr-b"):
        profile(c, name, "mr-game", "mirror", "1", capacity=2)
    ok(
        c.post(
            "/fleets",
            json={
                "name": "mr-fleet",
                "application": "mr-game",
                "environment": "mr-prod",
                "hosts": ["mr-h1"],
                "instances_per_host": 2,
                "profile": "mr-a",
            },
        ),
        201,
    )
    agent = FakeAgent(server.client(server.token("agent")), "mr-h1", "mr-eu")
    agent.register()
    agent.sync(2)

    # Refusals: what a mirror pairs is checked, and nothing is made.
    same = c.post(
        "/mirrors",
        json={"name": "m", "image": "mirror", "branch": "production", "profiles": ["mr-a", "mr-a"]},
    )
    assert same.status_code == 400 and "two different profiles" in same.json()["message"]
    nobranch = c.post(
        "/mirrors",
        json={"name": "m", "image": "mirror", "branch": "qa", "profiles": ["mr-a", "mr-b"]},
    )
    assert nobranch.status_code == 404 and "no branch 'qa'" in nobranch.json()["message"]
    ok(c.post("/applications", json={"name": "mr-tool", "type": "utility"}), 201)
    profile(c, "mr-tool-a", "mr-tool", "mirror", "1")
    mixed = c.post(
        "/mirrors",
        json={
            "name": "m",
            "image": "mirror",
            "branch": "production",
            "profiles": ["mr-a", "mr-tool-a"],
        },
    )
    assert mixed.status_code == 400 and "different applications" in mixed.json()["message"]
    assert c.get("/mirrors/m").status_code == 404

    m = ok(
        c.post(
            "/mirrors",
            json={
                "name": "prod",
                "image": "mirror",
                "branch": "production",
                "profiles": ["mr-a", "mr-b"],
            },
        ),
        201,
    )
    assert [(p["profile"], p["role"]) for p in m["profiles"]] == [
        ("mr-a", "live"),
        ("mr-b", "idle"),
    ]
    assert (m["fleets"], m["up_to_date"]) == (["mr-fleet"], True)
    again = c.post(
        "/mirrors",
        json={
            "name": "p2",
            "image": "mirror",
            "branch": "production",
            "profiles": ["mr-b", "mr-c"],
        },
    )
    assert again.status_code == 404  # mr-c does not exist
    nothing = ok(c.post("/mirrors/prod/release", json={}))
    assert (nothing["released_from"], nothing["switches"]) == (None, [])

    # A player on the old version, then the branch moves on.
    busy = ok(_allocate(c, "ann", fleet="mr-fleet"), 201)
    assert busy["version"] == 1
    ok(c.put("/images/mirror/branches/production", json={"version": "2"}))
    assert ok(c.get("/mirrors/prod"))["up_to_date"] is False
    live = c.put("/profiles/mr-a/version", json={"version": "2"})
    assert live.status_code == 409 and "active profile of fleet(s) mr-fleet" in live.text

    out = ok(c.post("/mirrors/prod/release", json={"drain_s": 3600}), 201)
    assert (out["live"], out["released_from"], out["version"]) == ("mr-b", "mr-a", 2)
    assert [sw["to_profile"] for sw in out["switches"]] == ["mr-b"]
    b = ok(c.get("/profiles/mr-b"))
    assert b["version"] == 2 and b["rebound_by"] and b["rebound_at"]
    assert ok(c.get("/profiles/mr-a"))["version"] == 1
    assert _switched(c, agent, out["switches"][0]["id"])["status_name"] == "Completed"

    # Server Allocate by profile: the new profile's servers run version 2; the old one's
    # only server left drains its player and takes nobody new.
    by_b = ok(_allocate(c, "bob", profile="mr-b"), 201)
    assert (by_b["profile"], by_b["version"]) == ("mr-b", 2)
    assert by_b["instance_id"] != busy["instance_id"]
    assert _allocate(c, "cid", profile="mr-a").status_code == 409
    assert ok(_allocate(c, "dan", fleet="mr-fleet"), 201)["version"] == 2

    # The next release waits for the old profile's last server: it still has a player.
    ok(c.put("/images/mirror/branches/production", json={"version": "3"}))
    held = c.post("/mirrors/prod/release", json={})
    assert held.status_code == 409, held.text
    assert "mr-a cannot change version now: 1 of its instance(s) still run" in held.text
    assert ok(c.get("/profiles/mr-a"))["version"] == 1  # nothing half-done
    assert ok(c.get("/fleets/mr-fleet"))["profile"] == "mr-b"
    ok(c.delete(f"/sessions/{busy['session_id']}"))

    def old_stopped() -> bool:
        agent.sync()
        rows = ok(c.get("/fleets/mr-fleet/instances"))
        return all(r["profile"] == "mr-b" for r in rows)

    wait_for(old_stopped, 30, "the drained server to stop")
    back = ok(c.post("/mirrors/prod/release", json={}), 201)
    assert (back["live"], back["released_from"], back["version"]) == ("mr-a", "mr-b", 3)
    _switched(c, agent, back["switches"][0]["id"])
    assert ok(_allocate(c, "eve", profile="mr-a"), 201)["version"] == 3
    shown = ok(c.get("/mirrors/prod"))
    assert shown["up_to_date"] is True
    assert [(p["profile"], p["version"], p["role"]) for p in shown["profiles"]] == [
        ("mr-a", 3, "live"),
        ("mr-b", 2, "idle"),
    ]


def test_rebind_by_hand_and_the_cli(server: Any) -> None:
    if server.database_url is not None:
        pytest.skip("the CLI only speaks HTTP: once, on SQLite, is enough")
    c = server.client()
    ok(c.post("/images", json={"name": "mcli"}), 201)
    for n in (1, 2):
        release(c, "mcli", {"srv": f"v{n}".encode()}, f"c{n}", executable=["srv"])
    ok(c.put("/images/mcli/branches/staging", json={"version": "2"}))
    catalogue(c, "mc")
    profile(c, "mc-a", "mc-game", "mcli", "1", command=["srv"])
    profile(c, "mc-b", "mc-game", "mcli", "1", command=["srv"])
    ok(c.post("/images", json={"name": "other"}), 201)
    release(c, "other", {"x": b"x"}, "o1")
    wrong = c.put("/profiles/mc-b/version", json={"version": "o1"})
    assert wrong.status_code == 404  # "o1" is a label of another image
    assert ok(c.put("/profiles/mc-b/version", json={"version": "2"}))["version"] == 2
    assert ok(c.put("/profiles/mc-b/version", json={"version": "c1"}))["version"] == 1

    def cli(*args: str) -> str:
        r = server.cli(*args)
        assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}"
        return r.stdout

    out = cli(
        "mirror", "create", "stage", "--image", "mcli", "--branch", "staging",
        "--profiles", "mc-a,mc-b",
    )  # fmt: skip
    assert "mc-a v1 (unknown), mc-b v1 (unknown); no fleet yet" in out
    nofleet = server.cli("mirror", "release", "stage")
    assert nofleet.returncode == 4 and "no fleet runs a profile of mirror stage" in nofleet.stderr
    cli(
        "fleet", "create", "mc-fleet", "--app", "mc-game", "--env", "mc-prod",
        "--host", "mc-h1", "--per-host", "1", "--profile", "mc-b",
    )  # fmt: skip
    released = json.loads(cli("mirror", "release", "stage", "--drain", "10m", "--json"))
    assert (released["live"], released["version"]) == ("mc-a", 2)
    assert released["switches"][0]["drain_s"] == 600
    assert "mc-a v2 (live), mc-b v1 (idle); mc-fleet; up to date" in cli("mirror", "show", "stage")
    assert "stage" in cli("mirror", "list")
    switch_id = released["switches"][0]["id"]
    wait_for(lambda: ok(c.get(f"/switches/{switch_id}"))["status"] == 5, 30, "the switch")
    assert "profile mc-b: version 2" in cli("profile", "rebind", "mc-b", "--version", "2")
    busy = server.cli("profile", "rebind", "mc-a", "--version", "1")
    assert busy.returncode == 5 and "active profile of fleet(s) mc-fleet" in busy.stderr
