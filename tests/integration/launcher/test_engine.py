"""The launcher engine's API, the one the CLI and the desktop app drive, on a real server."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from changeover.errors import Interrupted, RemoteError
from changeover.launcher.engine import Control, Engine, ProgressEvent

from .conftest import Published, expected, on_disk

pytestmark = pytest.mark.timeout(180)


def test_events_check_and_installed(published: Published, tmp_path: Path) -> None:
    published.point("production", 1)
    engine = Engine(published.content_url, tmp_path / "game", "game")
    assert engine.installed() is None
    before = engine.check()
    assert before.version == 1 and not before.up_to_date
    assert before.download_bytes > 0 and before.total_bytes == sum(
        len(b) for b in published.versions[0].values()
    )

    events: list[ProgressEvent] = []
    report = engine.sync(events.append)
    assert on_disk(tmp_path / "game") == expected(published.versions[0])
    phases = [e.phase for e in events]
    assert phases[0] == "checking" and phases[-1] == "done"
    assert phases.index("installing") > phases.index("downloading")
    downloads = [e for e in events if e.phase == "downloading" and e.total_bytes]
    assert downloads[-1].done_bytes == report.downloaded_bytes == before.download_bytes
    assert all(a.done_bytes <= b.done_bytes for a, b in itertools.pairwise(downloads))

    installed = engine.installed()
    assert installed is not None and installed.version == 1
    assert installed.manifest == report.manifest
    assert engine.check().up_to_date
    assert engine.verify().clean


def test_pause_keeps_what_arrived_and_resume_finishes(published: Published, tmp_path: Path) -> None:
    published.point("production", 1)
    # A slow download, so that the pause lands in its middle.
    engine = Engine(
        published.content_url, tmp_path / "game", "game", max_bytes_per_s=400_000, workers=1
    )
    total = engine.check().download_bytes
    control = Control()
    seen: list[ProgressEvent] = []

    def pause_after_a_quarter(event: ProgressEvent) -> None:
        seen.append(event)
        if event.phase == "downloading" and event.done_bytes > total // 4:
            control.pause()

    with pytest.raises(Interrupted) as stopped:
        engine.sync(pause_after_a_quarter, control)
    assert stopped.value.facts["reason"] == "paused"
    got = max(e.done_bytes for e in seen)
    assert total // 4 < got < total, "the pause must land mid-download"
    assert engine.installed() is None and not (tmp_path / "game").exists()

    report = Engine(published.content_url, tmp_path / "game", "game").sync()
    assert report.downloaded_bytes <= total - got, "what arrived before the pause is kept"
    assert on_disk(tmp_path / "game") == expected(published.versions[0])


def test_cancel_from_another_thread_leaves_the_install_as_it_was(
    published: Published, tmp_path: Path
) -> None:
    published.point("production", 1)
    Engine(published.content_url, tmp_path / "game", "game").sync()
    published.point("production", 3)
    engine = Engine(
        published.content_url, tmp_path / "game", "game", max_bytes_per_s=200_000, workers=1
    )
    control = Control()
    started = threading.Event()

    def on_event(event: ProgressEvent) -> None:
        if event.phase == "downloading" and event.done_bytes:
            started.set()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            engine.sync(on_event, control)
        except BaseException as e:
            errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(30)
    control.cancel()
    worker.join(30)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], Interrupted)
    assert errors[0].facts["reason"] == "cancelled"
    installed = engine.installed()
    assert installed is not None and installed.version == 1
    assert on_disk(tmp_path / "game") == expected(published.versions[0])


def test_offline_an_install_still_answers_and_verifies(
    published: Published, tmp_path: Path
) -> None:
    published.point("production", 2)
    Engine(published.content_url, tmp_path / "game", "game").sync()
    offline = Engine("http://127.0.0.1:9/content", tmp_path / "game", "game", timeout_s=2)
    installed = offline.installed()
    assert installed is not None and installed.version == 2
    assert offline.verify().clean
    with pytest.raises(RemoteError):
        offline.check()


def test_from_install_repairs(published: Published, tmp_path: Path) -> None:
    published.point("production", 2)
    Engine(published.content_url, tmp_path / "game", "game").sync()
    (tmp_path / "game" / "scripts" / "main.lua").unlink()
    engine = Engine.from_install(tmp_path / "game")
    assert engine.branch == "production" and engine.image == "game"
    found, report = engine.repair()
    assert found.missing == ["scripts/main.lua"]
    # Deleting a hard link leaves its object intact: rebuilt from it, nothing fetched.
    assert report.downloaded_bytes == 0
    assert on_disk(tmp_path / "game") == expected(published.versions[1])


def test_adopt_takes_only_the_published_bytes_of_a_local_folder(
    published: Published, tmp_path: Path
) -> None:
    published.point("production", 3)
    files = published.versions[2]
    # A folder holding the version, but one file changed (same size) and one missing.
    folder = tmp_path / "unpacked"
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    tampered = "data/asset03.bin"
    (folder / tampered).write_bytes(bytes(len(files[tampered])))
    (folder / "bin" / "game").unlink()

    engine = Engine(published.content_url, tmp_path / "game", "game")
    full = engine.check().download_bytes
    adopted = engine.adopt(folder)
    skipped = len(files[tampered]) + len(files["bin/game"])
    assert adopted == sum(len(b) for b in files.values()) - skipped
    left = engine.check().download_bytes
    assert 0 < left < full
    report = engine.sync()
    assert report.downloaded_bytes == left
    assert on_disk(tmp_path / "game") == expected(files)
    assert engine.verify().clean


def test_rate_and_time_left_are_honest_from_the_start(published: Published, tmp_path: Path) -> None:
    """Under a 600 kB/s limit the shown rate never exceeds it (a full bucket and an
    average over the first milliseconds once showed up to 5.9 MB/s), and nothing says
    "0 s left" while most of the download is still to come."""
    published.point("production", 1)
    limit = 600_000
    engine = Engine(
        published.content_url, tmp_path / "game", "game", max_bytes_per_s=limit, workers=4
    )
    events: list[ProgressEvent] = []
    engine.sync(events.append)
    downloads = [e for e in events if e.phase == "downloading" and e.total_bytes]
    assert downloads and downloads[-1].done_bytes == downloads[-1].total_bytes
    rated = [e for e in downloads if e.bytes_per_s > 0]
    assert rated, "no rate was ever shown"
    # The bucket holds a tenth of a second's worth: at most that above the limit.
    assert max(e.bytes_per_s for e in rated) <= limit * 1.15, [e.bytes_per_s for e in rated]
    for e in downloads:
        if e.eta_s is not None and e.done_bytes < e.total_bytes // 2:
            assert e.eta_s > 0.5, e
    assert downloads[0].bytes_per_s == 0.0 and downloads[0].eta_s is None
