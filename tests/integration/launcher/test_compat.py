"""The launcher learns that the servers refuse its client (seed 002), on a real server: the
control plane signs the live servers' client ranges for a released client branch, and
``launcher.compat.check``, ``changeover launcher status`` and the desktop app's window say
"update required"."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from changeover.launcher import compat
from changeover.launcher.app.state import Phase
from changeover.launcher.engine import Engine
from client_release_helpers import branch_version, client_image, server_fleet
from fleet_helpers import ok
from patchjob_helpers import job_body, running, wait_done
from tests_helpers import Server, free_port, run_cli, start_server, stop_server, wait_for

from .app.conftest import write_config

pytestmark = pytest.mark.timeout(180)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before pytest-qt makes the app


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(
        tmp_path / "server",
        None,
        env={"CHANGEOVER_PATCH_TICK_S": "0.1", "CHANGEOVER_PUBLISH_EVERY_S": "0.2"},
    )
    try:
        yield srv
    finally:
        stop_server(srv)


def test_update_required_once_the_servers_refuse_the_installed_client(
    server: Server, tmp_path: Path, qtbot: Any
) -> None:
    c, agents = server_fleet(server, "lc", ["lc-h1"])
    client_image(c, "lc-client")
    game = tmp_path / "player" / "games" / "production"
    engine = Engine(server.url + "/content", game, "lc-client")
    assert compat.check(engine).message == "nothing is installed yet"
    engine.sync()
    before = compat.check(engine)
    assert before.status == "unknown" and "publish no client compatibility" in before.message
    assert before.installed == "1.4"

    body = job_body(
        "lc",
        "forced",
        client_release={"image": "lc-client", "branch": "production", "version": "1.5"},
    )
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=body), 201)
        assert wait_done(c, job["id"], bg)["status_name"] == "Completed"
        assert branch_version(c, "lc-client") == 2
        # Released: the new servers take 1.5 and every older client, so 1.4 still plays
        # (the launcher offers the update, nobody is refused).
        ok_now = wait_for(
            lambda: (a := compat.check(engine)).status == "ok" and a, 30, "the compat document"
        )
        assert ok_now.message == "the servers accept version 1.4"
        # The operator now requires 1.5 on the new servers: 1.4 is refused.
        ok(c.put("/images/lc-srv/versions/2/compat", json={"client_min": "1.5"}))
        refused = wait_for(
            lambda: (a := compat.check(engine)).status == "update_required" and a,
            30,
            "the servers to refuse 1.4",
        )
        assert refused.client_min == "1.5"
        shown = run_cli("launcher", "status", str(game))
        assert shown.returncode == 0, shown.stderr
        assert "servers: update required" in shown.stdout, shown.stdout
        as_json = json.loads(run_cli("launcher", "status", str(game), "--json").stdout)
        assert as_json["compat"]["status"] == "update_required"
        # The player's window says it, and Play stays off until the update.
        window = app_window(server, tmp_path / "player", qtbot)
        try:
            wait_phase(qtbot, window, Phase.UPDATE_REQUIRED)
            assert not window.play_button.isEnabled()
            assert window.phase_label.text() == "Update required"
            text = window.message_label.text()
            assert "no longer accept version 1.4" in text and "1.5 or newer" in text, text
            qtbot.mouseClick(window.action_button, Qt.MouseButton.LeftButton)
            # Updated, the client is accepted again.
            wait_phase(qtbot, window, Phase.READY)
            assert window.play_button.isEnabled()
            assert "no longer accept" not in window.message_label.text()
            assert window.message_label.objectName() == "notice"
        finally:
            window.close()
            assert window.jobs.close(30_000)
        assert compat.check(engine).status == "ok"
        assert "servers: ok" in run_cli("launcher", "status", str(game)).stdout

    # A server that cannot be reached: unknown, with the reason, never an error.
    offline = Engine(f"http://127.0.0.1:{free_port()}/content", game, "lc-client")
    gone = compat.check(offline)
    assert gone.status == "unknown" and gone.message.startswith("cannot check with the servers")


def app_window(server: Server, folder: Path, qtbot: Any) -> Any:
    """The desktop app's window on the install under ``folder/games``."""
    from changeover.launcher.app.run import build
    from changeover.launcher.app.window import LauncherWindow, Options

    root = run_cli("keys", "root", "--data", str(server.data))
    assert root.returncode == 0, root.stderr
    config, _ = write_config(folder, server.url + "/content", root.stdout, news=None)
    text = config.read_text().replace('image = "hourai"', 'image = "lc-client"')
    config.write_text(text)
    window = build(config, Options(check_interval_s=0.3))
    assert isinstance(window, LauncherWindow), getattr(window, "message", window)
    qtbot.addWidget(window)
    window.show()
    return window


def wait_phase(qtbot: Any, window: Any, phase: Any) -> None:
    from changeover.launcher.app.state import view

    def reached() -> None:
        state = window.states["production"]
        got = view(state).phase
        assert got is phase, f"{got} ({state.error or state.notice or state.refused})"

    qtbot.waitUntil(reached, timeout=60_000)
