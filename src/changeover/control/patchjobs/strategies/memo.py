"""What a caller keeps between passes of one job, so that a pass costs what changed.

A planner is a pure function of (spec, progress, instances, now), and a pass that reads
every instance and judges every member costs in proportion to the job. The bulk of a long
job (a 12 h bleed-off of thousands of servers) is draining members with players: between
two of its notices nothing can happen to one of them but a change of its own row, yet a
full pass judges every one again. Two things let a pass skip them:

- ``JobInstances``: the job's instances by id, kept up to date by the caller (``put`` a
  view that changed, ``drop`` one that left) and saying which ids changed since the last
  pass, instead of a list rebuilt for each pass;
- ``Memo``: what earlier passes learned. ``common.retire_all`` keeps a ``Roster`` per
  step: which members still run, when each one's answer can next change (its next notice
  or its deadline), and judges again only the members whose row changed or whose time came.

A memo is a hint, never a source of truth: a plan with it equals a plan without it
(``tests/unit/control/patchjobs/test_memo.py`` checks that over random sequences of
changes and times). It is used only while the pass is the continuation of the one it
saw: the same spec, the same ``JobInstances``, the very progress mappings the last pass
returned (the caller may merge outside fields such as ``staged``, never these) and a
clock that did not go back. Anything else (a restart, a progress read back from a
database, a list of views) empties it and the pass judges every member, as without it.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from changeover.control.patchjobs.model import InstanceView, JobProgress, JobSpec, Member


class JobInstances:
    """A job's instances by id (what ``fleet_view.instance_views`` reads), kept by the
    caller between passes; ``take_changed`` is for the planner."""

    def __init__(self, views: Iterable[InstanceView] = ()) -> None:
        self.by_id: dict[int, InstanceView] = {}
        self.by_launch: dict[str, InstanceView] = {}
        self._changed: set[int] = set()
        for v in views:
            self.put(v)

    def put(self, view: InstanceView) -> None:
        old = self.by_id.get(view.instance_id)
        if old is view or old == view:
            return
        if old is not None and old.launch_key and old.launch_key != view.launch_key:
            self.by_launch.pop(old.launch_key, None)
        self.by_id[view.instance_id] = view
        if view.launch_key:
            self.by_launch[view.launch_key] = view
        self._changed.add(view.instance_id)

    def drop(self, instance_id: int) -> None:
        old = self.by_id.pop(instance_id, None)
        if old is not None:
            if old.launch_key:
                self.by_launch.pop(old.launch_key, None)
            self._changed.add(instance_id)

    def take_changed(self) -> set[int]:
        """The ids put or dropped since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def __len__(self) -> int:
        return len(self.by_id)


Instances = JobInstances | Sequence[InstanceView]
"""What a planner reads: a list of views for the pass, or a table kept between passes."""


@dataclass
class Roster:
    """One step's members as ``retire_all`` last judged them."""

    members: tuple[Member, ...]
    ids: frozenset[int] = frozenset()
    running: dict[int, float | None] = field(default_factory=dict)
    """Member id -> its drain deadline, for members still running (stopping included)."""
    until: dict[int, float] = field(default_factory=dict)
    """Member id -> when its answer may change (members not yet retired)."""
    heap: list[tuple[float, int]] = field(default_factory=list)
    """``until`` as a heap; entries no longer in ``until`` are skipped."""
    deadlines: Counter[float] = field(default_factory=Counter)
    """How many running members have each deadline."""

    def due(self, changed: set[int], now: float) -> set[int]:
        """Members to judge again: those whose row changed, those whose time came."""
        out = {i for i in changed if i in self.ids}
        heap = self.heap
        while heap and heap[0][0] <= now:
            at, i = heapq.heappop(heap)
            if self.until.get(i) == at:
                del self.until[i]
                out.add(i)
        return out

    def record(
        self, instance_id: int, until: float | None, deadline: float | None, running: bool
    ) -> None:
        """``instance_id`` judged: retired (``until`` None) or to be judged again at
        ``until``; ``running`` (with ``deadline``) or gone."""
        was = self.running.pop(instance_id, None)
        if was is not None:
            self.deadlines[was] -= 1
            if not self.deadlines[was]:
                del self.deadlines[was]
        if running:
            self.running[instance_id] = deadline
            if deadline is not None:
                self.deadlines[deadline] += 1
        if until is None:
            self.until.pop(instance_id, None)
        elif self.until.get(instance_id) != until:
            self.until[instance_id] = until
            heapq.heappush(self.heap, (until, instance_id))

    def next_wake(self) -> float | None:
        heap = self.heap
        while heap and self.until.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None


@dataclass
class Memo:
    """One job's rosters, and what they were learned against (module docstring)."""

    rosters: dict[str, Roster] = field(default_factory=dict)
    changed: set[int] = field(default_factory=set)
    """Instances whose row changed since the last pass (this pass's)."""
    _spec: JobSpec | None = None
    _instances: JobInstances | None = None
    _seen: tuple[Mapping[str, float], Mapping[int, str], Mapping[int, float]] | None = None
    _now: float = float("-inf")

    def begin(
        self,
        spec: JobSpec,
        progress: JobProgress,
        instances: Instances,
        changed: set[int] | None,
        now: float,
    ) -> None:
        """A pass starts: keep the rosters only if it continues the last one."""
        goes_on = (
            changed is not None
            and instances is self._instances
            and (spec is self._spec or spec == self._spec)
            and self._seen is not None
            and progress.issued is self._seen[0]
            and progress.intents is self._seen[1]
            and progress.deadlines is self._seen[2]
            and now >= self._now
        )
        if not goes_on:
            self.rosters.clear()
        self._spec = spec
        self._instances = instances if isinstance(instances, JobInstances) else None
        self.changed = changed or set()
        self._now = now

    def end(self, progress: JobProgress) -> None:
        """The pass returned ``progress``: the next one must start from it."""
        self._seen = (progress.issued, progress.intents, progress.deadlines)

    def roster(self, step: str, members: tuple[Member, ...]) -> tuple[Roster, bool]:
        """The roster of ``step`` over ``members``, and whether it is new (judge all)."""
        r = self.rosters.get(step)
        if r is not None and r.members is members:
            return r, False
        r = self.rosters[step] = Roster(members, frozenset(m.instance_id for m in members))
        return r, True


__all__ = ["Instances", "JobInstances", "Memo", "Roster"]
