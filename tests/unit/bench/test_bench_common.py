"""Unit tests for ``bench/common.py``: the BENCHMARKS.md section writer and table helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench_scripts import load_bench

common = load_bench("common")

INTRO = "# Benchmarks\n\nHow to rerun: `make bench`.\n"


def section(name: str, body: str) -> str:
    return f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->"


def test_appends_a_new_section_after_existing_text(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(INTRO)

    common.write_section(md, "push-diff", "| a | b |")

    assert md.read_text() == INTRO + "\n" + section("push-diff", "| a | b |") + "\n"


def test_creates_a_missing_file(tmp_path: Path) -> None:
    md = tmp_path / "out" / "BENCHMARKS.md"

    common.write_section(md, "push-diff", "body")

    assert md.read_text() == section("push-diff", "body") + "\n"


def test_replaces_a_section_in_place_and_leaves_the_others_alone(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    before = (
        INTRO
        + "\n"
        + section("push-diff", "old figures\nover two lines")
        + "\n\nA note written by hand.\n\n"
        + section("rollout", "rollout figures")
        + "\n"
    )
    md.write_text(before)

    common.write_section(md, "push-diff", "new figures\n")

    assert md.read_text() == before.replace("old figures\nover two lines", "new figures")
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file was left behind"


def test_rewriting_the_same_body_changes_nothing(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(INTRO)
    common.write_section(md, "push-diff", "figures")
    once = md.read_text()

    common.write_section(md, "push-diff", "figures")

    assert md.read_text() == once


@pytest.mark.parametrize(
    "broken",
    [
        "<!-- bench:push-diff -->\nno end marker\n",
        "<!-- /bench:push-diff -->\nend before start\n<!-- bench:push-diff -->\n",
        section("push-diff", "one") + "\n" + section("push-diff", "two") + "\n",
    ],
)
def test_refuses_broken_markers_and_keeps_the_file(tmp_path: Path, broken: str) -> None:
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(broken)

    with pytest.raises(ValueError, match="markers"):
        common.write_section(md, "push-diff", "new")

    assert md.read_text() == broken


@pytest.mark.parametrize("name", ["", "Push", "push diff", "-->", "a/b"])
def test_refuses_section_names_that_could_break_the_markers(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="section name"):
        common.write_section(tmp_path / "BENCHMARKS.md", name, "body")


def test_markdown_table_pads_and_aligns() -> None:
    table = common.markdown_table(["what", "s"], [["push", "1.50"], ["diff", "10.25"]], "lr")

    assert table.splitlines() == [
        "| what |     s |",
        "| ---- | ----: |",
        "| push |  1.50 |",
        "| diff | 10.25 |",
    ]


def test_markdown_table_refuses_ragged_rows() -> None:
    with pytest.raises(ValueError, match="one cell per header"):
        common.markdown_table(["a", "b"], [["only one"]])


def test_median_and_throughput() -> None:
    assert common.median([3.0, 1.0, 2.0, 100.0]) == 2.5
    assert common.mb_per_s(50_000_000, 2.0) == 25.0
    with pytest.raises(ValueError, match="no values"):
        common.median([])


def test_load_note_blames_other_processes_only_for_the_load_before_the_runs() -> None:
    # The load after a run counts the benchmark's own processes: no cause for blame.
    quiet = common.load_note(0.8, 3.1, 2, "lowers every figure")
    assert "0.8 before the runs and 3.1 after" in quiet
    assert "competing" not in quiet and "nothing else kept the CPUs busy" in quiet
    busy = common.load_note(2.4, 2.9, 2, "lowers every figure")
    assert "other processes were competing for the 2 CPUs, which lowers every figure." in busy


def _allocating(mib: int) -> list[str]:
    return [sys.executable, "-c", f"x = bytearray({mib} << 20); x[::4096] = b'1' * len(x[::4096])"]


@pytest.mark.skipif(not common.has_gnu_time(), reason="no GNU time (Debian's `time`) here")
def test_peak_memory_is_the_commands_own_not_this_processes() -> None:
    # This process holds 400 MiB, touched: a vforked child's ru_maxrss would start there.
    held = bytearray(400 << 20)
    held[::4096] = b"1" * len(held[::4096])
    small = common.run_timed(_allocating(0), peak=True)
    big = common.run_timed(_allocating(200), peak=True)
    assert 0 < small.peak_rss_kib < 100 << 10  # an interpreter, not the 400 MiB held here
    assert 200 << 10 < big.peak_rss_kib < 350 << 10
    assert len(held) == 400 << 20
