"""The repository stands alone: the make targets install what they promise, and every
document the code and the docs cite lives in the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _recipe(target: str) -> list[str]:
    """The commands ``make TARGET`` would run on a fresh checkout (``-n -B``: print, run
    nothing, as if nothing were built yet)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed on this machine")
    out = subprocess.run(
        ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()


def _pip_installs(lines: list[str]) -> list[str]:
    return [line for line in lines if "pip install " in line and "--upgrade pip" not in line]


def test_make_demo_installs_the_runtime_only() -> None:
    installs = _pip_installs(_recipe("demo"))
    assert installs, "make demo installs nothing"
    assert all("[dev]" not in line for line in installs), installs
    assert any(line.endswith("-e .") for line in installs), installs


def test_make_test_installs_the_test_tools_and_chromium() -> None:
    lines = _recipe("test")
    assert any("-e '.[dev]'" in line for line in _pip_installs(lines)), lines
    assert any("chromium" in line for line in lines), lines


def test_make_package_installs_pyinstaller_and_the_app_and_builds_the_launcher() -> None:
    lines = _recipe("package")
    assert any("-e '.[package,launcher-app]'" in line for line in _pip_installs(lines)), lines
    assert any("packaging/build.py" in line for line in lines), lines
    assert any("qt-libs" in line or "libEGL" in line for line in lines), lines
    assert all("[dev]" not in line for line in lines), lines


CITED = re.compile(r"\b(?:[\w./-]+/)?[A-Z][A-Z_]+\.md\b|\bdocs/[\w.-]+\.md\b")


GENERATED = ("bench/out/",)
"""Where scripts write their output (ignored by git): cited as where to look after a run."""


def _sources() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "BENCHMARKS.md"]
    for top in ("src", "tests", "docs", "examples", "bench"):
        files += [
            p
            for p in (ROOT / top).rglob("*")
            if p.suffix in {".py", ".md", ".js"} and "node_modules" not in p.parts  # npm's own
        ]
    return files


def test_every_cited_document_is_in_the_repository() -> None:
    missing = set()
    for path in _sources():
        for name in CITED.findall(path.read_text(errors="replace")):
            if name.startswith(GENERATED):
                continue
            here = (path.parent / name, ROOT / name, ROOT / "docs" / name)
            if not any(p.is_file() for p in here):
                missing.add(f"{path.relative_to(ROOT)} cites {name}")
    assert not missing, sorted(missing)
    assert (ROOT / "docs" / "architecture.md").is_file()
