"""In-memory processes for the supervisor's unit tests (``agent.processes.ProcessControl``).

A test double, so it lives with the tests: the agent itself only ever runs ``Processes``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from changeover.agent.processes import LaunchSpec, ProcessControl, ProcessInfo
from changeover.errors import InvalidInput


@dataclass
class FakeProcesses:
    """``exit(pid, code)`` makes one end; ``signal_group`` records every signal sent."""

    started: list[LaunchSpec] = field(default_factory=list)
    running: dict[int, ProcessInfo] = field(default_factory=dict)
    codes: dict[int, int] = field(default_factory=dict)
    signals: list[tuple[int, int]] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)
    """Programs that do not exist."""
    obey: bool = True
    """Whether a stop signal ends the process (False: it ignores SIGTERM)."""
    next_pid: int = 1000

    def start(self, spec: LaunchSpec) -> ProcessInfo:
        if spec.argv[0] in self.missing:
            raise InvalidInput(f"command {spec.argv[0]!r} does not exist")
        self.next_pid += 1
        info = ProcessInfo(self.next_pid, 1)
        self.started.append(spec)
        self.running[info.pid] = info
        return info

    def exit(self, pid: int, code: int) -> None:
        self.running.pop(pid, None)
        self.codes[pid] = code

    def alive(self, proc: ProcessInfo) -> bool:
        return self.running.get(proc.pid) == proc

    def exit_code(self, proc: ProcessInfo) -> int | None:
        return self.codes.get(proc.pid)

    def signal_group(self, proc: ProcessInfo, sig: int) -> None:
        self.signals.append((proc.pid, sig))
        if sig == signal.SIGKILL or self.obey:
            self.exit(proc.pid, -sig)


def _conforms(fake: FakeProcesses) -> ProcessControl:
    return fake  # mypy checks here that the double keeps the production protocol's shape
