"""``reconciler.make_way``: a patch job's pass waits while many hosts' syncs are being
answered, and never longer than ``MAKE_WAY_AT_MOST_S`` at one point."""

from __future__ import annotations

from changeover.control.patchjobs.reconciler import (
    MAKE_WAY_AT_MOST_S,
    SYNCS_FIRST_ABOVE,
    make_way,
)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept += 1
        self.now += s


def test_a_quiet_fleet_costs_no_wait() -> None:
    t = FakeTime()
    assert make_way(lambda: SYNCS_FIRST_ABOVE, clock=t.clock, sleep=t.sleep) == 0.0
    assert t.slept == 0


def test_it_waits_until_the_syncs_are_answered() -> None:
    t = FakeTime()
    in_flight = iter([SYNCS_FIRST_ABOVE + 5, SYNCS_FIRST_ABOVE + 1, SYNCS_FIRST_ABOVE])
    waited = make_way(lambda: next(in_flight), clock=t.clock, sleep=t.sleep)
    assert t.slept == 2
    assert 0 < waited < MAKE_WAY_AT_MOST_S


def test_it_never_waits_past_its_bound() -> None:
    t = FakeTime()
    waited = make_way(lambda: 1000, clock=t.clock, sleep=t.sleep)
    assert MAKE_WAY_AT_MOST_S <= waited < MAKE_WAY_AT_MOST_S + 0.01
