"""Unit tests for ``bench/patchjobs.py``: its job bodies, arguments and report."""

from __future__ import annotations

import pytest

from bench_scripts import load_bench

pj = load_bench("patchjobs")


def test_job_body_names_the_builds_fleet_and_knobs() -> None:
    body = pj.job_body("canary", "a-v1", "a-v2", "arena", "arena", "production", 20)
    assert body["builds"] == [{"old": "a-v1", "new": "a-v2"}]
    assert body["fleets"] == ["arena"] and body["method"] == "canary"
    assert body["drain"] == {"deadline_s": 20, "notice_before_s": [10.0]}
    assert body["canary"]["share"] == 0.25
    assert "canary" not in pj.job_body("rolling", "a", "b", "f", "x", "e", 20)


def test_arguments_are_checked() -> None:
    args = pj.parse_args(["--methods", "forced, bleed-off", "--scale-size", "0"])
    assert args.methods == ["forced", "bleed-off"] and args.scale_size == 0
    assert args.database_list == ["sqlite", "postgres"]
    with pytest.raises(SystemExit):
        pj.parse_args(["--methods", "forced,teleport"])
    with pytest.raises(SystemExit):
        pj.parse_args(["--databases", "sqlite,oracle"])


def test_report_shows_both_parts_per_1000_instances() -> None:
    args = pj.parse_args([])
    play = [pj.PlayRun("forced", "Completed", 12.5, 20, 15, 0, 5)]
    scale = [
        pj.ScaleRun(
            "postgres",
            "rolling",
            2000,
            20,
            "Completed",
            40.0,
            10.0,
            300,
            280,
            1.5,
            4.25,
            0.012,
            0.25,
            1990,
            pj.AllocLoad(20_000, 19_990, 3.0, 41.5, "409: 10"),
            6.0,
        )
    ]
    md = pj.report_md(play, scale, args, "python bench/patchjobs.py")
    rows = {
        cells[0]: cells
        for line in md.splitlines()
        if line.startswith("| ") and not line.startswith("| -")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    # 0 moved of 15 completed + 5 dropped game sessions: 0 %.
    assert rows["forced"] == ["forced", "Completed", "12.5", "20", "15", "0", "0%", "5"]
    # 40 s wall and 10 CPU s for 2,000 instances: 20 and 5 per 1,000.
    assert rows["postgres"][:2] == ["postgres", "rolling"]
    assert rows["postgres"][5:7] == ["20.00", "5.00"]
    # less 6 CPU s at rest over as long: 4 CPU s of its own, 2 per 1,000.
    assert rows["postgres"][7] == "2.00"
    # syncs, quiet ones, median interval, sync round trips, longest gap
    assert rows["postgres"][8:13] == ["300", "280", "1.5", "12 / 250", "4.2"]
    # on the new build, allocations answered, their latency, the other answers
    assert rows["postgres"][13:] == ["1,990 of 2,000", "19,990 / 20,000", "3 / 42", "409: 10"]
    assert "second control-plane replica" not in md
    replica = pj.report_md(play, scale, pj.parse_args(["--alloc-replica"]), "python ...")
    assert "they go to a second control-plane replica" in replica


def test_sync_percentiles() -> None:
    assert pj._p50_p99([]) == (0.0, 0.0)
    samples = [float(n) for n in range(1, 101)]
    assert pj._p50_p99(samples) == (50.5, 100.0)
