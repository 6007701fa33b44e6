"""The rollout simulator (issue 24): the real planners and allocation rule in virtual time.

Small fleets with explicit player models: fixed session lengths and no arrivals where a
test needs an exact count, a Poisson stream and friend joins where it needs a crowd."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from changeover.control.patchjobs import specs
from changeover.control.patchjobs.knobs import DrainPolicy, RollingKnobs
from changeover.control.patchjobs.model import BuildPair, JobSpec, JobStatus, Method
from changeover.control.patchjobs.player_model import (
    DAY_S,
    EndedSession,
    PlayerModel,
    SessionComponent,
    fit,
    fit_or_given,
)
from changeover.control.patchjobs.schedule import check_start_time
from changeover.control.patchjobs.simulate import (
    COMPARED,
    AgentTimings,
    FleetSnapshot,
    SimInstance,
    compare_methods,
    estimate,
    simulate,
    spec_from_body,
    warm_up,
)
from changeover.errors import ChangeoverError, InvalidInput

T0 = 1_700_000_000.0
OLD, NEW = 100, 200
HOUR = 3600.0


def fleet(n: int = 6, players: int = 3, age_s: float = 0.0, capacity: int = 8) -> FleetSnapshot:
    """``n`` old instances over three hosts and two regions, ``players`` on each."""
    return FleetSnapshot(
        at=T0,
        instances=tuple(
            SimInstance(
                instance_id=i,
                fleet_id=1,
                host=f"h{i % 3}",
                region="eu" if i % 2 else "us",
                version_id=OLD,
                capacity=capacity,
                session_starts=(T0 - age_s,) * players,
            )
            for i in range(1, n + 1)
        ),
        host_slots={"h0": 4, "h1": 4, "h2": 4},
    )


def job(method: Method = Method.BLEED_OFF, deadline_s: float = 12 * HOUR) -> JobSpec:
    notices = tuple(n for n in (3600.0, 900.0, 300.0, 60.0) if n < deadline_s)
    return JobSpec(
        job_id=7,
        method=method,
        builds=(BuildPair(OLD, NEW),),
        fleet_ids=(1,),
        drain=DrainPolicy(deadline_s=deadline_s, notice_before_s=notices),
    )


def quiet(session_s: float, **kw: Any) -> PlayerModel:
    """No new players; every session lasts exactly ``session_s``."""
    return PlayerModel((0.0,), (SessionComponent(1.0, session_s),), **kw)


CROWD = PlayerModel(
    (0.05,),
    (SessionComponent(0.8, 600.0, 0.6), SessionComponent(0.2, HOUR, 0.6)),
    friend_join_share=0.2,
    notice_leave_share=0.3,
)


def test_the_same_seed_gives_the_same_answer_and_another_seed_another() -> None:
    a = simulate(job(), fleet(), CROWD, seed=3)
    b = simulate(job(), fleet(), CROWD, seed=3)
    assert a == b
    assert a.arrivals > 0
    c = simulate(job(), fleet(), CROWD, seed=4)
    assert (c.arrivals, c.actions) != (a.arrivals, a.actions)


@pytest.mark.parametrize("method", COMPARED)
def test_each_method_completes_and_replaces_every_old_instance(method: Method) -> None:
    r = simulate(job(method), fleet(), CROWD, seed=1)
    assert r.outcome is JobStatus.COMPLETED, r.reason
    assert r.selected == 6
    assert r.players_at_start == 18
    kinds = [a.kind for a in r.actions]
    assert kinds.count("StartInstance") == 6
    assert kinds[-1] == "Finish"
    # Every old instance was asked to stop (or fell back to the fleet's drain rules).
    stopped = {a.instance_id for a in r.actions if a.kind == "StopInstance"}
    assert stopped == set(range(1, 7))
    assert set(r.region_finish_s) == {"eu", "us"}
    assert r.duration_s is not None
    assert max(r.region_finish_s.values()) <= r.duration_s
    # Times are the planner's: staging (30 s) comes before any start.
    first_start = next(a for a in r.actions if a.kind == "StartInstance")
    assert first_start.at_s >= AgentTimings().stage_s


def test_the_actions_are_the_planners_in_its_order() -> None:
    r = simulate(job(Method.BLEED_OFF, deadline_s=HOUR), fleet(players=0), quiet(60.0))
    kinds = [a.kind for a in r.actions]
    # stage every host, start a replacement beside each old instance, switch allocation,
    # stop the (empty) old ones, finish.
    assert kinds == ["StageBuild"] * 3 + ["StartInstance"] * 6 + ["SwitchAllocation"] + [
        "StopInstance"
    ] * 6 + ["Finish"]
    assert [a.key for a in r.actions][:3] == [
        "job7/stage/stage/h0:200",
        "job7/stage/stage/h1:200",
        "job7/stage/stage/h2:200",
    ]
    assert r.kicked == 0


def test_a_bleed_off_deadline_shorter_than_the_sessions_kicks_their_players() -> None:
    r = simulate(job(Method.BLEED_OFF, deadline_s=HOUR), fleet(), quiet(2 * HOUR))
    assert r.outcome is JobStatus.COMPLETED
    assert r.kicked_at_deadline == r.players_at_start == 18
    assert r.kicked_by_stop == 0
    assert r.duration_s is not None and HOUR < r.duration_s < 1.1 * HOUR


def test_a_bleed_off_deadline_longer_than_the_sessions_kicks_nobody() -> None:
    r = simulate(job(Method.BLEED_OFF, deadline_s=3 * HOUR), fleet(), quiet(2 * HOUR))
    assert r.outcome is JobStatus.COMPLETED
    assert r.kicked == 0
    # Done once the last session ends, not at the deadline.
    assert r.duration_s is not None and 2 * HOUR <= r.duration_s < 2.1 * HOUR


def test_a_forced_deployment_kicks_everyone_at_once_and_leaves_no_capacity() -> None:
    r = simulate(job(Method.FORCED), fleet(), quiet(2 * HOUR))
    assert r.kicked_by_stop == 18
    assert r.kicked_at_deadline == 0
    assert r.min_capacity_share == 0.0
    assert r.reduced_capacity_s > 0
    assert r.peak_extra_instances == 0
    assert r.duration_s is not None and r.duration_s < 120


def test_a_b_and_bleed_off_need_a_full_surge_rolling_stays_within_its_budget() -> None:
    f = fleet(players=0)
    ab = simulate(job(Method.AB), f, quiet(60.0))
    assert ab.peak_extra_instances == 6
    assert ab.reduced_capacity_s == 0.0
    # Three hosts of 4 slots, each running 2 old + 2 new: at the limit, not over it.
    assert ab.extra_slots_needed == 0
    small = replace(f, host_slots={"h0": 3, "h1": 3, "h2": 3})
    over = simulate(job(Method.AB), small, quiet(60.0))
    assert over.hosts_over_slots == ("h0", "h1", "h2")
    assert over.extra_slots_needed == 3
    one_by_one = replace(job(Method.ROLLING), rolling=RollingKnobs(max_surge=1, max_unavailable=1))
    instant = AgentTimings(stop_s=0.0)
    rolling = simulate(one_by_one, f, quiet(60.0), timings=instant)
    assert rolling.outcome is JobStatus.COMPLETED
    assert rolling.peak_extra_instances == 1
    # The planner counts an instance asked to stop as gone; while it takes its 5 s to exit,
    # its host still runs it beside the replacements: that is surge the hosts must hold.
    slow = simulate(one_by_one, f, quiet(60.0), timings=AgentTimings(stop_s=5.0))
    assert slow.peak_extra_instances > 1


def test_friends_joining_friends_keep_old_servers_alive_until_the_deadline() -> None:
    busy = PlayerModel((0.2,), (SessionComponent(1.0, 1800.0),), friend_join_share=0.0)
    alone = simulate(job(Method.BLEED_OFF, deadline_s=4 * HOUR), fleet(), busy, seed=5)
    assert alone.kicked == 0
    friends = replace(busy, friend_join_share=0.9)
    stuck = simulate(job(Method.BLEED_OFF, deadline_s=4 * HOUR), fleet(), friends, seed=5)
    assert stuck.kicked_at_deadline > 0
    assert stuck.duration_s is not None and alone.duration_s is not None
    assert stuck.duration_s > alone.duration_s


def test_players_who_leave_at_the_notice_play_on_elsewhere_and_are_not_kicked() -> None:
    r = simulate(
        job(Method.BLEED_OFF, deadline_s=HOUR), fleet(), quiet(2 * HOUR, notice_leave_share=1.0)
    )
    assert r.moved_after_notice == 18
    assert r.kicked == 0
    assert r.refused == 0


def test_compare_methods_runs_each_on_the_same_fleet() -> None:
    results = compare_methods(job(), fleet(), CROWD, seed=2)
    assert list(results) == list(COMPARED)
    assert all(r.method is m for m, r in results.items())
    assert results[Method.FORCED].kicked_by_stop > 0
    assert results[Method.BLEED_OFF].kicked_by_stop == 0


def test_estimate_reports_the_spread_over_seeds() -> None:
    e = estimate(job(deadline_s=2 * HOUR), fleet(), CROWD, runs=5, seed=10)
    assert [r.seed for r in e.runs] == [10, 11, 12, 13, 14]
    durations = sorted(r.duration_s for r in e.runs if r.duration_s is not None)
    assert e.duration_p50_s == durations[2]
    assert e.duration_p90_s is not None and e.duration_p50_s <= e.duration_p90_s
    assert e.unfinished == 0


def test_a_job_not_done_by_the_horizon_says_so() -> None:
    r = simulate(job(deadline_s=2 * HOUR), fleet(), quiet(3 * HOUR), horizon_s=HOUR)
    assert r.outcome is None
    assert r.duration_s is None


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: PlayerModel((-1.0,), (SessionComponent(1.0, 60.0),)), "arrivals_per_s"),
        (lambda: PlayerModel((float("nan"),), (SessionComponent(1.0, 60.0),)), "arrivals_per_s"),
        (lambda: PlayerModel((1.0,), ()), "sessions"),
        (lambda: PlayerModel((1.0,), (SessionComponent(0.5, 60.0),)), "sessions"),
        (lambda: SessionComponent(1.0, 0.0), "sessions.median_s"),
        (lambda: replace(quiet(60.0), friend_join_share=2), "friend_join_share"),
        (lambda: SimInstance(1, 1, "h", "eu", OLD, capacity=0), "capacity"),
        (lambda: SimInstance(1, 1, "h", "eu", OLD, capacity=1, session_starts=(T0, T0)), "players"),
        (lambda: AgentTimings(start_s=-5), "timings.start_s"),
        (lambda: AgentTimings(tick_s=0), "timings.tick_s"),
        (lambda: simulate(job(), fleet(), quiet(60.0), horizon_s=-1), "horizon_s"),
        (lambda: simulate(job(), fleet(), quiet(60.0), seed=1.5), "seed"),
        (lambda: estimate(job(), fleet(), quiet(60.0), runs=0), "runs"),
    ],
)
def test_absurd_parameters_are_refused_with_a_clear_error(build: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        build()
    assert isinstance(e.value, ChangeoverError)
    assert field in e.value.message


def test_a_custom_job_runs_its_steps_with_checks_that_pass() -> None:
    steps = [
        {"kind": "start_new"},
        {"kind": "wait_healthy"},
        {"kind": "run_check", "command": "./integration --private"},
        {"kind": "stop_old", "reason": "saving your world"},
        {"kind": "switch_allocation", "weight": 1},
    ]
    body = {"name": "c", "method": "custom", "steps": steps}
    spec = spec_from_body(body, [(OLD, NEW)], [1], now=T0)
    r = simulate(spec, fleet(), quiet(2 * HOUR))
    assert r.outcome is JobStatus.COMPLETED, r.reason
    check = next(a for a in r.actions if a.kind == "RunCheck")
    stop = next(a for a in r.actions if a.kind == "StopInstance")
    assert stop.at_s >= check.at_s + AgentTimings().check_s
    # stop_old stops busy servers after their save window: their players are kicked.
    assert r.kicked_by_stop == 18


BAD_BODIES = [
    {"name": "x", "method": "teleport"},
    {"name": "x", "method": "rolling", "rolling": {"max_surge": "150%"}},
    {"name": "x", "method": "bleed-off", "drain": {"deadline_s": -1}},
    {"name": "x", "method": "rolling", "stop": {"signal": "SIGBOGUS"}},
    {"name": "x", "method": "rolling", "failure_threshold": 1.5},
    {"name": "x", "method": "rolling", "scheduled_start": T0 + 10},
    {"name": "", "method": "rolling"},
    {"name": "x", "method": "rolling", "colour": "blue"},
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_spec_create_refuses_is_refused_with_the_same_error(body: dict[str, Any]) -> None:
    """``spec_from_body`` runs create's own checks (``specs.check_body``,
    ``schedule.check_start_time``, ``specs.normalise``); the integration test
    ``test_simulate_spec`` compares with ``services.create`` on a real database."""
    with pytest.raises(InvalidInput) as e:
        spec_from_body(body, [(OLD, NEW)], [1], now=T0)
    with pytest.raises(InvalidInput) as direct:
        _create_checks(body)
    assert e.value.message == direct.value.message


def _create_checks(body: dict[str, Any]) -> None:
    """The pure checks of ``services.create``, in its order."""
    specs.check_body(body)
    check_start_time(body.get("scheduled_start"), T0)
    specs.normalise(body, [(OLD, NEW)], [1], body.get("scheduled_start"))


def test_a_valid_body_gives_the_spec_the_job_would_run() -> None:
    body = {"name": "x", "method": "bleed-off", "drain": {"deadline_s": 7200}}
    spec = spec_from_body(body, [(OLD, NEW)], [1], now=T0)
    assert spec.method is Method.BLEED_OFF
    assert spec.drain.deadline_s == 7200
    assert spec.builds == (BuildPair(OLD, NEW),)


def _history(days: int = 3) -> list[EndedSession]:
    """A fleet's week: 20 sessions an hour from 18:00 to 24:00 UTC, 2 an hour otherwise;
    nine in ten last 10 minutes, one in ten 2 hours."""
    rng = random.Random(1)
    out = []
    day0 = T0 - T0 % DAY_S - days * DAY_S
    for d in range(days):
        for hour in range(24):
            for k in range(20 if hour >= 18 else 2):
                start = day0 + d * DAY_S + hour * HOUR + k * HOUR / 20 + rng.random()
                length = 600.0 if rng.random() < 0.9 else 7200.0
                out.append(EndedSession(start, start + length))
    return [h for h in out if h.ended_at <= day0 + days * DAY_S]


def test_a_model_fitted_from_history_has_its_daily_curve_and_lengths() -> None:
    history = _history()
    now = max(h.ended_at for h in history)
    model = fit(history, now)
    assert model is not None
    assert len(model.arrivals_per_s) == 24
    evening, night = model.arrivals_per_s[20], model.arrivals_per_s[4]
    assert evening == pytest.approx(20 / HOUR, rel=0.1)
    assert night == pytest.approx(2 / HOUR, rel=0.2)
    rng = random.Random(2)
    draws = sorted(model.session_length(rng) for _ in range(4000))
    assert draws[len(draws) // 2] == pytest.approx(600.0, rel=0.1)
    long_share = sum(d > 3600 for d in draws) / len(draws)
    assert long_share == pytest.approx(0.1, abs=0.04)


def test_no_history_falls_back_to_the_explicit_model_and_says_so() -> None:
    given = quiet(60.0)
    used = fit_or_given([], T0, given)
    assert used.model is given
    assert used.source == "explicit"
    history = _history()
    fitted = fit_or_given(history, max(h.ended_at for h in history), None)
    assert fitted.source == "history"
    assert str(len(history)) in fitted.note
    with pytest.raises(InvalidInput, match="explicitly") as e:
        fit_or_given(history[:5], T0, None)
    assert e.value.facts == {"field": "players"}
    assert fit(history[:29], T0) is None


BUSY = PlayerModel(
    (0.3,),
    (SessionComponent(0.7, 300.0, 0.8), SessionComponent(0.3, 2 * HOUR, 0.8)),
    friend_join_share=0.5,
    notice_leave_share=0.2,
)


@pytest.mark.parametrize(
    "spec",
    [
        *(job(m, deadline_s=HOUR) for m in COMPARED),
        replace(job(Method.ROLLING, deadline_s=HOUR), rolling=RollingKnobs(max_surge=0)),
        replace(
            job(Method.ROLLING, deadline_s=HOUR),
            rolling=RollingKnobs(max_surge=1, max_unavailable=2),
        ),
    ],
    ids=[*(m.name for m in COMPARED), "rolling-no-surge", "rolling-1-2"],
)
def test_skipping_passes_that_only_see_player_counts_changes_nothing(spec: JobSpec) -> None:
    """The default plans less often than the reconciler (not on every player who comes or
    goes while a server stays busy); the answer must be the one planning every time gives,
    action for action and time for time."""
    emptying = PlayerModel((0.01,), (SessionComponent(1.0, 1200.0, 0.8),))
    for players, seed in ((BUSY, 1), (BUSY, 2), (emptying, 1), (emptying, 2)):
        fast = simulate(spec, fleet(), players, seed=seed)
        exact = simulate(spec, fleet(), players, seed=seed, every_change=True)
        assert fast.outcome is JobStatus.COMPLETED, fast.reason
        assert fast == exact


@pytest.mark.parametrize("method", COMPARED)
def test_allocating_from_the_index_places_players_as_ranking_the_whole_fleet(
    method: Method,
) -> None:
    """The default hands ``allocation.rank`` the best instance from an index (and the
    friend's), as ``allocate_db`` hands it the best few from the database; every player
    must land where ranking every instance would put it."""
    two_fleets = replace(
        fleet(),
        instances=(
            *fleet().instances,
            SimInstance(50, 2, "h0", "eu", OLD, 8, (T0,) * 2),
            SimInstance(51, 2, "h1", "us", OLD, 8),
        ),
    )
    for seed, packing in ((1, True), (2, True), (1, False), (2, False)):
        spec = job(method, deadline_s=HOUR)
        fast = simulate(spec, two_fleets, BUSY, seed=seed, packing=packing)
        exact = simulate(spec, two_fleets, BUSY, seed=seed, full_pool=True, packing=packing)
        assert fast.arrivals > 0
        assert fast == exact


@pytest.mark.parametrize("method", COMPARED)
def test_planning_incrementally_gives_the_answer_of_planning_from_scratch(
    method: Method,
) -> None:
    """The default plans as the reconciler does between restarts, judging again only the
    members whose row changed or whose time came (``strategies.memo``); from scratch,
    every pass judges every member. Same players, same actions, same moments."""
    emptying = PlayerModel((0.01,), (SessionComponent(1.0, 1200.0, 0.8),))
    for players, seed in ((BUSY, 1), (BUSY, 2), (emptying, 1), (emptying, 2)):
        spec = job(method, deadline_s=HOUR)
        fast = simulate(spec, fleet(), players, seed=seed)
        exact = simulate(spec, fleet(), players, seed=seed, incremental=False)
        assert fast.outcome is JobStatus.COMPLETED, fast.reason
        assert fast.actions
        assert fast == exact


def test_spreading_is_a_real_counterfactual() -> None:
    """``packing=False`` (the benchmark's counterfactual) places players elsewhere: the
    emptiest server first, on the same rule otherwise."""
    spec = job(Method.BLEED_OFF, deadline_s=HOUR)
    packed = simulate(spec, fleet(), BUSY, seed=3)
    spread = simulate(spec, fleet(), BUSY, seed=3, packing=False)
    assert packed.arrivals == spread.arrivals > 0
    assert packed != spread


def test_a_warm_up_shapes_the_fleet_by_the_allocation_rule() -> None:
    """Hours of players placed by the allocation rule, no job: packing leaves more servers
    empty than spreading does; the snapshot carries every player on, with when they began."""
    even = fleet(n=12, players=2, capacity=8)
    light = PlayerModel((0.01,), (SessionComponent(1.0, 1800.0, 0.5),))  # ~20 online
    packed = warm_up(job(), even, light, 3, seed=5)
    spread = warm_up(job(), even, light, 3, seed=5, packing=False)
    assert packed.at == spread.at == T0 + 3 * HOUR

    def empty(s: FleetSnapshot) -> int:
        return sum(1 for i in s.instances if not i.session_starts)

    def load(s: FleetSnapshot) -> int:
        return sum(len(i.session_starts) for i in s.instances)

    assert load(packed) > 0 and load(spread) > 0
    assert empty(packed) > empty(spread)
    for s in (packed, spread):
        assert all(T0 - HOUR <= b <= s.at for i in s.instances for b in i.session_starts)
    # A run starts from it like from any snapshot.
    assert simulate(job(), packed, light, seed=5).players_at_start == load(packed)
    with pytest.raises(InvalidInput, match="hours must be"):
        warm_up(job(), even, light, -1)


def test_a_scheduled_job_starts_at_its_time_on_the_fleet_players_made_by_then() -> None:
    """Players come and go from the snapshot to the scheduled start (``warm_up``), then
    the job runs from there; its times count from its start."""
    later = replace(job(deadline_s=HOUR), scheduled_start=T0 + 6 * HOUR)
    scheduled = simulate(later, fleet(), CROWD, seed=5)
    by_hand = simulate(
        job(deadline_s=HOUR), warm_up(later, fleet(), CROWD, 6, seed=5), CROWD, seed=5
    )
    assert scheduled.starts_after_s == 6 * HOUR
    assert replace(scheduled, starts_after_s=0.0) == by_hand
    now = simulate(job(deadline_s=HOUR), fleet(), CROWD, seed=5)
    assert now.starts_after_s == 0.0
    assert now.players_at_start != scheduled.players_at_start, "the players changed by then"


def test_a_job_scheduled_days_ahead_plays_only_the_last_day_before_it() -> None:
    far = replace(job(deadline_s=HOUR), scheduled_start=T0 + 3 * 86400.0)
    result = simulate(far, fleet(), CROWD, seed=2)
    assert result.starts_after_s == 3 * 86400.0
    assert result.outcome is JobStatus.COMPLETED
    with pytest.raises(InvalidInput, match="scheduled start"):
        simulate(far, fleet(), CROWD, seed=2, max_arrivals=100)
