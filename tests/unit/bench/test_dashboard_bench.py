"""Unit tests for ``bench/dashboard.py``: its arguments and report."""

from __future__ import annotations

import pytest

from bench_scripts import load_bench

dash = load_bench("dashboard")


def test_arguments_are_checked() -> None:
    args = dash.parse_args(["--databases", "sqlite", "--instances", "200"])
    assert args.database_list == ["sqlite"] and args.instances == 200 and args.repeat == 5
    for bad in (["--databases", "mysql"], ["--instances", "0"], ["--repeat", "0"]):
        with pytest.raises(SystemExit):
            dash.parse_args(bad)


def test_report_gives_the_median_and_the_slowest_of_each_read() -> None:
    args = dash.parse_args([])
    rows = [dash.Row("sqlite", "fleet summary", [0.3, 0.1, 0.2, 0.9, 0.25])]
    md = dash.report_md(rows, args, "python bench/dashboard.py")
    (row,) = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in md.splitlines()
        if line.startswith("| sqlite")
    ]
    assert row == ["sqlite", "fleet summary", "0.250", "0.900"]
    assert "10,000 instances" in md and "5 times" in md
