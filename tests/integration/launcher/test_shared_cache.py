"""Several branches installed side by side share one cache: their syncs, the command line's
and the app's, may run at once, and one's garbage collection must never take what another
is downloading or about to link (``launcher.locks.CacheUsers``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from changeover.launcher.engine import Engine, ProgressEvent
from changeover.launcher.install import default_cache
from changeover.launcher.locks import CacheUsers
from changeover.launcher.objects import ObjectStore
from changeover.launcher.sync import Syncer, SyncReport
from tests_helpers import CLI

from .conftest import Published, expected, on_disk

pytestmark = pytest.mark.timeout(300)

WAIT_S = 60.0
"""How long a test waits for a condition before it fails (never reached when all works)."""


def held(cache: Path) -> set[str]:
    return {sha for sha, _ in ObjectStore(cache / "objects").held()}


def test_a_collection_never_takes_what_another_branch_is_syncing(
    published: Published, tmp_path: Path
) -> None:
    published.point("gc-a", 1)
    published.point("gc-b", 3)
    games = tmp_path / "games"
    cache = default_cache(games / "a")
    a = Engine(published.content_url, games / "a", "game", "gc-a")
    b = Engine(published.content_url, games / "b", "game", "gc-b", workers=1)
    a.sync()
    published.point("gc-a", 2)  # a's update will leave v1's own contents as garbage

    # b downloads v3 and stops in its middle, on its progress callback.
    b_mid, b_go = threading.Event(), threading.Event()
    b_reports: list[SyncReport | BaseException] = []

    def hold_b(event: ProgressEvent) -> None:
        if event.phase == "downloading" and event.done_bytes > 0 and not b_mid.is_set():
            b_mid.set()
            assert b_go.wait(WAIT_S), "the test never let b go on"

    def run_b() -> None:
        try:
            b_reports.append(b.sync(hold_b))
        except BaseException as e:  # reported to the test below
            b_reports.append(e)

    thread = threading.Thread(target=run_b)
    thread.start()
    try:
        assert b_mid.wait(WAIT_S), f"b never started downloading: {b_reports}"
        arrived = held(cache)
        # a updates to v2 to the end, b still mid-download: its closing collection (and
        # one asked for directly) sees b using the cache and leaves everything.
        report_a = a.sync()
        assert report_a.version == 2 and not report_a.already_current
        assert report_a.collected_objects is None, "a collected while b was syncing"
        direct = Syncer(published.content_url, games / "c", cache=cache).collect_garbage()
        assert direct is None
        assert arrived <= held(cache), "objects b had downloaded were deleted"
        v1_only = (
            set(expected(published.versions[0]).values())
            - set(expected(published.versions[1]).values())
            - set(expected(published.versions[2]).values())
        )
        assert v1_only and v1_only <= held(cache), "garbage went though b was running"
    finally:
        b_go.set()
        thread.join(WAIT_S)
    assert not thread.is_alive()
    [report_b] = b_reports
    assert isinstance(report_b, SyncReport), report_b
    assert on_disk(games / "a") == expected(published.versions[1])
    assert on_disk(games / "b") == expected(published.versions[2])
    assert a.verify().clean and b.verify().clean
    # b, the last out, collected what neither install references any more: v1's own.
    assert report_b.collected_objects is not None and report_b.collected_objects > 0
    assert held(cache) == set(expected(published.versions[1]).values()) | set(
        expected(published.versions[2]).values()
    )


def test_a_sync_waits_for_a_running_collection(published: Published, tmp_path: Path) -> None:
    """A collection in progress holds the cache: a sync starting then waits for it (and
    never plans from objects about to go), and proceeds once it ends."""
    published.point("gc-w", 1)
    target = tmp_path / "games" / "w"
    engine = Engine(published.content_url, target, "game", "gc-w")
    users = CacheUsers(default_cache(target))
    phases: list[str] = []
    downloading = threading.Event()
    failures: list[BaseException] = []

    def on_event(event: ProgressEvent) -> None:
        phases.append(event.phase)
        if event.phase == "downloading":
            downloading.set()

    def run() -> None:
        try:
            engine.sync(on_event)
        except BaseException as e:  # reported to the test below
            failures.append(e)

    with users.alone() as alone:
        assert alone
        thread = threading.Thread(target=run)
        thread.start()
        # Give it ample time to reach its lock; it must not get past it meanwhile.
        assert not downloading.wait(2.0), "a sync planned while a collection ran"
    assert downloading.wait(WAIT_S), f"the sync never went on: {failures}"
    thread.join(WAIT_S)
    assert not failures and on_disk(target) == expected(published.versions[0])


def test_a_user_killed_leaves_no_lock(tmp_path: Path) -> None:
    """A process that uses the cache blocks collections; killed, it blocks nothing (the
    operating system releases its lock file) and its file is cleaned up."""
    cache = tmp_path / "cache"
    code = (
        "import sys; from pathlib import Path;"
        "from changeover.launcher.locks import CacheUsers;"
        f"u = CacheUsers(Path({str(cache)!r})).using(); u.__enter__();"
        "print('using', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "using"
            with CacheUsers(cache).alone() as alone:
                assert not alone
        finally:
            child.kill()
            child.wait(WAIT_S)
    with CacheUsers(cache).alone() as alone:
        assert alone
    assert list((cache / "locks" / "users").iterdir()) == []


def test_two_processes_sync_two_branches_at_once(published: Published, tmp_path: Path) -> None:
    """Two real launcher processes, two branches (v2 and v3: shared and distinct contents),
    one cache, started together, a few times over: both finish, hash for hash."""
    published.point("gc-p", 2)
    published.point("gc-q", 3)
    overlapped = 0
    for round_ in range(3):
        games = tmp_path / f"round{round_}"
        runs = {}
        # Different rates so that p ends (and would collect) while q still downloads.
        for branch, rate in (("gc-p", "1500K"), ("gc-q", "700K")):
            runs[branch] = subprocess.Popen(
                [
                    *CLI,
                    "launcher",
                    "sync",
                    published.content_url,
                    str(games / branch),
                    "--image",
                    "game",
                    "--branch",
                    branch,
                    "--limit-rate",
                    rate,
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        reports = {}
        for branch, proc in runs.items():
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"round {round_}, {branch}: {err}"
            reports[branch] = json.loads(out)
        assert on_disk(games / "gc-p") == expected(published.versions[1])
        assert on_disk(games / "gc-q") == expected(published.versions[2])
        if reports["gc-p"]["collected_objects"] is None or (
            reports["gc-q"]["collected_objects"] is None
        ):
            overlapped += 1
        # Nothing either install references was collected, and no garbage is left.
        assert held(games / ".changeover") == set(expected(published.versions[1]).values()) | set(
            expected(published.versions[2]).values()
        )
    # A round where one's collection met the other running is the case under test.
    assert overlapped > 0, "the two syncs never overlapped: the test proved nothing"


def test_checks_and_syncs_of_two_branches_refresh_metadata_together(
    published: Published, tmp_path: Path
) -> None:
    """Update checks and syncs of two branches of one server share its signed metadata
    directory, in threads of one process and in another process: python-tuf rewrites it
    in place on every refresh (the trusted root by remove-then-create), so without
    ``metadata_lock`` they failed with "File exists" or a missing root."""
    published.point("meta-a", 1)
    published.point("meta-b", 2)
    games = tmp_path / "games"
    rounds = 12
    child_code = (
        "import sys; from pathlib import Path;"
        "from changeover.launcher.engine import Engine;"
        f"e = Engine({published.content_url!r}, Path({str(games / 'c')!r}), 'game', 'meta-a');"
        f"[e.check() for _ in range({rounds})]; print('checked', flush=True)"
    )
    failures: list[BaseException] = []

    def repeat(work: object) -> None:
        try:
            for _ in range(rounds):
                work()  # type: ignore[operator]
        except BaseException as e:  # reported to the test below
            failures.append(e)

    a = Engine(published.content_url, games / "a", "game", "meta-a")
    b = Engine(published.content_url, games / "b", "game", "meta-b")
    with subprocess.Popen(
        [sys.executable, "-c", child_code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        threads = [
            threading.Thread(target=repeat, args=(a.check,)),
            threading.Thread(target=repeat, args=(b.check,)),
            threading.Thread(target=repeat, args=(b.sync,)),
            threading.Thread(target=repeat, args=(a.sync,)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S * 3)
        out, err = child.communicate(timeout=WAIT_S * 3)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures
    assert child.returncode == 0 and out.strip() == "checked", err
    assert on_disk(games / "a") == expected(published.versions[0])
    assert on_disk(games / "b") == expected(published.versions[1])
    assert a.check().up_to_date and b.check().up_to_date


def test_a_repair_collects_too(published: Published, tmp_path: Path) -> None:
    """A repair switches in a rebuilt tree like a sync, and collects after it."""
    published.point("gc-r", 1)
    target = tmp_path / "games" / "r"
    engine = Engine(published.content_url, target, "game", "gc-r")
    engine.sync()
    stray = tmp_path / "stray"
    stray.write_bytes(b"no install references this")
    sha = hashlib.sha256(stray.read_bytes()).hexdigest()
    store = ObjectStore(default_cache(target) / "objects")
    store.add_from_file(stray, sha, stray.stat().st_size, False)
    _, report = engine.repair()
    assert report.collected_objects == 1 and not store.has(sha, False)
    assert on_disk(target) == expected(published.versions[0])
