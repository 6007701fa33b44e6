"""The README's "two replicas on two machines" walk-through, run as typed: every ``sh``
block marked ``<!-- two machines: WHERE -->`` runs, in order, on the machine it names
(``m1 m2``: on each), and what the README shows under a command is what it prints.

One host stands for the four machines: each is a directory of its own (``m1``'s
``/srv/changeover`` is ``m1/srv/changeover`` in it; ``scp 'm1:PATH'`` copies from
there), with its own environment; the addresses are loopback ports (10.0.0.11:8470 is
``m1``'s server, ``lb:8470`` the balancer), the database the test's PostgreSQL schema, the
bucket a fresh one on a real S3-protocol server (moto's), ``lb`` runs in the repository's
root. Blocks marked ``own terminal`` stay in the background; a ``curl`` of ``/readyz`` is
asked again until it shows what the README says (a leader takes over "within a few
seconds"). The same conventions as ``tests/e2e/test_readme.py`` otherwise.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gates import unavailable
from s3_helpers import S3_CREDENTIALS
from tests_helpers import free_port, wait_for

pytestmark = [pytest.mark.ha, pytest.mark.timeout(420), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MARK = re.compile(r"^<!-- two machines: ([a-z0-9 ]+?)(, own terminal)? -->$")
OUTPUT = "#   "
TOKEN = re.compile(r"\bcho_(\d+)_[A-Za-z0-9_-]{20,}")
PLACEHOLDER = re.compile(r"\bcho_(\d+)_\.\.\.")


@dataclass
class Step:
    where: list[str]
    command: str
    background: bool
    expected: list[str] = field(default_factory=list)


def walkthrough(text: str) -> list[Step]:
    steps: list[Step] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        mark = MARK.match(line.strip())
        if not mark:
            continue
        assert lines[i + 1].strip() == "```sh", f"README line {i + 2}: a mark needs a sh block"
        for body in lines[i + 2 :]:
            if body.strip() == "```":
                break
            if body.startswith(OUTPUT):
                steps[-1].expected.append(body[len(OUTPUT) :].strip())
            elif body.strip() and not body.lstrip().startswith("#"):
                command = re.sub(r"\s+#\s.*$", "", body).strip()
                steps.append(Step(mark[1].split(), command, bool(mark[2])))
    return steps


def matches(shown: str, printed: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in shown.split("…"))
    return any(re.fullmatch(pattern, line.strip()) for line in printed.splitlines())


class Machines:
    """The four machines: a directory, an environment and the processes of each."""

    def __init__(self, work: Path, pg_url: str, endpoint: str, bucket: str) -> None:
        self.work = work
        self.ports = {"m1": free_port(), "m2": free_port(), "lb": free_port()}
        self.tokens: dict[str, str] = {}
        self.background: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.access(self.haproxy, os.X_OK):
            unavailable("haproxy", "HAProxy is not installed (make haproxy installs Debian's)")
        self.subs = [
            ("postgresql+psycopg://changeover@db.internal/changeover", pg_url),
            ("http://minio.internal:9000", endpoint),
            ("game-content", bucket),
            (
                "AWS_ACCESS_KEY_ID=changeover",
                f"AWS_ACCESS_KEY_ID={S3_CREDENTIALS['AWS_ACCESS_KEY_ID']}",
            ),
            (
                "AWS_SECRET_ACCESS_KEY=your-secret",
                f"AWS_SECRET_ACCESS_KEY={S3_CREDENTIALS['AWS_SECRET_ACCESS_KEY']}",
            ),
            ("10.0.0.11:8470", f"127.0.0.1:{self.ports['m1']}"),
            ("10.0.0.12:8470", f"127.0.0.1:{self.ports['m2']}"),
            ("http://lb:8470", f"http://127.0.0.1:{self.ports['lb']}"),
            ("CHANGEOVER_LISTEN=:8470", f"CHANGEOVER_LISTEN=127.0.0.1:{self.ports['lb']}"),
            ("--host 0.0.0.0", "--host 127.0.0.1"),
        ]
        bin_dir = str(Path(sys.executable).parent)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CHANGEOVER_", "AWS_"))}
        self.env: dict[str, dict[str, str]] = {}
        self.cwd: dict[str, Path] = {}
        for name in ("m1", "m2", "lb", "desk"):
            home = work / name
            (home / "home").mkdir(parents=True)
            self.cwd[name] = ROOT if name in ("lb", "desk") else home
            self.env[name] = {
                **base,
                "HOME": str(home / "home"),
                "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}",
                "COLUMNS": "200",
            }

    def substitute(self, where: str, command: str) -> str:
        for shown, real in self.subs:
            command = command.replace(shown, real)
        # A path of this machine's, or of the one scp copies from.
        command = re.sub(r"scp '(m\d):([^']+)'", r"cp @@\1@@\2", command)
        command = re.sub(r"(?<!@@)/srv/changeover", f"{self.work / where}/srv/changeover", command)
        command = re.sub(r"@@(m\d)@@", lambda m: str(self.work / m[1]), command)
        if where in self.ports:
            command = command.replace("--port 8470", f"--port {self.ports[where]}")
        command = command.replace("haproxy -f", f"{self.haproxy} -f")
        return PLACEHOLDER.sub(lambda m: self.tokens[m[1]], command)

    def run(self, where: str, step: Step) -> None:
        command = self.substitute(where, step.command)
        env = self.env[where]
        if command.startswith("export "):
            for pair in shlex.split(command)[1:]:
                key, _, value = pair.partition("=")
                env[key] = value
            return
        if step.background:
            log = open(self.work / f"{where}-{len(self.background)}.log", "ab")  # noqa: SIM115
            proc = subprocess.Popen(
                ["bash", "-c", command],
                cwd=self.cwd[where],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            self.background.append((where, proc))
            wait_for(lambda: self._serving(where, proc), 90, f"{where} to answer")
            return
        # The README says a new leader comes "within a few seconds": ask /readyz again
        # until it says what the README shows.
        tries_until = time.monotonic() + (30 if command.startswith("curl ") else 0)
        while True:
            r = subprocess.run(
                ["bash", "-c", command],
                cwd=self.cwd[where],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            printed = r.stdout + r.stderr
            shown = all(matches(s, printed) for s in step.expected)
            if (r.returncode == 0 and shown) or time.monotonic() > tries_until:
                break
            time.sleep(0.5)
        said = f"[{where}] $ {step.command}\n(exit {r.returncode})\n{printed}\n{self.logs()}"
        assert r.returncode == 0, said
        assert shown, f"the README shows {step.expected!r}; it printed:\n{said}"
        self.tokens.update((m[1], m[0]) for m in TOKEN.finditer(printed))

    def _serving(self, where: str, proc: subprocess.Popen[bytes]) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{where} exited:\n{self.logs()}")
        try:
            url = f"http://127.0.0.1:{self.ports[where]}/healthz"
            return httpx.get(url, timeout=2).is_success
        except httpx.TransportError:
            return False

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.work.glob("*.log"))
        )

    def alive(self, where: str) -> bool:
        return any(w == where and p.poll() is None for w, p in self.background)

    def stop(self) -> None:
        for _, p in reversed(self.background):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


def test_the_walkthrough_parses_as_the_readme_means_it() -> None:
    steps = walkthrough((ROOT / "README.md").read_text())
    where = [(" ".join(s.where), s.command.split()[0], s.background) for s in steps]
    assert ("m1", "changeover", True) in where and ("m2", "changeover", True) in where
    assert ("lb", "CHANGEOVER_LISTEN=:8470", True) in where
    kill = next(i for i, s in enumerate(steps) if s.command.startswith("pkill"))
    assert steps[kill].where == ["m1"]
    assert any(s.command.startswith("changeover push") for s in steps[kill:])
    assert steps[0].where == ["m1", "m2"]


def test_two_replicas_on_two_machines_as_the_readme_says(
    pg_url: str, s3_endpoint: str, bucket_url: str, tmp_path: Path
) -> None:
    bucket = bucket_url.removeprefix("s3://").split("/")[0]
    machines = Machines(tmp_path, pg_url, s3_endpoint, bucket)
    try:
        for step in walkthrough((ROOT / "README.md").read_text()):
            for where in step.where:
                machines.run(where, step)
            if step.command.startswith("pkill"):  # it landed: m1's server is gone
                wait_for(lambda: not machines.alive("m1"), 30, "m1's server to die")
                assert machines.alive("m2") and machines.alive("lb")
    finally:
        machines.stop()
