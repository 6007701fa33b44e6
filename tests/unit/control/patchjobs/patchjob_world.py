"""A tiny in-memory world for patch-job planners: instances, players, a fake clock.

``World`` applies actions the way the reconciler and the agents will (each action once per
key; a StartInstance creates a row with ``launch_key``; StopInstance with
``require_empty`` is a compare-and-set), moves time to the next event (an instance
becoming ready or failing, players leaving or joining), and records everything a test
wants to assert on: stops with the players on board, notices, allocation switches.

Slots, as the agent keeps them: an instance started to replace another takes its slot when
``exclusive_slots`` is on (state that must pass on), else a fresh one, and its process
starts only once no other live instance holds that slot (until then it is ``staging``);
``overlaps`` records any moment two processes would run on one slot (never, if the world
is right).

``drive`` plays a reconciler: plan, record the progress, apply the actions, re-plan at
once when something was done, else advance to the earlier of the planner's wake-up and the
world's next event. ``crash_after`` makes it lose its memory after applying only part of a
decision; it then replays the recorded-but-unapplied actions (the outbox) before planning
again, as the real reconciler must.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from changeover.control.patchjobs import METHODS, JobInstances, Memo, Planner
from changeover.control.patchjobs.model import (
    Action,
    BuildPair,
    Decision,
    Finish,
    InstanceView,
    JobProgress,
    JobSpec,
    MarkDraining,
    Method,
    Notify,
    RunCheck,
    StageBuild,
    StartInstance,
    StopInstance,
    SwitchAllocation,
    Undrain,
)

A = TypeVar("A")
T0 = 1_700_000_000.0
OLD, NEW = 100, 200


@dataclass
class Inst:
    instance_id: int
    fleet_id: int
    host: str
    region: str
    version_id: int
    state: str = "ready"
    desired: str = "running"
    ready_since: float | None = T0 - 3600
    restarts: int = 0
    launch_key: str | None = None
    state_saved_at: float | None = None
    leaves: list[float] = field(default_factory=list)
    """When each player on it leaves (inf: never)."""
    drain_deadline: float | None = None
    slot: int = 0
    """Its state slot on its host (``placement.pick_slot``)."""

    @property
    def players(self) -> int:
        return len(self.leaves)

    def view(self) -> InstanceView:
        return InstanceView(
            instance_id=self.instance_id,
            fleet_id=self.fleet_id,
            host=self.host,
            version_id=self.version_id,
            state=self.state,
            region=self.region,
            desired=self.desired,
            players=self.players,
            ready_since=self.ready_since,
            restarts=self.restarts,
            launch_key=self.launch_key,
            state_saved_at=self.state_saved_at,
        )


@dataclass
class Stop:
    at: float
    instance_id: int
    players: int
    action: StopInstance
    before_deadline: bool


class World:
    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.instances: dict[int, Inst] = {}
        self.next_id = 1000
        self.applied: dict[str, Action] = {}
        self.log: list[tuple[float, Action]] = []
        self.stops: list[Stop] = []
        self.refused: dict[int, StopInstance] = {}
        self.notices: list[tuple[float, Notify]] = []
        self.weights: dict[int, float] = {}
        self.switches: list[tuple[float, SwitchAllocation]] = []
        self.staged: set[tuple[str, int]] = set()
        self.check_results: dict[str, bool] = {}
        self.events: list[tuple[float, int, str, int]] = []  # (time, seq, kind, instance)
        self.seq = 0
        # behaviour
        self.start_delay_s = 5.0
        self.auto_stage = True
        self.broken_versions: set[int] = set()
        self.crash_versions: set[int] = set()
        self.silent_versions: set[int] = set()
        """Builds whose server starts but never passes its health check (stays starting)."""
        self.stop_delay_s = 0.0
        """How long a process takes to end after its stop (0: at once)."""
        self.stop_delays: dict[int, float] = {}
        """The same per build, where it differs (inf: never)."""
        self.exclusive_slots = False
        self.waiting: dict[int, str] = {}
        """Instance -> what it does once its slot is free (``ready``, ``fail``, …)."""
        self.overlaps: list[tuple[float, str, int]] = []
        self.fail_first = 0
        """The next this many StartInstances never become ready (failed)."""
        self.crash_first = 0
        """The next this many StartInstances crash 30 s after becoming ready."""
        self.crashers: set[int] = set()
        self.check_passes: bool | None = True
        self.savers: set[int] = set()
        """Instances that acknowledge "state saved" 2 s after any notice."""
        self.joins: list[tuple[float, float, int | None]] = []  # (at, stays, friend-of)

    # -- set-up ------------------------------------------------------------------------

    def add(
        self,
        *,
        fleet_id: int = 1,
        host: str | None = None,
        region: str = "eu",
        version_id: int = OLD,
        leaves: Iterable[float] = (),
    ) -> Inst:
        iid = self.next_id
        self.next_id += 1
        i = Inst(iid, fleet_id, host or f"h{iid}", region, version_id, leaves=sorted(leaves))
        i.slot = self._free_slot(i.host)
        self.instances[iid] = i
        for t in i.leaves:
            self._at(t, "leave", iid)
        return i

    def join(self, at: float, stays_s: float, friend_of: int | None = None) -> None:
        """A player arrives at ``at`` and plays ``stays_s``: allocated like the allocator
        would (weight, then the newest build, then the fullest), or onto a friend's."""
        self.joins.append((at, stays_s, friend_of))
        self._at(at, "join", len(self.joins) - 1)

    def _at(self, t: float, kind: str, ref: int) -> None:
        if t == float("inf"):
            return  # never happens
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, ref))

    # -- reading ---------------------------------------------------------------------------

    def view(self) -> list[InstanceView]:
        return [i.view() for i in self.instances.values()]

    def alive(self) -> list[Inst]:
        return [i for i in self.instances.values() if i.state not in ("stopped", "lost")]

    def launched(self, job_id: int, prefix: str = "main/start/") -> list[Inst]:
        key = f"job{job_id}/{prefix}"
        return [i for i in self.instances.values() if (i.launch_key or "").startswith(key)]

    def of_kind(self, kind: type[A]) -> list[A]:
        return [a for _, a in self.log if isinstance(a, kind)]

    # -- acting ----------------------------------------------------------------------------

    def apply(self, a: Action) -> None:
        if a.key in self.applied:
            return  # the reconciler's unique key: a replay changes nothing
        self.applied[a.key] = a
        self.log.append((self.now, a))
        if isinstance(a, StageBuild):
            if self.auto_stage:
                self.staged.add((a.host, a.version_id))
        elif isinstance(a, StartInstance):
            iid = self.next_id
            self.next_id += 1
            region = next((i.region for i in self.instances.values() if i.host == a.host), "eu")
            inst = Inst(iid, a.fleet_id, a.host, region, a.version_id, state="starting")
            inst.ready_since, inst.launch_key = None, a.key
            before = self.instances.get(a.replaces_id) if a.replaces_id is not None else None
            same_host = before is not None and before.host == a.host
            taken = before is not None and same_host and self.exclusive_slots
            inst.slot = before.slot if taken and before is not None else self._free_slot(a.host)
            self.instances[iid] = inst
            kind = "fail" if a.version_id in self.broken_versions else "ready"
            if a.version_id in self.silent_versions:
                kind = "silent"
            if self.fail_first > 0:
                self.fail_first, kind = self.fail_first - 1, "fail"
            elif self.crash_first > 0:
                self.crash_first -= 1
                self.crashers.add(iid)
            if self._slot_holder(inst) is not None:
                inst.state, self.waiting[iid] = "staging", kind
            else:
                self._at(self.now + self.start_delay_s, kind, iid)
        elif isinstance(a, MarkDraining):
            inst = self.instances[a.instance_id]
            inst.desired, inst.drain_deadline = "draining", a.deadline
        elif isinstance(a, Undrain):
            inst = self.instances[a.instance_id]
            inst.desired, inst.drain_deadline = "running", None
        elif isinstance(a, Notify):
            self.notices.append((self.now, a))
            if a.instance_id in self.savers:
                self._at(self.now + 2, "saved", a.instance_id)
        elif isinstance(a, StopInstance):
            self._stop(a)
        elif isinstance(a, SwitchAllocation):
            self.weights.update(dict(a.weights))
            self.switches.append((self.now, a))
        elif isinstance(a, RunCheck) and self.check_passes is not None:
            self.check_results[a.key] = self.check_passes

    def _stop(self, a: StopInstance) -> None:
        inst = self.instances[a.instance_id]
        if a.require_empty and inst.players > 0:
            # Lost the compare-and-set to a player: drain instead; the fleet's own drain
            # rules stop it once empty or at the fallback deadline.
            inst.desired, inst.drain_deadline = "draining", a.fallback_deadline
            self.refused[inst.instance_id] = a
            self._at(a.fallback_deadline, "fleet-deadline", inst.instance_id)
            return
        early = inst.drain_deadline is None or self.now < inst.drain_deadline
        self.stops.append(Stop(self.now, inst.instance_id, inst.players, a, early))
        self._end(inst)

    def _fleet_stop(self, inst: Inst) -> None:
        a = self.refused.pop(inst.instance_id)
        self.stops.append(Stop(self.now, inst.instance_id, inst.players, a, False))
        self._end(inst)

    def _end(self, inst: Inst) -> None:
        """Stop ``inst``'s process: at once, or ``stop_delay_s`` later."""
        inst.desired, inst.leaves = "stopped", []
        if inst.instance_id in self.waiting:  # no process yet: nothing to wait for
            del self.waiting[inst.instance_id]
            self._gone(inst)
        elif (delay := self.stop_delays.get(inst.version_id, self.stop_delay_s)) > 0:
            inst.state = "stopping"
            self._at(self.now + delay, "ended", inst.instance_id)
        else:
            self._gone(inst)

    def _gone(self, inst: Inst) -> None:
        inst.state = "stopped"
        for iid, kind in list(self.waiting.items()):  # a process waiting for the slot starts
            waiter = self.instances[iid]
            if self._slot_holder(waiter) is None:
                del self.waiting[iid]
                waiter.state = "starting"
                self._at(self.now + self.start_delay_s, kind, iid)

    def _free_slot(self, host: str) -> int:
        held = {i.slot for i in self.instances.values() if i.host == host and not self._dead(i)}
        slot = 0
        while slot in held:
            slot += 1
        return slot

    @staticmethod
    def _dead(i: Inst) -> bool:
        return i.state in ("stopped", "lost")

    def _slot_holder(self, inst: Inst) -> Inst | None:
        """Another instance whose process (or start) holds ``inst``'s slot."""
        for other in self.instances.values():
            same = other.host == inst.host and other.slot == inst.slot
            running = not self._dead(other) and other.instance_id not in self.waiting
            if other is not inst and same and running:
                return other
        return None

    def next_event(self) -> float | None:
        return self.events[0][0] if self.events else None

    def advance(self, to: float) -> None:
        """Move the clock to ``to``, playing every event due by then in order."""
        while self.events and self.events[0][0] <= to:
            at, _, kind, ref = heapq.heappop(self.events)
            self.now = max(self.now, at)
            self._event(kind, ref)
        self.now = max(self.now, to)

    def _event(self, kind: str, ref: int) -> None:
        if kind == "join":
            self._allocate(*self.joins[ref])
            return
        inst = self.instances[ref]
        if inst.state in ("stopped", "lost"):
            return
        if kind == "ended":
            self._gone(inst)
            return
        if inst.state == "stopping":
            return  # on its way down: no longer ready, failing or crashing
        if kind in ("ready", "fail", "silent"):
            holder = self._slot_holder(inst)
            if holder is not None:
                self.overlaps.append((self.now, inst.host, inst.slot))
        if kind == "ready":
            inst.state, inst.ready_since = "ready", self.now
            if inst.version_id in self.crash_versions or ref in self.crashers:
                self._at(self.now + 30, "crash", ref)
        elif kind == "fail":
            inst.state = "failed"
        elif kind == "crash":
            inst.restarts += 1
            inst.ready_since = self.now + 1  # back up a second later
        elif kind == "leave" and inst.leaves:
            inst.leaves.remove(min(inst.leaves))
            if not inst.leaves and ref in self.refused:
                self._fleet_stop(inst)
        elif kind == "fleet-deadline" and ref in self.refused:
            self._fleet_stop(inst)
        elif kind == "saved":
            inst.state_saved_at = self.now

    def _allocate(self, at: float, stays_s: float, friend_of: int | None) -> None:
        friend = self.instances.get(friend_of) if friend_of is not None else None
        if friend and friend.state == "ready" and friend.desired in ("running", "draining"):
            target: Inst | None = friend
        else:
            open_ = [i for i in self.alive() if i.state == "ready" and i.desired == "running"]
            open_.sort(
                key=lambda i: (-self.weights.get(i.version_id, 1.0), -i.version_id, -i.players)
            )
            target = open_[0] if open_ else None
        if target is not None:
            target.leaves.append(at + stays_s)
            self._at(at + stays_s, "leave", target.instance_id)


@dataclass
class Run:
    progress: JobProgress
    decisions: list[tuple[float, Decision]]
    keys: list[str]


Check = Callable[[World, JobProgress], None]
Operator = Callable[[World, JobProgress], JobProgress]


def drive(
    world: World,
    spec: JobSpec,
    progress: JobProgress | None = None,
    *,
    check: Check | None = None,
    operator: Operator | None = None,
    crash_after: Callable[[int], int | None] | None = None,
    max_passes: int = 20_000,
    stop_when: Callable[[JobProgress], bool] | None = None,
    memo: bool = False,
) -> Run:
    """Run the job's planner against ``world`` until it ends (see the module docstring).

    ``crash_after(pass_number)``: apply only that many actions of the pass, then "crash"
    (the rest stays in the outbox and is replayed before the next plan).
    ``memo``: also plan from a ``JobInstances`` kept up to date and a ``Memo`` (which a
    crash empties, as it would the reconciler's), check that the decision is the one
    planned without them, and go on from it.
    """
    planner = METHODS[spec.method].planner
    table, kept = JobInstances(), Memo()
    p = progress or JobProgress()
    decisions: list[tuple[float, Decision]] = []
    keys: list[str] = []
    outbox: list[Action] = []
    for n in range(max_passes):
        for a in outbox:  # a restarted reconciler replays what it recorded first
            world.apply(a)
        outbox = []
        p = replace(p, staged=frozenset(world.staged), check_results=dict(world.check_results))
        if operator is not None:
            p = operator(world, p)
        view = world.view()
        d = planner(spec, p, view, world.now)
        # Pure and deterministic: the same inputs give the same decision.
        assert planner(spec, p, view, world.now) == d
        if memo:
            d = _with_memo(planner, spec, p, view, world.now, table, kept, d)
        decisions.append((world.now, d))
        for a in d.actions:
            assert a.key not in keys, f"planner emitted {a.key} twice"
            keys.append(a.key)
        p = d.progress  # recorded before acting
        limit = crash_after(n) if crash_after else None
        todo = list(d.actions)
        if limit is not None:
            todo, outbox = todo[:limit], todo[limit:]
            kept = Memo()
        for a in todo:
            world.apply(a)
        if check is not None:
            check(world, p)
        if p.status.terminal or (stop_when is not None and stop_when(p)):
            for a in outbox:
                world.apply(a)
            return Run(p, decisions, keys)
        if d.actions:
            continue
        times = [t for t in (d.wake_at, world.next_event()) if t is not None]
        if not times:
            return Run(p, decisions, keys)  # paused with nothing to come: the operator's turn
        world.advance(max(min(times), world.now))
    raise AssertionError(f"job did not end within {max_passes} passes: {p.phase} {p.reason}")


def _with_memo(
    planner: Planner,
    spec: JobSpec,
    p: JobProgress,
    view: list[InstanceView],
    now: float,
    table: JobInstances,
    kept: Memo,
    full: Decision,
) -> Decision:
    """The pass planned incrementally: it must equal ``full``, planned from scratch."""
    seen = {v.instance_id for v in view}
    for gone in [i for i in table.by_id if i not in seen]:
        table.drop(gone)
    for v in view:
        table.put(v)
    d = planner(spec, p, table, now, kept)
    assert d == full, f"with a memo at {now - T0:g} s: {d} != {full}"
    return d


def spec_for(method: Method, **kw: object) -> JobSpec:
    base: dict[str, object] = {
        "job_id": 7,
        "method": method,
        "builds": (BuildPair(OLD, NEW),),
        "fleet_ids": (1,),
    }
    base.update(kw)
    return JobSpec(**base)  # type: ignore[arg-type]


def finished(run: Run) -> Finish:
    ends = [a for _, d in run.decisions for a in d.actions if isinstance(a, Finish)]
    assert len(ends) == 1, ends
    return ends[0]


class RollingWatch:
    """Checks, after every pass, the promises of a rolling update: never more than
    n + max_surge instances, never more than max_unavailable of n out of allocation, never
    a stop with players on board before that instance's drain deadline."""

    def __init__(self, world: World, spec: JobSpec) -> None:
        from changeover.control.patchjobs.strategies.common import batch_limits

        self.spec = spec
        self.members = [
            i.instance_id
            for i in world.instances.values()
            if spec.selects(i.view()) and i.state not in ("stopped", "lost")
        ]
        self.n = len(self.members)
        self.max_unavailable, self.max_surge = batch_limits(spec.rolling, self.n)
        self.peak_total = 0
        self.peak_unavailable = 0

    def __call__(self, world: World, progress: JobProgress) -> None:
        early = [s for s in world.stops if s.players and s.before_deadline]
        assert not early, f"stopped with players before the deadline: {early}"
        if progress.phase in ("rollback", "cancel-revert"):
            return  # a revert restores capacity first, on purpose beyond the budgets
        running = [
            world.instances[i] for i in self.members if world.instances[i].state != "stopped"
        ]
        running += [i for i in world.launched(self.spec.job_id) if i.state != "stopped"]
        serving = [i for i in running if i.state == "ready" and i.desired == "running"]
        self.peak_total = max(self.peak_total, len(running))
        self.peak_unavailable = max(self.peak_unavailable, self.n - len(serving))
        assert len(running) <= self.n + self.max_surge, (len(running), self.n, self.max_surge)
        assert self.n - len(serving) <= self.max_unavailable, (len(serving), self.n)
