"""The fleet API against a real server process, on SQLite and on PostgreSQL.

Agents are ``FakeAgent``s here: the real agent protocol over HTTP, without processes.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import httpx
import pytest

from fleet_helpers import FakeAgent, catalogue, ok, profile, release

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def arena(server: Any) -> dict[str, Any]:
    """Image ``arena`` with versions 1 and 2, shared by the tests of this module."""
    c = server.client()
    ok(c.post("/images", json={"name": "arena"}), 201)
    v1 = release(c, "arena", {"bin/game": b"v1", "data": b"d"}, "1.0")
    v2 = release(c, "arena", {"bin/game": b"v2", "data": b"d"}, "2.0")
    return {"v1": v1, "v2": v2, "agent_token": server.token("agent")}


def agent_client(server: Any, arena: dict[str, Any]) -> httpx.Client:
    return server.client(arena["agent_token"])


def test_catalogue_and_its_refusals(server: Any, arena: dict[str, Any]) -> None:
    c = server.client()
    catalogue(c, "cat")
    assert ok(c.post("/applications", json={"name": "cat-tool"}), 201)["type"] is None
    assert ok(c.patch("/applications/cat-tool", json={"type": "utility"}))["type"] == "utility"
    fixed = c.patch("/applications/cat-tool", json={"type": "game"})
    assert fixed.status_code == 409
    assert "fixed once set" in fixed.json()["message"]
    assert c.post("/applications", json={"name": "x", "type": "toy"}).status_code == 400
    assert c.post("/environments", json={"name": "cat-prod"}).status_code == 409
    assert c.post("/regions", json={"name": "Bad Name"}).status_code == 400

    p = profile(c, "cat-a", "cat-game", "arena", "1.0", capacity=4)
    assert (p["version"], p["capacity"], p["health"]["type"]) == (1, 4, "sdk")
    missing = c.post(
        "/profiles",
        json={
            "name": "cat-b",
            "application": "cat-game",
            "image": "arena",
            "version": "1",
            "command": ["bin/nope"],
        },
    )
    assert missing.status_code == 400
    assert "'bin/nope' is not a file of version 1 of image arena" in missing.json()["message"]
    not_exec = c.post(
        "/profiles",
        json={
            "name": "cat-b",
            "application": "cat-game",
            "image": "arena",
            "version": "1",
            "command": ["bin/game"],
        },
    )
    assert not_exec.status_code == 400
    assert "not executable" in not_exec.json()["message"]
    bad_spec = c.post(
        "/profiles",
        json={
            "name": "cat-b",
            "application": "cat-game",
            "image": "arena",
            "command": ["x", "{prt}"],
        },
    )
    assert bad_spec.status_code == 400
    assert "unknown placeholder {prt}" in bad_spec.json()["message"]
    no_version = c.post(
        "/profiles",
        json={
            "name": "cat-b",
            "application": "cat-game",
            "image": "arena",
            "version": "9",
            "command": ["x"],
        },
    )
    assert no_version.status_code == 404

    fleet = {"name": "cat-fleet", "application": "cat-game", "environment": "nowhere"}
    unknown_env = c.post("/fleets", json=fleet)
    assert unknown_env.status_code == 404
    assert "unknown environment 'nowhere'" in unknown_env.json()["message"]
    other_app = c.post(
        "/fleets",
        json={**fleet, "environment": "cat-prod", "application": "cat-tool", "profile": "cat-a"},
    )
    assert other_app.status_code == 400
    assert "belongs to another application" in other_app.json()["message"]
    made = ok(c.post("/fleets", json={**fleet, "environment": "cat-prod", "hosts": ["h1"]}), 201)
    assert (made["profile"], made["hosts"], made["instances"]) == (None, ["h1"], {})
    unknown = c.get("/fleets/nope")
    assert unknown.status_code == 404
    assert "unknown fleet 'nope'" in unknown.json()["message"]
    assert "cat-fleet" in unknown.json()["message"]  # the known ones are listed

    compat = ok(c.put("/images/arena/versions/2/compat", json={"client_min": "2.0"}))
    assert (compat["client_min"], compat["client_max"]) == ("2.0", None)
    bad = c.put("/images/arena/versions/2/compat", json={"client_min": "3", "client_max": "2"})
    assert bad.status_code == 400
    ok(c.put("/images/arena/versions/2/compat", json={}))  # back to: any client


def test_agent_registration_rules(server: Any, arena: dict[str, Any]) -> None:
    c = server.client()
    ok(c.post("/regions", json={"name": "reg-eu"}), 201)
    agent = FakeAgent(agent_client(server, arena), "reg-h1", "reg-eu")
    assert agent.register()["alive"] is True

    wrong_token = httpx.post(
        server.url + "/api/v1/agents/register",
        json={"name": "reg-h1", "region": "reg-eu", "agent_uid": agent.uid},
        headers={"Authorization": "Bearer cho_1_" + "x" * 43},
    )
    assert wrong_token.status_code == 401
    viewer = server.client(server.token("viewer"))
    forbidden = viewer.post(
        "/agents/register", json={"name": "reg-h9", "region": "reg-eu", "agent_uid": "u" * 16}
    )
    assert forbidden.status_code == 403

    impostor = FakeAgent(agent_client(server, arena), "reg-h1", "reg-eu")
    held = impostor.client.post(
        "/agents/register", json={"name": "reg-h1", "region": "reg-eu", "agent_uid": impostor.uid}
    )
    assert held.status_code == 409
    assert "held by a live agent" in held.json()["message"]
    assert agent.sync()["instances"] == []  # the holder is not disturbed
    stolen = impostor.client.post(
        f"/agents/{agent.host_id}/sync", json={"agent_uid": impostor.uid, "instances": []}
    )
    assert stolen.status_code == 409

    again = agent.register()  # a restarted agent (same uid) is the same host
    assert again["id"] == agent.host_id
    unknown_region = FakeAgent(agent_client(server, arena), "reg-h2", "mars")
    r = unknown_region.client.post(
        "/agents/register", json={"name": "reg-h2", "region": "mars", "agent_uid": "u" * 16}
    )
    assert r.status_code == 404
    assert "unknown region 'mars'" in r.json()["message"]


def make_fleet(
    server: Any,
    arena: dict[str, Any],
    prefix: str,
    hosts: list[str],
    per_host: int,
    capacity: int,
) -> tuple[httpx.Client, list[FakeAgent]]:
    """A fleet of profile ``<prefix>-v1`` on fake agents, every instance ready."""
    c = server.client()
    catalogue(c, prefix)
    profile(c, f"{prefix}-v1", f"{prefix}-game", "arena", "1", capacity=capacity)
    ok(
        c.post(
            "/fleets",
            json={
                "name": f"{prefix}-fleet",
                "application": f"{prefix}-game",
                "environment": f"{prefix}-prod",
                "hosts": hosts,
                "instances_per_host": per_host,
                "profile": f"{prefix}-v1",
            },
        ),
        201,
    )
    agents = [FakeAgent(agent_client(server, arena), h, f"{prefix}-eu") for h in hosts]
    for a in agents:
        a.register()
        a.sync(2)
    return c, agents


def test_placement_allocation_and_sessions(server: Any, arena: dict[str, Any]) -> None:
    c, (a1, a2) = make_fleet(server, arena, "pl", ["pl-h1", "pl-h2"], per_host=2, capacity=2)
    instances = ok(c.get("/fleets/pl-fleet/instances"))
    assert len(instances) == 4
    assert {i["state"] for i in instances} == {"ready"}
    assert Counter(i["host"] for i in instances) == {"pl-h1": 2, "pl-h2": 2}

    got = ok(c.post("/allocations", json={"fleet": "pl-fleet", "players": ["ann"]}), 201)
    assert got["port"] == 20000 + got["instance_id"]
    assert got["session_id"].startswith("s_")
    # Pack: the next player joins the same (now fullest) instance.
    ben = ok(c.post("/allocations", json={"fleet": "pl-fleet", "players": ["ben"]}), 201)
    assert ben["instance_id"] == got["instance_id"]
    inst = ok(c.get(f"/instances/{got['instance_id']}"))
    assert (inst["state"], inst["players"]) == ("allocated", 2)

    owner = a1 if got["host"] == "pl-h1" else a2
    owner.players[got["instance_id"]] = ["ann", "ben"]
    owner.sync()
    assert ok(c.get(f"/sessions/{got['session_id']}"))["status"] == "connected"
    owner.players[got["instance_id"]] = ["ben"]  # ann leaves
    owner.sync()
    assert ok(c.get(f"/sessions/{got['session_id']}"))["status"] == "ended"
    assert ok(c.get(f"/instances/{got['instance_id']}"))["players"] == 1
    ended = ok(c.delete(f"/sessions/{ben['session_id']}"))
    assert ended["status"] == "ended"
    assert ok(c.delete(f"/sessions/{ben['session_id']}"))["status"] == "ended"  # idempotent
    assert ok(c.get(f"/instances/{got['instance_id']}"))["players"] == 0

    party = ok(c.post("/allocations", json={"fleet": "pl-fleet", "players": ["p", "q"]}), 201)
    friend = c.post(
        "/allocations",
        json={"fleet": "pl-fleet", "players": ["r"], "join_session": party["session_id"]},
    )
    assert ok(friend, 201)["instance_id"] != party["instance_id"]  # the friend's is full
    assert "full" in friend.json()["note"]

    for body, status, text in [
        ({"fleet": "nope", "players": ["a"]}, 404, "unknown fleet 'nope'"),
        ({"fleet": "pl-fleet", "players": ["a"], "regions": ["mars"]}, 404, "unknown region"),
        ({"fleet": "pl-fleet", "profile": "pl-v1", "players": ["a"]}, 400, "exactly one"),
        ({"fleet": "pl-fleet", "players": ["a"], "client_version": "1.x"}, 400, "numbers"),
        ({"fleet": "pl-fleet", "players": []}, 422, "players"),
        ({"fleet": "pl-fleet", "players": ["a"], "join_session": "s_nope"}, 404, "no session"),
        ({"fleet": "pl-fleet", "players": ["a", "b", "c"]}, 409, "full"),
    ]:
        r = c.post("/allocations", json=body)
        assert r.status_code == status, (body, r.text)
        assert text in r.json()["message"], r.text
    refusal = c.post("/allocations", json={"fleet": "pl-fleet", "players": ["a", "b", "c"]})
    assert refusal.json()["reason"] == "no_capacity"


def test_parallel_allocations_never_exceed_capacity(server: Any, arena: dict[str, Any]) -> None:
    c, _ = make_fleet(server, arena, "par", ["par-h1", "par-h2"], per_host=2, capacity=3)
    results: list[int] = []
    lock = threading.Lock()

    def player(n: int) -> None:
        with httpx.Client(base_url=server.url + "/api/v1", headers=c.headers, timeout=60) as own:
            r = own.post("/allocations", json={"fleet": "par-fleet", "players": [f"p{n}"]})
        with lock:
            results.append(r.status_code)

    threads = [threading.Thread(target=player, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(results) == {201: 12, 409: 18}
    players = [i["players"] for i in ok(c.get("/fleets/par-fleet/instances"))]
    assert players == [3, 3, 3, 3]


def test_client_versions_and_lost_hosts(server: Any, arena: dict[str, Any]) -> None:
    c, (a1,) = make_fleet(server, arena, "cv", ["cv-h1"], per_host=1, capacity=10)
    ok(c.put("/images/arena/versions/1/compat", json={"client_min": "1", "client_max": "1.9"}))
    try:
        assert ok(
            c.post(
                "/allocations",
                json={"fleet": "cv-fleet", "players": ["a"], "client_version": "1.2"},
            ),
            201,
        )
        future = c.post(
            "/allocations", json={"fleet": "cv-fleet", "players": ["b"], "client_version": "2.0"}
        )
        assert future.status_code == 409
        assert future.json()["reason"] == "client_too_new"
        old = c.post(
            "/allocations", json={"fleet": "cv-fleet", "players": ["b"], "client_version": "0.9"}
        )
        assert old.json()["reason"] == "client_update_required"
        assert "update the client" in old.json()["message"]
    finally:
        ok(c.put("/images/arena/versions/1/compat", json={}))
    a1.states = dict.fromkeys(a1.desired(), "starting")
    a1.sync()
    none = c.post("/allocations", json={"fleet": "cv-fleet", "players": ["c"]})
    assert none.json()["reason"] == "no_instance"


def test_fleet_update_scales_and_drains(server: Any, arena: dict[str, Any]) -> None:
    c, (a1,) = make_fleet(server, arena, "sc", ["sc-h1"], per_host=2, capacity=2)
    busy = ok(c.post("/allocations", json={"fleet": "sc-fleet", "players": ["a"]}), 201)
    ok(c.patch("/fleets/sc-fleet", json={"instances_per_host": 1}))
    a1.sync()
    desired = a1.desired()
    idle = next(i for i in desired if i != busy["instance_id"])
    assert desired == {busy["instance_id"]: "running", idle: "stopped"}
    a1.sync()  # the fake agent reports the stop; the stopped instance leaves the snapshot
    assert a1.desired() == {busy["instance_id"]: "running"}
    ok(c.patch("/fleets/sc-fleet", json={"hosts": []}))
    a1.sync()
    assert a1.desired() == {busy["instance_id"]: "draining"}
    inst = ok(c.get(f"/instances/{busy['instance_id']}"))
    assert inst["state"] == "draining"
    assert inst["drain_deadline"] > inst["created_at"] + 11 * 3600  # 12 h by default
    ok(c.delete(f"/sessions/{busy['session_id']}"))
    a1.sync()
    assert a1.desired() == {busy["instance_id"]: "stopped"}
    assert ok(c.get(f"/instances/{busy['instance_id']}"))["notice"]["reason"].startswith(
        "host removed from the fleet"
    )
