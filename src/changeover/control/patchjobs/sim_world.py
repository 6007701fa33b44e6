"""The simulator's world (``simulate``): the fleets as a snapshot gives them, the players
on them, and the agents that turn a patch job's actions into instance states, in virtual
time. Players are placed by ``fleet.allocation.rank``; a stop that finds players is
handed to ``fleet.placement.plan_host``'s drain rules, as ``fleet.hosts`` does.

    SimInstance, FleetSnapshot   the input: instances, their players, hosts' slots
    AgentTimings                 how long staging, starts, stops and checks take
    World                        the state, the event queue, and the metrics it keeps
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from changeover.control.fleet import allocation, placement
from changeover.control.patchjobs.actions import (
    Action,
    Finish,
    MarkDraining,
    Notify,
    Pause,
    RunCheck,
    StageBuild,
    StartInstance,
    StopInstance,
    SwitchAllocation,
    Undrain,
)
from changeover.control.patchjobs.model import InstanceView, JobSpec
from changeover.control.patchjobs.player_model import PlayerModel, joins
from changeover.control.patchjobs.states import READY, RUNNING, STOPPED
from changeover.control.patchjobs.strategies.memo import JobInstances
from changeover.errors import InvalidInput

TICK_S: Final = 0.5
"""The reconciler's pass interval (``Settings.patch_tick_s``'s default)."""
STOPPING: Final = "stopping"
STARTING: Final = "starting"
DRAINING: Final = "draining"


def positive(field_name: str, value: object, *, high: float, zero_ok: bool = True) -> float:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if zero_ok else value > 0)
        and value <= high
    )
    if not ok:
        low = "[0" if zero_ok else "(0"
        raise InvalidInput(
            f"{field_name} must be in {low}, {high:g}], got {value!r}", field=field_name
        )
    assert isinstance(value, int | float)
    return float(value)


# -- inputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimInstance:
    """One instance of the snapshot; each entry of ``session_starts`` is a player on it
    (when that session began, unix seconds)."""

    instance_id: int
    fleet_id: int
    host: str
    region: str
    version_id: int
    capacity: int
    session_starts: tuple[float, ...] = ()
    state: str = READY
    desired: str = RUNNING

    def __post_init__(self) -> None:
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int):
            raise InvalidInput(f"instance {self.instance_id}: capacity must be a whole number")
        if self.capacity < 1:
            raise InvalidInput(
                f"instance {self.instance_id}: capacity must be at least 1, got {self.capacity}",
                field="capacity",
            )
        if len(self.session_starts) > self.capacity:
            raise InvalidInput(
                f"instance {self.instance_id}: {len(self.session_starts)} players on "
                f"a capacity of {self.capacity}",
                field="session_starts",
            )


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleets as they are at ``at`` (unix seconds): their instances, optionally the
    slots of each host (to say which hosts a surge would overfill), the image version
    number of each profile (higher is newer; default: a job's new builds rank above its
    old ones) and the capacity of each profile's new instances (default: that of the
    instance replaced)."""

    at: float
    instances: tuple[SimInstance, ...]
    host_slots: Mapping[str, int] = field(default_factory=dict)
    version_numbers: Mapping[int, int] = field(default_factory=dict)
    capacity_of: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive("at", self.at, high=1e11)
        ids = [i.instance_id for i in self.instances]
        if len(set(ids)) != len(ids):
            raise InvalidInput("instances: an instance id appears twice", field="instances")
        for i in self.instances:
            if any(s > self.at for s in i.session_starts):
                raise InvalidInput(
                    f"instance {i.instance_id}: a session starts after the snapshot",
                    field="session_starts",
                )
        for host, slots in self.host_slots.items():
            if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
                raise InvalidInput(f"host_slots[{host}] must be at least 1, got {slots!r}")
        for version, cap in self.capacity_of.items():
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
                raise InvalidInput(f"capacity_of[{version}] must be at least 1, got {cap!r}")
        for name in ("host_slots", "version_numbers", "capacity_of"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))


@dataclass(frozen=True)
class AgentTimings:
    """How long the simulated agents and operator take."""

    stage_s: float = 30.0
    """From StageBuild to the build reported staged."""
    start_s: float = 10.0
    """From StartInstance to ready."""
    stop_s: float = 5.0
    """A graceful stop (capped by the job's ``stop.timeout_s``; SIGKILL is instant)."""
    check_s: float = 30.0
    """A verification command, which passes."""
    resume_after_s: float = 0.0
    """An operator resumes a paused job after this long."""
    tick_s: float = TICK_S

    def __post_init__(self) -> None:
        for name in ("stage_s", "start_s", "stop_s", "check_s", "resume_after_s"):
            positive(f"timings.{name}", getattr(self, name), high=86400.0)
        positive("timings.tick_s", self.tick_s, high=60.0, zero_ok=False)


# -- the world -----------------------------------------------------------------------------


@dataclass
class _Inst:
    instance_id: int
    fleet_id: int
    host: str
    region: str
    version_id: int
    capacity: int
    state: str
    desired: str
    ready_since: float | None
    launch_key: str | None = None
    replaces_id: int | None = None
    sessions: dict[int, None] = field(default_factory=dict)
    drain_deadline: float | None = None
    drain_reason: str | None = None
    notice_deadline: float | None = None
    noticed_at: float | None = None
    handed_over: bool = False
    """A job's stop found players: the fleet's drain rules stop it (``fleet.hosts``)."""
    member: bool = False

    @property
    def players(self) -> int:
        return len(self.sessions)

    @property
    def running(self) -> bool:
        """Occupies a slot on its host."""
        return self.state != STOPPED

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
            ready_since=self.ready_since if self.state == READY else None,
            launch_key=self.launch_key,
        )


@dataclass
class _Tally:
    """What happened to players (see ``SimResult``)."""

    arrivals: int = 0
    moved_after_notice: int = 0
    left_after_notice: int = 0
    kicked_at_deadline: int = 0
    kicked_by_stop: int = 0
    refused: int = 0


_Bucket = tuple[set[int], list[int]]
"""Instance ids, and the same as a heap (lowest id first; stale entries popped lazily)."""


@dataclass
class _Session:
    instance_id: int
    ends_at: float
    began: float


class World:
    """The fleets, their players and the simulated agents, in virtual time."""

    def __init__(
        self,
        spec: JobSpec,
        fleet: FleetSnapshot,
        players: PlayerModel,
        timings: AgentTimings,
        rng: random.Random,
        until: float,
        every_change: bool = False,
        full_pool: bool = False,
        packing: bool = True,
    ) -> None:
        self.spec = spec
        self.every_change = every_change
        self.full_pool = full_pool
        self.packing = packing
        self.players = players
        self.timings = timings
        self.rng = rng
        self.until = until
        self.now = fleet.at
        self.start = fleet.at
        self.host_slots = fleet.host_slots
        self.capacity_of = fleet.capacity_of
        self.version_numbers = dict(fleet.version_numbers)
        for b in spec.builds:
            self.version_numbers.setdefault(b.old_version_id, 1)
            self.version_numbers.setdefault(b.new_version_id, 2)
        self.instances: dict[int, _Inst] = {}
        self.table = JobInstances()
        """What the planner reads, kept up to date: a pass costs what changed."""
        self.dirty: set[int] = set()  # instances changed since ``table`` last saw them
        self.candidate_cache: dict[int, allocation.Candidate] = {}
        self.counted: dict[int, int] = {}
        """Instance -> the places it counts toward the capacity taking new players."""
        self.index: dict[tuple[int, str], dict[tuple[float, int, int], _Bucket]] = {}
        """(fleet, region) -> key in ``rank``'s order -> the instances filed under it."""
        self.filed: dict[int, tuple[tuple[int, str], tuple[float, int, int]]] = {}
        self.by_key: dict[str, int] = {}
        self.region_of_host: dict[str, str] = {}
        self.next_id = max((i.instance_id for i in fleet.instances), default=0) + 1
        self.sessions: dict[int, _Session] = {}
        self.online: list[int] = []
        self.online_at: dict[int, int] = {}
        self.next_sid = 1
        self.events: list[tuple[float, int, str, int]] = []
        self.seq = 0
        self.weights: dict[int, dict[int, float]] = {}
        self.staged: set[tuple[str, int]] = set()
        self.stage_wanted: list[tuple[str, int]] = []
        self.check_keys: list[str] = []
        self.check_results: dict[str, bool] = {}
        self.resumes = 0
        self.changed = False
        """An instance of the job changed since the last planning pass."""
        self.tally = _Tally()
        self.movers: list[tuple[float, int, str, bool]] = []
        """(session left, fleet, region, after a notice) of players changing servers."""
        self.region_finish: dict[str, float] = {}
        self._load(fleet)
        first = players.next_arrival(rng, self.now, until) if self.origins else None
        if first is not None:
            self._at(first, "arrive", 0)

    def _load(self, fleet: FleetSnapshot) -> None:
        """The snapshot's instances and players, and what the start is measured against."""
        for s in fleet.instances:
            self.region_of_host.setdefault(s.host, s.region)
            i = _Inst(
                s.instance_id,
                s.fleet_id,
                s.host,
                s.region,
                s.version_id,
                s.capacity,
                s.state,
                s.desired,
                ready_since=fleet.at - 3600.0 if s.state == READY else None,
            )
            self.instances[i.instance_id] = i
            self._reindex(i)
            self.dirty.add(i.instance_id)
            for began in s.session_starts:
                self._seat(i, self.players.remaining(self.rng, fleet.at - began), began)
        live = [i for i in self.instances.values() if i.running]
        self.baseline = len(live)
        self.per_host: dict[str, int] = {}
        for i in live:
            self.per_host[i.host] = self.per_host.get(i.host, 0) + 1
        self.peak_by_host = dict(self.per_host)
        self.running_count = self.baseline
        self.peak_running = self.baseline
        # Where arrivals come from: each fleet and region as its share of the places.
        places: dict[tuple[int, str], int] = {}
        for i in live:
            places[(i.fleet_id, i.region)] = places.get((i.fleet_id, i.region), 0) + i.capacity
        self.origins = sorted(places)
        self.origin_weights = [places[o] for o in self.origins]
        self.regions_of_fleet: dict[int, list[str]] = {}
        for f, r in self.origins:
            self.regions_of_fleet.setdefault(f, []).append(r)
        self.base_capacity = self._serving_capacity()
        self.capacity = self.base_capacity
        self.min_capacity = self.base_capacity
        self.reduced_s = 0.0
        self.capacity_since = self.now

    # -- events ----------------------------------------------------------------------------

    def _at(self, t: float, kind: str, ref: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, ref))

    def next_event(self) -> float | None:
        return self.events[0][0] if self.events else None

    def snapshot(self) -> FleetSnapshot:
        """The fleets as they stand now: a snapshot another run can start from."""
        starts: dict[int, list[float]] = {}
        for s in self.sessions.values():
            starts.setdefault(s.instance_id, []).append(s.began)
        return FleetSnapshot(
            at=self.now,
            instances=tuple(
                SimInstance(
                    i.instance_id,
                    i.fleet_id,
                    i.host,
                    i.region,
                    i.version_id,
                    i.capacity,
                    tuple(sorted(starts.get(i.instance_id, ()))),
                    state=i.state,
                    desired=i.desired,
                )
                for i in sorted(self.instances.values(), key=lambda i: i.instance_id)
                if i.state != STOPPED
            ),
            host_slots=self.host_slots,
            version_numbers=self.version_numbers,
            capacity_of=self.capacity_of,
        )

    def advance(self, to: float) -> None:
        """Play every event due by ``to``, in order, then move the clock there."""
        while self.events and self.events[0][0] <= to:
            at, _, kind, ref = heapq.heappop(self.events)
            self._clock(max(self.now, at))
            self._event(kind, ref)
        self._clock(max(self.now, to))

    def _clock(self, t: float) -> None:
        if self.capacity < self.base_capacity:
            self.reduced_s += t - self.capacity_since
        self.capacity_since = t
        self.now = t

    def _event(self, kind: str, ref: int) -> None:
        if kind == "arrive":
            self.tally.arrivals += 1
            self._arrive(self.players.session_length(self.rng))
            nxt = self.players.next_arrival(self.rng, self.now, self.until)
            if nxt is not None:
                self._at(nxt, "arrive", 0)
        elif kind == "end":
            session = self.sessions.get(ref)
            if session is not None:
                i = self.instances[session.instance_id]
                self._unseat(ref)
                if i.noticed_at is not None and i.member:
                    self.tally.left_after_notice += 1
                if i.handed_over:
                    self._fleet_rules(i)
        elif kind == "ready":
            i = self.instances[ref]
            if i.state == STARTING and i.desired != STOPPED:
                i.state, i.ready_since = READY, self.now
                self._touched(i)
        elif kind == "stopped":
            i = self.instances[ref]
            if i.state != STOPPED:
                i.state = STOPPED
                self._touched(i)
                self.running_count -= 1
                self.per_host[i.host] -= 1
                if i.member:
                    self.region_finish[i.region] = self.now - self.start
        elif kind == "staged":
            self.staged.add(self.stage_wanted[ref])
            self.changed = True
        elif kind == "check":
            self.check_results[self.check_keys[ref]] = True
            self.changed = True
        elif kind == "resume":
            self.resumes += 1
            self.changed = True
        elif kind == "move":
            left, fleet_id, region, noticed = self.movers[ref]
            if self._arrive(left, fleet_id, region) and noticed:
                self.tally.moved_after_notice += 1
        elif kind == "fleet":
            i = self.instances[ref]
            if i.handed_over:
                self._fleet_rules(i)

    def _forget(self, i: _Inst) -> None:
        """``i`` changed: drop what was derived from it, file it again in the index."""
        self.dirty.add(i.instance_id)
        self.candidate_cache.pop(i.instance_id, None)
        self._reindex(i)

    # -- the allocation index: the best candidates first, as ``allocate_db`` reads them --

    def _reindex(self, i: _Inst) -> None:
        """File ``i`` under (fleet, region) and its key in ``rank``'s order (weight,
        version, players) if ``rank`` could pick it for a player: ready, running, weight
        above 0, a free place (``allocate_db._allocatable``)."""
        old = self.filed.pop(i.instance_id, None)
        if old is not None:
            where, key = old
            bucket = self.index[where][key]
            bucket[0].discard(i.instance_id)
            if not bucket[0]:
                del self.index[where][key]
        weights = self.weights.get(i.fleet_id)
        weight = weights.get(i.version_id, 1.0) if weights else 1.0
        if i.state != READY or i.desired != RUNNING or weight <= 0 or i.players >= i.capacity:
            return
        where = (i.fleet_id, i.region)
        # The best key is the largest: the fullest first when packing, else the emptiest.
        players = i.players if self.packing else -i.players
        key = (weight, self.version_numbers.get(i.version_id, 1), players)
        ids, heap = self.index.setdefault(where, {}).setdefault(key, (set(), []))
        ids.add(i.instance_id)
        heapq.heappush(heap, i.instance_id)
        self.filed[i.instance_id] = (where, key)

    def _best(self, fleet_id: int, request: allocation.Request) -> list[allocation.Candidate]:
        """What ``rank`` needs to judge ``request`` (``allocate_db._best_rows``): the first
        instance of its order (the lowest id of the best key in the first region that has
        one) and the friend's instance. ``test_simulate`` checks that the answers are
        those of ranking the whole fleet (``full_pool``)."""
        out: list[allocation.Candidate] = []
        for region in request.regions:
            buckets = self.index.get((fleet_id, region))
            if not buckets:
                continue
            key = max(buckets)  # highest weight, then version, then the fullest
            ids, heap = buckets[key]
            while heap[0] not in ids:
                heapq.heappop(heap)
            out.append(self._candidate(self.instances[heap[0]]))
            break
        friend = request.friend_instance_id
        if friend is not None and friend in self.instances:
            out.append(self._candidate(self.instances[friend]))
        return out

    def _touched(self, i: _Inst) -> None:
        self._forget(i)
        if i.fleet_id in self.spec.fleet_ids:
            self.changed = True
        self._recount_one(i)

    # -- players ---------------------------------------------------------------------------

    def _seat(self, i: _Inst, length: float, began: float | None = None) -> None:
        sid = self.next_sid
        self.next_sid += 1
        self.sessions[sid] = _Session(
            i.instance_id, self.now + length, self.now if began is None else began
        )
        i.sessions[sid] = None
        self._forget(i)
        self.online_at[sid] = len(self.online)
        self.online.append(sid)
        self._at(self.now + length, "end", sid)
        self._players_changed(i)

    def _unseat(self, sid: int) -> _Session:
        session = self.sessions.pop(sid)
        i = self.instances[session.instance_id]
        del i.sessions[sid]
        self._forget(i)
        at = self.online_at.pop(sid)
        last = self.online.pop()
        if last != sid:
            self.online[at] = last
            self.online_at[last] = at
        self._players_changed(i)
        return session

    def _players_changed(self, i: _Inst) -> None:
        """A player came or went: the reconciler plans again at its next pass. Unless
        ``every_change``, only when the instance became empty or stopped being so: the
        planners read a count above zero only for reasons and for the order of a rolling
        batch, which starts only when its budget changes (``test_simulate`` checks both
        ways give the same answer)."""
        if i.fleet_id in self.spec.fleet_ids and (self.every_change or i.players <= 1):
            self.changed = True

    def _arrive(
        self, length: float, fleet_id: int | None = None, region: str | None = None
    ) -> bool:
        """Place one player for ``length`` seconds as ``allocation.rank`` says; False if no
        instance had room."""
        friend: int | None = None
        if fleet_id is None and self.online and joins(self.rng, self.players.friend_join_share):
            friend = self.sessions[self.online[self.rng.randrange(len(self.online))]].instance_id
            fleet_id = self.instances[friend].fleet_id
        if fleet_id is None:
            fleet_id, region = self.rng.choices(self.origins, self.origin_weights)[0]
        elif region is None:
            region = self.rng.choice(self.regions_of_fleet.get(fleet_id, [""]))
        others = [r for r in self.regions_of_fleet.get(fleet_id, []) if r != region]
        request = allocation.Request(
            regions=(region, *others), friend_instance_id=friend, spread=not self.packing
        )
        pool = self._candidates(fleet_id) if self.full_pool else self._best(fleet_id, request)
        ranked = allocation.rank(pool, request)
        if isinstance(ranked, allocation.Refusal):
            self.tally.refused += 1
            return False
        self._seat(self.instances[ranked.candidates[0].instance_id], length)
        return True

    def _candidates(self, fleet_id: int) -> list[allocation.Candidate]:
        """Every instance of the fleet, as ``allocate_db`` reads them to word a refusal."""
        return [
            self._candidate(i)
            for i in self.instances.values()
            if i.fleet_id == fleet_id and i.state != STOPPED
        ]

    def _candidate(self, i: _Inst) -> allocation.Candidate:
        c = self.candidate_cache.get(i.instance_id)
        if c is None:
            weights = self.weights.get(i.fleet_id)
            c = self.candidate_cache[i.instance_id] = allocation.Candidate(
                instance_id=i.instance_id,
                region=i.region,
                version=self.version_numbers.get(i.version_id, 1),
                state=i.state,
                desired=i.desired,
                players=i.players,
                capacity=i.capacity,
                weight=weights.get(i.version_id, 1.0) if weights else 1.0,
            )
        return c

    def _move_all(self, i: _Inst, share: float, *, noticed: bool) -> None:
        """Players leaving ``i`` (each with probability ``share``) to play the rest of their
        session elsewhere. They ask for a place once the reconciler's batch is applied
        (an event at the same instant), not between two of its actions."""
        for sid in list(i.sessions):
            if share >= 1 or joins(self.rng, share):
                session = self._unseat(sid)
                left = max(0.0, session.ends_at - self.now)
                self.movers.append((left, i.fleet_id, i.region, noticed))
                self._at(self.now, "move", len(self.movers) - 1)

    # -- capacity and surge ----------------------------------------------------------------

    def _serving(self, i: _Inst) -> bool:
        weights = self.weights.get(i.fleet_id)
        weight = weights.get(i.version_id, 1.0) if weights else 1.0
        return i.state == READY and i.desired == RUNNING and weight > 0

    def _serving_capacity(self) -> int:
        self.counted = {
            i.instance_id: i.capacity for i in self.instances.values() if self._serving(i)
        }
        return sum(self.counted.values())

    def _recount(self) -> None:
        """Every instance again (the weights changed)."""
        self.capacity = self._serving_capacity()
        self.min_capacity = min(self.min_capacity, self.capacity)

    def _recount_one(self, i: _Inst) -> None:
        """``i`` changed: only its part of the capacity can have."""
        was = self.counted.pop(i.instance_id, 0)
        now = i.capacity if self._serving(i) else 0
        if now:
            self.counted[i.instance_id] = now
        self.capacity += now - was
        self.min_capacity = min(self.min_capacity, self.capacity)

    # -- the agents: applying actions ------------------------------------------------------

    def apply(self, a: Action) -> None:
        if isinstance(a, StageBuild):
            self.stage_wanted.append((a.host, a.version_id))
            self._at(self.now + self.timings.stage_s, "staged", len(self.stage_wanted) - 1)
        elif isinstance(a, StartInstance):
            self._start(a)
        elif isinstance(a, MarkDraining):
            i = self.instances.get(a.instance_id)
            if i is not None and i.desired == RUNNING:
                i.desired, i.drain_deadline, i.drain_reason = DRAINING, a.deadline, a.reason
                self._touched(i)
        elif isinstance(a, Undrain):
            i = self.instances.get(a.instance_id)
            if i is not None and i.desired == DRAINING:
                i.desired, i.drain_deadline, i.notice_deadline = RUNNING, None, None
                i.handed_over = False
                self._touched(i)
        elif isinstance(a, Notify):
            i = self.instances.get(a.instance_id)
            if i is not None and i.desired != STOPPED:
                self._notice(i, a.deadline)
        elif isinstance(a, StopInstance):
            self._stop(a)
        elif isinstance(a, SwitchAllocation):
            for fleet_id in a.fleet_ids:
                self.weights.setdefault(fleet_id, {}).update(dict(a.weights))
            self._refile(a.fleet_ids)
            self.changed = True
            self._recount()
        elif isinstance(a, RunCheck):
            self.check_keys.append(a.key)
            self._at(self.now + self.timings.check_s, "check", len(self.check_keys) - 1)
        elif isinstance(a, Pause):
            self._at(self.now + self.timings.resume_after_s, "resume", 0)
        elif isinstance(a, Finish):
            # The job's weights go with it (``appliers._finish``).
            versions = self.spec.old_versions | self.spec.new_versions
            for fleet_id in self.spec.fleet_ids:
                w = self.weights.get(fleet_id, {})
                for v in versions:
                    w.pop(v, None)
            self._refile(self.spec.fleet_ids)
            self._recount()

    def _refile(self, fleet_ids: Sequence[int]) -> None:
        """Weights changed: every instance of those fleets moves in ``rank``'s order."""
        for i in self.instances.values():
            if i.fleet_id in fleet_ids:
                self._forget(i)

    def _start(self, a: StartInstance) -> None:
        if a.key in self.by_key or a.host not in self.region_of_host:
            return  # exists already, or an unknown host: nothing started (``appliers``)
        replaced = self.instances.get(a.replaces_id) if a.replaces_id is not None else None
        capacity = self.capacity_of.get(a.version_id) or (
            replaced.capacity if replaced is not None else 1
        )
        i = _Inst(
            self.next_id,
            a.fleet_id,
            a.host,
            self.region_of_host[a.host],
            a.version_id,
            capacity,
            STARTING,
            RUNNING,
            None,
            launch_key=a.key,
            replaces_id=a.replaces_id,
        )
        self.next_id += 1
        self.instances[i.instance_id] = i
        self.by_key[a.key] = i.instance_id
        self.running_count += 1
        self.peak_running = max(self.peak_running, self.running_count)
        self.per_host[i.host] = self.per_host.get(i.host, 0) + 1
        self.peak_by_host[i.host] = max(self.peak_by_host.get(i.host, 0), self.per_host[i.host])
        self._touched(i)
        self._at(self.now + self.timings.start_s, "ready", i.instance_id)

    def _notice(self, i: _Inst, deadline: float) -> None:
        i.notice_deadline = deadline
        if i.noticed_at is None:
            i.noticed_at = self.now
            self._move_all(i, self.players.notice_leave_share, noticed=True)

    def _stop(self, a: StopInstance) -> None:
        i = self.instances.get(a.instance_id)
        if i is None or i.desired == STOPPED:
            return
        if a.require_empty and i.players > 0:
            # A player got in first: the fleet's drain rules take over (``appliers._stop``).
            if i.desired == RUNNING:
                i.desired, i.drain_deadline = DRAINING, a.fallback_deadline
                i.drain_reason = a.reason
            i.handed_over = True
            self._touched(i)
            if i.drain_deadline is not None:
                self._at(i.drain_deadline - placement.NOTICE_S, "fleet", i.instance_id)
                self._at(i.drain_deadline, "fleet", i.instance_id)
            return
        # A timeout the job left to the profile is the profile's (``appliers._stop_method``).
        timeout_s = a.timeout_s
        if timeout_s is None:
            timeout_s = self.spec.terms(i.version_id).stop_timeout_s
        delay = min(self.timings.stop_s, timeout_s) if a.graceful else 0.0
        self._halt(i, delay)

    def _halt(self, i: _Inst, delay: float) -> None:
        """desired = stopped: its players are kicked (and try to play on elsewhere)."""
        at_deadline = i.drain_deadline is not None and self.now >= i.drain_deadline
        i.desired = STOPPED
        if i.state != STOPPED:
            i.state = STOPPING
        self._touched(i)
        n = i.players
        if at_deadline:
            self.tally.kicked_at_deadline += n
        else:
            self.tally.kicked_by_stop += n
        self._move_all(i, 1.0, noticed=False)
        if delay > 0:
            self._at(self.now + delay, "stopped", i.instance_id)
        else:
            self._event("stopped", i.instance_id)  # SIGKILL: its slot is free at once

    def _fleet_rules(self, i: _Inst) -> None:
        """``placement.plan_host``'s drain rules on a handed-over instance, as an agent's
        sync applies them (``fleet.hosts._plan``)."""
        if i.desired == STOPPED:
            return
        view = placement.InstanceView(
            instance_id=i.instance_id,
            fleet_id=i.fleet_id,
            profile_id=i.version_id,
            host=i.host,
            desired=i.desired,
            state=i.state,
            players=i.players,
            replaces_id=i.replaces_id,
            drain_deadline=i.drain_deadline,
            drain_reason=i.drain_reason,
            notice_deadline=i.notice_deadline,
        )
        host = placement.HostView(i.host, alive=True, slots=self.host_slots.get(i.host, 10_000))
        for action in placement.plan_host(
            host, [], [view], self.now, drain_s=placement.DRAIN_S, notice_s=placement.NOTICE_S
        ):
            if isinstance(action, placement.Notify):
                self._notice(i, action.deadline)
            elif isinstance(action, placement.Stop):
                self._halt(i, self.timings.stop_s)

    # -- the planner's view ----------------------------------------------------------------

    def job_instances(self) -> JobInstances:
        """What ``fleet_view.instance_views`` would read: the job's fleets' live instances
        and every instance the job launched, brought up to date."""
        prefix = f"job{self.spec.job_id}/"
        table = self.table
        for iid in self.dirty:
            i = self.instances[iid]
            history = i.desired == STOPPED and i.state == STOPPED
            if i.fleet_id not in self.spec.fleet_ids or (
                history and not (i.launch_key or "").startswith(prefix)
            ):
                table.drop(iid)
            else:
                table.put(i.view())
        self.dirty.clear()
        return table


__all__ = [
    "TICK_S",
    "AgentTimings",
    "FleetSnapshot",
    "SimInstance",
    "World",
    "positive",
]
