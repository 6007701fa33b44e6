"""A real control plane publishing a small game with a real executable, and the app's
window on Qt's offscreen platform (no display needed), for the desktop app's tests.

The game's executable is a Python script that records its arguments and directory, so a
test can see that "Play" started the installed build with the config's arguments.
``CHANGEOVER_SCREENSHOTS=<dir>`` makes :func:`shot` save the window as PNG files.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests_helpers import (
    Server,
    push_files,
    run_cli,
    start_server,
    stop_server,
    wait_job,
)

# Qt reads this when the QApplication is made (pytest-qt makes it on first use).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from changeover.launcher.app.sources import News, NewsItem, NewsSource
from changeover.launcher.app.window import LauncherWindow, Options

IMAGE = "hourai"
GAME = "bin/hourai"
SCREENSHOTS_ENV = "CHANGEOVER_SCREENSHOTS"


def game_script(version: str) -> bytes:
    """A game that writes what it was started with to the file after ``--record``."""
    return (
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "out = sys.argv[sys.argv.index('--record') + 1]\n"
        "with open(out + '.part', 'w') as f:\n"
        f"    json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(), 'version': {version!r},"
        " 'pid': os.getpid(), 'sid': os.getsid(0)}, f)\n"
        "os.replace(out + '.part', out)\n"
    ).encode()


def make_builds(seed: int = 19) -> list[dict[str, bytes]]:
    """Two builds of about 3 MB; the second changes the executable and some data."""
    rng = random.Random(seed)
    v1 = {f"data/pack{i}.bin": rng.randbytes(300_000) for i in range(10)}
    v1[GAME] = game_script("1.0.0")
    v1["readme.txt"] = b"Hourai\n"
    v2 = dict(v1)
    v2[GAME] = game_script("1.1.0")
    for i in range(0, 10, 3):
        v2[f"data/pack{i}.bin"] = rng.randbytes(300_000)
    return [v1, v2]


def release(server: Server, files: dict[str, bytes], label: str) -> dict[str, Any]:
    c = server.client()
    upd = push_files(c, IMAGE, files, label, executable={GAME})
    assert wait_job(c, f"/updates/{upd['id']}")["status_name"] == "Completed"
    d = c.post(f"/images/{IMAGE}/diffs", json={"update_id": upd["id"]})
    assert d.status_code == 201, d.text
    assert wait_job(c, f"/diffs/{d.json()['id']}")["status"] == 5
    v = c.post(f"/diffs/{d.json()['id']}/accept")
    assert v.status_code == 201, v.text
    return dict(wait_job(c, f"/versions/{v.json()['id']}"))


@dataclass
class Studio:
    """The publisher's side: a server with two versions of the game and its trust root."""

    server: Server
    builds: list[dict[str, bytes]]
    versions: list[int]
    root_json: str

    @property
    def content_url(self) -> str:
        return self.server.url + "/content"

    def point(self, branch: str, number: int) -> None:
        """Move ``branch`` to build ``number`` (1 or 2)."""
        version = self.versions[number - 1]
        r = self.server.client().put(
            f"/images/{IMAGE}/branches/{branch}", json={"version": str(version)}
        )
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    srv = start_server(tmp_path_factory.mktemp("app-server"), None)
    try:
        assert srv.client().post("/images", json={"name": IMAGE}).status_code == 201
        builds = make_builds()
        versions = [int(release(srv, b, f"1.{i}.0")["id"]) for i, b in enumerate(builds)]
        exported = run_cli("keys", "root", "--data", str(srv.data))
        assert exported.returncode == 0, exported.stderr
        yield Studio(srv, builds, versions, exported.stdout)
    finally:
        stop_server(srv)


def expected(files: dict[str, bytes]) -> dict[str, str]:
    return {p: hashlib.sha256(b).hexdigest() for p, b in files.items()}


def on_disk(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


EXAMPLE_LOGO = Path(__file__).parents[4] / "examples" / "launcher" / "logo.png"


@dataclass
class Player:
    """One player's machine: a launcher.toml and where the game installs."""

    folder: Path
    config: Path
    record: Path
    windows: list[LauncherWindow] = field(default_factory=list)

    @property
    def games(self) -> Path:
        return self.folder / "games"

    def install(self, branch: str) -> Path:
        return self.games / branch


def write_config(
    folder: Path,
    content_url: str,
    root_json: str,
    *,
    branches: tuple[tuple[str, str], ...] = (("production", "Live"),),
    executable: str = GAME,
    news: str | None = "https://news.example.invalid/feed.xml",
    extra: str = "",
    games: Path | None = None,
) -> tuple[Path, Path]:
    """launcher.toml (with root.json and the logo) in ``folder``; the game installs in
    ``games`` (default ``folder/games``) and records its start in ``folder/played.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "root.json").write_text(root_json)
    (folder / "logo.png").write_bytes(EXAMPLE_LOGO.read_bytes())
    record = folder / "played.json"
    lines = [
        'title = "Hourai"',
        'logo = "logo.png"',
        f'content_url = "{content_url}"',
        'root = "root.json"',
        f'image = "{IMAGE}"',
        f'install_dir = "{(games or folder / "games").as_posix()}"',
    ]
    if news:
        lines.append(f'news = "{news}"')
    lines.append(extra)
    for name, title in branches:
        lines += ["[[branches]]", f'name = "{name}"', f'title = "{title}"']
    lines += [
        "[game.linux]",
        f'executable = "{executable}"',
        f'args = ["--record", "{record.as_posix()}", "--fullscreen"]',
    ]
    config = folder / "launcher.toml"
    config.write_text("\n".join(lines) + "\n")
    return config, record


def fixed_news(*items: NewsItem) -> NewsSource:
    def source(_url: str, _cache: Path) -> News:
        return News(items=items)

    return source


NEWS = fixed_news(
    NewsItem(
        "Hourai 1.1.0 released: new arena and balance changes",
        "2026-12-04",
        "https://example.com/1.1.0",
    ),
    NewsItem("Server maintenance on Tuesday", "2026-12-01", "https://example.com/maintenance"),
    NewsItem("Winter event starts next week", "2026-11-28", "https://example.com/winter"),
)


@pytest.fixture
def open_window(qtbot: Any) -> Iterator[Callable[..., LauncherWindow]]:
    """Opens a window on a config; each is closed (its workers ended) after the test."""
    opened: list[LauncherWindow] = []

    def make(config: Path, **options: Any) -> LauncherWindow:
        from changeover.launcher.app.run import build

        options.setdefault("news", NEWS)
        window = build(config, Options(**options))
        qtbot.addWidget(window)
        window.show()
        assert isinstance(window, LauncherWindow), getattr(window, "message", window)
        opened.append(window)
        return window

    yield make
    for window in opened:
        window.close()
        assert window.jobs.close(30_000), "the window's workers did not end"
    for window in opened:
        for game in window.games:
            game.wait(30)


def shot(widget: Any, name: str) -> Path | None:
    """Save ``widget`` as launcher-<name>.png in ``$CHANGEOVER_SCREENSHOTS``, if set."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / f"launcher-{name}.png"
    assert widget.grab().save(str(path)), f"cannot save {path}"
    return path
