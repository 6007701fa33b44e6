"""Unit tests for ``bench/replicas.py``: what counts as around a kill, and its report."""

from __future__ import annotations

import argparse

from bench_scripts import load_bench

replicas = load_bench("replicas")


def test_a_window_counts_errors_and_when_they_came() -> None:
    samples = [(9.95, 40.0, 0), (9.99, 12.0, 502), (10.2, 5.0, 201), (10.3, 7.0, 201)]
    got = replicas._window(samples, 10.0)
    assert got["requests"] == 4 and got["errors"] == 2
    # From the first error's due time to the last error's answer, against the kill at 10.
    assert got["span"] == "-0.05 to +0.00 s"  # the 502 came back at 10.002
    assert got["p99_ms"] > 5.0
    assert replicas._window([(1.0, 3.0, 201)], None) == {
        "requests": 1,
        "errors": 0,
        "p99_ms": 3.0,
        "span": "-",
    }


def test_the_report_shows_every_part() -> None:
    window = {"requests": 10, "errors": 1, "p99_ms": 3.0, "span": "-0.01 to +0.02 s"}
    results = {
        "failover": {"SIGKILL": [0.5, 0.7], "SIGSTOP": [4.5, 5.5]},
        "kills": {"follower killed": window, "leader killed": window, "elsewhere": window},
        "scaling": [
            {"replicas": n, "per_s": 1000.0 * n, "errors": 0, "p99_ms": 9.0, "cpu_s": [1.0] * n}
            for n in (1, 2, 3)
        ],
        "push": {"mb": 20.0, "local_s": 1.0, "bucket_s": 2.0},
    }
    args = argparse.Namespace(rate=1000.0, window=9.0, concurrency=32, duration=5.0)
    text = replicas.report(results, args, "python bench/replicas.py")
    assert "| leader frozen (SIGSTOP; the lease must run out) | 2     | 5.00" in text
    assert "| S3 bucket (moto) | 2.0     | 10.0 |" in text
    assert text.count("| -0.01 to +0.02 s") == 3
