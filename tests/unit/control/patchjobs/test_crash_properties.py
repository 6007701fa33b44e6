"""Property test: any method, any fleet, crashes anywhere, a cancel at any time.

Whatever happens, the job ends, no instance is ever stopped twice, no key is applied
twice, and (but for forced, which does not wait for players by definition) no server with
players is stopped before its drain deadline.
"""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changeover.control.patchjobs.knobs import ABKnobs, DrainPolicy, RollingKnobs
from changeover.control.patchjobs.model import (
    CancelMode,
    JobProgress,
    JobStatus,
    Method,
    ProfileTerms,
)
from changeover.control.patchjobs.steps import parse_steps
from unit.control.patchjobs.patchjob_world import NEW, OLD, T0, World, drive, spec_for

HOUR = 3600.0
STEPS = parse_steps(
    [
        {"kind": "start_new", "share": 0.3},
        {"kind": "wait_healthy"},
        {"kind": "switch_allocation", "weight": 0.3},
        {"kind": "start_new"},
        {"kind": "wait_healthy"},
        {"kind": "run_check", "command": "check"},
        {"kind": "stop_old"},
        {"kind": "switch_allocation", "weight": 1},
    ]
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(list(Method)),
    fleet=st.lists(
        st.lists(st.one_of(st.floats(1, 8 * HOUR), st.just(float("inf"))), max_size=2),
        min_size=1,
        max_size=8,
    ),
    seed=st.integers(0, 2**16),
    cancel=st.one_of(st.none(), st.tuples(st.floats(0, 3 * HOUR), st.sampled_from(CancelMode))),
    broken=st.booleans(),
    check_passes=st.sampled_from([True, False, None]),
)
def test_whatever_happens_no_instance_is_stopped_twice_and_the_job_ends(
    method: Method,
    fleet: list[list[float]],
    seed: int,
    cancel: tuple[float, CancelMode] | None,
    broken: bool,
    check_passes: bool | None,
) -> None:
    world = World()
    for k, leaves in enumerate(fleet):
        world.add(host=f"h{k}", region=("eu", "us")[k % 2], leaves=[T0 + x for x in leaves])
    if broken:
        world.broken_versions = {NEW}
    world.check_passes = check_passes
    world.savers = {1000}
    kw: dict[str, object] = {"drain": DrainPolicy(deadline_s=4 * HOUR)}
    if method is Method.AB:
        kw["ab"] = ABKnobs(verify_command="check")
    if method is Method.CUSTOM:
        kw["steps"] = STEPS
    spec = spec_for(method, **kw)
    rng = random.Random(seed)

    def operator(w: World, p: JobProgress) -> JobProgress:
        if cancel is not None and w.now >= T0 + cancel[0] and p.cancel is None:
            return replace(p, cancel=cancel[1])
        return p

    run = drive(
        world, spec, operator=operator, crash_after=lambda _: rng.choice([None, None, 0, 1, 3])
    )
    assert run.progress.status.terminal
    ids = [s.instance_id for s in world.stops]
    assert len(ids) == len(set(ids))
    keys = [a.key for _, a in world.log]
    assert len(keys) == len(set(keys))
    waits_for_players = method is not Method.FORCED and method is not Method.CUSTOM
    if waits_for_players:
        assert all(s.players == 0 or not s.before_deadline for s in world.stops)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rolling=st.booleans(),
    fleet=st.lists(
        st.tuples(st.integers(0, 2), st.lists(st.floats(1, 8 * HOUR), max_size=2)),
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(0, 2**16),
    cancel=st.one_of(st.none(), st.tuples(st.floats(0, 3 * HOUR), st.sampled_from(CancelMode))),
    new_build=st.sampled_from(["fine", "fails", "silent"]),
    stop_delay_s=st.sampled_from([0.0, 3.0, 200.0]),
)
def test_with_exclusive_state_never_two_processes_on_a_slot_and_a_revert_restores_each(
    rolling: bool,
    fleet: list[tuple[int, list[float]]],
    seed: int,
    cancel: tuple[float, CancelMode] | None,
    new_build: str,
    stop_delay_s: float,
) -> None:
    world = World()
    world.exclusive_slots = True
    world.stop_delay_s = stop_delay_s
    old = [world.add(host=f"h{host}", leaves=[T0 + x for x in leaves]) for host, leaves in fleet]
    if new_build == "fails":
        world.broken_versions = {NEW}
    elif new_build == "silent":
        world.silent_versions = {NEW}
    terms = ProfileTerms(stop_timeout_s=60.0, exclusive_state=True)
    spec = spec_for(
        Method.ROLLING if rolling else Method.FORCED,
        profiles={OLD: terms, NEW: terms},
        rolling=RollingKnobs(max_unavailable=1, max_surge=0),
        drain=DrainPolicy(deadline_s=4 * HOUR),
    )
    rng = random.Random(seed)

    def operator(w: World, p: JobProgress) -> JobProgress:
        if cancel is not None and w.now >= T0 + cancel[0] and p.cancel is None:
            return replace(p, cancel=cancel[1])
        return p

    run = drive(
        world, spec, operator=operator, crash_after=lambda _: rng.choice([None, None, 0, 1, 3])
    )
    # Every server here stops within its timeout and the old build always comes up again:
    # a job may end any way but failed.
    assert run.progress.status is not JobStatus.FAILED, run.progress.reason
    assert world.overlaps == []
    ids = [s.instance_id for s in world.stops]
    assert len(ids) == len(set(ids))
    if run.progress.status is JobStatus.ROLLED_BACK or (
        run.progress.status is JobStatus.CANCELLED and "reverted" in run.progress.reason
    ):
        # Every old instance's place runs the old build again, on its own slot.
        alive = sorted((i.host, i.slot, i.version_id) for i in world.alive())
        assert alive == sorted((i.host, i.slot, OLD) for i in old), run.progress.reason
    if new_build == "fine" and cancel is None:
        assert run.progress.status is JobStatus.COMPLETED, run.progress.reason
