"""The desktop app's flows, clicked through on Qt's offscreen platform against a real
control plane on loopback: first install, play, update found by the periodic check, pause
and resume, cancel, verify and repair, two branches side by side, offline play."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from changeover.launcher.app.state import Phase
from changeover.launcher.app.window import LauncherWindow
from changeover.launcher.engine import Engine
from tests_helpers import free_port

from .conftest import IMAGE, Studio, expected, on_disk, shot, write_config

pytestmark = pytest.mark.timeout(240)

WAIT_MS = 90_000
SLOW = {"max_bytes_per_s": 600_000, "workers": 1}
"""A download slow enough (about 5 s for the first install) to click in its middle."""

OpenWindow = Callable[..., LauncherWindow]


def wait_phase(qtbot: Any, window: LauncherWindow, phase: Phase, branch: str | None = None) -> None:
    def reached() -> None:
        state = window.states[branch or window.branch]
        from changeover.launcher.app.state import view

        got = view(state).phase
        assert got is phase, f"{got} (message: {state.error or state.notice})"

    qtbot.waitUntil(reached, timeout=WAIT_MS)


def click(qtbot: Any, button: Any) -> None:
    assert button.isVisible() and button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def preinstall(studio: Studio, games: Path, branch: str = "production") -> None:
    """Install with the engine directly (what an earlier run of the app left)."""
    root = studio.root_json.encode()
    Engine(studio.content_url, games / branch, IMAGE, branch, root=root).sync()


def played(qtbot: Any, record: Path) -> dict[str, Any]:
    qtbot.waitUntil(record.exists, timeout=WAIT_MS)
    return dict(json.loads(record.read_text()))


def test_first_install_with_progress_then_play(
    studio: Studio, tmp_path: Path, open_window: OpenWindow, qtbot: Any
) -> None:
    studio.point("production", 1)
    config, record = write_config(tmp_path, studio.content_url, studio.root_json)
    opened: list[str] = []
    window = open_window(config, engine_options=SLOW, open_url=opened.append)
    assert window.windowTitle() == "Hourai" and window.logo.pixmap() is not None
    assert window.branch_box.currentText() == "Live"
    wait_phase(qtbot, window, Phase.NOT_INSTALLED)
    assert window.action_button.text() == "Install"
    assert not window.play_button.isEnabled()
    assert "1.0.0 (version" in window.available_label.text()

    click(qtbot, window.action_button)

    def downloading() -> None:
        v = window.current_view()
        assert v.phase is Phase.UPDATING and v.total_bytes // 3 < v.done_bytes < v.total_bytes
        assert v.eta_s is not None, "the time left is known after the first seconds"

    qtbot.waitUntil(downloading, timeout=WAIT_MS)
    assert window.phase_label.text() == "Installing…"
    assert window.progress.isVisible() and window.progress.value() > 0
    text = window.progress_label.text()
    assert " of " in text and "/s" in text, text
    assert not window.play_button.isEnabled(), "Play is disabled while the branch updates"
    assert window.pause_button.isVisible() and window.cancel_button.isVisible()
    shot(window, "first-install")

    wait_phase(qtbot, window, Phase.READY)
    install = tmp_path / "games" / "production"
    assert on_disk(install) == expected(studio.builds[0])
    assert window.play_button.isEnabled() and not window.progress.isVisible()
    assert "Installed: 1.0.0 (version" in window.installed_label.text()
    assert window.reports["production"].downloaded_bytes > 0

    qtbot.waitUntil(lambda: window.news_list.topLevelItemCount() == 3, timeout=WAIT_MS)
    first = window.news_list.topLevelItem(0)
    assert first.text(0) == "2026-12-04" and "1.1.0 released" in first.text(1)
    window.news_list.itemClicked.emit(first, 1)
    assert opened == ["https://example.com/1.1.0"]
    shot(window, "ready")

    click(qtbot, window.play_button)
    game = played(qtbot, record)
    assert game["argv"] == ["--record", str(record), "--fullscreen"]
    assert game["version"] == "1.0.0"
    assert Path(game["cwd"]) == install.resolve()
    assert game["sid"] == game["pid"], "the game runs detached, in its own session"
    assert window.games[0].wait(30) == 0


def test_the_periodic_check_finds_an_update_then_update(
    studio: Studio, tmp_path: Path, open_window: OpenWindow, qtbot: Any
) -> None:
    studio.point("production", 1)
    config, _ = write_config(tmp_path, studio.content_url, studio.root_json)
    preinstall(studio, tmp_path / "games")
    window = open_window(config, check_interval_s=0.3)
    wait_phase(qtbot, window, Phase.READY)

    studio.point("production", 2)
    wait_phase(qtbot, window, Phase.UPDATE_AVAILABLE)
    assert "1.1.0 (version" in window.available_label.text()
    assert "to download" in window.available_label.text()
    assert window.action_button.text() == "Update" and window.play_button.isEnabled()
    shot(window, "update-available")

    click(qtbot, window.action_button)
    wait_phase(qtbot, window, Phase.READY)
    assert on_disk(tmp_path / "games" / "production") == expected(studio.builds[1])
    assert "1.1.0" in window.installed_label.text()
    report = window.reports["production"]
    assert 0 < report.downloaded_bytes < report.total_bytes, "only what changed is downloaded"


def test_pause_then_resume_keeps_what_arrived(
    studio: Studio, tmp_path: Path, open_window: OpenWindow, qtbot: Any
) -> None:
    studio.point("production", 1)
    config, _ = write_config(tmp_path, studio.content_url, studio.root_json)
    window = open_window(config, engine_options=SLOW)
    wait_phase(qtbot, window, Phase.NOT_INSTALLED)
    full = window.current_view().download_bytes or sum(len(b) for b in studio.builds[0].values())
    click(qtbot, window.action_button)

    def a_third_arrived() -> None:
        v = window.current_view()
        assert v.total_bytes and v.done_bytes > v.total_bytes // 3

    qtbot.waitUntil(a_third_arrived, timeout=WAIT_MS)
    click(qtbot, window.pause_button)
    wait_phase(qtbot, window, Phase.PAUSED)
    assert window.action_button.text() == "Resume" and not window.play_button.isEnabled()
    assert window.progress_label.text().startswith("Paused at ")
    assert not (tmp_path / "games" / "production").exists()

    click(qtbot, window.action_button)
    wait_phase(qtbot, window, Phase.READY)
    assert on_disk(tmp_path / "games" / "production") == expected(studio.builds[0])
    resumed = window.reports["production"].downloaded_bytes
    assert resumed < full * 0.8, f"the resumed run downloaded {resumed} of {full} again"


def test_cancel_leaves_the_installed_version(
    studio: Studio, tmp_path: Path, open_window: OpenWindow, qtbot: Any
) -> None:
    studio.point("production", 1)
    preinstall(studio, tmp_path / "games")
    studio.point("production", 2)
    config, _ = write_config(tmp_path, studio.content_url, studio.root_json)
    window = open_window(config, engine_options={"max_bytes_per_s": 200_000, "workers": 1})
    wait_phase(qtbot, window, Phase.UPDATE_AVAILABLE)
    click(qtbot, window.action_button)
    qtbot.waitUntil(lambda: window.current_view().done_bytes > 0, timeout=WAIT_MS)
    click(qtbot, window.cancel_button)
    wait_phase(qtbot, window, Phase.UPDATE_AVAILABLE)
    assert "cancelled" in window.message_label.text()
    assert window.play_button.isEnabled()
    assert on_disk(tmp_path / "games" / "production") == expected(studio.builds[0])


def test_verify_and_repair(
    studio: Studio, tmp_path: Path, open_window: OpenWindow, qtbot: Any
) -> None:
    studio.point("production", 1)
    preinstall(studio, tmp_path / "games")
    install = tmp_path / "games" / "production"
    (install / "data" / "pack4.bin").unlink()
    config, _ = write_config(tmp_path, studio.content_url, studio.root_json)
    window = open_window(config)
    wait_phase(qtbot, window, Phase.READY)
    click(qtbot, window.verify_button)
    qtbot.waitUntil(lambda: "Repaired 1 file(s)." in window.message_label.text(), timeout=WAIT_MS)
    wait_phase(qtbot, window, Phase.READY)
    assert on_disk(install) == expected(studio.builds[0])

    click(qtbot, window.verify_button)
    qtbot.waitUntil(lambda: "files are intact" in window.message_label.text(), timeout=WAIT_MS)


def test_two_branches_side_by_side(
    studio: Studio, tmp_path: Path, open_window: OpenWindow, qtbot: Any
) -> None:
    studio.point("production", 1)
    studio.point("beta", 2)
    config, record = write_config(
        tmp_path,
        studio.content_url,
        studio.root_json,
        branches=(("production", "Live"), ("beta", "Public beta")),
    )
    window = open_window(config, engine_options={"max_bytes_per_s": 300_000, "workers": 1})
    titles = [window.branch_box.itemText(i) for i in range(window.branch_box.count())]
    assert titles == ["Live", "Public beta"]
    wait_phase(qtbot, window, Phase.NOT_INSTALLED)
    click(qtbot, window.action_button)
    qtbot.waitUntil(lambda: window.current_view().done_bytes > 0, timeout=WAIT_MS)

    window.select_branch("beta")
    wait_phase(qtbot, window, Phase.NOT_INSTALLED, "beta")
    assert window.branch_box.currentText() == "Public beta"
    assert window.action_button.isEnabled(), "the other branch is not blocked"
    assert "1.1.0" in window.available_label.text()
    production_running = window.states["production"].job is not None
    click(qtbot, window.action_button)
    if production_running:  # both share one cache: beta's install waits, then runs
        assert window.current_view().phase is Phase.WAITING
        assert "Waiting for the other branch" in window.phase_label.text()
    wait_phase(qtbot, window, Phase.READY, "beta")
    wait_phase(qtbot, window, Phase.READY, "production")

    assert on_disk(tmp_path / "games" / "production") == expected(studio.builds[0])
    assert on_disk(tmp_path / "games" / "beta") == expected(studio.builds[1])
    click(qtbot, window.play_button)
    assert played(qtbot, record)["version"] == "1.1.0"


def test_offline_a_verified_install_plays(
    studio: Studio, tmp_path: Path, open_window: OpenWindow, qtbot: Any
) -> None:
    studio.point("production", 1)
    preinstall(studio, tmp_path / "games")
    nobody = f"http://127.0.0.1:{free_port()}/content"  # nothing listens there
    config, record = write_config(tmp_path, nobody, studio.root_json)
    window = open_window(config, engine_options={"timeout_s": 5})
    wait_phase(qtbot, window, Phase.OFFLINE)
    assert window.play_button.isEnabled()
    assert "you can play the installed version" in window.message_label.text()
    assert "1.0.0" in window.installed_label.text()
    shot(window, "offline")

    click(qtbot, window.verify_button)
    qtbot.waitUntil(lambda: "files are intact" in window.message_label.text(), timeout=WAIT_MS)
    click(qtbot, window.play_button)
    assert played(qtbot, record)["version"] == "1.0.0"
    assert os.environ.get("QT_QPA_PLATFORM") == "offscreen"


def test_closing_mid_install_pauses_it_and_the_next_start_resumes(
    studio: Studio, tmp_path: Path, open_window: OpenWindow, qtbot: Any
) -> None:
    studio.point("production", 1)
    config, _ = write_config(tmp_path, studio.content_url, studio.root_json)
    window = open_window(config, engine_options=SLOW)
    wait_phase(qtbot, window, Phase.NOT_INSTALLED)
    full = window.current_view().download_bytes
    click(qtbot, window.action_button)

    def a_third_arrived() -> None:
        v = window.current_view()
        assert v.total_bytes and v.done_bytes > v.total_bytes // 3

    qtbot.waitUntil(a_third_arrived, timeout=WAIT_MS)
    window.close()  # pauses the update and waits for its worker to stop
    assert window.jobs.wait(0), "no worker outlives the window"
    assert not (tmp_path / "games" / "production").exists()

    again = open_window(config)
    wait_phase(qtbot, again, Phase.NOT_INSTALLED)
    click(qtbot, again.action_button)
    wait_phase(qtbot, again, Phase.READY)
    assert on_disk(tmp_path / "games" / "production") == expected(studio.builds[0])
    resumed = again.reports["production"].downloaded_bytes
    assert resumed < full * 0.8, f"the next start downloaded {resumed} of {full} again"
