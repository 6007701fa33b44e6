"""Unit tests for ``bench/rollout_sim.py``: its workload and how it reads the sweep."""

from __future__ import annotations

import pytest

from bench_scripts import load_bench

sim = load_bench("rollout_sim")


def test_the_arrivals_keep_the_online_count_steady_over_the_day() -> None:
    model = sim.players_model(5000, 0.1)
    mean_rate = sum(model.arrivals_per_s) / len(model.arrivals_per_s)
    assert mean_rate * sim.mean_session_s() == pytest.approx(5000)
    assert max(model.arrivals_per_s) == pytest.approx(2 * min(model.arrivals_per_s), rel=0.01)


def test_the_fleet_holds_every_player_within_capacity() -> None:
    snapshot = sim.fleet(7, 50, seed=1)
    counts = [len(i.session_starts) for i in snapshot.instances]
    assert sum(counts) == 50 and max(counts) - min(counts) <= 1
    assert {i.region for i in snapshot.instances} == set(sim.REGIONS)


@pytest.mark.parametrize(
    ("points", "target", "expected"),
    [
        ([(1.0, 0.1), (10.0, 0.001)], 0.01, "≈ 3 h"),  # halfway in log-log
        ([(1.0, 0.1), (10.0, 0.0)], 0.01, "≤ 10 h"),
        ([(1.0, 0.0001), (10.0, 0.0)], 0.001, "≤ 1 h"),
        ([(1.0, 0.1), (10.0, 0.05)], 0.01, "beyond 10 h"),
    ],
)
def test_the_deadline_needed_is_read_between_the_two_around_it(
    points: list[tuple[float, float]], target: float, expected: str
) -> None:
    assert sim.needed_deadline(points, target) == expected
