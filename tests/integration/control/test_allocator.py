"""Server Allocate's group commit (``control.fleet.allocator``) through the HTTP API.

Against a real server on SQLite and on PostgreSQL: many parallel allocations of different
party sizes, some refused for reasons of their own in the same batches, never put more
players on an instance than its capacity, and never refuse a party there was room for.
In process (the app with a held allocator): a full queue answers 503 at once, and a
shutdown answers the queued requests with 503 instead of leaving them hanging.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from changeover.control.app import create_app
from changeover.control.auth import services as auth_services
from changeover.control.fleet import allocate_db, allocator
from changeover.settings import Settings
from fleet_helpers import FakeAgent, catalogue, ok, profile, release

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def fleet(server: Any) -> httpx.Client:
    """Fleet ``gc-fleet``: 2 hosts x 2 instances of capacity 5 (20 places), all ready."""
    c = server.client()
    ok(c.post("/images", json={"name": "gc"}), 201)
    release(c, "gc", {"bin/game": b"v1"}, "1.0")
    catalogue(c, "gc")
    profile(c, "gc-v1", "gc-game", "gc", "1", capacity=5)
    body = {
        "name": "gc-fleet",
        "application": "gc-game",
        "environment": "gc-prod",
        "hosts": ["gc-h1", "gc-h2"],
        "instances_per_host": 2,
        "profile": "gc-v1",
    }
    ok(c.post("/fleets", json=body), 201)
    agents = server.client(server.token("agent"))
    for host in ("gc-h1", "gc-h2"):
        a = FakeAgent(agents, host, "gc-eu")
        a.register()
        a.sync(2)
    return c


def test_parallel_batches_keep_capacity_and_refuse_only_their_own(
    server: Any, fleet: httpx.Client
) -> None:
    # Parties of 1, 2 and 3 players; every fifth names a region that does not exist, and
    # every seventh is malformed: refused inside the same batches as the others.
    bodies: list[dict[str, Any]] = []
    for n in range(48):
        body: dict[str, Any] = {
            "fleet": "gc-fleet",
            "players": [f"gc{n}-{k}" for k in range(1 + n % 3)],
        }
        if n % 5 == 4:
            body["regions"] = ["gc-nowhere"]
        elif n % 7 == 6:
            body["players"] = ["same", "same"]
        bodies.append(body)
    answers: dict[int, httpx.Response] = {}
    lock = threading.Lock()
    start = threading.Barrier(len(bodies))

    def player(n: int) -> None:
        with httpx.Client(base_url=server.url + "/api/v1", headers=fleet.headers, timeout=60) as c:
            start.wait()
            r = c.post("/allocations", json=bodies[n])
        with lock:
            answers[n] = r

    threads = [threading.Thread(target=player, args=(n,)) for n in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    statuses = Counter(r.status_code for r in answers.values())
    assert statuses[404] == sum(1 for b in bodies if "regions" in b)
    assert statuses[400] == sum(1 for b in bodies if b["players"] == ["same", "same"])
    assert statuses[500] == 0 and set(statuses) <= {201, 400, 404, 409}, statuses
    placed: Counter[int] = Counter()
    for n, r in answers.items():
        if r.status_code == 201:
            got = r.json()
            assert got["players"] == bodies[n]["players"]
            placed[got["instance_id"]] += len(got["players"])
            session = ok(fleet.get(f"/sessions/{got['session_id']}"))
            assert session["status"] == "reserved"
    instances = {i["id"]: i for i in ok(fleet.get("/fleets/gc-fleet/instances"))}
    assert len(instances) == 4
    for i in instances.values():
        assert i["players"] <= i["capacity"] == 5
        assert i["players"] == placed[i["id"]]  # every place held was answered 201
    # A party was refused for capacity only if no instance has room for it even now
    # (places are only ever taken here, so there was none when it was refused either).
    room = max(i["capacity"] - i["players"] for i in instances.values())
    for n, r in answers.items():
        if r.status_code == 409:
            assert r.json()["reason"] == "no_capacity"
            assert len(bodies[n]["players"]) > room
    assert sum(placed.values()) >= 20 - 2  # at most 2 places left that no party fits


# -- in process: overload and shutdown -----------------------------------------------------


class HeldAllocate:
    """Stands in for ``allocate_db.allocate``: each call waits until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, s: Any, req: allocate_db.AllocationRequest, now: float) -> dict[str, Any]:
        self.entered.set()
        assert self.release.wait(30), "the test never released the allocator"
        return {"session_id": "s_test", "players": list(req.players)}


@pytest.fixture
def held_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, str, HeldAllocate]]:
    """The app with room for 2 queued allocations, each allocation held until released."""
    held = HeldAllocate()
    monkeypatch.setattr(allocate_db, "allocate", held)
    monkeypatch.setattr(allocator, "MAX_PENDING", 2)
    app = create_app(Settings(data_dir=tmp_path))
    with app.state.ctx.db.write() as s:
        _, token = auth_services.create_token(s, "admin", "held-app", None)
    yield app, token, held
    held.release.set()


async def _post(client: httpx.AsyncClient, token: str, player: str) -> httpx.Response:
    return await client.post(
        "/api/v1/allocations",
        json={"fleet": "f", "players": [player]},
        headers={"Authorization": f"Bearer {token}"},
    )


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"waited 20 s for {what}")


def test_a_full_queue_answers_503_at_once(held_app: tuple[Any, str, HeldAllocate]) -> None:
    app, token, held = held_app
    group: allocator.Allocator = app.state.allocator

    async def scenario() -> None:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
        ):
            running = asyncio.create_task(_post(c, token, "running"))
            await _until(held.entered.is_set, "the first allocation to start")
            queued = [asyncio.create_task(_post(c, token, f"queued{i}")) for i in range(2)]
            await _until(lambda: group.pending == 2, "two queued allocations")
            refused = await asyncio.wait_for(_post(c, token, "one-too-many"), 20)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "overloaded"
            assert "retry" in refused.json()["message"]
            held.release.set()
            answers = await asyncio.wait_for(asyncio.gather(running, *queued), 20)
            assert [r.status_code for r in answers] == [201, 201, 201]
            assert answers[1].json()["players"] == ["queued0"]

    asyncio.run(scenario())


def test_shutdown_answers_queued_requests_instead_of_hanging(
    held_app: tuple[Any, str, HeldAllocate],
) -> None:
    app, token, held = held_app
    group: allocator.Allocator = app.state.allocator

    async def scenario() -> None:
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            running = asyncio.create_task(_post(c, token, "running"))
            await _until(held.entered.is_set, "the first allocation to start")
            queued = [asyncio.create_task(_post(c, token, f"queued{i}")) for i in range(2)]
            await _until(lambda: group.pending == 2, "two queued allocations")
            closing = asyncio.create_task(lifespan.__aexit__(None, None, None))
            # Answered while the batch in progress is still held, not left hanging.
            for r in await asyncio.wait_for(asyncio.gather(*queued), 20):
                assert r.status_code == 503, r.text
                assert r.json()["error"] == "unavailable"
                assert "shutting down" in r.json()["message"]
            assert not running.done()
            held.release.set()  # the batch in progress still finishes and is answered
            assert (await asyncio.wait_for(running, 20)).status_code == 201
            await asyncio.wait_for(closing, 20)
            late = await _post(c, token, "late")
            assert late.status_code == 503, late.text

    asyncio.run(scenario())
