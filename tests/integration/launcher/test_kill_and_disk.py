"""kill -9 at random points of a sync, and a disk that fills up or turns read-only: the
install is always one complete version, hash for hash, and the next run finishes the job."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from crash_helpers import FinishedFirst, JobProgress, assert_landed_mid_job, kill_mid_job
from gates import unavailable
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


def update_progress(target: Path, v1: dict[str, str], v3: dict[str, str]) -> JobProgress:
    """How far an update of ``target`` from v1 to v3 got, from the launcher's cache: the
    bytes of v3's new contents already verified there plus those half-downloaded."""
    objects = target.parent / ".changeover" / "objects"
    new = set(v3.values()) - set(v1.values())
    held = sum(p.stat().st_size for p in objects.glob("??/*") if p.name.rstrip("x") in new)
    partial = sum(p.stat().st_size for p in (objects / "partial").glob("*"))
    state = on_disk(target)
    assert state in (v1, v3), "the install is a mix of two versions"
    return JobProgress(
        started=held + partial > 0,
        finished=state == v3,
        done=held + partial,
        detail=f"{held} bytes of v3 held, {partial} partial, install is v{1 if state == v1 else 3}",
    )


def test_kill_9_at_random_points_mid_update(published: Published, tmp_path: Path) -> None:
    v1, v3 = expected(published.versions[0]), expected(published.versions[2])

    # What an uninterrupted update downloads. In a cache of its own: installs side by side
    # share one (<dir>/.changeover), and this one would hand the killed runs everything.
    ref = tmp_path / "ref" / "game"
    ref.parent.mkdir()
    published.point("killed", 1)
    subprocess.run(sync_cmd(published, ref), capture_output=True, text=True, check=True)
    published.point("killed", 3)
    clean = subprocess.run(sync_cmd(published, ref), capture_output=True, text=True, check=True)
    full = json.loads(clean.stdout)["downloaded_bytes"]
    need = sum(len(published.versions[2][p]) for p, h in v3.items() if h not in v1.values())

    rng = random.Random(2024)
    for attempt in range(3):
        target = tmp_path / f"try{attempt}" / "game"
        target.parent.mkdir()
        published.point("killed", 1)
        assert run_cli(*sync_cmd(published, target)[3:]).returncode == 0
        published.point("killed", 3)
        try:
            kills = _kill_repeatedly(published, target, v1, v3, need, rng)
            break
        except FinishedFirst:
            # A patched file appears whole when its group of objects commits, and the
            # install follows within milliseconds: on a loaded machine the sync may do
            # both between two looks. Again, on a fresh install with its own cache.
            continue
    else:
        raise AssertionError("every attempt's sync finished before a kill could land")
    assert kills >= 2, f"only {kills} kill(s) landed mid-update"
    final = subprocess.run(sync_cmd(published, target), capture_output=True, text=True, check=True)
    assert on_disk(target) == v3
    # What earlier runs verified (or half-fetched) was not downloaded again.
    assert json.loads(final.stdout)["downloaded_bytes"] < full


def _kill_repeatedly(
    published: Published,
    target: Path,
    v1: dict[str, str],
    v3: dict[str, str],
    need: int,
    rng: random.Random,
) -> int:
    """Start the update of ``target`` from v1 to v3 and SIGKILL it at a random point of
    what is left, again and again; the kills that landed (each checked)."""
    done = 0.0
    kills = 0
    for n in range(4):
        if need - done < need / 5:
            # What is left may be held already (a kill landed between the last download
            # and the install): no download for the next kill to land in.
            break
        # Slow enough that a look lands between any two pieces: kill_mid_job lets it run
        # a moment between looks, and its rate limit's bucket (0.1 s of the rate) refills
        # while it is stopped, so each moment may pass a bucketful: at this rate one piece
        # (64 KiB); at 2M, a seventh of the update.
        proc = subprocess.Popen(
            sync_cmd(published, target, "--limit-rate", "640K"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # A random point in what is left, well before its end (then comes the install).
        at = done + rng.uniform(0.05, 0.3) * (need - done)
        at_kill = kill_mid_job(proc, lambda: update_progress(target, v1, v3), f"sync {n}", at=at)
        assert_landed_mid_job(at_kill, update_progress(target, v1, v3), f"sync {n}")
        assert on_disk(target) == v1  # killed mid-update: still the whole old version
        done = at_kill.done
        kills += 1
    return kills


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
        unavailable("tmpfs", f"cannot mount one (needs root): {made.stderr.strip()}")
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
