"""The rate and time left a download shows, and the limit that paces it, from its start."""

from __future__ import annotations

import pytest

from changeover.launcher.engine import RateMeter
from changeover.launcher.fetch import CHUNK, RateLimit


def test_an_early_burst_shows_no_rate_and_no_time_left() -> None:
    meter = RateMeter(100.0)
    meter.add(100.01, 500_000)  # buffers emptying at once: 50 MB/s "measured"
    assert meter.rate(100.01) == 0.0
    assert meter.eta(100.01, 10_000_000) is None
    meter.add(100.5, 300_000)
    assert meter.rate(100.5) == 0.0 and meter.eta(100.5, 10_000_000) is None


def test_the_rate_is_over_the_recent_window() -> None:
    meter = RateMeter(0.0, window_s=5.0, min_s=1.0, eta_after_s=2.0)
    for tenth in range(1, 31):  # 3 s at 600 kB/s
        meter.add(tenth / 10, 60_000)
    assert meter.rate(3.0) == pytest.approx(600_000)
    assert meter.eta(3.0, 1_800_000 + 1_200_000) == pytest.approx(2.0)
    # The link slows to 100 kB/s: after a full window, only the new rate counts.
    for tenth in range(31, 91):
        meter.add(tenth / 10, 10_000)
    assert meter.rate(9.0) == pytest.approx(100_000, rel=0.03)
    assert meter.done == 1_800_000 + 600_000


def test_the_time_left_waits_for_eta_after_s_then_never_says_zero_early() -> None:
    meter = RateMeter(0.0, min_s=1.0, eta_after_s=2.0)
    meter.add(0.05, 1_000_000)  # an early burst
    meter.add(1.5, 200_000)
    assert meter.rate(1.5) > 0 and meter.eta(1.5, 10_000_000) is None
    meter.add(2.0, 200_000)
    eta = meter.eta(2.0, 10_000_000)
    assert eta is not None and eta > 10  # 8.6 MB left at well under 1 MB/s
    assert meter.eta(2.0, meter.done) == 0.0  # only when it is all there


def test_no_data_no_rate() -> None:
    meter = RateMeter(0.0)
    assert meter.rate(10.0) == 0.0 and meter.eta(10.0, 100) is None


def test_a_rate_limit_starts_empty() -> None:
    """A full bucket at the start let a second's worth through unpaced."""
    limit = RateLimit(1_000_000)
    assert limit.take(CHUNK) > 0
    assert RateLimit(None).take(10 * CHUNK) == 0.0
