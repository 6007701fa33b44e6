"""Patch jobs: sessions dropped per method with real game servers, and their cost at scale.

**Players.** One real ``changeover server``, two real agents (hosts h1 and h2, separate
processes), the sample game (examples/arena, builds 1 and 2) and ``changeover bots``
playing it. For each method in turn (forced first: the baseline), the fleet moves to the
other build while the bots play with session lengths drawn uniformly from
``--session-min`` .. ``--session-max`` seconds; the bots' report says how many sessions
completed, how many were moved after a shutdown notice and how many were dropped without
one. For bleed-off, the share of the sessions on the old build that were still running at
its deadline (``--drain-deadline``) and had to move is reported too.

**Scale.** A fleet of ``--scale-size`` instances over ``--hosts`` simulated hosts (the
agent protocol over HTTP from one process; every instance reports ready at once, every
stop takes effect at once, every build is staged at once, no players) is moved by each
method. Like real agents, the hosts sync at the interval the control plane asks (it
stretches it when it has many hosts) and at once after a sync that changed their
instances. Reported: wall time, the control plane's CPU seconds (from /proc), both per
1,000 instances, the number of syncs the hosts made meanwhile and the median interval.

Run ``python bench/patchjobs.py --help``; ``make bench`` runs it with its defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from common import (
    BENCHMARKS_MD,
    PG_BASE,
    REPO,
    BenchError,
    clean_up_on_signals,
    cpu_seconds,
    database,
    log,
    machine_info,
    markdown_table,
    running_server,
    source_revision,
    write_section,
)

SECTION = "patchjobs"
METHODS = ("forced", "rolling", "ab", "bleed-off", "canary", "custom")
QUICK_ARGS = ["--scale-size", "100", "--hosts", "10", "--methods", "forced,bleed-off"]
QUICK_ARGS += ["--databases", "sqlite"]
QUICK_ARGS += ["--players", "4", "--play-s", "20", "--alloc-rate", "50", "--rest-s", "5"]
ARENA = REPO / "examples" / "arena"
FAST_ROLLING = {
    "max_unavailable": "25%",
    "max_surge": "25%",
    "min_healthy_time_s": 1,
    "healthy_deadline_s": 120,
    "progress_deadline_s": 600,
}


def knobs(method: str, drain_deadline_s: float) -> dict[str, Any]:
    """The job body's knobs for ``method``: short health waits, the given drain deadline."""
    drain = {"deadline_s": drain_deadline_s, "notice_before_s": [drain_deadline_s / 2]}
    out: dict[str, Any] = {
        "stop": {"signal": "SIGTERM", "timeout_s": 10},
        "rolling": FAST_ROLLING,
        "drain": drain,
    }
    if method == "canary":
        out["canary"] = {"share": 0.25, "analysis_window_s": 3}
    if method == "custom":  # seed 004's blue/green, as steps
        out["steps"] = [
            {"kind": "start_new", "share": 1.0},
            {"kind": "wait_healthy", "timeout_s": 120},
            {"kind": "switch_allocation", "weight": 1.0},
            {"kind": "drain", "deadline_s": drain_deadline_s},
            {"kind": "stop_old"},
        ]
    return out


def job_body(method: str, old: str, new: str, fleet: str, app: str, env: str, drain: float) -> Any:
    return {
        "name": f"bench {method} {old} -> {new}",
        "environment": env,
        "application": app,
        "method": method,
        "builds": [{"old": old, "new": new}],
        "fleets": [fleet],
        **knobs(method, drain),
    }


def _ok(r: httpx.Response, status: int = 200) -> Any:
    if r.status_code != status:
        raise BenchError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:500]}")
    return r.json()


def wait_job(c: httpx.Client, job_id: int, timeout_s: float, tick: Any = None) -> dict[str, Any]:
    """Poll a job every second (as ``changeover patchjob show --follow`` does) until it
    ends (status >= 7), calling ``tick`` in between."""
    deadline = time.monotonic() + timeout_s
    next_poll = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() >= next_poll:
            next_poll = time.monotonic() + 1.0
            job: dict[str, Any] = _ok(c.get(f"/patchjobs/{job_id}"))
            if job["status"] >= 7:
                return job
        if tick is not None:
            tick()
        else:
            time.sleep(0.2)
    raise BenchError(f"patch job {job_id} did not finish within {timeout_s:g} s")


# -- scale: simulated hosts ------------------------------------------------------------------


class SimHosts:
    """Hosts that speak the agent protocol and do at once whatever the control plane asks.

    Like real agents, each host has its own loop (a thread): it syncs every
    ``sync_interval_s`` the control plane tells it, and at once after a sync that changed
    its instances (they are then ready, or stopped)."""

    def __init__(self, client: httpx.Client, names: Sequence[str], slots: int) -> None:
        self.client = client
        self.names = list(names)
        self.slots = slots
        self.uids = {n: uuid.uuid4().hex for n in names}
        self.ids: dict[str, int] = {}
        self.states: dict[str, dict[int, str]] = {n: {} for n in names}
        self.staged: dict[str, list[str]] = {n: [] for n in names}
        self.syncs = 0
        self.quiet = 0
        """Syncs that sent no change and got none back."""
        self.revisions: dict[str, float | None] = {}
        self.reported: dict[str, dict[int, dict[str, Any]]] = {}
        self.intervals: list[float] = []
        self.last_seen: dict[str, float] = {}
        self.longest_gap = 0.0
        """The longest time between two answered syncs of one host (lost after 10 s)."""
        self.latencies: list[float] = []
        """Each sync's round trip, seconds."""
        self.error: BaseException | None = None
        self.lost_syncs = 0
        """Syncs that failed on the way (retried, as an agent does)."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def register(self) -> None:
        def one(name: str) -> None:
            body = {"name": name, "region": "eu", "slots": self.slots, "agent_uid": self.uids[name]}
            self.ids[name] = int(_ok(self.client.post("/agents/register", json=body))["id"])

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, self.names))

    def sync(self, name: str) -> float:
        """One sync of host ``name``; the seconds until its next one. As the agent does:
        after the first, only the observations that changed, with the last answer's
        revision; the answer is then the desired changes (or nothing new)."""
        observed = {
            i: {"id": i, "state": st, "port": 20000 + i % 40000, "pid": 100 + i}
            for i, st in self.states[name].items()
        }
        body: dict[str, Any] = {"agent_uid": self.uids[name], "staged": self.staged[name]}
        since = self.revisions.get(name)
        if since is None:
            body["instances"] = list(observed.values())
        else:
            body["since"] = since
            told = self.reported.get(name, {})
            body["instances"] = [o for i, o in observed.items() if told.get(i) != o]
        sent = time.monotonic()
        out = _ok(self.client.post(f"/agents/{self.ids[name]}/sync", json=body))
        t = time.monotonic()
        with self._lock:
            self.syncs += 1
            self.quiet += not body["instances"] and not out["instances"] and not out["gone"]
            self.latencies.append(t - sent)
            self.longest_gap = max(self.longest_gap, t - self.last_seen.get(name, t))
            self.last_seen[name] = t
            self.intervals.append(float(out["sync_interval_s"]))
        self.reported[name] = observed
        self.revisions[name] = out.get("revision")
        if "versions" in out:
            self.staged[name] = list(out["versions"])
        states = {} if out.get("full", True) else dict(self.states[name])
        for i in out["instances"]:
            states[i["id"]] = "stopped" if i["desired"] == "stopped" else "ready"
        for gone in out.get("gone", []):
            states.pop(gone, None)
        changed = states != self.states[name]
        self.states[name] = states
        return 0.0 if changed else float(out["sync_interval_s"])

    def start(self) -> None:
        for name in self.names:
            th = threading.Thread(target=self._loop, args=(name,), daemon=True)
            th.start()
            self._threads.append(th)

    def _loop(self, name: str) -> None:
        while not self._stop.is_set():
            try:
                wait = self.sync(name)
            except httpx.TransportError:
                # As a real agent does: a sync lost on the way is retried at the next one
                # (a keep-alive connection the server closed as it was reused, for one).
                with self._lock:
                    self.lost_syncs += 1
                wait = 1.0
            except Exception as e:  # noqa: BLE001 -- reported by check() on the main thread
                self.error = self.error or e
                return
            self._stop.wait(wait)

    def check(self) -> None:
        """Raise what a host's loop ran into; else wait a little (``wait_job``'s tick)."""
        if self.error is not None:
            raise BenchError(f"a simulated host failed: {self.error}")
        time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=60)

    def wait_live(self, size: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.live() < size:
            if time.monotonic() > deadline:
                raise BenchError(f"only {self.live()} of {size} instances ready")
            self.check()

    def live(self) -> int:
        return sum(st == "ready" for states in self.states.values() for st in list(states.values()))


@dataclass(frozen=True)
class ScaleRun:
    database: str
    method: str
    instances: int
    hosts: int
    status: str
    wall_s: float
    cpu_s: float
    syncs: int
    quiet: int
    """Syncs that sent no change and got none back (answered from one read)."""
    interval_s: float
    """The median sync interval the control plane asked of the hosts meanwhile."""
    longest_gap_s: float
    """The longest a host went without an answered sync."""
    sync_p50_s: float
    sync_p99_s: float
    """Sync round trips (median, 99th percentile)."""
    moved: int
    """Instances on the new build once the job is over and the fleet settled (of
    ``instances``)."""
    allocations: AllocLoad | None
    """The allocations made during the job, if any were asked for."""
    at_rest_cpu_s: float
    """What the fleet at rest costs over as long as the job took (its syncs and the same
    allocation load, measured before the jobs): ``cpu_s`` less this is the job's own."""


@dataclass(frozen=True)
class AllocLoad:
    """Server Allocate requests sent during a job (open loop, ``--alloc-rate`` per second)."""

    sent: int
    ok: int
    """Answered 201 (a player placed)."""
    p50_ms: float
    p99_ms: float
    """Latency from when each request was due (a server falling behind is charged)."""
    errors: str
    """Other answers, by status."""


@contextlib.contextmanager
def allocating(url: str, token: str, rate: float, work: Path) -> Iterator[list[AllocLoad]]:
    """Allocations at ``rate`` per second (``bench/allocation.py``'s open-loop load
    generator, a separate process) for as long as the block runs; the result is put in the
    yielded list once the block ends."""
    from allocation import LoadResult, LoadSpec, percentile

    out: list[AllocLoad] = []
    if rate <= 0:
        yield out
        return
    stop, result = work / f"stop-{uuid.uuid4().hex}", work / f"alloc-{uuid.uuid4().hex}.json"
    spec = LoadSpec(
        url=url,
        method="POST",
        path="/api/v1/allocations",
        expect=201,
        body_template='{"fleet": "bench", "players": ["p{n}"]}',
        token=token,
        concurrency=64,
        warmup_s=0.0,
        duration_s=24 * 3600.0,
        rate=rate,
        stop_file=str(stop),
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("allocation.py")),
            "_loadgen",
            json.dumps(dataclasses.asdict(spec)),
            str(result),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        yield out
    finally:
        stop.touch()
        _, err = proc.communicate(timeout=600)
    if proc.returncode != 0 or not result.exists():
        raise BenchError(f"the allocation load failed:\n{err.decode(errors='replace')}")
    got = LoadResult(**json.loads(result.read_text()))
    lat = got.latencies_ms or [0.0]
    errors = {k: v for k, v in got.statuses.items() if k != "201"}
    if got.transport_errors:
        errors["no answer"] = got.transport_errors
    out.append(
        AllocLoad(
            got.measured,
            got.statuses.get("201", 0),
            percentile(lat, 50),
            percentile(lat, 99),
            ", ".join(f"{k}: {v}" for k, v in errors.items()) or "none",
        )
    )


def _p50_p99(samples: Sequence[float]) -> tuple[float, float]:
    if not samples:
        return 0.0, 0.0
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def scale_runs(args: argparse.Namespace) -> list[ScaleRun]:
    runs = []
    for kind in args.database_list:
        runs += _scale_runs_on(kind, args)
    return runs


def _scale_runs_on(kind: str, args: argparse.Namespace) -> list[ScaleRun]:
    """Every method in turn on one fleet, its server on ``kind`` (sqlite or postgres)."""
    hosts = args.hosts
    size = args.scale_size
    if size % hosts:
        raise BenchError(f"{size} instances do not split evenly over {hosts} hosts")
    names = [f"h{i:03d}" for i in range(hosts)]
    runs = []
    with contextlib.ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="co-bench-pj-")))
        server_url, _ = stack.enter_context(database(kind, data / "server", args.pg_url))
        env = {"CHANGEOVER_DATABASE_URL": server_url} if server_url else {}
        srv = stack.enter_context(running_server(data / "server", env=env))
        # Allocations go to a second replica of the control plane (PostgreSQL only): the
        # leader runs the job and answers the hosts, the follower answers the matchmaker.
        alloc_srv = srv
        if args.alloc_replica and kind == "postgres":
            replica = running_server(data / "server", env=env, log_name="replica.log")
            alloc_srv = stack.enter_context(replica)
        pids = sorted({srv.pid, alloc_srv.pid})

        def cpu_now() -> float:
            return sum(cpu_seconds(pid) for pid in pids)

        admin = stack.enter_context(
            httpx.Client(
                base_url=srv.url + "/api/v1",
                headers={"Authorization": f"Bearer {srv.token}"},
                timeout=300,
            )
        )
        for label in ("b1", "b2"):
            _release_small(admin, label)
        _catalogue(admin, names, size // hosts)
        token = _ok(admin.post("/tokens", json={"scope": "agent", "name": "sim"}), 201)["token"]
        agents = stack.enter_context(
            httpx.Client(
                base_url=srv.url + "/api/v1",
                headers={"Authorization": f"Bearer {token}"},
                timeout=300,
                limits=httpx.Limits(max_connections=hosts, max_keepalive_connections=hosts),
            )
        )
        sim = SimHosts(agents, names, size // hosts + 2)
        sim.register()
        sim.start()
        stack.callback(sim.stop)
        sim.wait_live(size, args.timeout)
        log(f"[patchjobs] scale ({kind}): {size} instances ready on {hosts} hosts")
        # The same-run reference: what the settled fleet costs with no job (its syncs and
        # the allocations), per second, subtracted from each job's CPU for its own cost.
        cpu0, t0 = cpu_now(), time.monotonic()
        with allocating(alloc_srv.url, alloc_srv.token, args.alloc_rate, data):
            deadline = t0 + args.rest_s
            while time.monotonic() < deadline:
                sim.check()
        at_rest = (cpu_now() - cpu0) / (time.monotonic() - t0)
        log(f"[patchjobs] scale ({kind}): at rest {at_rest:.2f} CPU s per second")
        old, new = "bench-b1", "bench-b2"
        for method in args.methods:
            body = job_body(method, old, new, "bench", "bench-game", "bench-prod", 30)
            syncs0, quiet0, cpu0, t0 = sim.syncs, sim.quiet, cpu_now(), time.monotonic()
            sim.intervals.clear()
            sim.latencies.clear()
            sim.longest_gap = 0.0
            with allocating(alloc_srv.url, alloc_srv.token, args.alloc_rate, data) as alloc:
                job = _ok(admin.post("/patchjobs", json=body), 201)
                done = wait_job(admin, job["id"], args.timeout, tick=sim.check)
            wall, cpu = time.monotonic() - t0, cpu_now() - cpu0
            syncs, quiet = sim.syncs - syncs0, sim.quiet - quiet0
            intervals, gap, latencies = list(sim.intervals), sim.longest_gap, list(sim.latencies)
            sim.wait_live(size, args.timeout)  # the next job starts from a full fleet
            run = ScaleRun(
                kind,
                method,
                size,
                hosts,
                done["status_name"],
                wall,
                cpu,
                syncs,
                quiet,
                statistics.median(intervals or [0.0]),
                gap,
                *_p50_p99(latencies),
                _on_build(admin, new, size, args.timeout),
                alloc[0] if alloc else None,
                at_rest * wall,
            )
            log(f"[patchjobs] scale {method}: {run}; reason: {done.get('reason')}")
            log(f"[patchjobs] scale: {sim.lost_syncs} sync(s) lost on the way so far")
            runs.append(run)
            old, new = new, old
    return runs


def _on_build(c: httpx.Client, profile: str, size: int, timeout_s: float) -> int:
    """How many of the fleet's live instances run ``profile``, once the fleet holds
    ``size`` live instances (old ones may still be on their way out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        summary = _ok(c.get("/fleets/bench/summary"))
        on = {p["profile"]: p["instances"] for p in summary["profiles"]}
        if summary["instances"] == size or time.monotonic() > deadline:
            return int(on.get(profile, 0))
        time.sleep(0.2)


def _release_small(c: httpx.Client, label: str) -> None:
    """A one-file build accepted as a version, through the API."""
    import hashlib

    body = f"game server {label}\n".encode()
    sha = hashlib.sha256(body).hexdigest()
    with contextlib.suppress(BenchError):
        _ok(c.post("/images", json={"name": "bench"}), 201)
    manifest = {"files": [{"path": "game.txt", "size": len(body), "mode": 0o644, "sha256": sha}]}
    upd = _ok(c.post("/images/bench/updates", json={"label": label, "manifest": manifest}), 201)
    if upd["missing"]:
        _ok(c.put(f"/uploads/{sha}", params={"offset": 0, "size": len(body)}, content=body))
    _ok(c.post(f"/updates/{upd['id']}/complete"))
    _wait_status(c, f"/updates/{upd['id']}")
    diff = _ok(c.post("/images/bench/diffs", json={"update_id": upd["id"]}), 201)
    _wait_status(c, f"/diffs/{diff['id']}")
    version = _ok(c.post(f"/diffs/{diff['id']}/accept"), 201)
    _wait_status(c, f"/versions/{version['id']}")


def _wait_status(c: httpx.Client, path: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = _ok(c.get(path))
        if job["status"] == 5:
            return
        if job["status"] == 6:
            raise BenchError(f"{path} failed: {job.get('error')}")
        time.sleep(0.1)
    raise BenchError(f"{path} did not complete")


def _catalogue(c: httpx.Client, names: Sequence[str], per_host: int) -> None:
    _ok(c.post("/applications", json={"name": "bench-game", "type": "game"}), 201)
    _ok(c.post("/environments", json={"name": "bench-prod"}), 201)
    _ok(c.post("/regions", json={"name": "eu"}), 201)
    for n, label in ((1, "b1"), (2, "b2")):
        profile = {
            "name": f"bench-{label}",
            "application": "bench-game",
            "image": "bench",
            "version": str(n),
            "command": ["game", "--port", "{port}"],
            "health": {"type": "none"},
            "capacity": 64,  # places for every allocation the runs make (--alloc-rate)
        }
        _ok(c.post("/profiles", json=profile), 201)
    fleet = {
        "name": "bench",
        "application": "bench-game",
        "environment": "bench-prod",
        "hosts": list(names),
        "instances_per_host": per_host,
        "profile": "bench-b1",
    }
    _ok(c.post("/fleets", json=fleet), 201)


# -- players: real agents, the sample game, bots ---------------------------------------------


@dataclass(frozen=True)
class PlayRun:
    method: str
    status: str
    job_s: float
    sessions: int
    completed: int
    moved: int
    dropped: int


def _cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "changeover.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise BenchError(f"changeover {' '.join(args)}: exit {out.returncode}: {out.stderr}")
    return out.stdout


@contextlib.contextmanager
def _agents(work: Path, url: str, token: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEOVER_")}
    try:
        for n, (name, region) in enumerate((("h1", "eu"), ("h2", "us"))):
            # below the ephemeral ports (32768 on), which any connection may take
            base = 21000 + n * 100 + (os.getpid() % 50) * 200 % 10000
            log_file = open(work / f"{name}.log", "ab")  # noqa: SIM115 (the child owns it)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "changeover.cli",
                        "agent",
                        "--server",
                        url,
                        "--token",
                        token,
                        "--name",
                        name,
                        "--region",
                        region,
                        "--work",
                        str(work / name),
                        "--ports",
                        f"{base}-{base + 40}",
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
            log_file.close()
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def play_runs(args: argparse.Namespace) -> list[PlayRun]:
    runs = []
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="co-bench-play-")))
        srv = stack.enter_context(running_server(work / "server"))
        assert srv.pid is not None
        env = {**os.environ, **srv.env, "COLUMNS": "120"}
        c = stack.enter_context(
            httpx.Client(
                base_url=srv.url + "/api/v1",
                headers={"Authorization": f"Bearer {srv.token}"},
                timeout=60,
            )
        )
        _cli(env, "image", "create", "arena")
        for build, label in (("build-v1", "v1"), ("build-v2", "v2")):
            upd = json.loads(
                _cli(
                    env,
                    "push",
                    str(ARENA / build),
                    "--image",
                    "arena",
                    "--label",
                    label,
                    "--wait",
                    "--json",
                )
            )
            diff = json.loads(
                _cli(
                    env,
                    "diff",
                    "create",
                    "--image",
                    "arena",
                    "--update",
                    str(upd["id"]),
                    "--wait",
                    "--json",
                )
            )
            _cli(env, "diff", "accept", str(diff["id"]), "--wait")
        _ok(c.post("/applications", json={"name": "arena", "type": "game"}), 201)
        _ok(c.post("/environments", json={"name": "production"}), 201)
        for region in ("eu", "us"):
            _ok(c.post("/regions", json={"name": region}), 201)
        for v in ("v1", "v2"):
            profile = {
                "name": f"arena-{v}",
                "application": "arena",
                "image": "arena",
                "version": v,
                "command": [sys.executable, "arena_server.py"],
                "capacity": 4,
                "stop_timeout_s": 10,
            }
            _ok(c.post("/profiles", json=profile), 201)
        fleet = {
            "name": "arena",
            "application": "arena",
            "environment": "production",
            "hosts": ["h1", "h2"],
            "instances_per_host": 2,
            "profile": "arena-v1",
        }
        _ok(c.post("/fleets", json=fleet), 201)
        token = _ok(c.post("/tokens", json={"scope": "agent", "name": "agents"}), 201)["token"]
        stack.enter_context(_agents(work, srv.url, token))
        old, new = "arena-v1", "arena-v2"
        for method in args.methods:
            _wait_settled(c, old)
            runs.append(_play_one(c, env, method, old, new, args))
            log(f"[patchjobs] players {method}: {runs[-1]}")
            old, new = new, old
    return runs


def _wait_settled(c: httpx.Client, profile: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        rows = _ok(c.get("/fleets/arena/instances"))
        live = [(i["profile"], i["state"]) for i in rows if i["state"] not in ("stopped", "lost")]
        if live == [(profile, "ready")] * 4:
            return
        time.sleep(0.2)
    raise BenchError(f"the fleet did not settle on {profile}")


def _wait_players(c: httpx.Client, servers: int) -> None:
    """Until at least ``servers`` servers have players, so the job meets busy servers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = _ok(c.get("/fleets/arena/instances"))
        if sum(i["players"] > 0 for i in rows) >= servers:
            return
        time.sleep(0.2)
    raise BenchError(f"fewer than {servers} servers got players within 60 s")


def _play_one(
    c: httpx.Client, env: dict[str, str], method: str, old: str, new: str, a: argparse.Namespace
) -> PlayRun:
    bots = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "changeover.cli",
            "bots",
            "--fleet",
            "arena",
            "--players",
            str(a.players),
            "--duration",
            str(a.play_s),
            "--session-min",
            str(a.session_min),
            "--session-max",
            str(a.session_max),
            "--seed",
            "7",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _wait_players(c, min(3, -(-a.players // 4)))  # packing: 4 players per server
        t0 = time.monotonic()
        body = job_body(method, old, new, "arena", "arena", "production", a.drain_deadline)
        job = _ok(c.post("/patchjobs", json=body), 201)
        done = wait_job(c, job["id"], 600)
        job_s = time.monotonic() - t0
        out, _ = bots.communicate(timeout=a.play_s + 120)
    finally:
        if bots.poll() is None:
            bots.kill()
            bots.wait()
    report = json.loads(out)
    return PlayRun(
        method,
        done["status_name"],
        job_s,
        report["sessions"],
        report["completed"],
        report["moved"],
        report["dropped_without_notice"],
    )


# -- report ----------------------------------------------------------------------------------


def report_md(
    play: Sequence[PlayRun], scale: Sequence[ScaleRun], args: argparse.Namespace, invoked: str
) -> str:
    m = machine_info()
    lines = [
        f"- **Command:** `{invoked}`; source {source_revision()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"- **Machine:** {m['cpus']} CPUs ({m['cpu']}), {m['memory']}, {m['os']}, {m['python']}.",
        "",
    ]
    if play:
        lines += [
            f"Players: {args.players} bots on 4 arena servers (2 hosts), sessions of "
            f"{args.session_min:g}-{args.session_max:g} s, bleed-off/drain deadline "
            f"{args.drain_deadline:g} s; forced is the baseline. A game session that moves "
            "carries on elsewhere and is counted once in completed; share moved = moved / "
            "(completed + dropped): for bleed-off, the players told to leave before the deadline.",
            "",
            markdown_table(
                [
                    "method",
                    "job",
                    "job s",
                    "sessions",
                    "completed",
                    "moved on notice",
                    "share moved",
                    "dropped without notice",
                ],
                [
                    [
                        r.method,
                        r.status,
                        f"{r.job_s:.1f}",
                        r.sessions,
                        r.completed,
                        r.moved,
                        f"{r.moved / max(1, r.completed + r.dropped):.0%}",
                        r.dropped,
                    ]
                    for r in play
                ],
            ),
            "",
        ]
    if scale:
        lines += [
            f"Scale: {scale[0].instances:,} simulated instances over {scale[0].hosts} hosts, "
            "the control plane on each database in turn "
            "(one process speaking the agent protocol; every change takes effect at once; each "
            "host syncs at the interval the control plane asks and at once after a change; no "
            "game servers), with Server Allocate requests arriving at "
            f"{args.alloc_rate:g}/s for the whole of each job (a new player each, sessions "
            "never end; open loop from a separate process"
            + (
                "; on PostgreSQL they go to a second control-plane replica beside the "
                "leader, which runs the job and answers the hosts, and CPU seconds are both "
                "processes'"
                if args.alloc_replica
                else ""
            )
            + "). Per 1,000 instances: wall "
            "seconds and control-plane CPU seconds (allocations included), and the job's own "
            "CPU (less what the fleet at rest costs over as long, with the same allocation "
            f"load, measured for {args.rest_s:g} s before the jobs); the "
            "median sync interval the control plane asked for, how many syncs were quiet (no "
            "change either way: answered from one read), sync round trips (median and "
            "99th percentile), and the longest a host went without an answered sync (a host "
            "is lost after 10 s without a sync arriving); how many instances run the new "
            "build once the fleet settled (all of them, if none was lost or run twice); the "
            "allocations answered 201, their latency from when each was due, and any other "
            "answers.",
            "",
            markdown_table(
                [
                    "database",
                    "method",
                    "job",
                    "wall s",
                    "CPU s",
                    "wall s / 1k",
                    "CPU s / 1k",
                    "job's own CPU s / 1k",
                    "host syncs",
                    "quiet",
                    "sync interval s",
                    "sync p50 / p99 ms",
                    "longest sync gap s",
                    "on new build",
                    "allocations ok / sent",
                    "alloc p50 / p99 ms",
                    "other answers",
                ],
                [
                    [
                        r.database,
                        r.method,
                        r.status,
                        f"{r.wall_s:.1f}",
                        f"{r.cpu_s:.1f}",
                        f"{r.wall_s * 1000 / r.instances:.2f}",
                        f"{r.cpu_s * 1000 / r.instances:.2f}",
                        f"{(r.cpu_s - r.at_rest_cpu_s) * 1000 / r.instances:.2f}",
                        r.syncs,
                        r.quiet,
                        f"{r.interval_s:.1f}",
                        f"{r.sync_p50_s * 1000:.0f} / {r.sync_p99_s * 1000:.0f}",
                        f"{r.longest_gap_s:.1f}",
                        f"{r.moved:,} of {r.instances:,}",
                        *_alloc_cells(r.allocations),
                    ]
                    for r in scale
                ],
            ),
        ]
    return "\n".join(lines) + "\n"


def _alloc_cells(a: AllocLoad | None) -> list[str]:
    if a is None:
        return ["-", "-", "-"]
    return [f"{a.ok:,} / {a.sent:,}", f"{a.p50_ms:.0f} / {a.p99_ms:.0f}", a.errors]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    p.add_argument("--scale-size", type=int, default=10000, help="instances (0: skip)")
    p.add_argument("--hosts", type=int, default=100, help="simulated hosts")
    p.add_argument("--players", type=int, default=12, help="bots (0: skip the players part)")
    p.add_argument("--play-s", type=float, default=60, help="seconds the bots play per method")
    p.add_argument("--session-min", type=float, default=5)
    p.add_argument("--session-max", type=float, default=40)
    p.add_argument("--drain-deadline", type=float, default=20)
    p.add_argument("--timeout", type=float, default=1800, help="per scale job, seconds")
    p.add_argument(
        "--alloc-rate", type=float, default=500, help="allocations per second during each job"
    )
    p.add_argument("--rest-s", type=float, default=20, help="seconds the fleet at rest is measured")
    p.add_argument("--databases", default="sqlite,postgres", help="sqlite and/or postgres")
    p.add_argument("--pg-url", default=PG_BASE, help="PostgreSQL database for the schemas")
    p.add_argument(
        "--alloc-replica",
        action="store_true",
        help="on PostgreSQL, a second control-plane replica answers the allocations",
    )
    p.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    args.database_list = [d.strip() for d in args.databases.split(",") if d.strip()]
    if not args.database_list or not set(args.database_list) <= {"sqlite", "postgres"}:
        p.error("--databases takes sqlite and/or postgres")
    return args


def main(argv: Sequence[str] | None = None, *, invoked_as: str | None = None) -> int:
    args = parse_args(argv)
    invoked = invoked_as or " ".join(["python", "bench/patchjobs.py", *(argv or sys.argv[1:])])
    play = play_runs(args) if args.players > 0 else []
    scale = scale_runs(args) if args.scale_size > 0 else []
    body = report_md(play, scale, args, invoked)
    write_section(args.out, SECTION, "### Patch jobs (`bench/patchjobs.py`)\n\n" + body)
    log(body)
    return 0


if __name__ == "__main__":
    clean_up_on_signals()
    sys.exit(main())
