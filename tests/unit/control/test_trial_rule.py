"""The build machine trial's verdict (``trials.judge``): pure, over plain values."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from changeover.control.fleet.trials import Seen, judge

START = 1000.0


def test_passes_once_ready_for_the_hold() -> None:
    seen = Seen("ready", 0, ready_at=START + 5)
    waiting = judge(seen, START, 30, 300, True, START + 34)
    assert (waiting.over, waiting.message) == (False, "ready; healthy for 29 of 30 s")
    done = judge(seen, START, 30, 300, True, START + 35)
    assert (done.over, done.passed) == (True, True)
    assert done.message == "ready 5.0 s after it was asked for and healthy for 30 s"


def test_a_crash_a_restart_or_a_silent_host_fails_it_at_once() -> None:
    crashed = judge(Seen("failed", 0, None, error="exit 3: boom"), START, 30, 300, True, START + 1)
    assert (crashed.over, crashed.passed) == (True, False)
    assert crashed.message == "the game server failed: exit 3: boom"
    # Restarted after a crash, and ready again: still a failure (it crashed once).
    restarted = judge(
        Seen("ready", 1, START + 9, exit="crashed (code 1) while meant to run"),
        START,
        5,
        300,
        True,
        START + 60,
    )
    assert restarted.message == (
        "the game server restarted 1 time(s): crashed (code 1) while meant to run"
    )
    silent = judge(Seen("ready", 0, START + 1), START, 30, 300, False, START + 20)
    assert (silent.over, silent.passed, silent.message) == (
        True,
        False,
        "its host stopped answering",
    )


def test_never_ready_fails_after_the_timeout_only() -> None:
    seen = Seen("starting", 0, None)
    assert not judge(seen, START, 30, 300, True, START + 300).over
    late = judge(seen, START, 30, 300, True, START + 301)
    assert (late.over, late.passed) == (True, False)
    assert late.message == "not ready within 300 s (still starting)"


@given(
    state=st.sampled_from(["staging", "starting", "ready", "stopping", "stopped", "failed"]),
    restarts=st.integers(0, 3),
    ready_after=st.none() | st.floats(0, 500),
    alive=st.booleans(),
    t=st.floats(0, 1000),
)
def test_it_passes_only_a_healthy_server_that_held(
    state: str, restarts: int, ready_after: float | None, alive: bool, t: float
) -> None:
    ready_at = None if ready_after is None else START + ready_after
    v = judge(Seen(state, restarts, ready_at), START, 60, 300, alive, START + t)
    if v.passed:
        assert v.over and state == "ready" and restarts == 0 and alive
        assert ready_at is not None and START + t - ready_at >= 60
    if not v.over:
        assert t <= 300 or state == "ready"
