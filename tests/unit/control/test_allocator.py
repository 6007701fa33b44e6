"""Unit tests for the group-commit allocator (``control.fleet.allocator``).

A real SQLite database with one table stands in for the fleet: the allocate function under
test writes a row per request, so what each batch committed is visible. The fleet's own
rules (capacity, the compare-and-set) are tested against real servers in
``tests/integration/control/test_allocator.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from changeover.control.db import Database
from changeover.control.fleet import allocate_db
from changeover.control.fleet.allocate_db import AllocationRequest
from changeover.control.fleet.allocator import Allocator, Overloaded, Unavailable
from changeover.control.fleet.takes import LostRace
from changeover.errors import Conflict

pytestmark = pytest.mark.timeout(60)


def request(player: str) -> AllocationRequest:
    return AllocationRequest(
        fleet="f", profile=None, regions=(), client_version=None, players=(player,)
    )


class FakeAllocate:
    """Writes the player's row; refuses players named ``refuse*`` before writing, as
    ``allocate_db.allocate`` does; players named ``crash*`` fail after writing theirs (so only
    a savepoint can undo it); can hold the first call until released."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.calls: list[str] = []
        self.victims: Counter[str] = Counter()
        """Players whose next tries (this many) fail as a PostgreSQL deadlock victim's."""

    def __call__(self, s: Any, req: AllocationRequest, now: float) -> dict[str, Any]:
        player = req.players[0]
        self.calls.append(player)
        self.entered.set()
        assert self.hold.wait(30), "the test never released the allocator"
        if player.startswith("refuse"):
            raise Conflict(f"no room for {player}", reason="no_capacity")
        s.execute(text("INSERT INTO placed (player) VALUES (:p)"), {"p": player})
        if player.startswith("crash"):
            raise RuntimeError(f"a bug after writing {player}")
        if self.victims[player] > 0:
            self.victims[player] -= 1
            raise OperationalError("UPDATE instances ...", {}, _DeadlockOrig())
        return {"player": player, "at": now}


class _DeadlockOrig(Exception):
    sqlstate = "40P01"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'a.db'}")
    with database.write() as s:
        s.execute(text("CREATE TABLE placed (player TEXT NOT NULL)"))
    yield database
    database.dispose()


def placed(db: Database) -> list[str]:
    with db.read() as s:
        return sorted(s.execute(text("SELECT player FROM placed")).scalars())


def outcome(f: Future[dict[str, Any]]) -> Any:
    try:
        return f.result(timeout=30)["player"]
    except Exception as e:  # the test compares the error itself
        return type(e).__name__


def queued_behind(
    alloc: Allocator, fake: FakeAllocate, first: str, players: tuple[str, ...]
) -> tuple[Future[dict[str, Any]], list[Future[dict[str, Any]]]]:
    """Submit ``first`` and hold it inside the allocator while ``players`` queue behind it,
    then let go: the queued ones run as one batch."""
    head = alloc.submit(request(first))
    assert fake.entered.wait(10)
    rest = [alloc.submit(request(p)) for p in players]
    assert alloc.pending == len(players)
    fake.hold.set()
    return head, rest


def test_requests_queued_meanwhile_commit_in_one_batch(db: Database) -> None:
    fake = FakeAllocate()
    fake.hold.clear()
    alloc = Allocator(db, allocate=fake)
    try:
        first = alloc.submit(request("p0"))
        assert fake.entered.wait(10)
        rest = [alloc.submit(request(f"p{i}")) for i in range(1, 10)]
        assert alloc.pending == 9
        fake.hold.set()
        assert [outcome(f) for f in [first, *rest]] == [f"p{i}" for i in range(10)]
        assert alloc.batches == 2  # p0 alone, then the nine queued behind it together
        assert placed(db) == sorted(f"p{i}" for i in range(10))
    finally:
        alloc.stop()


def test_a_refusal_undoes_only_its_own_request(db: Database) -> None:
    fake = FakeAllocate()
    fake.hold.clear()
    alloc = Allocator(db, allocate=fake)
    try:
        first, batch = queued_behind(alloc, fake, "a", ("b", "refuse-c", "d", "refuse-e", "f"))
        assert outcome(first) == "a"
        assert [outcome(f) for f in batch] == ["b", "Conflict", "d", "Conflict", "f"]
        assert placed(db) == ["a", "b", "d", "f"]
        assert alloc.batches == 2  # refusals write nothing: the batch ran together
        assert fake.calls == ["a", "b", "refuse-c", "d", "refuse-e", "f"]
    finally:
        alloc.stop()


def test_an_error_after_writing_undoes_only_its_own_request(db: Database) -> None:
    fake = FakeAllocate()
    fake.hold.clear()
    alloc = Allocator(db, allocate=fake)
    try:
        first, batch = queued_behind(alloc, fake, "a", ("b", "crash-c", "d"))
        assert outcome(first) == "a"
        assert [outcome(f) for f in batch] == ["b", "RuntimeError", "d"]
        assert placed(db) == ["a", "b", "d"]
        # Together, crash-c's write could not be undone alone: the batch ran again apart.
        assert fake.calls == ["a", "b", "crash-c", "b", "crash-c", "d"]
        assert alloc.batches == 3
    finally:
        alloc.stop()


def test_a_lock_victim_is_retried_after_committing_the_others(db: Database) -> None:
    fake = FakeAllocate()
    fake.hold.clear()
    fake.victims = Counter({"c": 2})  # once together, once apart
    alloc = Allocator(db, allocate=fake)
    try:
        first, batch = queued_behind(alloc, fake, "a", ("b", "c", "d"))
        assert [outcome(f) for f in [first, *batch]] == ["a", "b", "c", "d"]
        assert fake.calls == ["a", "b", "c", "b", "c", "c", "d"]
        # a; b and c together, rolled back; apart: b committed when c lost; c again and d.
        assert alloc.batches == 4
        assert placed(db) == ["a", "b", "c", "d"]
    finally:
        alloc.stop()


def test_a_batch_whose_held_back_writes_lose_a_race_runs_again_apart(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost: list[int] = []

    @contextlib.contextmanager
    def lose_once(s: Any) -> Iterator[None]:
        yield
        if not lost:  # as the block writes what it held back, another writer got there first
            lost.append(1)
            raise LostRace("1 of 3 held-back takes lost")

    monkeypatch.setattr(allocate_db, "deferred_writes", lose_once)
    fake = FakeAllocate()
    fake.hold.clear()
    alloc = Allocator(db, allocate=fake)
    started = time.perf_counter()
    try:
        first, batch = queued_behind(alloc, fake, "a", ("b", "c", "d"))
        assert [outcome(f) for f in [first, *batch]] == ["a", "b", "c", "d"]
        elapsed = time.perf_counter() - started
        # a lost its race alone and ran again; b, c and d together, then committed.
        assert fake.calls == ["a", "a", "b", "c", "d"]
        assert placed(db) == ["a", "b", "c", "d"]  # each once: the lost run left nothing
        stats = alloc.stats  # as /metrics reports them
        assert (stats.requests, stats.together, stats.apart, stats.lost_races) == (4, 2, 1, 1)
        assert 0 < stats.busy_s < elapsed  # the batches' time, not the waits between them
    finally:
        alloc.stop()


def test_other_database_errors_fail_only_their_request(db: Database) -> None:
    def allocate(s: Any, req: AllocationRequest, now: float) -> dict[str, Any]:
        if req.players[0] == "bad":
            s.execute(text("INSERT INTO nowhere VALUES (1)"))
        s.execute(text("INSERT INTO placed (player) VALUES (:p)"), {"p": req.players[0]})
        return {"player": req.players[0]}

    alloc = Allocator(db, allocate=allocate)
    try:
        futures = [alloc.submit(request(p)) for p in ("x", "bad", "y")]
        assert [outcome(f) for f in futures] == ["x", "OperationalError", "y"]
        assert placed(db) == ["x", "y"]
    finally:
        alloc.stop()


def test_a_failed_commit_fails_the_whole_batch(db: Database) -> None:
    with db.write() as s:  # checked at commit: the batch's writes all go or none does
        s.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        s.execute(
            text(
                "CREATE TABLE child (pid INTEGER REFERENCES parent (id)"
                " DEFERRABLE INITIALLY DEFERRED)"
            )
        )

    class Orphans(FakeAllocate):
        def __call__(self, s: Any, req: AllocationRequest, now: float) -> dict[str, Any]:
            out = super().__call__(s, req, now)
            if req.players[0] == "orphan":
                s.execute(text("INSERT INTO child (pid) VALUES (42)"))
            return out

    fake = Orphans()
    fake.hold.clear()
    alloc = Allocator(db, allocate=fake)
    try:
        first, batch = queued_behind(alloc, fake, "a", ("x", "orphan", "y"))
        assert outcome(first) == "a"
        assert [outcome(f) for f in batch] == ["IntegrityError"] * 3
        assert placed(db) == ["a"]
    finally:
        alloc.stop()


def test_a_full_queue_refuses_at_once(db: Database) -> None:
    fake = FakeAllocate()
    fake.hold.clear()
    alloc = Allocator(db, allocate=fake, max_pending=2)
    try:
        running = alloc.submit(request("r"))
        assert fake.entered.wait(10)
        queued = [alloc.submit(request("q1")), alloc.submit(request("q2"))]
        with pytest.raises(Overloaded, match="2 allocations are waiting") as e:
            alloc.submit(request("q3"))
        assert e.value.code == "overloaded"
        assert e.value.facts == {"pending": 2}
        fake.hold.set()
        assert [outcome(f) for f in [running, *queued]] == ["r", "q1", "q2"]
    finally:
        alloc.stop()


def test_stop_answers_queued_requests_and_finishes_the_running_batch(db: Database) -> None:
    fake = FakeAllocate()
    fake.hold.clear()
    alloc = Allocator(db, allocate=fake)
    running = alloc.submit(request("r"))
    assert fake.entered.wait(10)
    queued = [alloc.submit(request(f"q{i}")) for i in range(3)]
    stopper = threading.Thread(target=alloc.stop)
    stopper.start()
    # Queued requests are answered at once, while the running batch is still held.
    assert [outcome(f) for f in queued] == ["Unavailable"] * 3
    assert not running.done()
    fake.hold.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert outcome(running) == "r"
    assert placed(db) == ["r"]
    with pytest.raises(Unavailable, match="shutting down"):
        alloc.submit(request("late"))


def test_a_cancelled_request_is_skipped(db: Database) -> None:
    fake = FakeAllocate()
    fake.hold.clear()
    alloc = Allocator(db, allocate=fake)
    try:
        first = alloc.submit(request("a"))
        assert fake.entered.wait(10)
        gone, kept = alloc.submit(request("gone")), alloc.submit(request("kept"))
        assert gone.cancel()
        fake.hold.set()
        assert outcome(first) == "a" and outcome(kept) == "kept"
        assert placed(db) == ["a", "kept"]
    finally:
        alloc.stop()


def test_allocate_awaits_from_an_event_loop(db: Database) -> None:
    alloc = Allocator(db, allocate=FakeAllocate())

    async def main() -> list[dict[str, Any]]:
        return await asyncio.gather(*(alloc.allocate(request(f"p{i}")) for i in range(20)))

    try:
        results = asyncio.run(main())
        assert [r["player"] for r in results] == [f"p{i}" for i in range(20)]
        assert alloc.batches <= 20
    finally:
        alloc.stop()
    assert placed(db) == sorted(f"p{i}" for i in range(20))


def test_a_batch_reaches_the_event_loop_in_one_callback(db: Database) -> None:
    fake = FakeAllocate()
    fake.hold.clear()
    alloc = Allocator(db, allocate=fake)
    wakeups = 0

    async def main() -> list[Any]:
        nonlocal wakeups
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        head = asyncio.ensure_future(alloc.allocate(request("p0")))
        while not fake.entered.is_set():  # p0 runs alone, held; the rest queue behind it
            await asyncio.sleep(0.005)
        names = [f"p{i}" for i in range(1, 9)] + ["refuse-x"]
        rest = [asyncio.ensure_future(alloc.allocate(request(n))) for n in names]
        while alloc.pending < len(names):
            await asyncio.sleep(0.005)
        fake.hold.set()
        return await asyncio.gather(head, *rest, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        alloc.stop()
    assert [r["player"] for r in results[:-1]] == [f"p{i}" for i in range(9)]
    assert isinstance(results[-1], Conflict)  # a refusal is delivered as the error
    assert alloc.batches == 2
    assert wakeups == 2  # one per batch, not one per request


def test_an_awaiting_caller_that_gave_up_is_skipped_and_stop_answers_the_rest(
    db: Database,
) -> None:
    fake = FakeAllocate()
    fake.hold.clear()
    alloc = Allocator(db, allocate=fake)

    async def main() -> tuple[Any, Any, Any]:
        first = asyncio.ensure_future(alloc.allocate(request("a")))
        while not fake.entered.is_set():
            await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(alloc.allocate(request("gone")))
        queued = asyncio.ensure_future(alloc.allocate(request("queued")))
        while alloc.pending < 2:
            await asyncio.sleep(0.005)
        gone.cancel()
        fake.hold.set()
        a = await first
        kept = await queued  # the next batch: "gone" was skipped in it
        stopper = asyncio.ensure_future(asyncio.to_thread(alloc.stop))
        await stopper
        late: Any = None
        try:
            await alloc.allocate(request("late"))
        except Unavailable as e:
            late = e
        return a, kept, late

    a, kept, late = asyncio.run(main())
    assert (a["player"], kept["player"]) == ("a", "queued")
    assert placed(db) == ["a", "queued"]
    assert isinstance(late, Unavailable)


def test_stop_answers_awaiting_callers_queued_behind_a_running_batch(db: Database) -> None:
    fake = FakeAllocate()
    fake.hold.clear()
    alloc = Allocator(db, allocate=fake)

    async def main() -> list[Any]:
        running = asyncio.ensure_future(alloc.allocate(request("r")))
        while not fake.entered.is_set():
            await asyncio.sleep(0.005)
        queued = [asyncio.ensure_future(alloc.allocate(request(f"q{i}"))) for i in range(3)]
        while alloc.pending < 3:
            await asyncio.sleep(0.005)
        stopper = asyncio.ensure_future(asyncio.to_thread(alloc.stop))
        answers = await asyncio.gather(*queued, return_exceptions=True)
        assert not running.done()  # still held inside the allocator
        fake.hold.set()
        await stopper
        return [*answers, await running]

    *queued, running = asyncio.run(main())
    assert all(isinstance(q, Unavailable) for q in queued)
    assert running["player"] == "r"


def test_invalid_limits_are_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Allocator(db, max_batch=0)


def _steady(alloc: Allocator, gap_s: float) -> None:
    """As if requests had been arriving ``gap_s`` apart (the allocator's moving average)."""
    alloc._gap = gap_s  # a steady stream, without sending one for seconds


def test_under_a_steady_stream_a_batch_waits_for_company(db: Database) -> None:
    fake = FakeAllocate()
    alloc = Allocator(db, allocate=fake, gather_s=60.0)
    _steady(alloc, 10.0)  # arrivals 10 s apart, under the 60 s bound: wait up to 20 s
    try:
        first = alloc.submit(request("p0"))
        rest = [alloc.submit(request(f"p{i}")) for i in range(1, 4)]
        assert [outcome(f) for f in [first, *rest]] == ["p0", "p1", "p2", "p3"]
        # Without the wait, p0 would have run alone as soon as it came.
        assert alloc.batches == 1
    finally:
        alloc.stop()


def test_requests_further_apart_than_the_bound_run_at_once(db: Database) -> None:
    fake = FakeAllocate()
    alloc = Allocator(db, allocate=fake, gather_s=60.0)
    _steady(alloc, 120.0)  # a quiet fleet: nobody is held back for company
    try:
        assert outcome(alloc.submit(request("alone"))) == "alone"
        assert alloc.batches == 1
    finally:
        alloc.stop()


def test_stop_answers_a_request_waiting_for_company(db: Database) -> None:
    fake = FakeAllocate()
    alloc = Allocator(db, allocate=fake, gather_s=60.0)
    _steady(alloc, 10.0)
    waiting = alloc.submit(request("w"))
    stopper = threading.Thread(target=alloc.stop)
    stopper.start()
    assert outcome(waiting) == "Unavailable"
    stopper.join(10)
    assert not stopper.is_alive() and fake.calls == []
