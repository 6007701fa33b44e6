"""Incremental planning (``strategies.memo``): a pass planned from a kept ``JobInstances``
and ``Memo`` judges only what changed, and decides exactly what a pass from scratch does.

Two ways to break it are tried: the world's own physics (players come and go, servers
start, stop and fail, crashes empty the memo, an operator cancels), and an adversary that
changes any row in any way between passes and moves the clock onto notice times and
deadlines, back and forth, and hands over a progress read back from its JSON form.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changeover.control.patchjobs import JobInstances, Memo, plan
from changeover.control.patchjobs.codec import progress_from_dict, progress_to_dict
from changeover.control.patchjobs.knobs import DrainPolicy
from changeover.control.patchjobs.model import (
    CancelMode,
    InstanceView,
    JobProgress,
    Method,
    Notify,
    StartInstance,
    StopInstance,
)
from changeover.control.patchjobs.states import READY, RUNNING, STOPPED
from changeover.control.patchjobs.steps import parse_steps
from changeover.control.patchjobs.strategies import common
from changeover.control.patchjobs.strategies.tick import Tick
from unit.control.patchjobs.patchjob_world import NEW, OLD, T0, World, drive, spec_for

HOUR = 3600.0
DRAIN = DrainPolicy(deadline_s=2 * HOUR, notice_before_s=(HOUR, 900.0, 60.0))
STEPS = parse_steps(
    [
        {"kind": "start_new"},
        {"kind": "wait_healthy"},
        {"kind": "switch_allocation", "weight": 1},
        {"kind": "stop_old", "deadline_s": HOUR},
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(list(Method)),
    fleet=st.lists(
        st.lists(st.one_of(st.floats(1, 3 * HOUR), st.just(float("inf"))), max_size=3),
        min_size=1,
        max_size=10,
    ),
    seed=st.integers(0, 2**16),
    cancel=st.one_of(st.none(), st.tuples(st.floats(0, 3 * HOUR), st.sampled_from(CancelMode))),
    broken=st.booleans(),
)
def test_the_world_s_own_changes_give_the_decisions_of_a_full_pass(
    method: Method,
    fleet: list[list[float]],
    seed: int,
    cancel: tuple[float, CancelMode] | None,
    broken: bool,
) -> None:
    world = World()
    for k, leaves in enumerate(fleet):
        world.add(host=f"h{k % 3}", region=("eu", "us")[k % 2], leaves=[T0 + x for x in leaves])
    if broken:
        world.broken_versions = {NEW}
    rng = random.Random(seed)
    for _ in range(rng.randrange(8)):  # friends joining old servers while they drain
        world.join(T0 + rng.uniform(0, 2 * HOUR), rng.uniform(1, HOUR), friend_of=1000)
    spec = spec_for(method, drain=DRAIN, steps=STEPS if method is Method.CUSTOM else ())

    def operator(w: World, p: JobProgress) -> JobProgress:
        if cancel is not None and w.now >= T0 + cancel[0] and p.cancel is None:
            return replace(p, cancel=cancel[1])
        return p

    run = drive(
        world,
        spec,
        operator=operator,
        crash_after=lambda _: rng.choice([None] * 8 + [0, 1]),
        memo=True,
    )
    assert run.progress.status.terminal


STATES = ("ready", "ready", "ready", "stopping", "stopped", "lost", "failed")


def _views(n: int) -> dict[int, InstanceView]:
    return {
        i: InstanceView(
            instance_id=i,
            fleet_id=1,
            host=f"h{i % 4}",
            version_id=OLD,
            state=READY,
            players=1 + i % 3,
            ready_since=T0 - HOUR,
        )
        for i in range(1, n + 1)
    }


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from([Method.BLEED_OFF, Method.AB]),
    n=st.integers(1, 12),
    seed=st.integers(0, 2**32),
    steps=st.integers(5, 60),
)
def test_any_change_of_any_row_at_any_time_gives_the_decisions_of_a_full_pass(
    method: Method, n: int, seed: int, steps: int
) -> None:
    rng = random.Random(seed)
    spec = spec_for(method, drain=DRAIN)
    rows = _views(n)
    now = T0
    progress = JobProgress(staged=frozenset((f"h{k}", NEW) for k in range(4)))
    phases = set()
    table, memo = JobInstances(), Memo()
    started: dict[str, InstanceView] = {}
    for _ in range(steps):
        for a in _changes(rng, rows, now):
            rows[a.instance_id] = a
        views = sorted(rows.values(), key=lambda v: v.instance_id)
        for v in views:
            table.put(v)
        full = plan(spec, progress, views, now)
        incremental = plan(spec, progress, table, now, memo)
        assert incremental == full, f"at {now - T0:g} s"
        if rng.random() < 0.1:
            # Its record lost a compare-and-set: the next pass starts from the last one.
            now = _next_time(rng, now, progress, full.wake_at)
            continue
        progress = incremental.progress
        phases.add(progress.phase)
        for a in full.actions:
            key = getattr(a, "key", "")
            if "/start/" in key and key not in started:  # a new instance, at once ready
                new_id = max(rows) + 1
                rows[new_id] = InstanceView(
                    new_id, 1, "h0", NEW, READY, ready_since=now, launch_key=key
                )
                started[key] = rows[new_id]
        if rng.random() < 0.05:
            # Read back from the database: the same progress, not the same objects.
            progress = progress_from_dict(progress_to_dict(progress))
        now = _next_time(rng, now, progress, full.wake_at)
        if progress.status.terminal:
            break
    assert phases - {"pending", "stage"}, "the job got past staging"


def _changes(rng: random.Random, rows: dict[int, InstanceView], now: float) -> list[InstanceView]:
    out = []
    for _ in range(rng.randrange(3)):
        v = rows[rng.choice(list(rows))]
        kind = rng.randrange(4)
        if kind == 0:
            out.append(replace(v, players=max(0, v.players + rng.choice((-2, -1, 1)))))
        elif kind == 1:
            out.append(replace(v, state=rng.choice(STATES)))
        elif kind == 2:
            out.append(replace(v, desired=rng.choice((RUNNING, "draining", STOPPED))))
        else:
            out.append(replace(v, ready_since=now, restarts=v.restarts + 1))
    return out


def _next_time(rng: random.Random, now: float, progress: JobProgress, wake: float | None) -> float:
    """Onto a wake-up, a notice time or a deadline, just before or after one, or back."""
    marks = [d - n for d in progress.deadlines.values() for n in (*DRAIN.notice_before_s, 0)]
    choice = rng.randrange(6)
    if choice == 0 and wake is not None:
        return wake
    if choice == 1 and marks:
        return rng.choice(marks) + rng.choice((-0.5, 0.0, 0.0, 0.5))
    if choice == 2:
        return now - rng.uniform(0, 60)  # a clock that went back: the memo must not be used
    return now + rng.choice((0.5, 5.0, 60.0, 900.0))


def test_a_pass_judges_again_only_the_members_that_changed_or_whose_time_came(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    judged: list[int] = []
    real = common._judge

    def counting(t: Tick, instance_id: int, *args: Any) -> float | None:
        judged.append(instance_id)
        return real(t, instance_id, *args)

    monkeypatch.setattr(common, "_judge", counting)
    spec = spec_for(Method.BLEED_OFF, drain=DRAIN)
    rows = _views(200)
    table, memo = JobInstances(rows.values()), Memo()
    staged = frozenset((f"h{k}", NEW) for k in range(4))
    progress, now = JobProgress(staged=staged), T0
    for _ in range(20):  # start, gate: new instances ready at once
        if progress.phase == "bleed":
            break
        d = plan(spec, progress, table, now, memo)
        progress = d.progress
        for a in d.actions:
            if isinstance(a, StartInstance):
                new = InstanceView(
                    max(rows) + 1, 1, a.host, NEW, READY, ready_since=now, launch_key=a.key
                )
                rows[new.instance_id] = new
                table.put(new)
        now += 60.0
    assert progress.phase == "bleed"
    assert sorted(judged) == list(range(1, 201)), "the first bleed pass judges every member"

    table.put(replace(rows[17], players=0))
    judged.clear()
    d = plan(spec, progress, table, now + 1, memo)
    assert judged == [17]
    assert [a.instance_id for a in d.actions if isinstance(a, StopInstance)] == [17]
    progress = d.progress

    first_notice = progress.deadlines[1] - HOUR
    judged.clear()
    d = plan(spec, progress, table, first_notice, memo)
    assert len(judged) == 199, "every member still running is due its notice"
    assert sum(isinstance(a, Notify) for a in d.actions) == 199
    assert d == plan(spec, progress, list(table.by_id.values()), first_notice)
