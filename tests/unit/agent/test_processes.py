"""Real process groups: start, identity across pid reuse, group signals, ports."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from changeover.agent.processes import (
    LaunchSpec,
    Processes,
    ProcessInfo,
    port_is_free,
    proc_start_ticks,
)
from changeover.errors import InvalidInput
from tests_helpers import wait_for

# A parent that starts a child in its own group and both sleep: a stop must reach both.
FAMILY = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def spec(tmp_path: Path, *argv: str) -> LaunchSpec:
    return LaunchSpec(list(argv), tmp_path, dict(os.environ), tmp_path / "logs" / "x.log")


def test_group_start_identity_and_stop(tmp_path: Path) -> None:
    procs = Processes()
    info = procs.start(spec(tmp_path, sys.executable, "-c", FAMILY))
    assert os.getpgid(info.pid) == info.pid  # its own process group
    assert procs.alive(info)
    child = int(wait_for(lambda: (tmp_path / "logs/x.log").read_text().strip(), 10, "child pid"))
    # Another agent (no Popen) sees it through /proc; a different start time is a stranger.
    assert Processes().alive(info)
    assert not Processes().alive(ProcessInfo(info.pid, info.start_ticks + 1))
    procs.signal_group(info, signal.SIGTERM)
    wait_for(lambda: not procs.alive(info), 10, "the parent to end")
    assert procs.exit_code(info) == -signal.SIGTERM
    wait_for(lambda: proc_start_ticks(child) is None, 10, "the child to end with its group")


def test_missing_or_unexecutable_command(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="'no-such-game' does not exist"):
        Processes().start(spec(tmp_path, "no-such-game"))
    script = tmp_path / "game.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    with pytest.raises(InvalidInput, match="cannot be executed"):
        Processes().start(spec(tmp_path, str(script)))


def test_port_is_free(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_is_free(port, "tcp")
    assert port_is_free(port, "tcp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        assert not port_is_free(u.getsockname()[1], "udp")
