"""The player's strings are translatable with Qt's own tools: lupdate finds them, a
studio's ``launcher_<locale>.qm`` beside launcher.toml changes what the window says."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QCoreApplication, QLocale

from changeover.launcher.app import texts
from changeover.launcher.app.state import Phase
from changeover.launcher.app.window import LauncherWindow

from .conftest import Studio, write_config
from .test_flows import wait_phase

APP = Path(texts.__file__).parent
TOOLS = Path(sys.executable).parent


def tool(name: str, *args: str) -> str:
    done = subprocess.run(
        [str(TOOLS / f"pyside6-{name}"), *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def french() -> Iterator[None]:
    before = QLocale()
    QLocale.setDefault(QLocale("fr_FR"))
    try:
        yield
    finally:
        QLocale.setDefault(before)


def test_lupdate_finds_every_player_string_and_a_translation_is_used(
    studio: Studio, tmp_path: Path, french: None, qtbot: Any
) -> None:
    studio.point("production", 1)
    config, _ = write_config(tmp_path, studio.content_url, studio.root_json)
    ts = tmp_path / "launcher_fr.ts"
    sources = [str(APP / f) for f in ("texts.py", "window.py", "run.py")]
    tool("lupdate", *sources, "-ts", str(ts))
    found = set(re.findall(r"<source>(.*?)</source>", ts.read_text()))
    assert {
        "Play",
        "Ready to play",
        "Verify and repair",
        "{done} of {total} · {rate}/s · {eta}",
    } <= found
    assert len(found) >= 40, sorted(found)

    french_texts = {"Play": "Jouer", "Ready to play": "Prêt à jouer"}
    text = ts.read_text()
    for source, target in french_texts.items():
        text = text.replace(
            f'<source>{source}</source>\n        <translation type="unfinished"></translation>',
            f"<source>{source}</source>\n        <translation>{target}</translation>",
        )
    ts.write_text(text)
    tool("lrelease", str(ts), "-qm", str(tmp_path / "launcher_fr.qm"))

    from changeover.launcher.app.run import build

    window = build(config)
    assert isinstance(window, LauncherWindow)
    qtbot.addWidget(window)
    try:
        assert window.translator is not None
        assert window.play_button.text() == "Jouer"
        assert window.verify_button.text() == "Verify and repair"  # untranslated stays English
        wait_phase(qtbot, window, Phase.NOT_INSTALLED)
    finally:
        window.close()
        window.jobs.close(30_000)
        QCoreApplication.removeTranslator(window.translator)
    assert texts.tr("Play") == "Play", "the translation is gone with its window"


def test_sizes_and_times_read_plainly(qtbot: Any) -> None:
    assert texts.size_text(999) == "999 B"
    assert texts.size_text(1_500) == "1.5 kB"
    assert texts.size_text(3_200_000) == "3.2 MB"
    assert texts.size_text(5e12) == "5000.0 GB"
    assert texts.eta_text(None) == "estimating time left…"
    assert texts.eta_text(42.4) == "42 s left"
    assert texts.eta_text(125) == "2 min 5 s left"
    assert texts.eta_text(7300) == "2 h 1 min left"
