"""kill -9 at random points of a sync, and a disk that fills up or turns read-only: the
install is always one complete version, hash for hash, and the next run finishes the job."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests_helpers import CLI, run_cli, wait_for

from .conftest import Published, expected, on_disk

pytestmark = pytest.mark.timeout(300)


def sync_cmd(published: Published, target: Path, *extra: str) -> list[str]:
    return [
        *CLI,
        "launcher",
        "sync",
        published.content_url,
        str(target),
        "--image",
        "game",
        "--branch",
        "killed",
        "--json",
        *extra,
    ]


def test_kill_9_at_random_points(published: Published, tmp_path: Path) -> None:
    target = tmp_path / "game"
    published.point("killed", 1)
    assert run_cli(*sync_cmd(published, target)[3:]).returncode == 0
    v1, v3 = expected(published.versions[0]), expected(published.versions[2])
    published.point("killed", 3)

    # How long an uninterrupted, rate-limited update takes, in a separate cache.
    started = time.monotonic()
    clean = subprocess.run(
        sync_cmd(published, tmp_path / "ref", "--limit-rate", "2M"),
        capture_output=True,
        text=True,
        check=True,
    )
    duration = time.monotonic() - started
    full = json.loads(clean.stdout)["downloaded_bytes"]

    rng = random.Random(2024)
    for _ in range(8):
        proc = subprocess.Popen(
            sync_cmd(published, target, "--limit-rate", "2M"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0, duration))  # a random kill point, not a wait for anything
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = on_disk(target)
        assert state in (v1, v3), "the install is a mix of two versions"
        if state == v3:
            break
    final = subprocess.run(sync_cmd(published, target), capture_output=True, text=True, check=True)
    assert on_disk(target) == v3
    # What earlier runs verified (or half-fetched) was not downloaded again.
    assert json.loads(final.stdout)["downloaded_bytes"] <= full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs, so 'disk full' and 'read-only' are real."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_keeps_the_old_version(published: Published, small_disk: Path) -> None:
    target = small_disk / "game"
    published.point("killed", 1)
    first = run_cli(*sync_cmd(published, target)[3:])
    assert first.returncode == 0, first.stderr
    # Fill the disk so the update's new contents cannot fit.
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    published.point("killed", 3)
    r = run_cli(*sync_cmd(published, target)[3:])
    assert r.returncode == 9, r.stderr
    assert "No space left on device" in r.stderr
    assert "was left as it was (version 1)" in r.stderr
    assert on_disk(target) == expected(published.versions[0])
    filler.unlink()
    again = run_cli(*sync_cmd(published, target)[3:])
    assert again.returncode == 0, again.stderr
    assert on_disk(target) == expected(published.versions[2])


def test_read_only_disk_is_a_clear_error(published: Published, small_disk: Path) -> None:
    target = small_disk / "game"
    published.point("killed", 1)
    assert run_cli(*sync_cmd(published, target)[3:]).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    published.point("killed", 2)
    r = run_cli(*sync_cmd(published, target)[3:])
    assert r.returncode == 9, r.stderr
    assert "Read-only file system" in r.stderr
    assert on_disk(target) == expected(published.versions[0])
    wait_for(lambda: os.path.ismount(small_disk), 5, "the mount to stay")
