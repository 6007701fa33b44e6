"""The fleet API against a real server process, on SQLite and on PostgreSQL.

Agents are ``FakeAgent``s here: the real agent protocol over HTTP, without processes.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import sqlalchemy

from changeover.control.auth.services import TOKEN_CACHE_TTL_S
from changeover.control.fleet.schemas import AllocationOut, HostDesired
from fleet_helpers import FakeAgent, catalogue, ok, profile, release
from tests_helpers import wait_for

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


def test_a_matchmaker_token_allocates_and_nothing_more(server: Any, arena: dict[str, Any]) -> None:
    make_fleet(server, arena, "mm", ["mm-h1"], per_host=1, capacity=2)
    mm = server.client(server.token("matchmaker"))
    got = ok(mm.post("/allocations", json={"fleet": "mm-fleet", "players": ["ann"]}), 201)
    assert ok(mm.get(f"/sessions/{got['session_id']}"))["status"] == "reserved"
    assert ok(mm.delete(f"/sessions/{got['session_id']}"))["status"] == "ended"
    denied = mm.post("/environments", json={"name": "mm-env"})
    assert denied.status_code == 403, denied.text
    assert "admin" in denied.json()["message"]
    viewer = server.client(server.token("viewer"))
    refused = viewer.post("/allocations", json={"fleet": "mm-fleet", "players": ["ben"]})
    assert refused.status_code == 403, refused.text
    assert "matchmaker" in refused.json()["message"]  # names the scopes that may


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"fleet": "ln-fleet", "players": ["a"]}, 201),
        ({"fleet": "nope", "players": ["a"]}, 404),
        ({"fleet": "ln-fleet", "players": ["a", "b", "c", "d"]}, 409),
        ({"fleet": "ln-fleet", "profile": "ln-v1", "players": ["a"]}, 400),
        ({"fleet": "ln-fleet", "players": []}, 422),
        ({"fleet": "ln-fleet", "players": ["a"], "extra": 1}, 422),
        ({"fleet": "ln-fleet", "players": "a"}, 422),
        ([], 422),
        ("not json{", 422),
        ("", 422),
    ],
)
def test_the_allocation_lane_answers_as_the_route_does(
    server: Any, arena: dict[str, Any], body: Any, status: int
) -> None:
    # A new token's first call goes through FastAPI's route (the token is read from the
    # database), every later one through allocate_lane (cached): same answers.
    if not any(f["name"] == "ln-fleet" for f in ok(server.client().get("/fleets"))):
        make_fleet(server, arena, "ln", ["ln-h1"], per_host=1, capacity=3)
    mm = server.client(server.token("matchmaker"))
    send = (
        (lambda: mm.post("/allocations", content=body))
        if isinstance(body, str)
        else (lambda: mm.post("/allocations", json=body))
    )
    route, lane = send(), send()
    assert (route.status_code, lane.status_code) == (status, status), (route.text, lane.text)
    assert route.headers["content-type"] == lane.headers["content-type"] == "application/json"
    assert route.headers["x-request-id"] and lane.headers["x-request-id"]
    first, second = route.json(), lane.json()
    if status == 201:
        # Neither is validated on its way out (the fast path): both are what the schema says.
        AllocationOut.model_validate(first)
        AllocationOut.model_validate(second)
        assert first["session_id"] != second["session_id"]
        del first["session_id"], second["session_id"]
        assert first == second  # the same instance: packed
    else:
        assert set(first) == set(second) and first["error"] == second["error"]
        if status != 422:  # the framework words a malformed body its own way
            assert first == second


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("current", 200),
        ("unknown host", 404),
        ("another agent", 409),
        ("malformed", 422),
        ("extra field", 422),
        ("not json", 422),
        ("viewer", 403),
    ],
)
def test_the_sync_lane_answers_as_the_route_does(
    server: Any, arena: dict[str, Any], case: str, status: int
) -> None:
    # A new token's first call goes through FastAPI's route (the token is read from the
    # database), every later one through fleet.lanes (cached): same answers.
    prefix = "sl-" + case.replace(" ", "-")
    _, (agent,) = make_fleet(server, arena, prefix, [f"{prefix}-h1"], per_host=1, capacity=3)
    assert agent.host_id is not None
    c = server.client(server.token("viewer" if case == "viewer" else "agent"))
    path = f"/agents/{agent.host_id + 10_000 if case == 'unknown host' else agent.host_id}/sync"
    body: Any = {"agent_uid": "someone-else" if case == "another agent" else agent.uid}
    body = {
        "malformed": {"agent_uid": 5},
        "extra field": {**body, "extra": 1},
    }.get(case, body)
    send = (
        (lambda: c.post(path, content="not json{"))
        if case == "not json"
        else (lambda: c.post(path, json=body))
    )
    route, lane = send(), send()
    assert (route.status_code, lane.status_code) == (status, status), (route.text, lane.text)
    assert route.headers["content-type"] == lane.headers["content-type"] == "application/json"
    first, second = route.json(), lane.json()
    if status == 200:
        HostDesired.model_validate(first)
        HostDesired.model_validate(second)
        assert first["instances"] == second["instances"]
    else:
        assert set(first) == set(second) and first["error"] == second["error"]
        if status != 422:  # the framework words a malformed body its own way
            assert first == second


def test_the_allocation_lane_keeps_the_edges(server: Any, arena: dict[str, Any]) -> None:
    viewer = server.client(server.token("viewer"))
    for _ in range(2):  # the route, then the lane: both refuse a viewer, naming the scope
        refused = viewer.post("/allocations", json={"fleet": "x", "players": ["a"]})
        assert refused.status_code == 403 and "matchmaker" in refused.json()["message"]
    mm = server.client(server.token("matchmaker"))
    assert mm.post("/allocations", json={"fleet": "nope", "players": ["a"]}).status_code == 404
    before = _refusals(server)
    huge = mm.post("/allocations", json={"fleet": "nope", "players": ["a" * 100] * 100_000})
    assert huge.status_code == 422 and "players" in huge.json()["message"]
    assert mm.post("/allocations", json={"fleet": "nope", "players": ["a"]}).status_code == 404
    assert _refusals(server) == before + 2  # the lane's answers are counted, by route
    # A revoked token is refused at once, not served from the cache.
    token = server.token("matchmaker")
    own = server.client(token)
    assert own.post("/allocations", json={"fleet": "nope", "players": ["a"]}).status_code == 404
    token_id = int(token.split("_")[1])
    ok(server.client().delete(f"/tokens/{token_id}"))
    revoked = own.post("/allocations", json={"fleet": "nope", "players": ["a"]})
    assert revoked.status_code == 401, revoked.text


def test_a_token_revoked_elsewhere_is_refused_by_the_lane_within_the_bound(
    server: Any, arena: dict[str, Any]
) -> None:
    # Another server process (or a database edit) revokes a token this server keeps
    # answering from its cache, in steady use: refused within TOKEN_CACHE_TTL_S.
    import sqlalchemy

    token = server.token("matchmaker")
    mm = server.client(token)
    body = {"fleet": "nope", "players": ["a"]}
    assert mm.post("/allocations", json=body).status_code == 404  # the route, then cached
    url = server.database_url or f"sqlite:///{server.data / 'changeover.db'}"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(
                sqlalchemy.text("UPDATE tokens SET revoked_at = :t WHERE id = :id"),
                {"t": time.time(), "id": int(token.split("_")[1])},
            )
    finally:
        engine.dispose()
    answers: list[int] = []

    def refused() -> bool:
        answers.append(mm.post("/allocations", json=body).status_code)
        return answers[-1] == 401

    # The bound itself (refused once TOKEN_CACHE_TTL_S has passed, not before) is checked
    # on a fake clock in tests/unit/control/test_token_cache.py; a wall-clock limit here
    # would fail for a busy machine. This checks that the server's requests go through
    # that cache: served until it lapses, then refused.
    wait_for(refused, timeout_s=TOKEN_CACHE_TTL_S * 10, what="the revoked token refused")
    assert set(answers[:-1]) <= {404}, answers  # served from the cache until then, unharmed


def _refusals(server: Any) -> float:
    r = httpx.get(
        server.url + "/metrics", headers={"Authorization": f"Bearer {server.admin_token}"}
    )
    total = 0.0
    for line in r.text.splitlines():
        if line.startswith("changeover_allocations_total{") and 'result="refused"' in line:
            total += float(line.split()[-1])
        if line.startswith("changeover_http_requests_total{") and "/api/v1/allocations" in line:
            assert 'route="/api/v1/allocations"' in line, line
    return total


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


def wait_switch(c: httpx.Client, agents: list[FakeAgent], switch_id: int) -> Any:
    """Drive the fake agents until the switch job ends; returns its final state."""

    def done() -> Any:
        for a in agents:
            a.sync()
        sw = ok(c.get(f"/switches/{switch_id}"))
        return sw if sw["status"] in (5, 6) else None

    return wait_for(done, 60, f"switch {switch_id} to end")


def test_profile_switch_rolls_idle_first_and_drains_busy(
    server: Any, arena: dict[str, Any]
) -> None:
    c, (a1,) = make_fleet(server, arena, "sw", ["sw-h1"], per_host=2, capacity=2)
    assert c.get("/fleets/sw-fleet/switch").status_code == 404
    profile(c, "sw-v2", "sw-game", "arena", "2", capacity=2)
    busy = ok(c.post("/allocations", json={"fleet": "sw-fleet", "players": ["a"]}), 201)
    sw = ok(c.post("/fleets/sw-fleet/switch", json={"profile": "sw-v2", "drain_s": 3600}), 201)
    assert (sw["from_profile"], sw["to_profile"], sw["total"]) == ("sw-v1", "sw-v2", 2)
    again = c.post("/fleets/sw-fleet/switch", json={"profile": "sw-v1"})
    assert again.status_code == 409
    assert f"being switched by switch {sw['id']}" in again.json()["message"]
    final = wait_switch(c, [a1], sw["id"])
    assert final["status_name"] == "Completed", final
    assert final["moved"] == 2
    assert ok(c.get("/fleets/sw-fleet/switch"))["id"] == sw["id"]
    rows = {i["id"]: i for i in ok(c.get("/fleets/sw-fleet/instances"))}
    # The instance with a player drains (no new players, notice before its deadline);
    # the idle one was simply stopped; two v2 instances run.
    assert rows[busy["instance_id"]]["state"] == "draining"
    assert sorted(i["profile"] for i in rows.values() if i["desired"] == "running") == [
        "sw-v2",
        "sw-v2",
    ]
    nxt = ok(c.post("/allocations", json={"fleet": "sw-fleet", "players": ["b"]}), 201)
    assert nxt["version"] == 2
    friend = c.post(
        "/allocations",
        json={"fleet": "sw-fleet", "players": ["c"], "join_session": busy["session_id"]},
    )
    assert ok(friend, 201)["instance_id"] == busy["instance_id"]  # a friend may still join
    assert friend.json()["joined_friend"] is True
    # Completed, and its status says what still runs the old build: the draining instance,
    # its players, its deadline; until the players leave and it has stopped.
    assert final["retiring"] == {
        "instances": 1,
        "players": 1,
        "deadline": rows[busy["instance_id"]]["drain_deadline"],
    }
    assert ok(c.get(f"/switches/{sw['id']}"))["retiring"]["players"] == 2
    for session in (busy, friend.json()):
        ok(c.delete(f"/sessions/{session['session_id']}"))

    def retired() -> bool:
        a1.sync()
        return ok(c.get(f"/switches/{sw['id']}"))["retiring"]["instances"] == 0

    wait_for(retired, 30, "the drained instance to stop")
    assert ok(c.get(f"/switches/{sw['id']}"))["retiring"] == {
        "instances": 0,
        "players": 0,
        "deadline": None,
    }


def test_failed_switch_reverts_the_fleet(server: Any, arena: dict[str, Any]) -> None:
    c, (a1,) = make_fleet(server, arena, "sf", ["sf-h1"], per_host=1, capacity=2)
    profile(c, "sf-v2", "sf-game", "arena", "2")
    other = c.post("/fleets/sf-fleet/switch", json={"profile": "cat-a"})
    assert other.status_code in (400, 404)
    sw = ok(c.post("/fleets/sf-fleet/switch", json={"profile": "sf-v2"}), 201)
    old = set(a1.desired())
    new = wait_for(lambda: set(a1.sync() and a1.desired()) - old, 30, "the replacement").pop()
    a1.states[new] = "failed"
    final = wait_switch(c, [a1], sw["id"])
    assert final["status_name"] == "Failed"
    assert f"replacement instance {new} on sf-h1 failed" in final["error"]
    assert ok(c.get("/fleets/sf-fleet"))["profile"] == "sf-v1"  # reverted
    assert ok(c.get(f"/instances/{new}"))["desired"] == "stopped"


def test_cli_walkthrough(server: Any, arena: dict[str, Any]) -> None:
    if server.database_url is not None:
        pytest.skip("the CLI only speaks HTTP: once, on SQLite, is enough")

    def cli(*args: str) -> str:
        r = server.cli(*args)
        assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}"
        return r.stdout

    c = server.client()
    catalogue(c, "cli")
    assert "profile cli-v1: version 1 of arena" in cli(
        "profile", "create", "cli-v1", "--app", "cli-game", "--image", "arena", "--version",
        "1", "--command", "game --port {port}", "--capacity", "3", "--health", "tcp",
        "--env", "MODE=ranked",
    )  # fmt: skip
    shown = ok(c.get("/profiles/cli-v1"))
    assert shown["env"] == {"MODE": "ranked"} and shown["health"]["type"] == "tcp"
    cli(
        "fleet", "create", "cli-fleet", "--app", "cli-game", "--env", "cli-prod",
        "--host", "cli-h1", "--per-host", "1", "--profile", "cli-v1",
    )  # fmt: skip
    agent = FakeAgent(agent_client(server, arena), "cli-h1", "cli-eu")
    agent.register()
    agent.sync(2)
    out = json.loads(cli("allocate", "--fleet", "cli-fleet", "--player", "ann", "--json"))
    assert out["port"] and out["host"] == "cli-h1"
    assert "allocated" in cli("fleet", "show", "cli-fleet")
    assert "ended" in cli("session", "end", out["session_id"])
    cli("compat", "set", "--image", "arena", "--version", "1", "--client-max", "1.9")
    agent.sync()  # a heartbeat: each CLI run takes a while, and a silent host is lost
    refused = server.cli(
        "allocate", "--fleet", "cli-fleet", "--player", "bob", "--client-version", "2.0"
    )
    assert refused.returncode == 5
    assert "no server accepts this client version yet" in refused.stderr
    ok(c.put("/images/arena/versions/1/compat", json={}))
    unknown = server.cli("fleet", "show", "nope")
    assert unknown.returncode == 4 and "unknown fleet 'nope'" in unknown.stderr


def test_a_sync_answered_late_counts_from_when_the_agent_called(
    server: Any, arena: dict[str, Any]
) -> None:
    """The control plane busy (its database held by another writer for 3 s): the agent's
    heartbeat is the time its call arrived, so a slow answer never makes its host look
    lost for longer than it really was silent."""
    if server.database_url is not None:
        pytest.skip(
            "only SQLite makes the server wait before its write transaction starts (another"
            " writer holds the file); on PostgreSQL a lock is met inside the transaction"
        )
    c = server.client()
    ok(c.post("/regions", json={"name": "late-eu"}), 201)
    agent = FakeAgent(agent_client(server, arena), "late-h1", "late-eu")
    agent.register()
    url = f"sqlite:///{server.data / 'changeover.db'}"
    engine = sqlalchemy.create_engine(url)
    answered: list[float] = []
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            called = time.time()
            late = threading.Thread(target=lambda: answered.append(agent.sync() and time.time()))
            late.start()
            late.join(timeout=3.0)
            assert late.is_alive(), "the sync waited for the database"
            conn.rollback()
    finally:
        engine.dispose()
    late.join(timeout=60)
    assert answered and answered[0] - called >= 3.0
    host = next(h for h in ok(c.get("/hosts")) if h["name"] == "late-h1")
    assert called - 1.0 < host["last_seen_at"] < called + 1.0, (host["last_seen_at"], called)
