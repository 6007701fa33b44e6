"""One leader among the control plane's replicas, chosen through the database.

Every replica serves the whole API. The work that must run once (the patch-job
reconciler, publishing signed metadata, e-mail reports, pruning) runs on the replica that
holds the lease row ``leader_leases['control']``. No home-made consensus: the database
that already orders every write orders this one too.

- **Taking.** A replica takes the lease once it has run out (``expires_at`` is past on the
  database's clock, so the replicas' own clocks do not matter), as ``term + 1``. Followers
  try every ``attempt_every_s``; a leader that dies is replaced within ``lease_s`` and one
  attempt.
- **Keeping.** The leader extends its lease on every attempt, while its holder and term
  are still its own. It also counts the lease as lost, without asking, once ``lease_s``
  has passed since its last extension began (``held``): a leader cut off from the
  database stops starting work before anyone else may take over.
- **Fencing.** Leader work runs in ``fenced()``: every write transaction in it first reads
  the lease row ``FOR KEY SHARE`` and checks that holder and term are still ours and the
  lease unexpired (``check``). A taker locks the row ``FOR UPDATE`` before it writes, and
  that waits for such a transaction to end: a leader paused past its lease (a long pause,
  ``SIGSTOP``, a migrated VM) either commits before the next term begins or fails its
  check and commits nothing, never both. The leader's extension is a plain ``UPDATE``,
  which a ``KEY SHARE`` lock does not hold up. On SQLite, one writer at a time gives the
  same.
- **Stepping down.** A replica that stops expires its own lease, so another takes over at
  its next attempt rather than after the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from sqlalchemy import BigInteger, Float, String, or_, select, text, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from changeover.control.db import Base, Database, clock_sql, fenced
from changeover.errors import ChangeoverError

log = logging.getLogger("changeover.leadership")

LEASE_S: Final = 5.0
ATTEMPT_EVERY_S: Final = 1.0
IDLE_FLOOR_S: Final = 10.0
"""By default a fenced transaction idle this long (or twice the lease, if longer) is ended
by PostgreSQL: the longest a paused leader can hold off the next term."""
CONTROL: Final = "control"
"""The one lease there is: the control plane's leader."""


class LeaderLease(Base):
    """Who leads, since when and until when (on the database's clock); one row per lease,
    made by the migration (0012) so that taking it is always an ``UPDATE``."""

    __tablename__ = "leader_leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64), default="")
    holder_name: Mapped[str] = mapped_column(String(300), default="")
    term: Mapped[int] = mapped_column(BigInteger, default=0)
    acquired_at: Mapped[float] = mapped_column(Float, default=0.0)
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)


class LostLeadership(ChangeoverError):
    """Leader work was refused: this replica no longer holds the lease."""


def replica_name(url: str = "") -> str:
    """How operators tell replicas apart: host, process and the URL it serves."""
    return f"{socket.gethostname()}:{os.getpid()}" + (f" {url}" if url else "")


class Leadership:
    """This replica's side of the lease (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        lease_s: float = LEASE_S,
        attempt_every_s: float = ATTEMPT_EVERY_S,
        name: str = "",
        stuck_after_s: float | None = None,
        eligible: Callable[[], bool] | None = None,
    ) -> None:
        if not 0 < attempt_every_s < lease_s:
            raise ChangeoverError(
                f"a leader must try to keep its lease ({attempt_every_s} s) more often "
                f"than it runs out ({lease_s} s)"
            )
        self.db = db
        self.lease_s = lease_s
        self.attempt_every_s = attempt_every_s
        self.stuck_after_s = stuck_after_s or max(2 * lease_s, IDLE_FLOOR_S)
        """A fenced transaction idle this long is ended by PostgreSQL (``check``)."""
        self.eligible = eligible
        """Whether this replica may take the lease (it holds the signing keys)."""
        self.id = uuid.uuid4().hex
        self.name = name or replica_name()
        self._term: int | None = None
        self._held_until = 0.0  # time.monotonic() after which we count the lease lost
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what other parts ask ------------------------------------------------------------

    @property
    def term(self) -> int | None:
        """The term this replica leads in, or None if it does not lead now."""
        with self._lock:
            if self._term is not None and time.monotonic() >= self._held_until:
                log.warning("leadership: lease of term %s ran out unrenewed", self._term)
                self._term = None
            return self._term

    @property
    def held(self) -> bool:
        return self.term is not None

    def check(self, s: Session) -> None:
        """The fence (see the module docstring): in a write transaction of leader work,
        before it writes anything.

        Raises:
            LostLeadership: another replica took the lease, or ours ran out.
        """
        term = self.term
        if _is_postgres(s):
            # A leader paused inside this transaction holds the lease's lock and so holds
            # off the next term: PostgreSQL ends the transaction once it idles this long.
            idle_ms = int(self.stuck_after_s * 1000)
            s.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {idle_ms}"))
        row = s.execute(
            select(LeaderLease.holder, LeaderLease.term, LeaderLease.expires_at > clock_sql(s))
            .where(LeaderLease.name == CONTROL)
            .with_for_update(read=True, key_share=True)
        ).one()
        holder, current, unexpired = row
        if term is None or holder != self.id or current != term or not unexpired:
            self._lose(term)
            raise LostLeadership(
                f"this replica ({self.name}) no longer leads (its term: {term}, the "
                f"lease's: {current}); the leader does this work"
            )

    @contextmanager
    def fenced(self) -> Iterator[None]:
        """Leader work: every write transaction in it is fenced by ``check``."""
        with fenced(self.check):
            yield

    def only(self, fn: Callable[[], object]) -> Callable[[], None]:
        """``fn`` as leader work: run fenced on the leader, skipped on a follower (whose
        change the leader's next periodic pass picks up)."""

        def on_leader() -> None:
            if self.held:
                with self.fenced():
                    fn()

        return on_leader

    # -- taking and keeping --------------------------------------------------------------

    def attempt(self) -> bool:
        """One round: extend our lease, or take it if it ran out. Whether we lead."""
        began = time.monotonic()
        with self._lock:
            term = self._term
        # Urgent: a renewal queued behind a busy server's writers would lose the lease.
        with fenced(None), self.db.write(urgent=True) as s:
            if _is_postgres(s):
                # A lock held by a stuck transaction (of a leader whose process died while
                # it waited) must not hold up this replica's own start: try again later.
                wait_ms = int(self.attempt_every_s * 1000)
                s.execute(text(f"SET LOCAL lock_timeout = {wait_ms}"))
            clock = clock_sql(s)
            row = LeaderLease.__table__.c
            if term is not None:
                kept = s.scalar(
                    update(LeaderLease)
                    .where(row.name == CONTROL, row.holder == self.id, row.term == term)
                    .values(expires_at=clock + self.lease_s)
                    .returning(row.term)
                )
                if kept is None:
                    self._lose(term)
                    term = None
                else:
                    self._keep(term, began)
                    return True
            if self.eligible is not None and not self.eligible():
                return False
            # Wait for any fenced transaction of the current leader to end (its KEY SHARE
            # lock), then look at the lease as that transaction left it.
            holder, holder_name = s.execute(
                select(row.holder, row.holder_name).where(row.name == CONTROL).with_for_update()
            ).one()
            free = row.expires_at < clock
            if _died_here(holder_name):
                free = or_(free, row.holder == holder)
            taken = s.scalar(
                update(LeaderLease)
                .where(row.name == CONTROL, free)
                .values(
                    holder=self.id,
                    holder_name=self.name[:300],
                    term=row.term + 1,
                    acquired_at=clock,
                    expires_at=clock + self.lease_s,
                )
                .returning(row.term)
            )
        if taken is None:
            return False
        log.info("leadership: %s leads from now on (term %s)", self.name, taken)
        self._keep(int(taken), began)
        return True

    def _keep(self, term: int, began: float) -> None:
        with self._lock:
            self._term = term
            self._held_until = began + self.lease_s

    def _lose(self, term: int | None) -> None:
        with self._lock:
            if self._term is not None and self._term == term:
                log.warning("leadership: %s lost the lease of term %s", self.name, term)
                self._term = None

    def step_down(self) -> None:
        """Give the lease up now (on a clean stop), so that another replica need not wait
        for it to run out."""
        with self._lock:
            term, self._term = self._term, None
        if term is None:
            return
        with fenced(None), self.db.write() as s:
            row = LeaderLease.__table__.c
            s.execute(
                update(LeaderLease)
                .where(row.name == CONTROL, row.holder == self.id, row.term == term)
                .values(expires_at=0.0)
            )
        log.info("leadership: %s stepped down (term %s)", self.name, term)

    # -- the thread ----------------------------------------------------------------------

    def start(self) -> None:
        """Try once now (a single replica leads from its first request on), then keep
        trying on a thread."""
        self._try()
        self._thread = threading.Thread(target=self._loop, name="leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.step_down()
        except Exception:  # the lease runs out by itself anyway
            log.exception("leadership: stepping down failed")

    def _loop(self) -> None:
        while not self._stop.wait(self.attempt_every_s):
            self._try()

    def _try(self) -> None:
        try:
            self.attempt()
        except Exception as e:  # noqa: BLE001 (away or busy: ``held`` runs out by itself)
            log.warning("leadership: an attempt failed: %s", str(e).splitlines()[0][:300])


def _is_postgres(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


def _died_here(holder_name: str) -> bool:
    """Whether the lease's holder was a process of this machine that no longer runs: a
    control plane restarted after a crash (the embedded, one-machine case) takes its lease
    back at once instead of waiting for it to run out."""
    host, _, rest = holder_name.partition(":")
    pid = rest.split(" ", 1)[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user
        return False
    return False


def current_leader(s: Session) -> tuple[str, int, bool]:
    """The lease as the database has it: holder's name, term, and whether it is unexpired."""
    row = s.execute(
        select(
            LeaderLease.holder_name, LeaderLease.term, LeaderLease.expires_at > clock_sql(s)
        ).where(LeaderLease.name == CONTROL)
    ).one()
    return str(row[0]), int(row[1]), bool(row[2])


__all__ = [
    "ATTEMPT_EVERY_S",
    "LEASE_S",
    "LeaderLease",
    "Leadership",
    "LostLeadership",
    "current_leader",
    "replica_name",
]
