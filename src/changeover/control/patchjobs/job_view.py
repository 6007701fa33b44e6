"""A job's instances as its planner sees them, kept up to date from what changed.

The reconciler used to read every instance of a job's fleets on every pass; at 100,000
instances that read was most of its cost, though a pass usually follows a few hundred
changes. A ``JobView`` reads the whole set once, then on each pass only the rows whose
``changed_at`` (set by the database on every write, migration 0010) is at or after the
time of its previous read, less ``MARGIN_S``:

- the margin covers a write that took its clock reading before our read and committed
  after it: such a row is read again at the next pass, as long as its transaction lasted
  less than ``MARGIN_S`` (ours last milliseconds);
- whatever even that could miss (a longer transaction, a row deleted by pruning) is found
  by a full read every ``REBUILD_S``, as after a restart (the view lives in memory only:
  nothing the reconciler records depends on it being complete, only how soon it acts).

``version`` changes whenever the views do, so the reconciler can tell an unchanged job by
one comparison instead of comparing every instance.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.orm import Session

from changeover.control.db import clock_sql, db_clock
from changeover.control.fleet.models import Host, Instance, Region, fleet_member, live_instances
from changeover.control.fleet.services import LOST_AFTER_S
from changeover.control.patchjobs.model import InstanceView
from changeover.control.patchjobs.states import LOST
from changeover.control.patchjobs.strategies.memo import JobInstances

MARGIN_S: Final = 5.0
REBUILD_S: Final = 60.0
_versions = itertools.count(1)
"""One counter for every view: a view built again never repeats an earlier one's version."""


def _columns() -> Select[*tuple[Any, ...]]:
    # Plain columns, not ORM objects: this runs over every instance of a job.
    return (
        select(
            Instance.id,
            Instance.fleet_id,
            Instance.profile_id,
            Instance.state,
            Instance.desired,
            Instance.players,
            Instance.ready_at,
            Instance.restarts,
            Instance.launch_key,
            Instance.state_saved_at,
            Host.name,
            Region.name,
        )
        .join(Host, Host.id == Instance.host_id)
        .join(Region, Region.id == Host.region_id)
        .where(fleet_member())  # a build machine trial's server is no job's
    )


def _belongs(job_id: int) -> ColumnElement[bool]:
    """Every instance that still runs (or is meant to), and every one this job launched
    (even stopped: its gate must see a failed start as failed, not as missing)."""
    return or_(live_instances(), Instance.launch_key.like(f"job{job_id}/%"))


def _row_belongs(job_id: int, row: Sequence[Any]) -> bool:
    desired, state, launch_key = row[4], row[3], row[8]
    return (
        desired != "stopped"
        or state != "stopped"
        or (launch_key is not None and launch_key.startswith(f"job{job_id}/"))
    )


def to_view(row: Sequence[Any], lost: bool) -> InstanceView:
    """The planner's view of one row of ``_columns``; ``lost``: its host is silent."""
    state = LOST if lost and row[3] != "stopped" else row[3]
    return InstanceView(
        instance_id=row[0],
        fleet_id=row[1],
        host=row[10],
        version_id=row[2],
        state=state,
        region=row[11],
        desired=row[4],
        players=row[5],
        ready_since=row[6] if state == "ready" else None,
        restarts=row[7],
        launch_key=row[8],
        state_saved_at=row[9],
    )


def read_all(s: Session, job_id: int, fleet_ids: Iterable[int]) -> list[tuple[Any, ...]]:
    """Every row of the job's view, in id order (see ``_belongs``)."""
    q = (
        _columns()
        .where(Instance.fleet_id.in_(list(fleet_ids)), _belongs(job_id))
        .order_by(Instance.id)
    )
    return [tuple(r) for r in s.execute(q)]


def lost_hosts(
    s: Session, t: float, lost_from: float = 0.0, heard: frozenset[int] = frozenset()
) -> frozenset[str]:
    """Hosts silent for ``LOST_AFTER_S`` at ``t``; none before ``lost_from`` (a control
    plane that just started has not heard from any agent yet, and must not take its own
    absence for theirs). ``heard``: ids of hosts this process heard from meanwhile or is
    answering now (``fleet.quiet.SyncMemory.heard``), whatever the database says yet."""
    if t < lost_from:
        return frozenset()
    rows = s.execute(select(Host.id, Host.name).where(Host.last_seen_at <= t - LOST_AFTER_S))
    return frozenset(name for host_id, name in rows if host_id not in heard)


class JobView:
    """The instances of one job's fleets (see the module docstring)."""

    def __init__(self, job_id: int, fleet_ids: Iterable[int]) -> None:
        self.job_id = job_id
        self.fleet_ids = frozenset(fleet_ids)
        self.version = 0
        self.rebuilds = 0
        """Full reads so far: one, then one every ``REBUILD_S``."""
        self._rows: dict[int, tuple[Any, ...]] = {}
        self._views: dict[int, InstanceView] = {}
        self._lost: frozenset[str] = frozenset()
        self._read_to: float | None = None
        self._built_at = 0.0
        self._in_order = True
        self.table = JobInstances()
        """The same views, kept up to date for incremental planning (``strategies.memo``)."""

    def refresh(
        self, s: Session, t: float, lost_from: float = 0.0, heard: frozenset[int] = frozenset()
    ) -> int:
        """Bring the view up to date at ``t``; how many rows were read (``heard``: see
        ``lost_hosts``)."""
        clock = db_clock(s)
        lost = lost_hosts(s, t, lost_from, heard)
        if self._read_to is None or t - self._built_at >= REBUILD_S or t < self._built_at:
            rows = read_all(s, self.job_id, self.fleet_ids)
            self._rebuild(rows, lost)
            self._built_at = t
            self.rebuilds += 1
        else:
            q = _columns().where(
                and_(
                    Instance.fleet_id.in_(sorted(self.fleet_ids)),
                    Instance.changed_at >= self._read_to - MARGIN_S,
                )
            )
            rows = [tuple(r) for r in s.execute(q)]
            self._apply(rows, lost)
        self._read_to = clock
        return len(rows)

    def views(self) -> list[InstanceView]:
        """The views in instance id order, as the planner wants them."""
        if not self._in_order:
            self._views = dict(sorted(self._views.items()))
            self._in_order = True
        return list(self._views.values())

    def _rebuild(self, rows: list[tuple[Any, ...]], lost: frozenset[str]) -> None:
        self._rows = {r[0]: r for r in rows}
        self._views = {r[0]: to_view(r, r[10] in lost) for r in rows}
        for gone in [k for k in self.table.by_id if k not in self._views]:
            self.table.drop(gone)
        for v in self._views.values():
            self.table.put(v)
        self._lost = lost
        self._in_order = True
        self.version = next(_versions)

    def _apply(self, rows: list[tuple[Any, ...]], lost: frozenset[str]) -> None:
        changed = False
        if lost != self._lost:
            moved = lost ^ self._lost
            for key, row in self._rows.items():
                if row[10] in moved:
                    self._views[key] = to_view(row, row[10] in lost)
                    self.table.put(self._views[key])
                    changed = True
            self._lost = lost
        last = next(reversed(self._views), 0)
        for row in rows:
            key = row[0]
            if not _row_belongs(self.job_id, row):
                if self._rows.pop(key, None) is not None:
                    del self._views[key]
                    self.table.drop(key)
                    changed = True
                continue
            if self._rows.get(key) == row:
                continue
            if key not in self._rows:
                if key < last:
                    self._in_order = False
                last = max(last, key)
            self._rows[key] = row
            self._views[key] = to_view(row, row[10] in lost)
            self.table.put(self._views[key])
            changed = True
        if changed:
            self.version = next(_versions)


__all__ = [
    "MARGIN_S",
    "REBUILD_S",
    "JobView",
    "clock_sql",
    "db_clock",
    "lost_hosts",
    "read_all",
    "to_view",
]
