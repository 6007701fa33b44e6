"""The launcher's phase timings: summed over workers, and the wall clock of a phase that
workers run side by side."""

from __future__ import annotations

import pytest

from changeover.launcher import sync
from changeover.launcher.sync import Stopwatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(sync.time, "monotonic", c)
    return c


def test_side_by_side_applies_sum_to_more_than_their_wall_clock(clock: Clock) -> None:
    watch = Stopwatch()
    first = watch("apply")
    first.__enter__()
    clock.now += 1.0
    second = watch("apply")  # a second worker starts while the first is still applying
    second.__enter__()
    clock.now += 1.0
    first.__exit__(None, None, None)
    clock.now += 0.5
    second.__exit__(None, None, None)
    clock.now += 3.0  # nobody applies: counts in neither
    with watch("apply"):
        clock.now += 0.25
    assert watch.seconds["apply"] == pytest.approx(2.0 + 1.5 + 0.25)
    assert watch.seconds["apply_wall"] == pytest.approx(2.5 + 0.25)


def test_a_phase_run_alone_has_no_wall_clock_of_its_own(clock: Clock) -> None:
    watch = Stopwatch()
    with watch("install"):
        clock.now += 0.75

    def failed_download() -> None:
        with watch("fetch"):
            clock.now += 0.5
            raise RuntimeError("a failed download still took its time")

    with pytest.raises(RuntimeError):
        failed_download()
    assert watch.rounded() == {"install": 0.75, "fetch": 0.5, "fetch_wall": 0.5}
