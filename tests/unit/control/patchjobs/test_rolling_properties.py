"""Property tests: the rolling update's promises over random fleets, players and knobs."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changeover.control.patchjobs.knobs import Amount, DrainPolicy, RollingKnobs
from changeover.control.patchjobs.model import JobStatus, MarkDraining, Method
from changeover.errors import InvalidInput
from unit.control.patchjobs.patchjob_world import NEW, OLD, T0, RollingWatch, World, drive, spec_for

HOUR = 3600.0
amounts: st.SearchStrategy[Amount] = st.one_of(
    st.integers(0, 4), st.sampled_from(["0%", "10%", "25%", "50%", "100%"])
)
players = st.lists(st.one_of(st.floats(1, 20 * HOUR), st.just(float("inf"))), max_size=3)
fleets = st.lists(players, min_size=1, max_size=12)
joins = st.lists(st.tuples(st.floats(0, 6 * HOUR), st.floats(1, 10 * HOUR)), max_size=12)
deadlines = st.sampled_from([1800.0, 4 * HOUR, 12 * HOUR])
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _knobs(unavailable: Amount, surge: Amount) -> RollingKnobs | None:
    try:
        return RollingKnobs(max_unavailable=unavailable, max_surge=surge)
    except InvalidInput:
        return None  # both zero: refused up front, nothing to run


def _world(fleet: list[list[float]], arrivals: list[tuple[float, float]], delay: float) -> World:
    world = World()
    world.start_delay_s = delay
    for k, leaves in enumerate(fleet):
        world.add(host=f"h{k}", leaves=[T0 + x for x in leaves])
    for at, stays in arrivals:
        world.join(T0 + at, stays)
    return world


@SETTINGS
@given(fleets, joins, amounts, amounts, deadlines, st.floats(1, 60))
def test_rolling_keeps_its_promises_on_any_fleet(
    fleet: list[list[float]],
    arrivals: list[tuple[float, float]],
    unavailable: Amount,
    surge: Amount,
    deadline_s: float,
    delay: float,
) -> None:
    knobs = _knobs(unavailable, surge)
    if knobs is None:
        return
    drain = DrainPolicy(
        deadline_s, tuple(n for n in (3600.0, 900.0, 300.0, 60.0) if n < deadline_s)
    )
    world = _world(fleet, arrivals, delay)
    spec = spec_for(Method.ROLLING, rolling=knobs, drain=drain)
    watch = RollingWatch(world, spec)  # budgets and "no busy stop before the deadline"
    run = drive(world, spec, check=watch)
    # It finishes ...
    assert run.progress.status is JobStatus.COMPLETED
    # ... every old instance stopped exactly once, each drained one by its deadline ...
    assert sorted(s.instance_id for s in world.stops) == sorted(watch.members)
    stop_at = {s.instance_id: s.at for s in world.stops}
    for d in world.of_kind(MarkDraining):
        assert isinstance(d, MarkDraining)
        assert stop_at[d.instance_id] <= d.deadline
    # ... and the whole selection runs the new build, one per old host.
    new = [i for i in world.alive() if i.version_id == NEW]
    assert sorted(i.host for i in new) == sorted(f"h{k}" for k in range(len(fleet)))
    assert not [i for i in world.alive() if i.version_id == OLD]


@SETTINGS
@given(fleets, amounts, amounts)
def test_a_broken_build_always_rolls_back_to_a_full_old_fleet(
    fleet: list[list[float]], unavailable: Amount, surge: Amount
) -> None:
    knobs = _knobs(unavailable, surge)
    if knobs is None:
        return
    world = _world(fleet, [], 5.0)
    world.broken_versions = {NEW}
    spec = spec_for(Method.ROLLING, rolling=knobs)
    watch = RollingWatch(world, spec)
    run = drive(world, spec, check=watch)
    assert run.progress.status is JobStatus.ROLLED_BACK
    old = sorted(i.host for i in world.alive() if i.version_id == OLD)
    assert old == sorted(f"h{k}" for k in range(len(fleet)))
    assert not [i for i in world.alive() if i.version_id == NEW]
    # Nobody was kicked before a deadline (the watch checked it at every pass), and the
    # only stops with players on board are old instances whose drain deadline came.
    assert all(s.players == 0 or not s.before_deadline for s in world.stops)
