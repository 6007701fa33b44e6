"""Quiet syncs: an agent with nothing new costs one indexed read and no write transaction.

Most syncs of a settled fleet repeat the last one. An agent that applied an earlier answer
sends that answer's ``revision`` (the database's clock when it was read) and only the
observations that changed since (``partial``). Its sync is *quiet*, answered with
"nothing new" from a single statement, when all of these hold:

- it reports no observation, and the builds it has staged are those stored;
- no instance row of its host changed since ``revision - MARGIN_S``
  (``instances.sync_changed_at``, through ix_instances_host_sync_changed: the players
  Server Allocate adds do not count), nor anything else of its
  desired state (``hosts.desired_at``: a build to stage, a fleet edit, a job over);
- its host is not due for re-planning (``SyncMemory``: a drain or notice deadline coming,
  or ``PLAN_EVERY_S`` since the last plan, which also brings stand-ins for lost hosts);
- its revision is younger than ``FULL_AFTER_S`` (older ones get the whole state again).

The margin covers a write that read the clock before our read and committed after it
(the same reasoning as ``patchjobs.job_view``). A quiet sync's heartbeat is batched
(``SyncMemory.beat``, written within ``FLUSH_EVERY_S``), far inside the ``LOST_AFTER_S``
after which a silent host counts as lost.

A host waiting for our answer is not silent: while a sync of a host's known agent is being
answered (``SyncMemory.calling``), the flusher writes its heartbeat as "now" every
``FLUSH_EVERY_S``, and this process's reconciler asks ``SyncMemory.heard`` besides the
database (on SQLite the flush itself may queue behind the very writes that keep the sync
waiting). A control plane slow to answer never makes a host look lost.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.orm import Session

from changeover.control.db import Database
from changeover.control.db import now as clock_now
from changeover.control.fleet.models import Host, Instance
from changeover.control.fleet.pacing import SyncPacer
from changeover.control.patchjobs.job_view import MARGIN_S, clock_sql
from changeover.errors import ChangeoverError

log = logging.getLogger("changeover.fleet")

PLAN_EVERY_S: Final = 15.0
"""A host is re-planned at least this often, changed or not (lost hosts' stand-ins, a
placement rule that depends on another host)."""
FULL_AFTER_S: Final = 60.0
"""An agent whose revision is older than this gets its whole desired state, not changes."""
FLUSH_EVERY_S: Final = 1.0
"""How often quiet syncs' heartbeats are written."""


class SyncMemory:
    """What one control-plane process remembers of hosts' syncs: when each host is next
    due for re-planning, and the heartbeats of quiet syncs not written yet. Lost with the
    process, which costs nothing but one full sync per host (every host is then due)."""

    def __init__(self) -> None:
        self._due: dict[int, float] = {}
        self._beats: dict[int, float] = {}
        self._holders: dict[int, str] = {}
        """Host id -> the agent whose sync was last answered (the host's holder then)."""
        self._arrived: dict[int, float] = {}
        """Host id -> when its holder's last sync arrived (kept after a flush)."""
        self._calling: Counter[int] = Counter()
        """Host id -> its holder's syncs being answered now."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self, host_id: int, now: float) -> bool:
        return self._due.get(host_id, 0.0) <= now

    def planned(self, host_id: int, next_due: float) -> None:
        self._due[host_id] = next_due

    def beat(self, host_id: int, at: float) -> None:
        with self._lock:
            self._beats[host_id] = max(at, self._beats.get(host_id, 0.0))

    @contextmanager
    def calling(self, host_id: int, agent_uid: str, arrived: float) -> Iterator[None]:
        """Around the answer to a sync that arrived at ``arrived``: if it comes from the
        agent this process last answered for the host, the host is heard from until the
        answer is out (an unknown or replaced agent is heard only once answered: its sync
        proves nothing before ``hosts.sync`` has checked it). An answered sync makes its
        agent the known one; a refused one forgets it (a request cut short changes nothing)."""
        known = self._holders.get(host_id) == agent_uid
        if known:
            with self._lock:
                self._calling[host_id] += 1
                self._arrived[host_id] = max(arrived, self._arrived.get(host_id, 0.0))
        try:
            yield
        except ChangeoverError:  # not the host's agent (Conflict), no such host (NotFound)
            self._holders.pop(host_id, None)
            raise
        else:
            self._holders[host_id] = agent_uid
            with self._lock:
                self._arrived[host_id] = max(arrived, self._arrived.get(host_id, 0.0))
        finally:
            if known:
                with self._lock:
                    self._calling[host_id] -= 1
                    if self._calling[host_id] <= 0:
                        del self._calling[host_id]

    def answering(self) -> int:
        """Syncs of known agents being answered now (``calling``)."""
        with self._lock:
            return sum(self._calling.values())

    def heard(self, since: float) -> frozenset[int]:
        """Hosts this process heard from at or after ``since``, or is answering now."""
        with self._lock:
            return frozenset(self._calling) | frozenset(
                h for h, at in self._arrived.items() if at >= since
            )

    def flush(self, db: Database, now: float | None = None) -> int:
        """Write the pending heartbeats (never moving one back), and ``now`` for the hosts
        whose syncs are being answered; how many."""
        with self._lock:
            beats, self._beats = self._beats, {}
            if self._calling:
                at = clock_now() if now is None else now
                beats.update((h, max(at, beats.get(h, 0.0))) for h in self._calling)
        if not beats:
            return 0
        with db.write(urgent=True) as s:  # one small write a second, that must not wait
            s.connection().execute(
                update(Host.__table__)
                .where(Host.__table__.c.id == bindparam("host"))
                .where(Host.__table__.c.last_seen_at < bindparam("at"))
                .values(last_seen_at=bindparam("at")),
                [{"host": h, "at": at} for h, at in beats.items()],
            )
        return len(beats)

    def start(self, db: Database) -> None:
        def loop() -> None:
            while not self._stop.wait(FLUSH_EVERY_S):
                try:
                    self.flush(db)
                except Exception:  # the next flush writes them (a heartbeat only grows)
                    log.exception("writing heartbeats failed")

        self._thread = threading.Thread(target=loop, name="heartbeats", daemon=True)
        self._thread.start()

    def stop(self, db: Database) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.flush(db)
        except Exception:  # shutting down: the agents' next syncs say the same
            log.exception("writing the last heartbeats failed")


def answer(
    s: Session,
    memory: SyncMemory,
    pacer: SyncPacer,
    *,
    host_id: int,
    agent_uid: str,
    since: float,
    staged_json: str,
    now: float,
) -> dict[str, Any] | None:
    """The "nothing new" answer to a quiet sync (see the module docstring), or None when
    the sync must take the full path (which also gives any error its words)."""
    if memory.due(host_id, now):
        return None
    changed = exists().where(
        Instance.host_id == host_id, Instance.sync_changed_at > since - MARGIN_S
    )
    row = s.execute(
        select(
            Host.name, Host.agent_uid, Host.staged, Host.desired_at, clock_sql(s), changed
        ).where(Host.id == host_id)
    ).first()
    if row is None:
        return None
    name, uid, staged, desired_at, clock, any_changed = row
    if (
        uid != agent_uid
        or staged != staged_json
        or any_changed
        or (desired_at is not None and desired_at > since - MARGIN_S)
        or clock - since > FULL_AFTER_S
    ):
        return None
    return {
        "host": {"id": host_id, "name": name},
        "sync_interval_s": pacer.interval_for(s, now),
        "revision": float(clock),
        "full": False,
        "instances": [],
        "gone": [],
    }


__all__ = ["FULL_AFTER_S", "PLAN_EVERY_S", "SyncMemory", "answer"]
