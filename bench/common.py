"""Helpers shared by the benchmarks: a real server, timed CLI runs, medians, BENCHMARKS.md.

Benchmarks drive the product the way users do: the ``changeover`` console script of this
venv against a ``changeover server`` process, never in-process calls, so what is measured
includes process start-up, HTTP and the background job runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
MB = 1_000_000
"""Throughputs are in MB/s with MB = 10**6 bytes, as disks and networks are quoted."""

_SECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class BenchError(RuntimeError):
    """A benchmark could not run (a command failed, the server did not come up)."""


# -- running commands ----------------------------------------------------------------------


def changeover_bin() -> str:
    """The ``changeover`` console script of the interpreter running the benchmark."""
    # The venv's own script first: PATH may hold another install, or none at all.
    beside = Path(sys.executable).with_name("changeover")
    if beside.exists():
        return str(beside)
    found = shutil.which("changeover")
    if found is None:
        raise BenchError("no `changeover` command: run `make bench` (it installs the venv)")
    return found


def compile_bytecode() -> None:
    """Write the bytecode of our package beside its sources, as ``pip install`` does for
    an installed launcher. The source checkout runs editable, and where
    ``PYTHONDONTWRITEBYTECODE`` is set (this machine sets it) every timed command would
    otherwise compile our modules again, which no installed copy does."""
    import changeover

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(changeover.__file__).parent)],
        check=True,
        capture_output=True,
    )


@dataclass(frozen=True)
class Timed:
    """One finished command: its wall-clock duration and its output."""

    seconds: float
    stdout: str
    stderr: str
    peak_rss_kib: int = 0
    """With ``peak=True``: the command's largest resident set, in KiB."""


GNU_TIME = "/usr/bin/time"
"""GNU time (Debian's ``time``), which reports its child's peak resident set."""


def has_gnu_time() -> bool:
    if not os.access(GNU_TIME, os.X_OK):
        return False
    done = subprocess.run([GNU_TIME, "--version"], capture_output=True, text=True, check=False)
    return "GNU" in done.stdout + done.stderr


def run_timed(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    peak: bool = False,
) -> Timed:
    """Run a command to completion and time it (wall clock); raise BenchError if it fails.

    ``peak``: also measure its largest resident set, through GNU time. Not from this
    process's own ``wait4``: a child started by vfork or fork carries its parent's
    high-water mark through ``exec`` (Linux keeps the larger in ``ru_maxrss``), so a
    benchmark holding a few hundred MB would report them as the command's.
    """
    full_env = {**os.environ, **(env or {})}
    with contextlib.ExitStack() as stack:
        out_f = stack.enter_context(tempfile.TemporaryFile())
        err_f = stack.enter_context(tempfile.TemporaryFile())
        command = list(argv)
        if peak:
            peak_file = stack.enter_context(tempfile.NamedTemporaryFile("r", suffix=".rss"))
            command = [GNU_TIME, "-q", "-f", "%M", "-o", peak_file.name, *command]
        start = time.perf_counter()
        proc = subprocess.Popen(
            command,
            env=full_env,
            cwd=cwd,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=out_f,
            stderr=err_f,
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        _, status, _ = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        out = out_f.read().decode(errors="replace")
        err = err_f.read().decode(errors="replace")
        peak_kib = int(peak_file.read().split()[-1]) if peak and proc.returncode == 0 else 0
    if proc.returncode != 0:
        raise BenchError(
            f"`{' '.join(argv)}` exited with {proc.returncode}:\n{err.strip() or out.strip()}"
        )
    return Timed(seconds, out, err, peak_kib)


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU seconds (user and system) a running process used so far; ``children``: with those
    of its children it has waited for (a pool's workers once the pool is shut down)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class PlayerLauncher:
    """The ``changeover-launcher`` a benchmark times: the package players install."""

    path: str
    what: str
    """How it was made, for the report."""


def player_launcher(work: Path) -> PlayerLauncher:
    """Build the standalone launcher players install (``packaging/build.py``, without the
    desktop app) into ``work`` and return it.

    Player-facing times are the packaged executable's: it bundles only the launcher's
    modules, where this venv's console scripts also import what the server side installed
    (tuf's signer module imports boto3 when it is importable, 0.1 s of every start).
    Without PyInstaller, the venv's ``changeover-launcher`` script, and the report says so.
    """
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        script = Path(sys.executable).with_name("changeover-launcher")
        return PlayerLauncher(str(script), "the venv's `changeover-launcher` (no PyInstaller)")
    dist = work / "launcher-dist"
    done = subprocess.run(
        [
            *(sys.executable, str(REPO / "packaging" / "build.py"), "--without-app"),
            *("--dist", str(dist), "--work", str(work / "launcher-build")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    exe = dist / "changeover-launcher" / "changeover-launcher"
    if done.returncode != 0 or not exe.exists():
        raise BenchError(f"packaging the launcher failed:\n{done.stderr.strip()[-2000:]}")
    return PlayerLauncher(
        str(exe), "the packaged `changeover-launcher` (`packaging/build.py --without-app`)"
    )


APPLY_PHASES = ("apply_wall", "commit", "install")


def apply_seconds(timings: Mapping[str, float], *, summed: bool = False) -> float:
    """The launcher's own apply time, from its report's ``timings``: the wall clock during
    which it was making objects from what it downloaded (``apply_wall``: at most one worker
    per CPU applies, side by side; ``apply``, their sum, can exceed the whole sync), the
    durable commit of the last group, and building the new tree and switching to it.
    Start-up, signed metadata and the downloads are left out, as they are of the reference
    "decompress-and-write" (the download is not timed there either). A report without
    ``apply_wall`` (a launcher before it), or ``summed``, counts the sum."""
    wall = timings.get("apply_wall")
    applying = timings.get("apply", 0.0) if summed or wall is None else wall
    return float(applying) + sum(float(timings.get(p, 0.0)) for p in APPLY_PHASES[1:])


def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Timed:
    """Run ``changeover ARGS…`` and time it, start-up included (what a CI step pays)."""
    return run_timed([changeover_bin(), *args], env=env, cwd=cwd)


# -- a real server -------------------------------------------------------------------------


def make_admin_token(data_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """Create an admin token straight in the data directory's database (offline).

    ``env`` is the server's: with ``CHANGEOVER_DATABASE_URL`` the token goes to that database.
    """
    out = run_cli("token", "create", "--scope", "admin", "--data", str(data_dir), "--json", env=env)
    return str(json.loads(out.stdout)["token"])


def free_port() -> int:
    """A loopback port that was free a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """A running ``changeover server`` and what a CLI needs to talk to it."""

    url: str
    data_dir: Path
    token: str
    log_path: Path
    pid: int | None = None
    """The server process (for its CPU time); None where unknown."""

    @property
    def env(self) -> dict[str, str]:
        return {"CHANGEOVER_URL": self.url, "CHANGEOVER_TOKEN": self.token}

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    # SIGINT lets uvicorn run the app's shutdown (job runner, database) like Ctrl-C would.
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


@contextlib.contextmanager
def running_server(
    data_dir: Path | None = None,
    *,
    timeout_s: float = 60.0,
    env: Mapping[str, str] | None = None,
    log_name: str = "server.log",
) -> Iterator[Server]:
    """Start ``changeover server`` on a free loopback port and yield once /healthz answers.

    Without ``data_dir`` the server gets a fresh temporary one, deleted afterwards. The
    process is stopped (and the temporary directory removed) however the block exits.
    ``env`` is added to the server's environment (and the admin token's creation), e.g.
    ``CHANGEOVER_DATABASE_URL`` to run it on PostgreSQL. ``log_name``: its log file in
    ``data_dir`` (a second replica sharing the directory needs another).

    Raises:
        BenchError: the server exited or did not answer within ``timeout_s``.
    """
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="co-bench-")))
        data_dir.mkdir(parents=True, exist_ok=True)
        token = make_admin_token(data_dir, env)
        port = free_port()
        log_path = data_dir / log_name
        log = stack.enter_context(open(log_path, "wb"))
        proc = subprocess.Popen(
            [changeover_bin(), "server", "--data", str(data_dir), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            # Its own session: a Ctrl-C of the benchmark reaches us, and we stop it cleanly.
            start_new_session=True,
        )
        stack.callback(_stop, proc)
        server = Server(f"http://127.0.0.1:{port}", data_dir, token, log_path, proc.pid)
        deadline = time.monotonic() + timeout_s
        while not _healthy(server.url):
            if proc.poll() is not None:
                raise BenchError(f"the server exited with {proc.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"the server did not answer in {timeout_s:.0f} s")
            time.sleep(0.05)  # a probe interval, not a guess at how long start-up takes
        try:
            yield server
        except BenchError:
            print(f"server log, last lines:\n{server.log_tail(60)}", file=sys.stderr)
            raise


# -- statistics and reporting --------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def mb_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / MB / seconds if seconds > 0 else float("inf")


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], align: str = ""
) -> str:
    """A GitHub markdown table, padded so it also reads well as plain text.

    ``align`` holds one letter per column, ``l`` or ``r`` (default ``l``).
    """
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    if any(len(r) != len(headers) for r in cells):
        raise ValueError("every row needs one cell per header")
    align = align.ljust(len(headers), "l")
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if a == "r" else c.ljust(w)
            for c, w, a in zip(row, widths, align, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join(
        "-" * (w - 1) + ":" if a == "r" else "-" * w for w, a in zip(widths, align, strict=True)
    )
    return "\n".join([line(cells[0]), rule + " |", *(line(r) for r in cells[1:])])


def machine_info() -> dict[str, str]:
    """What the figures depend on: CPUs, CPU model, OS, Python, date."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                model = row.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for row in Path("/proc/meminfo").read_text().splitlines():
            if row.startswith("MemTotal:"):
                mem = f"{int(row.split()[1]) / 1024 / 1024:.0f} GiB"
                break
    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def load_average() -> float:
    """The 1-minute load average (0 where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def load_note(before: float, after: float, cpus: int, effect: str) -> str:
    """The load averages around a benchmark, in words: only the one taken before it is
    other processes' alone (the one after counts the benchmark's own), so only that one
    says whether something else competed for the CPUs, ``effect`` saying how it shows."""
    head = f"1-minute load average {before:.1f} before the runs and {after:.1f} after"
    if before >= cpus:
        return f"{head}: other processes were competing for the {cpus} CPUs, which {effect}."
    return f"{head} (the benchmark's own included): nothing else kept the CPUs busy before it."


def source_revision() -> str:
    """The commit measured, marked ``+changes`` when the working tree differs from it."""
    try:
        head = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, check=True
            )
            .stdout.decode()
            .strip()
        )
        # diff-index only reads: unlike `git status` it never rewrites the index.
        dirty = subprocess.run(
            ["git", "diff-index", "--quiet", "HEAD", "--"],
            cwd=REPO,
            capture_output=True,
            check=False,
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def markers(name: str) -> tuple[str, str]:
    if not _SECTION_NAME.match(name):
        raise ValueError(f"section name {name!r}: use lowercase letters, digits and '-'")
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def write_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between the ``bench:NAME`` markers of ``path``, leaving the rest alone.

    An existing section is replaced in place; a new one is appended; a missing file is
    created. Several benchmarks thus share one BENCHMARKS.md, each owning its section.

    Raises:
        ValueError: the file holds the opening marker without its closing one (or they are
            out of order, or repeated): rewriting it could eat a neighbouring section.
    """
    start, end = markers(name)
    text = path.read_text() if path.exists() else ""
    block = f"{start}\n{body.strip()}\n{end}"
    n_start, n_end = text.count(start), text.count(end)
    if n_start == n_end == 0:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    elif n_start == n_end == 1 and text.index(start) < text.index(end):
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        raise ValueError(f"{path}: the markers of section {name!r} are broken; fix them by hand")
    # Write then rename, so an interrupted run never leaves a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def clean_up_on_signals() -> None:
    """Make SIGTERM and SIGINT raise, so ``finally`` blocks stop servers and delete data.

    Python's default for SIGTERM is to die on the spot, and a shell starting us in the
    background hands us SIGINT ignored; both would leave servers and gigabytes behind.
    """
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the results."""
    print(message, file=sys.stderr, flush=True)


PG_BASE = os.environ.get("CHANGEOVER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
"""The PostgreSQL database the benchmarks make their schemas in (as the tests do)."""


@contextlib.contextmanager
def database(kind: str, data_dir: Path, pg_base: str) -> Iterator[tuple[str | None, str]]:
    """(the server's CHANGEOVER_DATABASE_URL or None for SQLite, a URL to inspect it)."""
    if kind == "sqlite":
        yield None, f"sqlite:///{data_dir / 'changeover.db'}"
        return
    import sqlalchemy  # only the PostgreSQL runs need it here

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(pg_base, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.exec_driver_sql(f"CREATE SCHEMA {schema}")
        url = f"{pg_base}?options=-csearch_path%3D{schema}"
        try:
            yield url, url
        finally:
            with engine.connect() as c:
                c.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    finally:
        engine.dispose()
