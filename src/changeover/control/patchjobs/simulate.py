"""What a patch job will cost players, before it runs: the rollout simulator (issue 24).

``simulate(spec, fleet, players)`` plays one job against a snapshot of its fleets in
virtual time and answers how long it takes, what it did in which order, how many players
it moved or kicked, how many extra instances it needed and for how long capacity was
reduced. ``compare_methods`` asks the same of every method on the same fleet;
``estimate`` repeats a simulation over seeds for the spread (p50/p90).

One code path, no second implementation of any rule:

- the job's decisions come from ``patchjobs.plan`` (the method planners the reconciler
  calls, through the same ``(spec, progress, instances, now) -> Decision`` interface);
  like the reconciler, the simulator records the progress, applies the actions, merges
  what the world reports (staged builds, check results, an operator's resume) into the
  progress, and plans again at its next pass (every ``tick_s``, the reconciler's
  ``Settings.patch_tick_s``) once an instance of the job changed or the wake-up came
  (by default not for a player count that stays above zero, which decides nothing:
  ``every_change`` plans then too, and a test holds the two to the same answer);
- every player is placed by ``fleet.allocation.rank`` (weights, friends, drains,
  regions, newest build, packing), as ``allocate_db`` does for a real request: handed
  the best candidate from an index, as ``allocate_db`` hands it the database's best rows
  (``full_pool`` hands it the whole fleet; a test holds the two to the same answer);
- an instance that a job's stop found busy is handed over to the fleet's drain rules,
  ``fleet.placement.plan_host`` with the agents' ``DRAIN_S``/``NOTICE_S``, as
  ``fleet.hosts`` does on every sync.

What is modelled rather than run: the agent (``AgentTimings``: staging, start and stop
take fixed times; every start succeeds, every check passes), the operator (a pause is
resumed after ``resume_after_s``) and the players (``player_model``). A job starts at its
``scheduled_start``, the players having come and gone under the allocation rule from the
snapshot until then (at most the last ``MAX_LEAD_S`` of that: a fleet's shape a day ahead
does not depend on today's), else at the snapshot's time; nothing else runs beside it.

Pure and deterministic: no I/O, no wall clock, every draw from one ``random.Random(seed)``;
the same inputs give the same result. Bad input raises ``InvalidInput`` naming the field.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final

from changeover.control.patchjobs import Memo, plan, specs
from changeover.control.patchjobs.model import Decision, JobProgress, JobSpec
from changeover.control.patchjobs.player_model import PlayerModel
from changeover.control.patchjobs.schedule import check_start_time
from changeover.control.patchjobs.sim_world import (
    AgentTimings,
    FleetSnapshot,
    SimInstance,
    World,
    positive,
)
from changeover.control.patchjobs.states import JobStatus, Method
from changeover.errors import InvalidInput
from changeover.runspec import RunSpec

MAX_HORIZON_S: Final = 60 * 86400.0
MAX_LEAD_S: Final = 86400.0
"""At most this much play is simulated before a job's ``scheduled_start``."""
COMPARED: Final = (Method.FORCED, Method.ROLLING, Method.AB, Method.BLEED_OFF, Method.CANARY)

# -- the answer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SimAction:
    """One action the planner took, ``at_s`` seconds after the start."""

    at_s: float
    kind: str
    key: str
    instance_id: int | None


@dataclass(frozen=True)
class SimResult:
    method: Method
    seed: int
    outcome: JobStatus | None
    """The job's final status; None if it had not ended by the horizon."""
    reason: str
    duration_s: float | None
    actions: tuple[SimAction, ...]
    selected: int
    """Instances the job took (old build, in its fleets)."""
    players_at_start: int
    """Players on those instances when it started."""
    arrivals: int
    moved_after_notice: int
    """Players who left a server at its shutdown notice and went on playing elsewhere."""
    left_after_notice: int
    """Players whose session ended on its own between their server's notice and its stop."""
    kicked_at_deadline: int
    """Players on a server stopped at its drain deadline."""
    kicked_by_stop: int
    """Players on a server stopped before any deadline (a forced stop)."""
    refused: int
    """Allocations (arrivals, moves, reconnects) that found no room."""
    peak_extra_instances: int
    """Most instances running (starting, ready or still stopping: a stopping server holds
    its slot until it exits) beyond those at the start."""
    peak_by_host: Mapping[str, int]
    """Most instances each host ran at once."""
    extra_slots_needed: int | None
    """Sum over hosts of the peak beyond the host's slots (None: no slots given)."""
    hosts_over_slots: tuple[str, ...]
    reduced_capacity_s: float
    """Time during which fewer places took new players than at the start."""
    min_capacity_share: float
    """The lowest share of the starting capacity that took new players."""
    region_finish_s: Mapping[str, float]
    """Region -> when its last old instance stopped (seconds after the start)."""
    starts_after_s: float = 0.0
    """When the job starts after the snapshot (its ``scheduled_start``); every other time
    is counted from the start."""

    @property
    def kicked(self) -> int:
        return self.kicked_at_deadline + self.kicked_by_stop


@dataclass(frozen=True)
class Estimate:
    """A simulation repeated over seeds."""

    runs: tuple[SimResult, ...]
    duration_p50_s: float | None
    duration_p90_s: float | None
    kicked_p50: float
    kicked_p90: float
    unfinished: int


# -- validation ----------------------------------------------------------------------------


def spec_from_body(
    body: Mapping[str, Any],
    builds: Sequence[tuple[int, int]],
    fleet_ids: Sequence[int],
    now: float,
    job_id: int = 1,
    runs: Mapping[int, tuple[str, RunSpec]] | None = None,
) -> JobSpec:
    """The ``JobSpec`` of a create body whose names are resolved (``builds`` as (old, new)
    profile ids, ``fleet_ids``; ``runs`` the builds' profiles, id -> (name, run spec),
    default: every profile with the defaults), checked at ``now`` by the very functions
    ``services.create`` uses, in its order (names are the caller's to resolve).

    Raises:
        InvalidInput: what create would say of the same body.
    """
    specs.check_body(body)
    check_start_time(body.get("scheduled_start"), now)
    return specs.to_spec(job_id, specs.stored_spec(body, builds, fleet_ids, runs or {}))


# -- driving the planner -------------------------------------------------------------------


def _check_horizon(horizon_s: float | None, spec: JobSpec) -> float:
    if horizon_s is None:
        limit = spec.max_run_time_s if spec.max_run_time_s is not None else 0.0
        return min(MAX_HORIZON_S, max(limit, 2 * spec.drain.deadline_s) + 86400.0)
    return positive("horizon_s", horizon_s, high=MAX_HORIZON_S, zero_ok=False)


def simulate(
    spec: JobSpec,
    fleet: FleetSnapshot,
    players: PlayerModel,
    *,
    seed: int = 0,
    timings: AgentTimings | None = None,
    horizon_s: float | None = None,
    every_change: bool = False,
    full_pool: bool = False,
    max_arrivals: int | None = None,
    packing: bool = True,
    incremental: bool = True,
) -> SimResult:
    """Run ``spec`` against ``fleet`` in virtual time (module docstring). ``every_change``:
    plan after every change of a player count too, as the reconciler does (slower; the
    default skips passes that cannot decide anything, see ``World._players_changed``).
    ``full_pool``: hand ``allocation.rank`` every instance of the fleet for each player
    (slower; the default hands it the best one from an index, as ``allocate_db`` hands
    it the best few from the database's). ``max_arrivals`` bounds the work (a request
    must answer in bounded time whatever rates it gives). ``packing=False``: the
    counterfactual where allocation spreads players (the emptiest server first) instead of
    packing them, which Server Allocate never does (``bench/rollout_sim.py`` compares).
    ``incremental=False``: every pass judges every member from scratch, as the reconciler's
    first pass after a restart does (slower, the same answer: ``strategies.memo``).

    Raises:
        InvalidInput: an absurd horizon, a seed that is not an integer; more than
            ``max_arrivals`` players arrived before the job ended.
    """
    _check_seed(seed)
    timings = timings or AgentTimings()
    taken_at = fleet.at
    fleet = _until_start(spec, fleet, players, seed, packing, max_arrivals)
    until = fleet.at + _check_horizon(horizon_s, spec)
    rng = random.Random(seed)  # noqa: S311 -- a simulation, reproducible from its seed
    world = World(
        spec, fleet, players, timings, rng, until, every_change, full_pool, packing=packing
    )
    progress = JobProgress()
    taken: list[SimAction] = []
    tick, start = timings.tick_s, fleet.at
    members_known = False
    chosen: set[int] = set()
    memo = Memo() if incremental else None

    def grid(t: float) -> float:
        """The first reconciler pass at or after ``t``."""
        return start + math.ceil((t - start) / tick - 1e-9) * tick

    def advance(t: float) -> None:
        world.advance(t)
        if max_arrivals is not None and world.tally.arrivals > max_arrivals:
            raise InvalidInput(
                f"more than {max_arrivals} players arrived before the job ended: simulate "
                "fewer runs, lower arrival rates or a shorter deadline, or use the Python API",
                field="players",
            )

    when = start
    while when <= until:
        advance(when)
        decision = _pass(spec, progress, world, memo)
        progress = decision.progress  # recorded before acting
        if not members_known and progress.selection:
            members_known = True
            for m in progress.selection:
                world.instances[m.instance_id].member = True
                chosen.add(m.instance_id)
        world.changed = False
        for a in decision.actions:
            subject = getattr(a, "instance_id", None)
            taken.append(SimAction(world.now - start, type(a).__name__, a.key, subject))
            world.apply(a)
        if progress.status.terminal:
            break
        when = world.now + tick
        if decision.actions:
            continue  # its own writes changed the job: the next pass plans again
        # A pass that finds nothing changed and no wake-up due only reads (the reconciler
        # skips it): jump from event to event to the first pass that would plan.
        wake = decision.wake_at
        while True:
            due = [t for t in (wake, world.next_event()) if t is not None]
            if not due:
                when = math.inf  # nothing will ever happen again (a pause no one resumes)
                break
            when = max(when, grid(min(due)))
            if when > until:
                break
            advance(when)
            if world.changed or (wake is not None and when >= wake):
                break
    return replace(
        _result(spec, fleet, seed, world, progress, taken, chosen),
        starts_after_s=fleet.at - taken_at,
    )


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInput(f"seed must be an integer, got {seed!r}", field="seed")


def _pass(spec: JobSpec, progress: JobProgress, world: World, memo: Memo | None) -> Decision:
    """One reconciler pass: merge what it merges from outside (``Reconciler.run_job``),
    then plan, incrementally with a memo, else from scratch."""
    progress = replace(
        progress,
        staged=progress.staged | frozenset(world.staged),
        check_results=dict(world.check_results),
        resumes=world.resumes,
    )
    table = world.job_instances()
    if memo is None:
        return plan(
            spec, progress, sorted(table.by_id.values(), key=lambda v: v.instance_id), world.now
        )
    return plan(spec, progress, table, world.now, memo)


def warm_up(
    spec: JobSpec,
    fleet: FleetSnapshot,
    players: PlayerModel,
    hours: float,
    *,
    seed: int = 0,
    packing: bool = True,
) -> FleetSnapshot:
    """``fleet`` after ``hours`` of players coming and going under the allocation rule
    (``packing=False``: the spreading counterfactual), before ``spec`` starts: the shape a
    fleet takes from how its players were placed, for a run to start from. No job runs."""
    if not 0 <= hours <= 24 * 7:
        raise InvalidInput(f"hours must be 0 to {24 * 7}, got {hours!r}", field="hours")
    return _play(spec, fleet, players, fleet.at + hours * 3600.0, seed, packing, None)


def _play(
    spec: JobSpec,
    fleet: FleetSnapshot,
    players: PlayerModel,
    end: float,
    seed: int,
    packing: bool,
    max_arrivals: int | None,
) -> FleetSnapshot:
    """``fleet`` at ``end``, players having come and gone under the allocation rule."""
    rng = random.Random(seed)  # noqa: S311 -- a simulation, reproducible from its seed
    world = World(spec, fleet, players, AgentTimings(), rng, end, packing=packing)
    world.advance(end)
    if max_arrivals is not None and world.tally.arrivals > max_arrivals:
        raise InvalidInput(
            f"more than {max_arrivals} players arrived before the job's scheduled start: "
            "simulate fewer runs or lower arrival rates, or use the Python API",
            field="players",
        )
    return world.snapshot()


def _until_start(
    spec: JobSpec,
    fleet: FleetSnapshot,
    players: PlayerModel,
    seed: int,
    packing: bool,
    max_arrivals: int | None,
) -> FleetSnapshot:
    """``fleet`` at the job's ``scheduled_start`` (module docstring), or as it is."""
    start = spec.scheduled_start
    if start is None or start <= fleet.at:
        return fleet
    skip = max(0.0, start - fleet.at - MAX_LEAD_S)
    if skip:
        fleet = replace(
            fleet,
            at=fleet.at + skip,
            instances=tuple(
                replace(i, session_starts=tuple(b + skip for b in i.session_starts))
                for i in fleet.instances
            ),
        )
    return _play(spec, fleet, players, start, seed, packing, max_arrivals)


def _result(
    spec: JobSpec,
    fleet: FleetSnapshot,
    seed: int,
    world: World,
    progress: JobProgress,
    taken: Sequence[SimAction],
    chosen: set[int],
) -> SimResult:
    start = fleet.at
    done = progress.status.terminal
    finished = progress.finished_at if done else None
    slots_known = bool(world.host_slots)
    over = sorted(
        h for h, n in world.peak_by_host.items() if slots_known and n > world.host_slots.get(h, n)
    )
    extra = (
        sum(max(0, n - world.host_slots.get(h, n)) for h, n in world.peak_by_host.items())
        if slots_known
        else None
    )
    return SimResult(
        method=spec.method,
        seed=seed,
        outcome=progress.status if done else None,
        reason=progress.reason,
        duration_s=None if finished is None else finished - start,
        actions=tuple(taken),
        selected=len(progress.selection),
        players_at_start=sum(
            len(s.session_starts) for s in fleet.instances if s.instance_id in chosen
        ),
        arrivals=world.tally.arrivals,
        moved_after_notice=world.tally.moved_after_notice,
        left_after_notice=world.tally.left_after_notice,
        kicked_at_deadline=world.tally.kicked_at_deadline,
        kicked_by_stop=world.tally.kicked_by_stop,
        refused=world.tally.refused,
        peak_extra_instances=max(0, world.peak_running - world.baseline),
        peak_by_host=MappingProxyType(dict(sorted(world.peak_by_host.items()))),
        extra_slots_needed=extra,
        hosts_over_slots=tuple(over),
        reduced_capacity_s=world.reduced_s,
        min_capacity_share=(
            world.min_capacity / world.base_capacity if world.base_capacity else 1.0
        ),
        region_finish_s=MappingProxyType(dict(sorted(world.region_finish.items()))),
    )


def compare_methods(
    spec: JobSpec,
    fleet: FleetSnapshot,
    players: PlayerModel,
    *,
    methods: Sequence[Method] = COMPARED,
    seed: int = 0,
    timings: AgentTimings | None = None,
    horizon_s: float | None = None,
    max_arrivals: int | None = None,
) -> dict[Method, SimResult]:
    """The same job with each method, on the same fleet and the same seed (the players
    arrive alike until the methods make them diverge)."""
    return {
        m: simulate(
            replace(spec, method=m),
            fleet,
            players,
            seed=seed,
            timings=timings,
            horizon_s=horizon_s,
            max_arrivals=max_arrivals,
        )
        for m in methods
    }


def _quantile(values: Sequence[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def estimate(
    spec: JobSpec,
    fleet: FleetSnapshot,
    players: PlayerModel,
    *,
    runs: int = 10,
    seed: int = 0,
    timings: AgentTimings | None = None,
    horizon_s: float | None = None,
    max_arrivals: int | None = None,
) -> Estimate:
    """``runs`` simulations with seeds ``seed`` .. ``seed + runs - 1``: the spread of the
    duration and of the players kicked."""
    if isinstance(runs, bool) or not isinstance(runs, int) or not 1 <= runs <= 1000:
        raise InvalidInput(f"runs must be 1 to 1000, got {runs!r}", field="runs")
    results = tuple(
        simulate(
            spec,
            fleet,
            players,
            seed=seed + k,
            timings=timings,
            horizon_s=horizon_s,
            max_arrivals=max_arrivals,
        )
        for k in range(runs)
    )
    durations = [r.duration_s for r in results if r.duration_s is not None]
    kicked = [float(r.kicked) for r in results]
    return Estimate(
        runs=results,
        duration_p50_s=_quantile(durations, 0.5) if durations else None,
        duration_p90_s=_quantile(durations, 0.9) if durations else None,
        kicked_p50=_quantile(kicked, 0.5),
        kicked_p90=_quantile(kicked, 0.9),
        unfinished=runs - len(durations),
    )


__all__ = [
    "COMPARED",
    "AgentTimings",
    "Estimate",
    "FleetSnapshot",
    "SimAction",
    "SimInstance",
    "SimResult",
    "compare_methods",
    "estimate",
    "simulate",
    "spec_from_body",
    "warm_up",
]
