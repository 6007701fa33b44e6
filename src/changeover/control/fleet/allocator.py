"""Group commit for Server Allocate: one thread, many allocations per transaction.

Each allocation on its own pays for a write transaction: on SQLite the one write lock
(``BEGIN IMMEDIATE``, with a busy handler that polls with sleeps), on PostgreSQL a commit
and its WAL flush, and a worker thread per request waiting its turn. Instead, requests are
queued to one :class:`Allocator` per database. Its thread takes every pending request (up
to ``max_batch``), runs them in ONE write transaction, commits once, and only then answers
each request: a 201 is never sent for a place that is not committed.

A batch first runs *together*: the requests one after another in the transaction, with
nothing between them. ``allocate_db.allocate`` refuses (``ChangeoverError``: the fleet is
full, a wrong client version, an unknown fleet) before it writes anything, so a refusal
needs no undoing. Any other error (a database error, a PostgreSQL deadlock, a bug) may
come after a request's writes: the whole transaction is then rolled back, unanswered, and
the batch runs again *apart*, each request in its own savepoint (``Session.begin_nested``),
so that one that fails undoes only its own writes, never those of the others. Savepoints
cost two statements per request, measured at over a quarter of the allocator's time, so
they are paid only when needed. ``allocate_db.allocate`` and its compare-and-set update
(``players + n <= capacity``) are the same either way: other writers (agent syncs, ended
sessions, another server process on the same database) stay safe.
Run together, a batch also holds its writes back (``allocate_db.deferred_writes``): its
compare-and-set updates and its session rows go out together with its ``COMMIT``, so on
PostgreSQL a batch costs four round trips whatever its size (the transaction's start with
the fleet's look-up, the best candidates, the writes with the commit), instead of two per
allocation. Should another writer have changed an instance meanwhile, a held-back update
matches no row (``LostRace``), and the batch runs again apart, where each update is
checked as it is made.

On PostgreSQL the price is that a batch holds the instance rows it updated until its
commit, so allocations that could run side by side in their own transactions run one
after another on this thread. Measured, batches still win on both databases
(``BENCHMARKS.md``, "Allocation throughput and latency": 1.4 to 2.2 times the
throughput, and a lower p99): allocations on their own all want the same instance
(the fullest first), so they queue for its row lock (PostgreSQL) or for the write lock
(SQLite) anyway, and pay a commit each; in a batch they also share the fleet's look-up and
one read of the best candidates (``allocate_db._Shared``), so most of them cost an update
and an insert.

While a batch runs, the next requests queue, so batches grow with the load and an idle
server answers a lone request at once. The queue is bounded (``max_pending``): past it a
request is refused with :class:`Overloaded` (HTTP 503) rather than waiting without end.
:meth:`Allocator.stop` finishes the batch in progress and refuses every queued request
with :class:`Unavailable`, so no caller waits for an answer that will never come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError

from changeover.control.db import Database, now, unstorable
from changeover.control.fleet import allocate_db, takes
from changeover.errors import ChangeoverError

log = logging.getLogger("changeover.control.allocator")

MAX_BATCH = 64
"""Allocations per transaction: enough to absorb a burst, small enough that the write lock
(SQLite) or the instance rows (PostgreSQL) are not held for long."""
MAX_PENDING = 2048
"""Queued allocations past which new ones are refused (503) instead of waiting."""
GATHER_S = 0.004
"""The longest a batch waits for company. A batch's fixed cost (its transaction, the
fleet's look-up, the candidates' read) is most of an allocation's when requests come a few
milliseconds apart, as they do at a few hundred a second: each would run alone, and the
thread would be busy for most of the second. When requests have been arriving closer
together than this, a batch of fewer than ``GATHER_UNTIL`` waits up to twice the recent
gap (never more than this) for the next ones. A lone request is never held back."""
GATHER_UNTIL = 4
_GAP_WEIGHT = 0.1
"""The weight of the newest arrival in the moving average of the gaps between them."""

Result = dict[str, Any]
AllocateFn = Callable[[Any, allocate_db.AllocationRequest, float], Result]


class Unavailable(ChangeoverError):
    """The allocator is not running (the server is stopping): retry on another server."""

    code = "unavailable"


class Overloaded(Unavailable):
    """Too many allocations are waiting already: retry after a short back-off."""

    code = "overloaded"


@dataclass(eq=False, slots=True)
class _Pending:
    request: allocate_db.AllocationRequest
    future: Future[Result] | asyncio.Future[Result]
    loop: asyncio.AbstractEventLoop | None = None
    """The event loop of an ``asyncio`` future (``allocate``), None for ``submit``'s."""
    answered: bool = False
    """Set by the allocator's thread when it hands the outcome over (``_answer``)."""


@dataclass
class AllocatorStats:
    """What the allocator did since it started, for ``/metrics`` (plain counters: one
    thread writes them, a scrape reads them)."""

    requests: int = 0
    """Requests taken into a batch (each once, however often its batch ran)."""
    together: int = 0
    """Batches run together (``_run_together``), committed or not."""
    apart: int = 0
    """Transactions run apart (``_run_apart``): after an error, one savepoint a request."""
    lost_races: int = 0
    """Batches whose held-back writes found an instance changed (``LostRace``)."""
    busy_s: float = 0.0
    """Seconds spent running batches: its rate is the share of the time the thread is
    busy. Near 1, requests wait for the batch in progress as long as for their own."""


class Allocator:
    """Runs queued allocations in batches, one write transaction per batch, on one thread.

    Thread-safe: :meth:`submit` may be called from any thread, :meth:`allocate` from any
    event loop.
    """

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int | None = None,
        max_pending: int | None = None,
        allocate: AllocateFn | None = None,
        gather_s: float | None = None,
    ) -> None:
        """``None`` means the module's value when constructed (``MAX_BATCH``,
        ``MAX_PENDING``, ``allocate_db.allocate``, ``GATHER_S``), which tests may replace."""
        self._max_batch = MAX_BATCH if max_batch is None else max_batch
        self._max_pending = MAX_PENDING if max_pending is None else max_pending
        self._gather_s = GATHER_S if gather_s is None else gather_s
        self._gap = 1.0
        """Moving average of the seconds between arrivals (``_GAP_WEIGHT``)."""
        self._arrived = time.monotonic()
        if self._max_batch < 1 or self._max_pending < 1:
            raise ValueError("max_batch and max_pending must be at least 1")
        self._db = db
        self._allocate = allocate or allocate_db.allocate
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.batches = 0
        """Transactions committed or attempted (for tests and metrics)."""
        self.stats = AllocatorStats()
        """Counters for ``/metrics``: written by the thread only, read at scrape time."""

    # -- callers ---------------------------------------------------------------------------

    def submit(self, request: allocate_db.AllocationRequest) -> Future[Result]:
        """Queue an allocation; the future holds its result once committed, or its error.

        Raises:
            Overloaded: ``max_pending`` allocations are queued already.
            Unavailable: the allocator was stopped.
        """
        future: Future[Result] = Future()
        self._enqueue(_Pending(request, future))
        return future

    def _enqueue(self, pending: _Pending) -> None:
        with self._cond:
            if self._stopping:
                raise Unavailable("the server is shutting down: allocate on another server")
            if len(self._queue) >= self._max_pending:
                raise Overloaded(
                    f"{len(self._queue)} allocations are waiting already: the server is"
                    " overloaded, retry after a short back-off",
                    pending=len(self._queue),
                )
            if self._thread is None:
                self._start_locked()  # also when the app's lifespan did not start it
            arrived = time.monotonic()
            self._gap += _GAP_WEIGHT * (arrived - self._arrived - self._gap)
            self._arrived = arrived
            self._queue.append(pending)
            self._cond.notify()

    async def allocate(self, request: allocate_db.AllocationRequest) -> Result:
        """:meth:`submit`, awaited without holding a worker thread meanwhile.

        The batch's answers reach the event loop together, in one callback, rather than
        one thread-safe wake-up per request (measured at a tenth of the event loop's time
        under load with ``asyncio.wrap_future``).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._enqueue(_Pending(request, future, loop))
        return await future

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._thread is None and not self._stopping:
                self._start_locked()

    def _start_locked(self) -> None:
        self._thread = threading.Thread(target=self._run, name="allocator", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the batch in progress, refuse the queued requests, end the thread."""
        with self._cond:
            self._stopping = True
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        _answer([(p, Unavailable("the server is shutting down: allocate again")) for p in left])
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("the allocator did not finish its batch within %.0f s", timeout_s)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                started = time.perf_counter()
                try:
                    self._run_batch(batch)
                finally:
                    self.stats.busy_s += time.perf_counter() - started
                    # A safety net: _run_batch answers every request, even if it fails.
                    failed = Unavailable("the allocation failed: allocate again")
                    _answer([(p, failed) for p in batch if not p.answered])
        except BaseException:
            log.exception("the allocator stopped on an unexpected error")
            raise
        finally:
            # Whatever ended the loop, nobody is left waiting on a request it will not run.
            with self._cond:
                self._stopping = True
                left = list(self._queue)
                self._queue.clear()
            _answer([(p, Unavailable("the allocator stopped: allocate again")) for p in left])

    def _next_batch(self) -> list[_Pending] | None:
        """Every queued request up to ``max_batch``, waiting for one (and, under a steady
        stream, a moment for company: ``GATHER_S``); None once stopping."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            wait = min(self._gather_s, 2 * self._gap)
            if self._gap < self._gather_s and len(self._queue) < GATHER_UNTIL:
                deadline = time.monotonic() + wait
                while len(self._queue) < GATHER_UNTIL and not self._stopping:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            if self._stopping:
                return None
            n = min(len(self._queue), self._max_batch)
            return [self._queue.popleft() for _ in range(n)]

    def _run_batch(self, batch: list[_Pending]) -> None:
        # A caller that gave up before its turn (cancelled) is skipped; once running, it
        # can no longer be cancelled, so every place taken below is also answered.
        todo = [p for p in batch if _still_wanted(p)]
        if todo and not self._run_together(todo):
            self._run_apart(todo)

    def _run_together(self, todo: list[_Pending]) -> bool:
        """Run the requests in one transaction without savepoints and answer them; False
        (nothing kept, nobody answered) if any fails other than by a refusal."""
        self.batches += 1
        self.stats.together += 1
        self.stats.requests += len(todo)
        done: list[tuple[_Pending, Result | ChangeoverError]] = []
        try:
            with self._db.write(hot_path=True) as s, allocate_db.deferred_writes(s):
                for p in todo:
                    try:
                        done.append((p, self._allocate(s, p.request, now())))
                    except ChangeoverError as e:  # a refusal: it wrote nothing
                        done.append((p, e))
        except Exception as e:  # noqa: BLE001 (rolled back whole: the savepoints sort it out)
            log.debug("an allocation batch of %d runs apart after: %s", len(todo), e)
            if isinstance(e, takes.LostRace):
                self.stats.lost_races += 1
            return False
        _answer(done)  # only now: every place answered is committed
        return True

    def _run_apart(self, todo: list[_Pending]) -> None:
        """Each request in its own savepoint: one that fails undoes only its own writes."""
        retried: set[int] = set()
        while todo:
            self.batches += 1
            self.stats.apart += 1
            done: list[tuple[_Pending, Result | BaseException]] = []
            try:
                with self._db.write(hot_path=True) as s:
                    for p in todo:
                        try:
                            with s.begin_nested():  # a refusal rolls back this request only
                                done.append((p, self._allocate(s, p.request, now())))
                        except DBAPIError as e:
                            if not _lock_victim(e) or id(p) in retried:
                                done.append((p, unstorable(e) or e))
                                continue
                            # PostgreSQL broke a lock cycle (e.g. with an agent sync that
                            # holds rows this batch wants while waiting for rows it holds):
                            # commit what is done, releasing the locks, and run the rest in
                            # a new transaction, this request once more.
                            retried.add(id(p))
                            break
                        except Exception as e:  # noqa: BLE001 (the caller gets it, as before)
                            done.append((p, e))
            except Exception as e:  # noqa: BLE001 (the commit failed: nothing of it was kept)
                log.warning("an allocation batch of %d failed: %s", len(todo), e)
                _answer([(p, e) for p in todo])
                return
            _answer(done)  # only now: every place answered is committed
            todo = todo[len(done) :]


def _lock_victim(error: DBAPIError) -> bool:
    """Whether PostgreSQL aborted the statement to break a deadlock (or a serialisation
    conflict): the same request can succeed once this transaction's locks are released."""
    return getattr(error.orig, "sqlstate", None) in ("40P01", "40001")


def _still_wanted(p: _Pending) -> bool:
    """False for a caller that gave up before its turn; a ``submit`` future can no longer
    be cancelled once this returns True. (An ``allocate`` caller cancelled later simply
    gets no answer: ``_settle`` skips it, as ``wrap_future`` did.)"""
    if isinstance(p.future, Future):
        return p.future.set_running_or_notify_cancel()
    return not p.future.cancelled()


def _answer(outcomes: Sequence[tuple[_Pending, Result | BaseException]]) -> None:
    """Hand each request its outcome: ``submit``'s futures at once, ``allocate``'s in one
    callback per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, Result | BaseException]]] = {}
    for p, outcome in outcomes:
        p.answered = True
        if p.loop is None:
            _settle([(p, outcome)])
        else:
            by_loop.setdefault(p.loop, []).append((p, outcome))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: Sequence[tuple[_Pending, Result | BaseException]]) -> None:
    """Set each future unless it is done already (answered, or cancelled by its caller)."""
    for p, outcome in items:
        with contextlib.suppress(InvalidStateError, asyncio.InvalidStateError):
            if p.future.done():
                continue
            if isinstance(outcome, BaseException):
                p.future.set_exception(outcome)
            else:
                p.future.set_result(outcome)
