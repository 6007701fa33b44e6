"""The app as a player starts it, a real process: ``python -m changeover.launcher.app``
and ``changeover-launcher`` (``python -m changeover.launcher``, the packaged entry)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests_helpers import wait_for

from .conftest import Studio, write_config

pytestmark = pytest.mark.timeout(180)


ENTRIES = ["changeover.launcher.app", "changeover.launcher"]


def start(*args: str, cwd: Path, entry: str = ENTRIES[0]) -> subprocess.Popen[str]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.Popen(
        [sys.executable, "-m", entry, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.terminate()
    try:
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_bad_config_prints_its_error_and_keeps_a_window_open(tmp_path: Path, entry: str) -> None:
    process = start("--config", str(tmp_path / "missing.toml"), cwd=tmp_path, entry=entry)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # printed as the error window opens
        assert process.poll() is None, "the error window waits for the player"
    finally:
        stop(process)
    missing = tmp_path / "missing.toml"
    assert line == f"error: the launcher's configuration {missing} does not exist\n"


@pytest.mark.parametrize("entry", ENTRIES)
def test_launcher_toml_in_the_current_directory_opens_the_launcher(
    studio: Studio, tmp_path: Path, entry: str
) -> None:
    studio.point("production", 1)
    write_config(tmp_path, studio.content_url, studio.root_json)
    process = start(cwd=tmp_path, entry=entry)
    try:
        # The window's first check caches the server's signed metadata: it is running.
        wait_for(
            lambda: process.poll() is not None or (tmp_path / "games" / ".changeover").is_dir(),
            60,
            "the launcher to check the branch",
        )
        assert process.poll() is None, process.communicate()
    finally:
        _, err = stop(process)
    assert "error" not in err.lower(), err
