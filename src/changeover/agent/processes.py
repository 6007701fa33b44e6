"""Process control on a host: the seam between the agent's rules and the operating system.

Every instance runs as the leader of its own process group (``start_new_session``), so
a stop signal reaches the game and anything it spawned, and killing the agent (even with
SIGKILL) leaves the games running for the next agent to adopt. A process is named by its
pid *and* its start time in clock ticks from ``/proc/<pid>/stat``: a pid reused by an
unrelated process after a reboot or a long outage never passes for one of ours.

``Processes`` is the real implementation; the supervisor takes any ``ProcessControl``
(its unit tests pass an in-memory one of their own). Ports are checked here too
(``port_is_free``), as they are the other thing an instance takes from the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from changeover.errors import InvalidInput


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    log: Path


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    start_ticks: int
    """Start time in clock ticks since boot: with the pid, the process's identity."""


class ProcessControl(Protocol):
    def start(self, spec: LaunchSpec) -> ProcessInfo:
        """Start ``spec`` as a new process group.

        Raises:
            InvalidInput: the program does not exist or cannot be executed.
        """
        ...

    def alive(self, proc: ProcessInfo) -> bool: ...

    def exit_code(self, proc: ProcessInfo) -> int | None:
        """The exit code of a process this agent started and that has ended; None when
        unknown (still running, or adopted from an earlier agent)."""
        ...

    def signal_group(self, proc: ProcessInfo, sig: int) -> None:
        """Send ``sig`` to the process group; a group already gone is fine."""
        ...


def find_program(name: str, version_dir: Path) -> str:
    """The program to execute for a command's first word: a name without a slash is the
    version's own file of that name when it has an executable one, else looked up on the
    host's PATH (by exec, as a shell would); a path is used as given (relative ones from
    the version directory, the instance's working directory)."""
    if "/" in name or not name:
        return name
    own = version_dir / name
    if own.is_file() and os.access(own, os.X_OK):
        return str(own)
    return name


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def proc_start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat``, or None if there is no such live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):  # a zombie is not alive
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


class Processes:
    """Real processes. Children of this agent are reaped through their ``Popen``;
    adopted ones (children of an earlier agent) are watched through ``/proc``."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, spec: LaunchSpec) -> ProcessInfo:
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log, "ab") as log:
            try:
                popen = subprocess.Popen(
                    spec.argv,
                    cwd=spec.cwd,
                    env=spec.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except FileNotFoundError as e:
                raise InvalidInput(
                    f"command {spec.argv[0]!r} does not exist (on this host's PATH or in the"
                    f" version directory {spec.cwd})",
                    command=spec.argv[0],
                ) from e
            except PermissionError as e:
                raise InvalidInput(
                    f"command {spec.argv[0]!r} cannot be executed: {e.strerror}",
                    command=spec.argv[0],
                ) from e
            except OSError as e:
                raise InvalidInput(f"cannot start {spec.argv[0]!r}: {e}") from e
        self._children[popen.pid] = popen
        ticks = proc_start_ticks(popen.pid)
        return ProcessInfo(popen.pid, ticks if ticks is not None else -1)

    def alive(self, proc: ProcessInfo) -> bool:
        child = self._children.get(proc.pid)
        if child is not None:
            return child.poll() is None
        ticks = proc_start_ticks(proc.pid)
        return ticks is not None and ticks == proc.start_ticks

    def exit_code(self, proc: ProcessInfo) -> int | None:
        child = self._children.get(proc.pid)
        if child is None:
            return None
        code = child.poll()
        if code is not None:
            del self._children[proc.pid]
        return code

    def signal_group(self, proc: ProcessInfo, sig: int) -> None:
        if proc.pid in self._children:
            if self._children[proc.pid].poll() is not None:
                return
        elif proc_start_ticks(proc.pid) != proc.start_ticks:
            return  # not ours any more: never signal a stranger's group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def port_is_free(port: int, protocol: str) -> bool:
    """Whether nothing listens on ``port`` (any address). TCP ignores TIME_WAIT leftovers,
    as the game's own server socket will (SO_REUSEADDR)."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if protocol == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))  # noqa: S104 (a probe: bound for a moment, never served)
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True
