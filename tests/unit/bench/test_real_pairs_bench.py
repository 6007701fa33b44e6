"""Unit tests for ``bench/real_pairs.py`` on two tiny trees (no download): every measure
runs, the launcher's bytes come from the patches it published, skips are printed."""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from bench_scripts import load_bench

real = load_bench("real_pairs")
PlayerLauncher = Any  # bench/common.py's, loaded with the bench


def trees(tmp: Path) -> tuple[Path, Path]:
    rng = random.Random(1)
    ops = [rng.randbytes(rng.randint(1, 3)) for _ in range(40)]
    code = b"".join(
        rng.choice(ops) + rng.randrange(1 << 16).to_bytes(4, "little") for _ in range(20_000)
    )
    old, new = tmp / "old", tmp / "new"
    for root in (old, new):
        (root / "lib").mkdir(parents=True)
        (root / "README").write_bytes(b"same in both\n" * 50)
    (old / "lib" / "libx.so.1").write_bytes(b"\x7fELF" + code)
    (new / "lib" / "libx.so.2").write_bytes(b"\x7fELF" + code[:5000] + b"inserted" + code[5000:])
    return old, new


def venv_launcher() -> PlayerLauncher:
    script = Path(sys.executable).with_name("changeover-launcher")
    return real.PlayerLauncher(str(script), "the venv's script")


def test_every_measure_runs_on_two_small_trees(tmp_path: Path) -> None:
    old, new = trees(tmp_path)
    missing = [t for t in ("zstd", "tar", "rsync") if shutil.which(t) is None]
    if missing:
        # The launcher and the per-file references still run: they need none of them.
        print(f"no {', '.join(missing)} here: the whole-tree and rsync references not run")
        ours, details = real.launcher_update(old, new, tmp_path, venv_launcher(), repeat=2)
        refs = real.per_file(old, new, tmp_path / "per-file")
        timing = real.Timing
        row = {
            "launcher": ours,
            **details,
            "per_file_hdiffpatch": timing(refs.hdiff_bytes, refs.hdiff_apply_s),
            "per_file_zstd19": timing(refs.zstd_bytes, refs.zstd_apply_s),
            "whole_tree_zstd19_long": timing(10**6, 1.0),
            "rsync_z": timing(10**6, 1.0),
            "full_zstd19": timing(10**6, 1.0),
            "full_sync_s": 0.0,
            "new_tree": 1,
            "new_files": 3,
        }
    else:
        # Twice: each update from a fresh install of the old tree (one that was updated
        # already would download nothing), medians reported.
        row = real.measure_trees(old, new, tmp_path, venv_launcher(), repeat=2)
        assert row["new_files"] == 2
        assert 0 < row["whole_tree_zstd19_long"].bytes < row["full_zstd19"].bytes
        assert row["rsync_z"].bytes > 0 and row["full_zstd19"].seconds > 0
        assert row["full_sync_s"] > 0
    assert row["methods"] and sum(row["methods"].values()) == 1  # the renamed library
    hdiff, zstd = row["per_file_hdiffpatch"], row["per_file_zstd19"]
    assert 0 < hdiff.bytes < 1000 and 0 < zstd.bytes < 1000
    assert hdiff.seconds > 0 and zstd.seconds > 0  # each changed file made and written
    # The launcher fetched the library's patch: the smaller method plus our header.
    assert 0 < row["launcher"].bytes < min(hdiff.bytes, zstd.bytes) + 200
    assert row["launcher"].seconds >= row["own_s"] > 0
    # The launcher's own timings: its apply (what the target holds against decompress-
    # and-write) is a part of its update, and each phase it ran is there.
    phases = row["timings"]
    assert {"resolve", "plan", "fetch", "apply", "commit", "install", "collect"} <= set(phases)
    assert 0 < real.launcher_apply_s(row) < row["own_s"]
    assert row["publish_s"] > 0 and row["publish_cpu_s"] >= 0
    row["pair"] = "tiny"
    assert "| tiny |" in real.table([row]) and "| tiny |" in real.launcher_table([row])
    assert len(real.targets([row])) == 4


def test_a_pair_that_cannot_be_downloaded_is_skipped_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def offline(pkg: object, cache: Path) -> Path:
        raise real.Skip("offline here")

    monkeypatch.setattr(real, "download", offline)
    assert real.main(["--pair", "openssl", "--cache", str(tmp_path), "--no-write"]) == 0
    assert "skipped openssl: offline here" in capsys.readouterr().out
