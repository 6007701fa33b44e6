"""Unit tests for ``bench/real_pairs.py`` on two tiny trees (no download): every measure
runs, the launcher's bytes come from the patches it published, skips are printed."""

from __future__ import annotations

import importlib.util
import random
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))  # it imports its sibling scripts
    try:
        spec = importlib.util.spec_from_file_location(
            f"bench_{name}", REPO / "bench" / f"{name}.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "bench"))


real = _load("real_pairs")


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


def test_every_measure_runs_on_two_small_trees(tmp_path: Path) -> None:
    old, new = trees(tmp_path)
    launcher, methods = real.launcher_bytes(old, new, tmp_path, workers=1)
    hdiff_bytes, zstd_bytes = real.per_file_bytes(old, new)
    assert sum(methods.values()) == 1  # the renamed library, by the smaller of both methods
    assert 0 < hdiff_bytes < 1000 and 0 < zstd_bytes < 1000
    assert launcher < min(hdiff_bytes, zstd_bytes) + 200  # + headers and the manifest's rest
    if shutil.which("zstd") is not None:
        assert real.whole_tree_bytes(old, new, tmp_path) > 0
    row = {
        "pair": "tiny",
        "new_tree": 1,
        "launcher": launcher,
        "methods": methods,
        "per_file_hdiffpatch": hdiff_bytes,
        "per_file_zstd19": zstd_bytes,
        "whole_tree_zstd19_long": 10,
        "rsync_z": 20,
    }
    assert "| tiny |" in real.table([row])


def test_a_pair_that_cannot_be_downloaded_is_skipped_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def offline(pkg: object, cache: Path) -> Path:
        raise real.Skip("offline here")

    monkeypatch.setattr(real, "download", offline)
    assert real.main(["--pair", "openssl", "--cache", str(tmp_path), "--no-write"]) == 0
    assert "skipped openssl: offline here" in capsys.readouterr().out
