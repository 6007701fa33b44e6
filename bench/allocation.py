"""Allocation throughput and latency under concurrent load, against ``GET /healthz``.

For each database (SQLite, PostgreSQL) and fleet size (1,000 and 10,000 instances), and
per repetition against a fresh server (fresh data directory; on PostgreSQL a fresh schema
of the ``test`` database, dropped afterwards):

1. a real ``changeover server`` is started; a one-file build is pushed, analysed and
   accepted with the real CLI; an application, environment, region, profile (capacity
   ``--capacity`` players per instance) and a fleet over ``--hosts`` hosts are made through
   the API;
2. simulated hosts speak the agent protocol over HTTP with an ``agent`` token: each
   registers, syncs once (the server creates its instances) and syncs again reporting them
   ready, as ``changeover agent`` would, without running game processes;
3. on PostgreSQL, ``ANALYZE`` (what autovacuum does within a minute of such a change);
4. every host's heartbeat is written right before each load (a host silent for 10 s is
   lost and takes no players; see ``keep_alive``), then a separate load-generator process
   (this script's ``_loadgen`` subcommand: asyncio on uvloop, raw HTTP/1.1 keep-alive,
   ``--concurrency`` connections, a closed loop) drives ``GET /healthz`` for ``--warmup``
   + ``--duration`` seconds, the baseline, and then ``POST /api/v1/allocations`` (one new
   player each, admin token) on the fleet; every request is answered before the generator
   stops, so its count of 201s is exact;
5. the result is checked through the API (``GET /fleets/bench/instances``: no instance
   holds more players than its capacity) and the database (one session row per 201, and
   each instance's player count equals the sizes of its open sessions).

Sessions are not released during the run: the fleet has enough places (instances x
capacity) for every request the run can send, and the generator stops at 90 % of them.

Run ``python bench/allocation.py --help``; ``make bench`` runs it with its defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy
from common import (
    BENCHMARKS_MD,
    PG_BASE,
    BenchError,
    clean_up_on_signals,
    database,
    load_average,
    load_note,
    log,
    machine_info,
    markdown_table,
    median,
    run_cli,
    running_server,
    source_revision,
    write_section,
)

SECTION = "allocation"
DEFAULT_SIZES = (1000, 10000)
QUICK_SIZE = 100
DEFAULT_REPEAT = 3
DEFAULT_HOSTS = 100
DEFAULT_CAPACITY = 64
DEFAULT_CONCURRENCY = 32
DEFAULT_WARMUP_S = 1.0
DEFAULT_DURATION_S = 5.0
DEFAULT_RATE_CONNECTIONS = 64
"""Connections of the open-loop phase: enough that requests never wait for a free one
unless the server falls behind (at 2,000/s and 10 ms each, 20 are busy)."""
HEARTBEAT_BUDGET_S = 8.0
"""Warm-up plus duration must stay under this: hosts heartbeat before each load, not during
it, and a host silent for 10 s (``LOST_AFTER_S``) takes no players."""
QUICK_ARGS = ["--quick"]
"""What ``bench/run.py --quick`` passes: 100 instances, one short run per database."""

CHECK_TIMEOUT_S = 600.0
"""Per request of the set-up and the check (``GET /fleets/bench/instances`` at 10,000
instances took 51 s on a loaded machine)."""
TARGET_PER_S = 2000.0
TARGET_P99_MS = 25.0

IMAGE = "bench-alloc"
FLEET = "bench"
PROFILE = "bench-p"
REGION = "bench-eu"
COMPLETED = 5  # JobState.COMPLETED; the CLI's JSON carries the number
ALLOCATION_BODY = '{"fleet": "' + FLEET + '", "players": ["player-{n}"]}'


# -- the load generator (a separate process) -----------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """What one load-generator process does; passed to it as JSON."""

    url: str
    method: str
    path: str
    expect: int
    """The status a successful request gets; any other counts as an error."""
    body_template: str | None = None
    """JSON with ``{n}`` replaced by the request's sequence number (unique players)."""
    token: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    warmup_s: float = DEFAULT_WARMUP_S
    duration_s: float = DEFAULT_DURATION_S
    max_requests: int = 1 << 62
    """Stop sending after this many requests (warm-up included), even before the time."""
    rate: float | None = None
    """Requests per second, open loop: request n is due ``n / rate`` seconds after the
    start, sent then on a free connection, and its latency counts from when it was due, so
    a server that falls behind is charged for the wait (no coordinated omission). None:
    closed loop, each connection sending its next request when its answer is read."""
    stop_file: str | None = None
    """Stop sending (as at the end of ``duration_s``) once this file exists: a load that
    lasts as long as something else does (``patchjobs``: a job)."""
    samples: bool = False
    """Keep every request's (seconds after the start it was due or sent, latency in ms,
    status; 0 for no answer): to see what happened around a moment, e.g. a kill."""


@dataclass
class LoadResult:
    """What a load generator saw. Latencies are of requests sent after the warm-up."""

    measured: int
    """Requests sent after the warm-up (all answered)."""
    seconds: float
    """From the end of the warm-up to the last answer of a measured request."""
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    statuses: dict[str, int] = field(default_factory=dict)
    """Every answer, warm-up included, by status code."""
    measured_errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    transport_errors: int = 0
    samples: list[tuple[float, float, int]] = field(default_factory=list, repr=False)
    """Every request, when ``LoadSpec.samples`` asks (see there)."""
    started_at: float = 0.0
    """The wall-clock time (``time.time()``) the samples count from."""

    @property
    def per_s(self) -> float:
        return self.measured / self.seconds if self.seconds > 0 else 0.0


def parse_head(head: bytes) -> tuple[int, int | None, bool]:
    """Status, Content-Length (None if absent) and whether the body is chunked.

    Raises:
        ValueError: not an HTTP/1.x response head.
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {lines[0]!r}")
    length, chunked = None, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    return int(parts[1]), length, chunked


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile by nearest rank (p50 of 1..100 is 50, p99 is 99).

    Raises:
        ValueError: no values, or ``q`` outside 0-100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status, length, chunked = parse_head(await reader.readuntil(b"\r\n\r\n"))
    if not chunked:
        return status, await reader.readexactly(length or 0)
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        body += (await reader.readexactly(size + 2))[:-2]
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass  # trailers
    return status, body


async def drive(spec: LoadSpec) -> LoadResult:
    """``concurrency`` keep-alive connections, one request at a time each: in a closed loop,
    or taking the requests due at ``spec.rate`` per second (open loop)."""
    parts = urlsplit(spec.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"{spec.method} {spec.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if spec.token:
        head += f"Authorization: Bearer {spec.token}\r\n"
    if spec.body_template is not None:
        head += "Content-Type: application/json\r\n"
    head_bytes = head.encode()
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    result = LoadResult(measured=0, seconds=0.0)
    issued = 0
    last_answer = 0.0
    start = time.perf_counter()
    result.started_at = time.time()
    warm_end = start + spec.warmup_s
    end = warm_end + spec.duration_s

    async def connection() -> None:
        nonlocal issued, last_answer
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            result.transport_errors += 1
            result.error_samples.append(f"connect: {e}")
            return
        try:
            while time.perf_counter() < end and issued < spec.max_requests:
                n = issued
                issued += 1
                due = start + n / spec.rate if spec.rate else None
                if due is not None:
                    if due >= end:
                        return
                    if (wait := due - time.perf_counter()) > 0:
                        await asyncio.sleep(wait)
                body = b""
                if spec.body_template is not None:
                    body = spec.body_template.replace("{n}", str(n)).encode()
                t0 = time.perf_counter() if due is None else due
                writer.write(head_bytes + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                try:
                    status, payload = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                    result.transport_errors += 1
                    result.error_samples.append(f"request {n}: {e!r}")
                    if spec.samples:
                        failed_after = (time.perf_counter() - t0) * 1000
                        result.samples.append((t0 - start, failed_after, 0))
                    return
                t1 = time.perf_counter()
                if spec.samples:
                    result.samples.append((t0 - start, (t1 - t0) * 1000, status))
                statuses[status] += 1
                if t0 >= warm_end:
                    result.measured += 1
                    latencies.append((t1 - t0) * 1000)
                    last_answer = max(last_answer, t1)
                    if status != spec.expect:
                        result.measured_errors += 1
                if status != spec.expect and len(result.error_samples) < 5:
                    result.error_samples.append(
                        f"{status}: {payload[:300].decode(errors='replace')}"
                    )
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def watch(path: Path) -> None:
        nonlocal end
        while time.perf_counter() < end:
            if path.exists():
                end = time.perf_counter()
                return
            await asyncio.sleep(0.05)

    watching = [watch(Path(spec.stop_file))] if spec.stop_file else []
    await asyncio.gather(*(connection() for _ in range(spec.concurrency)), *watching)
    result.seconds = max(0.0, last_answer - warm_end)
    result.latencies_ms = latencies
    result.statuses = {str(k): v for k, v in sorted(statuses.items())}
    return result


def _loadgen_main(spec_json: str, out: str) -> int:
    spec = LoadSpec(**json.loads(spec_json))
    # uvloop (a dependency of the server) where it is installed: the generator's own event
    # loop must not be what limits the rate or inflates the latencies it measures.
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(drive(spec))
    else:
        result = uvloop.run(drive(spec))
    # The result (every latency) goes to a file: through a pipe, a large one once arrived
    # cut at 64 KiB, the event loop having left stdout non-blocking.
    Path(out).write_text(json.dumps(asdict(result)))
    return 0


# -- the orchestration (imports the product's benchmark helpers) ---------------------------


@dataclass
class Phase:
    """One load: the generator's figures and the server's CPU time meanwhile."""

    per_s: float
    p50_ms: float
    p99_ms: float
    measured: int
    measured_errors: int
    ok_total: int
    """Successful answers, warm-up included."""
    server_cpu_s: float
    seconds: float
    error_samples: list[str]
    allocator: dict[str, float] = field(default_factory=dict)
    """What the allocator's counters (``/metrics``) grew by during the load, warm-up
    included (``ALLOCATOR_COUNTERS``), and ``wall_s``, the load's wall time."""

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s * 1000 / self.measured if self.measured else 0.0

    @property
    def batch_ms(self) -> float | None:
        """The allocator's mean time per batch; None where no batch ran (``/healthz``)."""
        batches = self.allocator.get("batches", 0.0)
        return self.allocator["busy_s"] * 1000 / batches if batches else None

    @property
    def busy_share(self) -> float | None:
        """How much of the load's wall time the allocator spent running batches."""
        wall = self.allocator.get("wall_s", 0.0)
        return self.allocator.get("busy_s", 0.0) / wall if wall and self.batch_ms else None


@dataclass
class Check:
    """The fleet after the run, from the API (instances) and the database (sessions)."""

    instances: int
    ready: int
    places: int
    players: int
    over_instances: int
    """Instances holding more players than their capacity (must be 0)."""
    sessions: int
    session_players: int
    mismatched: int
    """Instances whose player count differs from the sizes of their open sessions."""
    allocated: int
    """201 answers the load generator counted."""

    @property
    def ok(self) -> bool:
        return (
            self.over_instances == 0
            and self.mismatched == 0
            and self.sessions == self.allocated
            and self.players == self.session_players == self.allocated
        )


@dataclass
class Run:
    database: str
    instances: int
    baseline: Phase
    alloc: Phase
    check: Check
    setup_s: float
    fixed: Phase | None = None
    """Allocations offered at a fixed rate (open loop), after the closed loop; None if the
    run had no such phase (``--rate 0``)."""
    fixed_rate: float = 0.0
    """The rate ``fixed`` offered, requests per second."""
    baseline_fixed: Phase | None = None
    """``GET /healthz`` offered at ``fixed_rate`` (open loop): the plain FastAPI round trip
    asked for the target's rate, on this machine, in the same run."""


def check_instances(rows: Sequence[dict[str, Any]]) -> tuple[int, int, int, int]:
    """From ``GET /fleets/{name}/instances``: (ready, places, players, over-capacity)."""
    ready = sum(1 for r in rows if r["observed_state"] == "ready")
    places = sum(int(r["capacity"]) for r in rows)
    players = sum(int(r["players"]) for r in rows)
    over = sum(1 for r in rows if int(r["players"]) > int(r["capacity"]))
    return ready, places, players, over


def max_requests(places: int, fraction: float = 0.9) -> int:
    """How many one-player allocations one run may send without filling the fleet."""
    return max(1, int(places * fraction))


def _proc_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process (all threads); 0 where /proc cannot say."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SimHosts:
    """Hosts speaking the agent protocol over HTTP, reporting every instance ready."""

    def __init__(self, client: httpx.Client, names: Sequence[str], slots: int) -> None:
        self.client = client
        self.names = list(names)
        self.slots = slots
        self.uids = {n: uuid.uuid4().hex for n in names}
        self.ids: dict[str, int] = {}
        self.instances: dict[str, list[int]] = {}

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        r = self.client.post(path, json=body)
        if r.status_code != 200:
            raise BenchError(f"POST {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def _sync(self, name: str) -> None:
        observed = [
            {"id": i, "state": "ready", "port": 20000 + i % 40000, "pid": 100 + i}
            for i in self.instances.get(name, [])
        ]
        out = self._post(
            f"/agents/{self.ids[name]}/sync",
            {"agent_uid": self.uids[name], "instances": observed},
        )
        self.instances[name] = [i["id"] for i in out["instances"]]

    def _start(self, name: str) -> None:
        out = self._post(
            "/agents/register",
            {"name": name, "region": REGION, "slots": self.slots, "agent_uid": self.uids[name]},
        )
        self.ids[name] = int(out["id"])
        self._sync(name)  # the server creates the host's instances
        self._sync(name)  # and they are reported ready

    def start(self) -> None:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(self._start, self.names))


def _job(out: str, what: str) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(out)
    if job.get("status") != COMPLETED:
        raise BenchError(f"{what} ended {job.get('status_name')}: {job.get('error')}")
    return job


def release_build(env: dict[str, str], work: Path) -> None:
    """A one-file build, pushed, analysed and accepted with the real CLI."""
    build = work / "build"
    build.mkdir(parents=True, exist_ok=True)
    (build / "game.txt").write_text("a game server would live here\n")
    run_cli("image", "create", IMAGE, env=env)
    push = ["push", str(build), "--image", IMAGE, "--label", "1.0", "--wait", "--json"]
    upd = _job(run_cli(*push, env=env).stdout, "push")
    diff = ["diff", "create", "--image", IMAGE, "--update", str(upd["id"]), "--wait", "--json"]
    d = _job(run_cli(*diff, env=env).stdout, "diff")
    _job(run_cli("diff", "accept", str(d["id"]), "--wait", "--json", env=env).stdout, "accept")


def make_fleet(
    client: httpx.Client, host_names: Sequence[str], per_host: int, capacity: int
) -> str:
    """The catalogue and the fleet; returns an agent token."""

    def post(path: str, body: dict[str, Any]) -> Any:
        r = client.post(path, json=body)
        if r.status_code != 201:
            raise BenchError(f"POST {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    post("/applications", {"name": "bench-game", "type": "game"})
    post("/environments", {"name": "bench-prod"})
    post("/regions", {"name": REGION})
    post(
        "/profiles",
        {
            "name": PROFILE,
            "application": "bench-game",
            "image": IMAGE,
            "version": "latest",
            "command": ["game", "--port", "{port}"],
            "health": {"type": "none"},
            "capacity": capacity,
        },
    )
    post(
        "/fleets",
        {
            "name": FLEET,
            "application": "bench-game",
            "environment": "bench-prod",
            "hosts": list(host_names),
            "instances_per_host": per_host,
            "profile": PROFILE,
        },
    )
    return str(post("/tokens", {"scope": "agent", "name": "bench agents"})["token"])


def load(spec: LoadSpec, server_pid: int | None) -> tuple[LoadResult, float]:
    """Run one load-generator process; its result and the server's CPU seconds meanwhile."""
    cpu0 = _proc_cpu_s(server_pid)
    with tempfile.TemporaryDirectory(prefix="changeover-loadgen-") as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run(
            [sys.executable, __file__, "_loadgen", json.dumps(asdict(spec)), str(out)],
            capture_output=True,
            check=False,
            timeout=spec.warmup_s + spec.duration_s + 120,
        )
        cpu = _proc_cpu_s(server_pid) - cpu0
        if proc.returncode != 0 or not out.exists():
            raise BenchError(f"the load generator failed:\n{proc.stderr.decode(errors='replace')}")
        raw = json.loads(out.read_text())
    return LoadResult(**raw), cpu


ALLOCATOR_COUNTERS = {
    "changeover_allocator_requests_total": "requests",
    "changeover_allocator_batches_total": "batches",
    "changeover_allocator_busy_seconds_total": "busy_s",
}
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})? (\S+)$")


def allocator_counters(metrics_text: str) -> dict[str, float]:
    """The allocator's counters in a ``/metrics`` page, each summed over its labels."""
    got = dict.fromkeys(ALLOCATOR_COUNTERS.values(), 0.0)
    for line in metrics_text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) in ALLOCATOR_COUNTERS:
            got[ALLOCATOR_COUNTERS[m.group(1)]] += float(m.group(2))
    return got


def _phase(
    result: LoadResult, cpu_s: float, expect: int, allocator: dict[str, float] | None = None
) -> Phase:
    if result.transport_errors or not result.latencies_ms:
        raise BenchError(
            f"the load generator had {result.transport_errors} transport errors and"
            f" {len(result.latencies_ms)} measured requests: {result.error_samples[:3]}"
        )
    return Phase(
        per_s=result.per_s,
        p50_ms=percentile(result.latencies_ms, 50),
        p99_ms=percentile(result.latencies_ms, 99),
        measured=result.measured,
        measured_errors=result.measured_errors,
        ok_total=result.statuses.get(str(expect), 0),
        server_cpu_s=cpu_s,
        seconds=result.seconds,
        error_samples=result.error_samples,
        allocator=allocator or {},
    )


def keep_alive(db_url: str) -> None:
    """Mark every host as just heard from: the first thing each agent's sync records.

    A host silent for 10 s is lost and takes no players, but a real sync of 100 hosts with
    100 instances each takes far longer than that here (it re-reads and re-plans every
    instance), so the benchmark writes the heartbeat itself right before each load.
    """
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.begin() as c:
            c.execute(sqlalchemy.text("UPDATE hosts SET last_seen_at = :t"), {"t": time.time()})
    finally:
        engine.dispose()


def analyze(db_url: str) -> None:
    """Refresh PostgreSQL's planner statistics, as autovacuum would within a minute.

    Without them the freshly filled tables look empty to the planner, which then picks
    nested loops that a server in service (analysed) would not use.
    """
    engine = sqlalchemy.create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()


def check_run(client: httpx.Client, db_url: str, allocated: int) -> Check:
    r = client.get(f"/fleets/{FLEET}/instances")
    if r.status_code != 200:
        raise BenchError(f"GET /fleets/{FLEET}/instances: {r.status_code} {r.text[:300]}")
    rows = r.json()
    ready, places, players, over = check_instances(rows)
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as c:
            sessions, session_players = c.exec_driver_sql(
                "SELECT count(*), coalesce(sum(size), 0) FROM sessions"
            ).one()
            mismatched = c.exec_driver_sql(
                "SELECT count(*) FROM instances i LEFT JOIN (SELECT instance_id, sum(size) AS n"
                " FROM sessions WHERE status IN ('reserved', 'connected') GROUP BY instance_id)"
                " s ON s.instance_id = i.id WHERE i.players <> coalesce(s.n, 0)"
            ).scalar_one()
    finally:
        engine.dispose()
    return Check(
        instances=len(rows),
        ready=ready,
        places=places,
        players=players,
        over_instances=over,
        sessions=int(sessions),
        session_players=int(session_players),
        mismatched=int(mismatched),
        allocated=allocated,
    )


def one_run(kind: str, size: int, args: argparse.Namespace) -> Run:
    hosts = min(args.hosts, size)
    if size % hosts:
        raise BenchError(f"{size} instances do not split evenly over {hosts} hosts")
    per_host = size // hosts
    names = [f"h{i:04d}" for i in range(hosts)]
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="co-bench-alloc-")))
        server_url, db_url = stack.enter_context(database(kind, data / "server", args.pg_url))
        env = {"CHANGEOVER_DATABASE_URL": server_url} if server_url else {}
        srv = stack.enter_context(running_server(data / "server", env=env))
        release_build(srv.env, data)
        api = srv.url + "/api/v1"
        admin = stack.enter_context(
            httpx.Client(
                base_url=api,
                headers={"Authorization": f"Bearer {srv.token}"},
                # The check lists every instance: over a minute at 10,000 on a busy machine.
                timeout=CHECK_TIMEOUT_S,
            )
        )
        agent_token = make_fleet(admin, names, per_host, args.capacity)
        agents = stack.enter_context(
            httpx.Client(
                base_url=api, headers={"Authorization": f"Bearer {agent_token}"}, timeout=120
            )
        )
        sim = SimHosts(agents, names, per_host)
        sim.start()
        made = sum(len(v) for v in sim.instances.values())
        if made != size:
            raise BenchError(f"the hosts run {made} instances, not {size}")
        if kind == "postgres":
            analyze(db_url)
        setup_s = time.monotonic() - t0
        log(f"[allocation] {kind} {size}: {hosts} hosts x {per_host} ready in {setup_s:.1f} s")

        common_spec = {
            "url": srv.url,
            "concurrency": args.concurrency,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
        }

        def counters() -> dict[str, float]:
            page = admin.get(srv.url + "/metrics")
            page.raise_for_status()
            return allocator_counters(page.text)

        def phase(spec: LoadSpec) -> Phase:
            keep_alive(db_url)
            before, started = counters(), time.monotonic()
            result, cpu_s = load(spec, srv.pid)
            wall_s, after = time.monotonic() - started, counters()
            grew = {k: after[k] - before[k] for k in after} | {"wall_s": wall_s}
            return _phase(result, cpu_s, spec.expect, grew)

        healthz: dict[str, Any] = {"method": "GET", "path": "/healthz", "expect": 200}
        baseline = phase(LoadSpec(**healthz, **common_spec))
        open_loop = {**common_spec, "concurrency": args.rate_connections, "rate": args.rate}
        baseline_fixed = phase(LoadSpec(**healthz, **open_loop)) if args.rate > 0 else None
        allocate: dict[str, Any] = {
            "method": "POST",
            "path": "/api/v1/allocations",
            "expect": 201,
            "token": srv.token,
        }
        places = max_requests(size * args.capacity)
        alloc = phase(
            LoadSpec(
                body_template=ALLOCATION_BODY,
                # Half the places when an open-loop phase follows, the rest for it.
                max_requests=places // (2 if args.rate > 0 else 1),
                **allocate,
                **common_spec,
            )
        )
        fixed = None
        if args.rate > 0:
            fixed = phase(
                LoadSpec(
                    body_template=ALLOCATION_BODY.replace("player-", "fixed-"),
                    max_requests=max(0, places - alloc.ok_total),
                    **allocate,
                    **open_loop,
                )
            )
        allocated = alloc.ok_total + (fixed.ok_total if fixed else 0)
        check = check_run(admin, db_url, allocated)
    return Run(
        kind,
        size,
        baseline,
        alloc,
        check,
        setup_s,
        fixed,
        args.rate if fixed else 0.0,
        baseline_fixed,
    )


# -- reporting -----------------------------------------------------------------------------


def _med(values: Sequence[float]) -> float:
    return median(values)


def results_table(runs: Sequence[Run]) -> str:
    groups: dict[tuple[str, int], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.database, r.instances), []).append(r)
    rows: list[list[object]] = []
    for (kind, size), g in groups.items():
        base_per_s = _med([r.baseline.per_s for r in g])
        fixed = [r.fixed for r in g if r.fixed is not None]
        fixed_baseline = [r.baseline_fixed for r in g if r.baseline_fixed is not None]
        for label, phases in (
            ("`GET /healthz` (baseline)", [r.baseline for r in g]),
            (f"`GET /healthz` at {_offered(g)} offered", fixed_baseline),
            ("`POST /allocations`", [r.alloc for r in g]),
            (f"`POST /allocations` at {_offered(g)} offered", fixed),
        ):
            if not phases:
                continue
            rates = [p.per_s for p in phases]
            rows.append(
                [
                    kind,
                    f"{size:,}",
                    label,
                    f"{_med(rates):,.0f}",
                    f"{min(rates):,.0f}-{max(rates):,.0f}",
                    f"{_med([p.p50_ms for p in phases]):.1f}",
                    f"{_med([p.p99_ms for p in phases]):.1f}",
                    f"{_med(rates) / base_per_s:.2f}",
                    f"{_med([p.cpu_ms_per_request for p in phases]):.2f}",
                    _med_or_dash([p.batch_ms for p in phases], "{:.1f}"),
                    _med_or_dash([p.busy_share for p in phases], "{:.0%}"),
                    sum(p.measured_errors for p in phases),
                ]
            )
    return markdown_table(
        [
            "database",
            "instances",
            "request",
            "req/s",
            "min-max req/s",
            "p50 ms",
            "p99 ms",
            "x baseline",
            "server CPU ms/req",
            "batch ms",
            "allocator busy",
            "errors",
        ],
        rows,
        "lrlrrrrrrrrr",
    )


def _med_or_dash(values: Sequence[float | None], fmt: str) -> str:
    known = [v for v in values if v is not None]
    return fmt.format(_med(known)) if known else "-"


def _offered(runs: Sequence[Run]) -> str:
    """The fixed phase's offered rate, from what its runs measured (``--rate``)."""
    rates = {round(r.fixed_rate) for r in runs if r.fixed is not None}
    return "/".join(f"{x:,}/s" for x in sorted(rates)) or "a fixed rate"


def checks_table(runs: Sequence[Run]) -> str:
    rows = [
        [
            r.database,
            f"{r.instances:,}",
            f"{r.check.ready:,}",
            f"{r.check.places:,}",
            f"{r.check.allocated:,}",
            f"{r.check.sessions:,}",
            f"{r.check.players:,}",
            r.check.over_instances,
            r.check.mismatched,
            "yes" if r.check.ok else "**NO**",
        ]
        for r in runs
    ]
    return markdown_table(
        [
            "database",
            "instances",
            "ready",
            "places",
            "201 answers",
            "session rows",
            "players held",
            "over capacity",
            "count mismatches",
            "consistent",
        ],
        rows,
        "lrrrrrrrrl",
    )


KEPT_UP = 0.98
"""A fixed-rate phase kept up if it answered at least this share of the offered rate."""


def verdict(runs: Sequence[Run]) -> str:
    """Throughput from the closed loop, or from the open loop where every run of it kept
    up with the target's rate (a closed loop of N connections answers at most N over the
    latency, less than the server can when batches are slow); p99 at the target rate from
    the open loop where the runs have one, else from the closed loop."""
    groups: dict[tuple[str, int], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.database, r.instances), []).append(r)
    misses = []
    for (kind, size), g in groups.items():
        rate = _med([r.alloc.per_s for r in g])
        fixed = [(r.fixed, r.fixed_rate) for r in g if r.fixed is not None]
        behind = [f for f, offered in fixed if f.per_s < KEPT_UP * offered]
        kept_up = bool(fixed) and not behind and all(o >= TARGET_PER_S for _, o in fixed)
        why = []
        if rate < TARGET_PER_S and not kept_up:
            why.append(f"{rate:,.0f} allocs/s")
        if fixed:
            p99 = _med([f.p99_ms for f, _ in fixed])
            if p99 >= TARGET_P99_MS:
                why.append(f"p99 {p99:.1f} ms at {_offered(g)} offered")
            if min(offered for _, offered in fixed) < TARGET_PER_S:
                why.append(f"only {_offered(g)} offered")
            if behind:
                why.append(f"{len(behind)} fixed-rate run(s) fell behind the offered rate")
        else:
            p99 = _med([r.alloc.p99_ms for r in g])
            if p99 >= TARGET_P99_MS:
                why.append(f"p99 {p99:.1f} ms")
        if not all(r.check.ok for r in g):
            why.append("inconsistent counts or over-allocation")
        errors = sum(r.alloc.measured_errors for r in g)
        errors += sum(f.measured_errors for f, _ in fixed)
        if errors:
            why.append(f"{errors} refused allocations")
        if why:
            misses.append(f"{kind} at {size:,} instances: {', '.join(why)}")
    over = sum(r.check.over_instances for r in runs)
    at = f" at {TARGET_PER_S:,.0f}/s offered" if any(r.fixed for r in runs) else ""
    head = (
        f"**Target** (at least {TARGET_PER_S:,.0f} allocations/s, p99 under"
        f" {TARGET_P99_MS:.0f} ms{at}, no over-allocation): "
    )
    if not misses:
        return head + "**met** on every database and size."
    return (
        head
        + "**not met**: "
        + "; ".join(misses)
        + f". Over-allocated instances over all runs: {over}."
    )


def report(
    runs: Sequence[Run], args: argparse.Namespace, command: str, loads: tuple[float, float]
) -> str:
    info = machine_info()
    setup = _med([r.setup_s for r in runs])
    return f"""\
### Allocation throughput and latency (`bench/allocation.py`)

- **Command:** {command}; source {source_revision()}; {info["date"]}.
- **Machine:** {info["cpus"]} CPUs ({info["cpu"]}), {info["memory"]} RAM, {info["os"]}, \
Python {info["python"]}, PostgreSQL on the same machine. Server (one uvicorn process, \
httptools and uvloop), load generator and PostgreSQL share those CPUs. \
{load_note(*loads, int(info["cpus"]), "lowers every figure below")}
- **Setup:** per run a fresh server (and on PostgreSQL a fresh schema), a fleet over \
{args.hosts} simulated hosts (the agent protocol over HTTP, no game processes; every \
instance reported ready), capacity {args.capacity} players per instance; median setup \
{setup:.0f} s. Each host's heartbeat is written to the database right before each load \
(a real sync of every host takes longer than the 10 s after which a silent host is lost); \
no syncs run during the loads. On PostgreSQL, `ANALYZE` after the setup.
- **Load:** one load-generator process (asyncio on uvloop, HTTP/1.1 keep-alive), \
{args.concurrency} connections in a closed loop, {args.warmup:g} s warm-up then \
{args.duration:g} s measured (or until 90 % of the fleet's places are taken). Allocation: \
`{{"fleet": ..., "players": [one new id]}}` with an admin token; baseline: `GET /healthz` \
of the same server, no token. Latency is the client's, request written to answer read. \
Then `/healthz`, and on the same fleet allocations, offered at a fixed {args.rate:,.0f}/s \
(open loop, up to {args.rate_connections} connections, same warm-up and duration): \
request n is due n / rate seconds after the start, and its latency counts from when it \
was due, so a server that falls behind pays for the wait. `/healthz` at that rate is the \
plain FastAPI round trip asked for the target's rate (allocations take a lane past \
FastAPI's routing, so it is no floor under theirs); where its closed loop answers less \
than the rate, it falls behind and its p99 is the queue it builds. A closed loop \
measures the most the server answers to {args.concurrency} connections (at most \
{args.concurrency} over the latency); its latency is the queue the loop itself keeps \
full ({args.concurrency} connections at {TARGET_PER_S:,.0f}/s wait \
{args.concurrency / TARGET_PER_S * 1000:.0f} ms on average by Little's law), so the p99 \
of the target is read at the target's rate, from the open loop. The target's throughput \
is met by the closed loop, or by an open loop that kept up with the target's rate in \
every run.
- **Method:** median of {len(runs) // max(1, len({(r.database, r.instances) for r in runs}))} \
run(s) per row. x baseline = allocation req/s over `/healthz` req/s in the same runs. \
Server CPU ms/req = the server process's CPU time during the load over measured requests \
(PostgreSQL's own CPU not included). Batch ms and allocator busy, from the server's \
`/metrics` before and after each load (warm-up included): the allocator's mean time per \
batch (one transaction), and the share of the load's wall time it spent running batches \
(near 100 %, a request waits for the batch in progress about as long as for its own). \
Errors = measured answers other than 200 / 201.

{results_table(runs)}

After each run, through the API (`GET /fleets/bench/instances`) and the database:

{checks_table(runs)}

{verdict(runs)}
"""


# -- entry point ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="registered instances, comma-separated",
    )
    p.add_argument("--databases", default="sqlite,postgres", help="sqlite and/or postgres")
    p.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs per database and size")
    p.add_argument("--hosts", type=int, default=DEFAULT_HOSTS, help="simulated hosts")
    p.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY, help="players per instance")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="connections")
    p.add_argument(
        "--rate",
        type=float,
        default=TARGET_PER_S,
        help="allocations/s offered in the open-loop phase (0: no such phase)",
    )
    p.add_argument(
        "--rate-connections",
        type=int,
        default=DEFAULT_RATE_CONNECTIONS,
        help="connections the open-loop phase may use",
    )
    p.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S, help="seconds, not measured")
    p.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds measured")
    p.add_argument("--pg-url", default=PG_BASE, help="PostgreSQL database for the schemas")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE} instances, 1 short run")
    p.add_argument("--out", type=Path, default=BENCHMARKS_MD, help="markdown file to update")
    p.add_argument("--no-write", action="store_true", help="print only; leave --out alone")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat, args.warmup, args.duration = str(QUICK_SIZE), 1, 0.5, 2.0
    try:
        args.size_list = [int(x) for x in args.sizes.split(",")]
    except ValueError:
        p.error("--sizes takes comma-separated numbers")
    args.database_list = args.databases.split(",")
    if not set(args.database_list) <= {"sqlite", "postgres"}:
        p.error("--databases takes sqlite and/or postgres")
    if args.repeat < 1 or args.concurrency < 1 or args.hosts < 1 or args.capacity < 1:
        p.error("--repeat, --concurrency, --hosts and --capacity must be at least 1")
    if args.rate < 0 or args.rate_connections < 1:
        p.error("--rate must be 0 or more and --rate-connections at least 1")
    if args.warmup + args.duration > HEARTBEAT_BUDGET_S or args.duration <= 0:
        p.error(f"--warmup + --duration must be under {HEARTBEAT_BUDGET_S:g} s (host heartbeats)")
    return args


def main(argv: Sequence[str] | None = None, *, invoked_as: str | None = None) -> int:
    """Run the benchmark; ``invoked_as`` is how the caller was started (for the report)."""
    args = parse_args(argv)
    direct = ["python", "bench/allocation.py"]
    if args.quick:
        direct.append("--quick")
    else:
        direct += ["--sizes", args.sizes, "--repeat", str(args.repeat)]
        direct += ["--concurrency", str(args.concurrency), "--duration", f"{args.duration:g}"]
        direct += ["--rate", f"{args.rate:g}", "--rate-connections", str(args.rate_connections)]
    command = (
        f"`{invoked_as}`, which runs `{shlex.join(direct)}`"
        if invoked_as
        else f"`{shlex.join(direct)}`"
    )
    runs: list[Run] = []
    load_before = load_average()
    for kind in args.database_list:
        for size in args.size_list:
            for i in range(args.repeat):
                run = one_run(kind, size, args)
                runs.append(run)
                a, b, c = run.alloc, run.baseline, run.check
                log(
                    f"[allocation] {kind} {size} run {i + 1}/{args.repeat}:"
                    f" healthz {b.per_s:,.0f}/s p99 {b.p99_ms:.1f} ms"
                    + (
                        f", at {run.fixed_rate:,.0f}/s offered p99"
                        f" {run.baseline_fixed.p99_ms:.1f} ms;"
                        if run.baseline_fixed
                        else ";"
                    )
                    + f" allocations {a.per_s:,.0f}/s p50 {a.p50_ms:.1f} p99 {a.p99_ms:.1f} ms,"
                    f" {a.cpu_ms_per_request:.2f} server CPU ms each,"
                    f" batches {a.batch_ms or 0:.1f} ms, busy {a.busy_share or 0:.0%},"
                    f" {a.measured_errors} errors"
                    f" {a.error_samples[:1]};"
                    + (
                        f" at {run.fixed_rate:,.0f}/s offered: {run.fixed.per_s:,.0f}/s"
                        f" p50 {run.fixed.p50_ms:.1f} p99 {run.fixed.p99_ms:.1f} ms,"
                        f" batches {run.fixed.batch_ms or 0:.1f} ms,"
                        f" busy {run.fixed.busy_share or 0:.0%},"
                        f" {run.fixed.measured_errors} errors;"
                        if run.fixed
                        else ""
                    )
                    + f" sessions {c.sessions} = 201s {c.allocated}:"
                    f" {c.ok}, over capacity {c.over_instances}"
                )
    body = report(runs, args, command, (load_before, load_average()))
    print(body)
    if not args.no_write:
        write_section(args.out, SECTION, body)
        log(f"[allocation] wrote section {SECTION!r} of {args.out}")
    return 0 if all(r.check.ok for r in runs) else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_loadgen":
        sys.exit(_loadgen_main(sys.argv[2], sys.argv[3]))
    clean_up_on_signals()
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; servers stopped and temporary data deleted")
        sys.exit(130)
