"""The start-up milestones the cold-start benchmark reads (``CHANGEOVER_LAUNCHER_TIMINGS``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from changeover.launcher.app.state import Phase
from changeover.launcher.app.timings import ENV

from .conftest import Studio, write_config
from .test_flows import OpenWindow, preinstall, wait_phase


def milestones(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["event"] for line in path.read_text().splitlines()]


def test_an_up_to_date_install_marks_painted_then_ready_once(
    studio: Studio,
    tmp_path: Path,
    open_window: OpenWindow,
    qtbot: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "timings.jsonl"
    monkeypatch.setenv(ENV, str(out))
    studio.point("production", 1)
    config, _ = write_config(tmp_path, studio.content_url, studio.root_json)
    preinstall(studio, tmp_path / "games")
    window = open_window(config, check_interval_s=0.2)
    wait_phase(qtbot, window, Phase.READY)
    qtbot.waitUntil(lambda: len(milestones(out)) == 2, timeout=30_000)
    assert milestones(out) == ["painted", "ready"], out.read_text()
    # Later periodic checks render "ready" again: still one line each.
    first = out.read_text()
    renders: list[Phase] = []
    render = window.show_state

    def counted() -> None:
        render()
        renders.append(window.current_view().phase)

    window.show_state = counted  # type: ignore[method-assign]
    qtbot.waitUntil(lambda: renders.count(Phase.READY) >= 3, timeout=30_000)
    assert out.read_text() == first


def test_nothing_installed_is_never_ready_and_unset_writes_nothing(
    studio: Studio,
    tmp_path: Path,
    open_window: OpenWindow,
    qtbot: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "timings.jsonl"
    monkeypatch.setenv(ENV, str(out))
    studio.point("production", 1)
    config, _ = write_config(tmp_path / "a", studio.content_url, studio.root_json)
    window = open_window(config)
    wait_phase(qtbot, window, Phase.NOT_INSTALLED)
    qtbot.waitUntil(lambda: milestones(out) == ["painted"], timeout=30_000)

    monkeypatch.delenv(ENV)
    config, _ = write_config(tmp_path / "b", studio.content_url, studio.root_json)
    window = open_window(config)
    wait_phase(qtbot, window, Phase.NOT_INSTALLED)
    assert window.milestones.path is None
    assert milestones(out) == ["painted"]
