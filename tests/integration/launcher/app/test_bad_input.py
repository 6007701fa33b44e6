"""The desktop app given bad input: a wrong or incomplete config, an unreachable server, a
branch that does not exist, a build without the configured executable, hostile news, a
full disk. Each time: a clear message in the window, the install intact, the window
responsive (its event loop keeps turning and its other controls still work)."""

from __future__ import annotations

import builtins
import errno
import subprocess
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QTimer

from changeover.launcher import fetch
from changeover.launcher.app import sources
from changeover.launcher.app.run import ErrorWindow, build
from changeover.launcher.app.sources import MAX_ITEMS, MAX_TEXT, News, NewsItem
from changeover.launcher.app.state import Phase
from changeover.launcher.app.window import LauncherWindow, Options
from tests_helpers import free_port

from .conftest import Studio, expected, on_disk, shot, write_config
from .test_flows import click, played, preinstall, wait_phase

pytestmark = pytest.mark.timeout(240)

OpenWindow = Callable[..., LauncherWindow]
WAIT_MS = 90_000


class Ticks:
    """Counts a 20 ms timer on the GUI thread: it advances only while the window's event
    loop is free, so a window blocked on I/O shows as a stalled count."""

    def __init__(self, window: LauncherWindow) -> None:
        self.count = 0
        self.timer = QTimer(window)
        self.timer.setInterval(20)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        self.count += 1

    def advance(self, qtbot: Any, by: int = 5) -> None:
        start = self.count
        qtbot.waitUntil(lambda: self.count >= start + by, timeout=WAIT_MS)


def error_window(config: Path, qtbot: Any) -> ErrorWindow:
    window = build(config, Options())
    qtbot.addWidget(window)
    window.show()
    assert isinstance(window, ErrorWindow), "the launcher should refuse this config"
    return window


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("content_url = ", "content_url = 'ftp://x' #"), "is not an http:// or https:// URL"),
        (('image = "hourai"', ""), "image is missing"),
        (('title = "Hourai"', ""), "title is missing"),
        (("[game.linux]", "[game.amiga]"), "[game.amiga] is not a platform"),
    ],
)
def test_a_wrong_or_incomplete_config_is_shown_in_a_window(
    studio: Studio,
    tmp_path: Path,
    qtbot: Any,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    message: str,
) -> None:
    config, _ = write_config(tmp_path, studio.content_url, studio.root_json)
    config.write_text(config.read_text().replace(*change, 1))
    window = error_window(config, qtbot)
    assert message in window.text.text() and str(config) in window.text.text()
    assert message in capsys.readouterr().err, "printed too, for a terminal or a log"
    if change[1].startswith("content_url"):
        shot(window, "config-error")


def test_a_missing_config_or_trust_root(studio: Studio, tmp_path: Path, qtbot: Any) -> None:
    window = error_window(tmp_path / "nowhere" / "launcher.toml", qtbot)
    assert "does not exist" in window.text.text()
    config, _ = write_config(tmp_path, studio.content_url, studio.root_json)
    (tmp_path / "root.json").unlink()
    window = error_window(config, qtbot)
    assert "the trust root" in window.text.text() and "reinstall the launcher" in window.text.text()


def test_a_wrong_content_url_keeps_the_install_playable(
    studio: Studio, tmp_path: Path, open_window: OpenWindow, qtbot: Any
) -> None:
    studio.point("production", 1)
    preinstall(studio, tmp_path / "games")
    wrong = studio.server.url + "/not-the-content"
    config, record = write_config(tmp_path, wrong, studio.root_json)
    window = open_window(config)
    ticks = Ticks(window)

    def refused() -> None:
        v = window.current_view()
        assert v.phase in (Phase.OFFLINE, Phase.ERROR) and v.message, v

    qtbot.waitUntil(refused, timeout=WAIT_MS)
    # The server answered (HTTP 404): a wrong address in the config, not being offline.
    assert window.current_view().phase is Phase.ERROR, window.current_view()
    text = window.message_label.text()
    assert f"not found at {wrong}" in text and "configuration" in text, text
    assert window.play_button.isEnabled()
    ticks.advance(qtbot)
    click(qtbot, window.play_button)
    assert played(qtbot, record)["version"] == "1.0.0"
    assert on_disk(tmp_path / "games" / "production") == expected(studio.builds[0])


def test_an_unreachable_server_with_nothing_installed(
    tmp_path: Path, studio: Studio, open_window: OpenWindow, qtbot: Any
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/content"
    config, _ = write_config(tmp_path, nobody, studio.root_json)
    window = open_window(config, engine_options={"timeout_s": 5})
    wait_phase(qtbot, window, Phase.OFFLINE)
    assert "nothing is installed yet" in window.message_label.text()
    assert not window.play_button.isEnabled() and not window.verify_button.isEnabled()
    assert not window.action_button.isVisible()


def test_a_branch_that_does_not_exist(
    studio: Studio, tmp_path: Path, open_window: OpenWindow, qtbot: Any
) -> None:
    studio.point("production", 1)
    config, _ = write_config(
        tmp_path,
        studio.content_url,
        studio.root_json,
        branches=(("nightly", "Nightly"), ("production", "Live")),
    )
    window = open_window(config)
    wait_phase(qtbot, window, Phase.ERROR, "nightly")
    text = window.message_label.text()
    assert "The branch nightly is not published on the server" in text, text
    assert not window.play_button.isEnabled()
    assert not window.action_button.isEnabled(), "nothing to install"
    shot(window, "error")
    window.select_branch("production")  # the rest of the launcher works
    wait_phase(qtbot, window, Phase.NOT_INSTALLED)
    assert window.action_button.isEnabled()


def test_a_game_executable_missing_from_the_build(
    studio: Studio, tmp_path: Path, open_window: OpenWindow, qtbot: Any
) -> None:
    studio.point("production", 1)
    preinstall(studio, tmp_path / "games")
    config, record = write_config(
        tmp_path, studio.content_url, studio.root_json, executable="bin/not-shipped"
    )
    window = open_window(config)
    wait_phase(qtbot, window, Phase.READY)
    click(qtbot, window.play_button)
    text = window.message_label.text()
    assert "bin/not-shipped is not in the installed build" in text, text
    assert window.games == [] and not record.exists()
    assert window.play_button.isEnabled() and window.verify_button.isEnabled()
    assert on_disk(tmp_path / "games" / "production") == expected(studio.builds[0])


def test_hostile_news_is_bounded_plain_text_and_never_opens_a_script(
    studio: Studio, tmp_path: Path, open_window: OpenWindow, qtbot: Any
) -> None:
    studio.point("production", 1)
    hostile = types.SimpleNamespace(
        items=(
            types.SimpleNamespace(
                title="<script>alert(1)</script><b>bold</b>" + "x" * 100_000,
                date="2026-12-05\n<img src=x onerror=alert(1)>",
                link="javascript:alert(1)",
            )
            for _ in range(100_000)
        ),
        stale=False,
        message=None,
    )
    opened: list[str] = []
    config, _ = write_config(tmp_path, studio.content_url, studio.root_json)
    # What any news source answers goes through the window's bounds (sources.adapt).
    window = open_window(
        config, news=lambda _url, _cache: sources.adapt(hostile), open_url=opened.append
    )
    qtbot.waitUntil(lambda: window.news is not None, timeout=WAIT_MS)
    assert window.news_list.topLevelItemCount() == MAX_ITEMS
    row = window.news_list.topLevelItem(0)
    assert len(row.text(1)) == MAX_TEXT and row.text(1).startswith("<script>")
    assert "\n" not in row.text(0)
    window.news_list.itemClicked.emit(row, 1)
    assert opened == [], "a javascript: link is never opened"
    wait_phase(qtbot, window, Phase.NOT_INSTALLED)


def test_news_that_fails_or_hangs_never_blocks_the_window(
    studio: Studio,
    tmp_path: Path,
    open_window: OpenWindow,
    qtbot: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    studio.point("production", 1)
    config, _ = write_config(tmp_path, studio.content_url, studio.root_json)
    release = threading.Event()

    def hanging(_url: str, _cache: Path) -> News:
        release.wait(120)
        raise OSError(errno.ECONNRESET, "Connection reset by peer")

    window = open_window(config, news=hanging)
    ticks = Ticks(window)
    assert window.news_label.text() == "Loading news…"
    wait_phase(qtbot, window, Phase.NOT_INSTALLED)
    click(qtbot, window.action_button)
    wait_phase(qtbot, window, Phase.READY)  # installs while the news is still loading
    ticks.advance(qtbot)
    release.set()
    qtbot.waitUntil(lambda: "cannot be fetched" in window.news_label.text(), timeout=WAIT_MS)
    assert "Connection reset by peer" in window.news_label.text()

    # The default source on a feed that cannot be fetched: a message, no items.
    unreachable = sources.default_news("http://127.0.0.1:9/feed.xml", tmp_path)
    assert unreachable.items == () and unreachable.message
    stale = sources.adapt(
        types.SimpleNamespace(
            items=[NewsItem("Old", "2026-01-01", "https://example.com/old")],
            stale=True,
            message="The news could not be updated (timeout); showing the news of 1 Jan.",
        )
    )
    window.show_news(stale)
    assert window.news_label.text() == stale.message
    window.show_news(News(items=stale.items, stale=True))
    assert window.news_label.text() == "Showing the last news fetched."
    assert window.news_list.topLevelItemCount() == 1


@pytest.fixture(params=["tmpfs", "injected"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | None]:
    """Where the game installs: a 12 MB tmpfs, so "disk full" is real, or (``None``) a
    plain directory whose downloads fail with ENOSPC by a fault injected at the write;
    without a tmpfs (no root) the tmpfs case falls back to the injected fault."""
    if request.param == "injected":
        yield None
        return
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        print(
            f"no tmpfs here ({made.stderr.strip() or 'mount failed'}): the full disk is a"
            " fault injected at the download's file writes instead"
        )
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_the_old_version_and_the_window_responsive(
    studio: Studio,
    tmp_path: Path,
    small_disk: Path | None,
    open_window: OpenWindow,
    qtbot: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    studio.point("production", 1)
    games = (small_disk or tmp_path) / "games"
    preinstall(studio, games)
    studio.point("production", 2)
    config, record = write_config(tmp_path, studio.content_url, studio.root_json, games=games)
    window = open_window(config)
    ticks = Ticks(window)
    wait_phase(qtbot, window, Phase.UPDATE_AVAILABLE)

    # The disk fills up while the window is open.
    filler = games / "filler"
    if small_disk is not None:
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
    else:
        real_open = builtins.open

        class Full:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def __enter__(self) -> Full:
                return self

            def __exit__(self, *exc: object) -> None:
                self.inner.close()

            def write(self, _data: bytes) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

        monkeypatch.setattr(fetch, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)

    click(qtbot, window.action_button)
    wait_phase(qtbot, window, Phase.ERROR)
    text = window.message_label.text()
    assert "No space left on device" in text, text
    assert "version 1" in text, "the message says the installed version was kept"
    assert window.play_button.isEnabled() and window.action_button.text() == "Update"
    assert on_disk(games / "production") == expected(studio.builds[0])
    ticks.advance(qtbot)
    click(qtbot, window.play_button)
    assert played(qtbot, record)["version"] == "1.0.0"

    # Space again: the same window finishes the update.
    if small_disk is not None:
        filler.unlink()
    else:
        monkeypatch.undo()
    click(qtbot, window.action_button)
    wait_phase(qtbot, window, Phase.READY)
    assert on_disk(games / "production") == expected(studio.builds[1])
