"""The sample game as a real process: SDK handshake, shutdown notice, save, SIGTERM, handoff.

This is the save-acknowledged stop the rollouts rely on (docs/architecture.md): the agent
announces a shutdown, the game tells its players and saves, acknowledges, and only then is
stopped; the next build finds the saved sessions.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from changeover.sdk import SDK_TOKEN_ENV, SDK_URL_ENV
from changeover.sdk.server import SDKServer
from tests_helpers import free_port, wait_for

ARENA = Path(__file__).resolve().parents[2] / "examples" / "arena"

StartArena = Callable[[str, dict[str, str]], tuple["subprocess.Popen[bytes]", int]]


class Player:
    """A line-based JSON TCP player with a read timeout, so a silent server fails fast."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.lines = self.sock.makefile("rb")

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self) -> Any:
        line = self.lines.readline()
        assert line, "the server closed the connection"
        return json.loads(line)

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


@pytest.fixture
def start_arena(tmp_path: Path) -> Iterator[StartArena]:
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(build: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        log = tmp_path / f"arena-{build}-{len(started)}.log"
        full_env = {**os.environ, "CHANGEOVER_PORT": str(port)}
        for name in (SDK_URL_ENV, SDK_TOKEN_ENV):  # only what this test passes
            full_env.pop(name, None)
        full_env.update(env)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-W", "error", str(ARENA / build / "arena_server.py")],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append((proc, log))

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"arena exited early:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(listening, 15, f"arena {build} to listen")
        return proc, port

    yield start
    for proc, log in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        print(f"--- {log.name}\n{log.read_text()}")  # shown by pytest only on failure


def test_shutdown_notice_save_and_sigterm(tmp_path: Path, start_arena: StartArena) -> None:
    state_dir = tmp_path / "state"
    with SDKServer() as sdk:
        url, token = sdk.register("arena-1")
        proc, port = start_arena(
            "build-v1",
            {SDK_URL_ENV: url, SDK_TOKEN_ENV: token, "CHANGEOVER_STATE_DIR": str(state_dir)},
        )
        wait_for(lambda: sdk.state("arena-1").ready, 15, "the game to report ready")

        player = Player(port)
        try:
            player.send({"hello": "ann", "session": "match-7"})
            greeting = player.receive()
            assert greeting == {"welcome": "ann", "session": "match-7", "version": "1", "score": 0}
            wait_for(lambda: sdk.state("arena-1").players == {"ann"}, 10, "player connected")
            player.send({"score": 5})
            assert player.receive() == {"score": 5}
            player.send({"score": 7})
            assert player.receive() == {"score": 12}
            player.send({"score": -3})
            assert "error" in player.receive()

            deadline = time.time() + 600
            sdk.notify_shutdown("arena-1", "new build", deadline)
            assert player.receive() == {"notice": {"reason": "new build", "deadline": deadline}}
            wait_for(lambda: sdk.state("arena-1").state_saved, 10, "state_saved")
            saved = json.loads((state_dir / "match-7.json").read_text())
            assert saved["score"] == 12
            assert saved["messages"] == 2
            assert saved["version"] == "1"
            assert sdk.state("arena-1").last_heartbeat is not None

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
            assert player.lines.readline() == b""  # the server hung up on its way out
        finally:
            player.close()
        assert sdk.state("arena-1").players == set()


def test_build_v2_takes_over_a_saved_session_standalone(
    tmp_path: Path, start_arena: StartArena
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    saved = {"session": "match-7", "score": 12, "messages": 2, "version": "1"}
    (state_dir / "match-7.json").write_text(json.dumps(saved))
    proc, port = start_arena("build-v2", {"CHANGEOVER_STATE_DIR": str(state_dir)})

    player = Player(port)
    try:
        player.send({"hello": "ann", "session": "match-7"})
        greeting = player.receive()
        assert greeting["version"] == "2"
        assert greeting["score"] == 12
        assert "motd" in greeting
        player.send({"score": 5})
        assert player.receive() == {"score": 22}  # build 2 doubles points
    finally:
        player.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert json.loads((state_dir / "match-7.json").read_text())["version"] == "2"


def test_builds_say_their_version() -> None:
    assert (ARENA / "build-v1" / "VERSION").read_text().strip() == "1"
    assert (ARENA / "build-v2" / "VERSION").read_text().strip() == "2"
