"""Job states and the runner that drives every background job of the control plane.

The states are those of seed 000's Image Version Status, used for every job kind:

    1 Created ──▶ 2 Pending ──▶ 3 Queued ──▶ 4 Running ──▶ 5 Completed
       (row made)   (waiting on    (ready for a   (leased by      └─▶ 6 Failed ──retry──▶ 3
                     something)     worker)        one worker)

A worker claims a queued job with a compare-and-set update (status 3 → 4 with a lease),
so several control-plane replicas on one PostgreSQL never run a job twice; a job whose
lease ran out (its worker died) goes back to Queued when the runner starts or polls.
Handlers are idempotent, so re-running one after a crash does nothing twice.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from changeover.control.db import Database, clock_sql, now, rowcount
from changeover.control.leadership import Leadership, LostLeadership
from changeover.control.logs import job_context
from changeover.control.states import JobState
from changeover.errors import ChangeoverError

log = logging.getLogger("changeover.jobs")


@dataclass(frozen=True)
class JobKind:
    """One kind of job: its table, how to promote pending rows, and how to run one."""

    name: str
    model: Any
    run: Callable[[int], None]
    """Do the work for job ``id``; raise ChangeoverError to fail it with that message."""
    promote: Callable[[], None] | None = None
    """Move Pending rows whose wait is over to Queued (or Failed)."""
    waiting: Callable[[], ColumnElement[bool]] | None = None
    """Whether ``promote`` has anything to do, as a SQL condition (e.g. an ``exists()``),
    asked in the pass's one statement; None: ``promote`` runs on every pass."""


def _first_queued_sql(kind: JobKind) -> Any:
    """The oldest queued job of ``kind``, as a scalar subquery (NULL if none)."""
    m = kind.model
    return select(m.id).where(m.status == JobState.QUEUED).order_by(m.id).limit(1).scalar_subquery()


class JobRunner:
    def __init__(
        self,
        db: Database,
        kinds: list[JobKind],
        *,
        poll_s: float,
        lease_s: float,
        periodic: list[tuple[float, Callable[[], object]]] | None = None,
        leader_periodic: list[tuple[float, Callable[[], object]]] | None = None,
        leadership: Leadership | None = None,
        on_elected: Callable[[], object] | None = None,
    ):
        self.db = db
        self.kinds = kinds
        self.periodic = [(every, fn, [0.0]) for every, fn in periodic or []]
        self.leader_periodic = [(every, fn, [0.0]) for every, fn in leader_periodic or []]
        """Tasks of the leader alone (``control.leadership``), run fenced; every task runs
        on a process without ``leadership``."""
        self.leadership = leadership
        self.on_elected = on_elected
        """Called before the leader's tasks of a new term: what a replica remembers from
        its last term may be stale, another leader having worked in between."""
        self._term: int | None = None
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.owner = uuid.uuid4().hex
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recovered_at = float("-inf")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        """Whether the runner's thread is running (readiness: ``/readyz``)."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def wake(self) -> None:
        """Tell the runner there is new work, so it need not wait for the next poll."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # a bug in one pass must not kill the runner for good
                log.exception("job runner pass failed")
                worked = False
            if not worked:
                self._wake.wait(self._idle_s())
                self._wake.clear()

    def _idle_s(self) -> float:
        """How long an idle runner sleeps: until the next poll of the queue, or sooner when
        a periodic task falls due (a patch job's tick is not held to the poll interval)."""
        tasks = list(self.periodic)
        if self.leadership is None or self.leadership.term is not None:
            tasks += self.leader_periodic
        now = time.monotonic()
        due = min((last[0] + every - now for every, _, last in tasks), default=self.poll_s)
        return max(0.0, min(self.poll_s, due))

    def run_once(self) -> bool:
        """One pass: periodic tasks, expired leases, pending jobs, then one queued job."""
        self._run_due(self.periodic)
        if self.leadership is None:
            self._run_due(self.leader_periodic)
        elif (term := self.leadership.term) is not None:
            if term != self._term:
                for _, _, last in self.leader_periodic:
                    last[0] = 0.0  # a new leader does its rounds at once
                if self.on_elected is not None:
                    self.on_elected()
            self._term = term
            with self.leadership.fenced():
                self._run_due(self.leader_periodic)
        else:
            self._term = None
        # Leases run out in lease_s, so looking for expired ones more often than a few
        # times per lease is wasted work; an idle pass should only read.
        if time.monotonic() - self._recovered_at >= self.lease_s / 4:
            self._recovered_at = time.monotonic()
            for kind in self.kinds:
                self._recover(kind)
        promote, queued = self._ask_kinds()
        for kind in promote:
            assert kind.promote is not None
            kind.promote()
        for kind in self.kinds:
            first = queued[kind.name]
            if promote:  # read the queue again: a job just promoted runs in this pass
                with self.db.read() as s:
                    first = self._first_queued(s, kind)
            job_id = None if first is None else self._claim(kind, first)
            if job_id is not None:
                self._run(kind, job_id)
                return True
        return False

    @staticmethod
    def _run_due(tasks: list[tuple[float, Callable[[], object], list[float]]]) -> None:
        for every, fn, last in tasks:
            if time.monotonic() - last[0] >= every:
                last[0] = time.monotonic()
                try:
                    fn()
                except LostLeadership as e:  # the next pass runs none of them
                    log.warning("periodic task %s: %s", getattr(fn, "__name__", fn), e.message)
                except Exception:  # one failing chore must not stop the jobs
                    log.exception("periodic task %s failed", getattr(fn, "__name__", fn))

    def _recover(self, kind: JobKind) -> None:
        m = kind.model
        with self.db.write() as s:
            s.execute(
                update(m)
                .where(m.status == JobState.RUNNING, m.lease_until < clock_sql(s))
                .values(status=JobState.QUEUED, lease_owner=None, updated_at=now())
            )

    def _ask_kinds(self) -> tuple[list[JobKind], dict[str, int | None]]:
        """The kinds whose ``promote`` has work, and each kind's oldest queued job.

        Asked in one statement: in a session each, the questions cost a pool check-out
        with a ping, a BEGIN, a query and a ROLLBACK apiece, thirty round trips twice a
        second on PostgreSQL, which showed in the p99 of the allocations served meanwhile.
        """
        if not self.kinds:
            return [], {}
        columns = [_first_queued_sql(k).label(f"q{i}") for i, k in enumerate(self.kinds)]
        columns += [
            k.waiting().label(f"w{i}") for i, k in enumerate(self.kinds) if k.waiting is not None
        ]
        with self.db.read() as s:
            row = s.execute(select(*columns)).one()._mapping
        promote = [
            k
            for i, k in enumerate(self.kinds)
            if k.promote is not None and (k.waiting is None or row[f"w{i}"])
        ]
        return promote, {k.name: row[f"q{i}"] for i, k in enumerate(self.kinds)}

    @staticmethod
    def _first_queued(s: Session, kind: JobKind) -> int | None:
        job_id: int | None = s.scalar(select(_first_queued_sql(kind)))
        return job_id

    def _claim(self, kind: JobKind, job_id: int) -> int | None:
        """Lease queued job ``job_id``: its id, or None if another worker got it first."""
        m = kind.model
        with self.db.write() as s:
            claimed = s.execute(
                update(m)
                .where(m.id == job_id, m.status == JobState.QUEUED)
                .values(
                    status=JobState.RUNNING,
                    lease_owner=self.owner,
                    lease_until=clock_sql(s) + self.lease_s,
                    updated_at=now(),
                    error=None,
                )
            ).rowcount
        return job_id if claimed else None

    def _run(self, kind: JobKind, job_id: int) -> None:
        m = kind.model
        done = threading.Event()
        renewer = threading.Thread(
            target=self._renew, args=(m, job_id, done), name="job-lease", daemon=True
        )
        renewer.start()
        # Every log line of the job, its failure included, carries its id (control.logs).
        with job_context(kind.name, job_id):
            started = time.monotonic()
            try:
                kind.run(job_id)
                log.info(
                    "%s job %s ran in %.2f s",
                    kind.name,
                    job_id,
                    time.monotonic() - started,
                    extra={"duration_s": round(time.monotonic() - started, 3)},
                )
            except ChangeoverError as e:
                log.info("%s job %s failed: %s", kind.name, job_id, e.message)
                self._fail(m, job_id, e.message)
            except Exception as e:
                log.exception("%s job %s crashed", kind.name, job_id)
                self._fail(m, job_id, f"internal error: {type(e).__name__}: {e}")
            finally:
                done.set()
                renewer.join()

    def _renew(self, m: Any, job_id: int, done: threading.Event) -> None:
        """Keep the lease of a long job alive; a dead worker's lease runs out instead."""
        while not done.wait(self.lease_s / 3):
            try:
                with self.db.write() as s:
                    kept = rowcount(
                        s.execute(
                            update(m)
                            .where(m.id == job_id, m.lease_owner == self.owner)
                            .values(lease_until=clock_sql(s) + self.lease_s)
                        )
                    )
                if not kept:  # its handler is idempotent: the other worker's run is the one
                    log.warning("job %s: its lease ran out and another worker took it", job_id)
                    return
            except Exception:  # the next renewal may succeed; the job itself goes on
                log.exception("renewing the lease of job %s failed", job_id)

    def _fail(self, m: Any, job_id: int, message: str) -> None:
        with self.db.write() as s:
            s.execute(
                update(m)
                .where(m.id == job_id, m.lease_owner == self.owner)
                .values(status=JobState.FAILED, error=message[:4000], updated_at=now())
            )
