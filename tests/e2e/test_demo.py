"""``make demo`` runs: the quickstart a new user tries first must never rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DEMO_ARGS = ("--players", "6", "--deadline", "20s", "--play-s", "50")


def test_the_demo_releases_a_new_build_without_dropping_a_session() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), *DEMO_ARGS],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    text = out.stdout
    assert "$ changeover patchjob create" in text  # the commands are shown, as a tutorial
    assert re.search(r"Dashboard: http://127\.0\.0\.1:\d+/ui", text)
    summary = dict(re.findall(r"^(sessions \w+[\w ]*?):\s+(\d+)$", text, re.MULTILINE))
    assert summary["sessions dropped"] == "0", text[-3000:]
    assert int(summary["sessions completed"]) + int(summary["sessions moved after notice"]) > 0
    assert re.search(r"bytes staged on h1:\s+[1-9][\d,]*", text)
    data = re.search(r"data in (\S+)", text)
    assert data, text[:2000]
    work = str(Path(data[1]).parent)
    assert _processes_in(work) == [], "the demo left processes running in its directory"


def _processes_in(directory: str) -> list[int]:
    """Live processes whose working directory is under ``directory`` (Linux /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cwd = os.readlink(proc / "cwd")
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if cwd.startswith(directory + "/"):
                found.append(int(proc.name))
    return found
