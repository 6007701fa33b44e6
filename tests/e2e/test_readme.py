"""The README's walk-throughs run as typed: every ``sh`` block marked ``<!-- walk-through
-->`` is run, in order, in an empty directory, against a real server and a real agent, and
what the README shows under a command is what it prints.

The conventions (the README states them under its first walk-through):

* ``<!-- walk-through -->`` before a fenced ``sh`` block: run each command line, one after
  the other, in the first terminal. ``<!-- walk-through: own terminal -->``: the block's
  commands stay in the foreground (the server, an agent); they run in the background here.
* Lines under a command starting with ``#   `` are what it prints, a whole line each, ``…``
  standing for anything; ``(exit N)`` at the end is its exit code (0 otherwise). Text after
  ``  # `` on a command line is a comment.
* ``8470`` becomes a free port; ``cho_N_...`` becomes the token with id N that an earlier
  command printed; ``export`` lines set the environment of the commands after them.
* ``examples/`` is linked into the directory; HOME and TMPDIR point inside it, so that
  ``~/Games`` and ``mktemp -d`` stay there too.

Afterwards, as the README tells the reader, the agent and the server get a Ctrl-C (SIGINT),
and no process may be left running in the directory: the game servers were stopped through
the fleet, as the README shows.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests_helpers import free_port, wait_for

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARK = re.compile(r"^<!-- walk-through(: own terminal)? -->$")
OUTPUT = "#   "
EXIT = re.compile(r"\s+\(exit (\d+)\)$")
TOKEN = re.compile(r"\bcho_(\d+)_[A-Za-z0-9_-]{20,}")
PLACEHOLDER = re.compile(r"\bcho_(\d+)_\.\.\.")


@dataclass
class Step:
    command: str
    background: bool
    expected: list[str] = field(default_factory=list)
    exit_code: int = 0


def walkthrough(text: str) -> list[Step]:
    """The runnable commands of the README, in order, with what each should print."""
    steps: list[Step] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        mark = MARK.match(lines[i].strip())
        i += 1
        if not mark:
            continue
        assert lines[i].strip() == "```sh", (
            f"README line {i + 1}: a walk-through mark needs a sh block"
        )
        i += 1
        while lines[i].strip() != "```":
            line = lines[i].rstrip()
            i += 1
            if line.startswith(OUTPUT):
                shown = line[len(OUTPUT) :].strip()
                code = EXIT.search(shown)
                if code:
                    steps[-1].exit_code = int(code[1])
                    shown = shown[: code.start()]
                steps[-1].expected.append(shown)
            elif line.strip() and not line.lstrip().startswith("#"):
                steps.append(Step(re.sub(r"\s+#\s.*$", "", line).strip(), bool(mark[1])))
    return steps


def matches(shown: str, printed: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in shown.split("…"))
    return any(re.fullmatch(pattern, line.strip()) for line in printed.splitlines())


def test_the_walkthroughs_parse_as_the_readme_means_them() -> None:
    steps = walkthrough(README.read_text())
    commands = [s.command for s in steps]
    assert commands[0] == "changeover token create --scope admin --data ./cdata"
    background = [s.command for s in steps if s.background]
    assert background[0].startswith("changeover server ")
    assert " changeover agent " in background[1]
    for needed in ("env create", "region create", "app create", "profile create", "fleet create"):
        assert any(f"changeover {needed} " in c for c in commands), needed
    allocate = next(c for c in commands if c.startswith("changeover allocate"))
    assert "--player" in allocate and "--fleet" in allocate
    agent = next(c for c in commands if " changeover agent " in f" {c} ")
    assert "--token" not in agent and "CHANGEOVER_TOKEN=" in agent and "--work" in agent
    assert any(s.exit_code == 5 for s in steps)


def _processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is under ``directory`` (Linux /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cwd = os.readlink(proc / "cwd")
            except OSError:
                continue
            if cwd == str(directory) or cwd.startswith(f"{directory}/"):
                found.append(int(proc.name))
    return found


class Session:
    """The reader's terminals: an environment that ``export`` changes, processes left in
    the foreground of their own terminals, tokens printed so far."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.tokens: dict[str, str] = {}
        self.background: list[subprocess.Popen[bytes]] = []
        bin_dir = str(Path(sys.executable).parent)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEOVER_")}
        self.env.update(
            HOME=str(work / "home"),
            TMPDIR=str(work / "tmp"),
            PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            COLUMNS="200",
        )

    def substitute(self, command: str) -> str:
        def token(m: re.Match[str]) -> str:
            assert m[1] in self.tokens, f"no token {m[1]} was printed before: {command}"
            return self.tokens[m[1]]

        return PLACEHOLDER.sub(token, command.replace("8470", str(self.port)))

    def run(self, step: Step) -> None:
        command = self.substitute(step.command)
        if command.startswith("export "):
            for pair in shlex.split(command)[1:]:
                key, _, value = pair.partition("=")
                self.env[key] = value
            return
        if step.background:
            log = open(self.work / f"background-{len(self.background)}.log", "ab")  # noqa: SIM115
            self.background.append(
                subprocess.Popen(
                    ["bash", "-c", command],
                    cwd=self.work,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()
            if "changeover server" in command:
                wait_for(self._serving, 60, "the control plane to answer")
            return
        r = subprocess.run(
            ["bash", "-c", command],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        printed = r.stdout + r.stderr
        said = f"$ {step.command}\n(exit {r.returncode})\n{printed}\n{self.logs()}"
        assert r.returncode == step.exit_code, said
        for shown in step.expected:
            assert matches(shown, printed), f"the README shows {shown!r}; it printed:\n{said}"
        self.tokens.update((m[1], m[0]) for m in TOKEN.finditer(printed))

    def _serving(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).is_success
        except httpx.TransportError:
            return False

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.work.glob("background-*.log"))
        )

    def ctrl_c(self) -> None:
        """What the reader does last: Ctrl-C in each terminal, the agent's first."""
        for p in reversed(self.background):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


def test_the_walkthroughs_run_as_typed(tmp_path: Path) -> None:
    work = tmp_path / "reader"
    for d in (work, work / "home", work / "tmp"):
        d.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    session = Session(work)
    try:
        for step in walkthrough(README.read_text()):
            session.run(step)
        session.ctrl_c()  # returns once the agent and the server have exited
        left = _processes_in(work)
        assert left == [], f"still running in the walk-through's directory: {left}"
    finally:
        session.ctrl_c()
        for pid in _processes_in(work):  # only what this test started can be there
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
