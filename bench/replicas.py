"""Several control-plane replicas on one PostgreSQL: how fast the lead moves, what a
replica's death costs allocations, how allocations scale with replicas, and pushes into
a content bucket against the local disk.

Every part runs real ``changeover server`` processes on loopback, on a fresh schema of the
machine's PostgreSQL, sharing one data directory:

1. **Failover** (three replicas): ``--kills`` times, the leader is killed (SIGKILL; it is
   started again afterwards), and ``--kills`` times frozen (SIGSTOP, as a machine that
   stops answering; SIGCONT afterwards). The time runs from the signal to the first
   ``/readyz`` of another replica saying it leads, polled every 10 ms. A killed leader on
   the same machine is found dead at once (its process is gone); a frozen one only once
   its lease (``CHANGEOVER_LEADER_LEASE_S``, 5 s) runs out, which is what a dead machine
   costs.
2. **Allocations around a kill** (three replicas behind HAProxy with
   ``deploy/haproxy.cfg``; a fleet of ``--instances`` simulated instances): allocations
   at ``--rate`` per second, open loop, through the balancer, for ``--window`` seconds;
   a follower is killed a third of the way in, the leader two thirds. Errors (any answer
   but 201, or none) and the p99 latency in the second after each kill and elsewhere.
3. **Scaling**: allocations in a closed loop (``--concurrency`` connections, split over
   one load generator per replica, straight to the replicas) with 1, 2 and 3 replicas
   serving; allocations per second, and each replica's CPU.
4. **Push**: a generated build of ``--push-mb`` MB (incompressible files of 4 MB) pushed
   with the CLI (``push --wait``) to a server on the local disk and to one whose content
   lives in a bucket (moto's S3 server on loopback, as in the tests).

Run ``python bench/replicas.py --help``; ``make bench`` runs it with its defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from allocation import (
    ALLOCATION_BODY,
    LoadResult,
    LoadSpec,
    SimHosts,
    _proc_cpu_s,
    analyze,
    keep_alive,
    make_fleet,
    percentile,
    release_build,
)
from common import (
    BENCHMARKS_MD,
    PG_BASE,
    REPO,
    BenchError,
    changeover_bin,
    clean_up_on_signals,
    database,
    free_port,
    log,
    machine_info,
    make_admin_token,
    markdown_table,
    median,
    run_cli,
    source_revision,
    write_section,
)

SECTION = "replicas"
QUICK_ARGS = ["--kills", "2", "--window", "6", "--duration", "3", "--push-mb", "20"]
REPLICA_ENV = {"CHANGEOVER_JOB_POLL_S": "0.2"}


class Replica:
    """One ``changeover server`` process of the set, on its own port, restartable."""

    def __init__(self, n: int, data: Path, env: dict[str, str]) -> None:
        self.n, self.data, self.env = n, data, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log_file = open(self.data / f"replica-{self.n}.log", "ab")  # noqa: SIM115 (the child's)
        self.proc = subprocess.Popen(
            [changeover_bin(), "server", "--data", str(self.data), "--port", str(self.port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **REPLICA_ENV, **self.env},
            start_new_session=True,
        )
        log_file.close()
        _until(lambda: self.role() is not None, 90, f"replica {self.n} to answer")

    def role(self) -> dict[str, Any] | None:
        try:
            r = httpx.get(self.url + "/readyz", timeout=2)
        except httpx.TransportError:
            return None
        return dict(r.json()["replica"]) if r.status_code == 200 else None

    def leads(self) -> bool:
        role = self.role()
        return bool(role and role["leader"])

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _until(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.01)  # a probe interval
    return value


@contextlib.contextmanager
def replica_set(
    count: int, data: Path, db_url: str, extra: dict[str, str] | None = None
) -> Iterator[list[Replica]]:
    env = {"CHANGEOVER_DATABASE_URL": db_url, **(extra or {})}
    replicas = [Replica(n, data, env) for n in range(count)]
    try:
        replicas[0].start()  # the first makes the keys and leads
        _until(replicas[0].leads, 60, "the first replica to lead")
        for r in replicas[1:]:
            r.start()
        yield replicas
    finally:
        for r in replicas:
            r.stop()


# -- 1. failover -------------------------------------------------------------------------


def failover(replicas: list[Replica], kills: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"SIGKILL": [], "SIGSTOP": []}
    for sig in (signal.SIGKILL, signal.SIGSTOP):
        for _ in range(kills):
            leader = _until(lambda: next((r for r in replicas if r.leads()), None), 60, "a leader")
            others = [r for r in replicas if r is not leader]
            started = time.monotonic()
            leader.signal(sig)
            _until(lambda o=others: any(r.leads() for r in o), 60, "another replica to lead")
            times[sig.name].append(time.monotonic() - started)
            if sig == signal.SIGKILL:
                leader.start()
            else:
                leader.signal(signal.SIGCONT)
                _until(lambda r=leader: r.role() is not None, 60, "the frozen one to answer")
            log(f"[replicas] {sig.name}: lead moved in {times[sig.name][-1]:.2f} s")
    return times


# -- fleets and loads --------------------------------------------------------------------


def make_allocation_fleet(server: str, data: Path, token: str, instances: int, db_url: str) -> None:
    hosts = 10
    names = [f"h{i:03d}" for i in range(hosts)]
    env = {"CHANGEOVER_URL": server, "CHANGEOVER_TOKEN": token}
    release_build(env, data)
    with httpx.Client(
        base_url=server + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=300
    ) as admin:
        agent_token = make_fleet(admin, names, instances // hosts, capacity=1000)
    with httpx.Client(
        base_url=server + "/api/v1",
        headers={"Authorization": f"Bearer {agent_token}"},
        timeout=300,
    ) as agents:
        SimHosts(agents, names, instances // hosts).start()
    analyze(db_url)


@contextlib.contextmanager
def heartbeats(db_url: str) -> Iterator[None]:
    """The simulated hosts' heartbeat, every 2 s, for a load longer than the 10 s after
    which a silent host takes no players."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            keep_alive(db_url)
            stop.wait(2.0)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_load(spec: LoadSpec) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="changeover-loadgen-") as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "allocation.py"),
                "_loadgen",
                json.dumps(asdict(spec)),
                str(out),
            ],
            capture_output=True,
            check=False,
            timeout=spec.warmup_s + spec.duration_s + 120,
        )
        if proc.returncode != 0 or not out.exists():
            raise BenchError(f"the load generator failed:\n{proc.stderr.decode(errors='replace')}")
        raw = json.loads(out.read_text())
    raw["samples"] = [tuple(s) for s in raw.get("samples", [])]
    return LoadResult(**raw)


def _allocate(url: str, token: str, tag: str, **kw: Any) -> LoadSpec:
    return LoadSpec(
        url=url,
        method="POST",
        path="/api/v1/allocations",
        expect=201,
        body_template=ALLOCATION_BODY.replace("player-", f"{tag}-"),
        token=token,
        **kw,
    )


# -- 2. allocations around kills -----------------------------------------------------------


@contextlib.contextmanager
def balancer(replicas: Sequence[Replica], data: Path) -> Iterator[str]:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = free_port()
    env = {**os.environ, "CHANGEOVER_LISTEN": f"127.0.0.1:{port}"}
    env.update({f"CHANGEOVER_REPLICA_{r.n + 1}": f"127.0.0.1:{r.port}" for r in replicas})
    argv = [haproxy, "-db", "-f", str(REPO / "deploy" / "haproxy.cfg")]
    url = f"http://127.0.0.1:{port}"
    with _serving(argv, env, data / "haproxy.log", lambda: _answers(url), "the balancer"):
        yield url


@contextlib.contextmanager
def _serving(
    argv: list[str], env: dict[str, str] | None, log_path: Path, up: Any, what: str
) -> Iterator[None]:
    """A server process (the balancer, the S3 server) for the length of the block, once
    ``up()`` says it answers."""
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _until(up, 60, what)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def around_kills(
    replicas: list[Replica], lb: str, token: str, rate: float, window_s: float
) -> dict[str, Any]:
    spec = _allocate(
        lb,
        token,
        "ha",
        concurrency=64,
        warmup_s=0.0,
        duration_s=window_s,
        rate=rate,
        samples=True,
    )
    follower = next(r for r in replicas if not r.leads())
    leader = next(r for r in replicas if r.leads())
    kills: list[tuple[str, float]] = []  # (who, wall-clock time of the kill)
    started = time.monotonic()

    def killer() -> None:
        for who, replica, at in (
            ("follower killed", follower, 1 / 3),
            ("leader killed", leader, 2 / 3),
        ):
            time.sleep(max(0.0, started + window_s * at - time.monotonic()))
            kills.append((who, time.time()))
            replica.signal(signal.SIGKILL)

    thread = threading.Thread(target=killer)
    thread.start()
    result = run_load(spec)
    thread.join()
    # On the load generator's clock: seconds after its start.
    kills = [(who, at - result.started_at) for who, at in kills]
    out: dict[str, Any] = {"sent": len(result.samples), "kills": kills}
    log(f"[replicas] kills at {kills}; error samples: {result.error_samples[:3]}")

    def near(at: float, sample: tuple[float, float, int]) -> bool:
        # Requests are timed from when they were due: one in flight at the kill was due
        # up to its latency before it.
        return at - NEAR_S <= sample[0] < at + NEAR_S

    for who, at in kills:
        out[who] = _window([s for s in result.samples if near(at, s)], at)
    far = [s for s in result.samples if not any(near(at, s) for _, at in kills)]
    out["elsewhere"] = _window(far, None)
    return out


NEAR_S = 1.0
"""The requests due within this of a kill count as around it."""


def _window(samples: Sequence[tuple[float, float, int]], at: float | None) -> dict[str, Any]:
    """Requests, errors (no answer or not 201), the p99 of the answered, and when the
    errors came: from the first one's due time to the last one's answer, around ``at``."""
    answered = [lat for _, lat, status in samples if status == 201]
    failed = [(due, lat) for due, lat, status in samples if status != 201]
    span = "-"
    if failed and at is not None:
        first = min(due for due, _ in failed) - at
        last = max(due + lat / 1000 for due, lat in failed) - at
        span = f"{first:+.2f} to {last:+.2f} s"
    return {
        "requests": len(samples),
        "errors": len(failed),
        "p99_ms": percentile(answered, 99) if answered else 0.0,
        "span": span,
    }


# -- 3. scaling ----------------------------------------------------------------------------


def scaling(
    replicas: list[Replica], token: str, concurrency: int, duration_s: float, db_url: str
) -> list[dict[str, Any]]:
    rows = []
    for n in (1, 2, 3):
        serving = replicas[:n]
        specs = [
            _allocate(
                r.url,
                token,
                f"s{n}r{r.n}",
                concurrency=max(1, concurrency // n),
                warmup_s=1.0,
                duration_s=duration_s,
            )
            for r in serving
        ]
        keep_alive(db_url)
        cpu0 = {r.n: _proc_cpu_s(r.proc.pid if r.proc else None) for r in replicas}
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(run_load, specs))
        cpu = {r.n: _proc_cpu_s(r.proc.pid if r.proc else None) - cpu0[r.n] for r in replicas}
        per_s = sum(res.per_s for res in results)
        errors = sum(res.measured_errors + res.transport_errors for res in results)
        rows.append(
            {
                "replicas": n,
                "per_s": per_s,
                "errors": errors,
                "cpu_s": [round(cpu[r.n], 2) for r in serving],
                "p99_ms": percentile([x for res in results for x in res.latencies_ms], 99),
            }
        )
        log(f"[replicas] {n} serving: {per_s:.0f} allocations/s, CPU {rows[-1]['cpu_s']}")
    return rows


# -- 4. push -------------------------------------------------------------------------------


def make_build(root: Path, megabytes: int) -> Path:
    build = root / "push-build"
    build.mkdir(parents=True, exist_ok=True)
    for i in range(max(1, megabytes // 4)):
        (build / f"data{i:03d}.bin").write_bytes(os.urandom(4_000_000))
    return build


@contextlib.contextmanager
def s3_server(data: Path) -> Iterator[str]:
    exe = Path(sys.executable).with_name("moto_server")
    port = free_port()
    argv = [str(exe), "-H", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    with _serving(argv, None, data / "moto.log", lambda: _s3_up(url), "the S3 server"):
        yield url


def _s3_up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.TransportError:
        return False


def push_time(data: Path, build: Path, env: dict[str, str]) -> float:
    server_data = data / f"push-{uuid.uuid4().hex[:6]}"
    server_data.mkdir()
    token = make_admin_token(server_data, env)
    replica = Replica(0, server_data, env)
    replica.start()
    try:
        cli_env = {**env, "CHANGEOVER_URL": replica.url, "CHANGEOVER_TOKEN": token}
        run_cli("image", "create", "pushed", env=cli_env)
        started = time.monotonic()
        out = run_cli(
            "push",
            str(build),
            "--image",
            "pushed",
            "--label",
            "1.0",
            "--wait",
            "--json",
            env=cli_env,
        )
        took = time.monotonic() - started
        if json.loads(out.stdout).get("status") != 5:
            raise BenchError(f"the push did not complete: {out.stdout[:500]}")
        return took
    finally:
        replica.stop()


def pushes(data: Path, megabytes: int) -> dict[str, float]:
    import boto3

    build = make_build(data, megabytes)
    nbytes = sum(p.stat().st_size for p in build.iterdir())
    creds = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    local = push_time(data, build, {})
    with s3_server(data) as endpoint:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            region_name=creds["AWS_DEFAULT_REGION"],
        ).create_bucket(Bucket="bench")
        env = {
            "CHANGEOVER_CONTENT_BUCKET": "s3://bench/content",
            "CHANGEOVER_S3_ENDPOINT": endpoint,
            **creds,
        }
        bucket = push_time(data, build, env)
    log(f"[replicas] push of {nbytes / 1e6:.0f} MB: local {local:.1f} s, bucket {bucket:.1f} s")
    return {"mb": nbytes / 1e6, "local_s": local, "bucket_s": bucket}


# -- the run and its report ----------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="co-bench-ha-")))
        _, db_url = stack.enter_context(database("postgres", data / "db", args.pg_url))
        replicas = stack.enter_context(replica_set(3, data, db_url))
        out["failover"] = failover(replicas, args.kills)
        token = make_admin_token(data, {"CHANGEOVER_DATABASE_URL": db_url})
        make_allocation_fleet(replicas[0].url, data, token, args.instances, db_url)
        stack.enter_context(heartbeats(db_url))
        out["scaling"] = scaling(replicas, token, args.concurrency, args.duration, db_url)
        lb = stack.enter_context(balancer(replicas, data))
        out["kills"] = around_kills(replicas, lb, token, args.rate, args.window)
        out["push"] = pushes(data, args.push_mb)
    return out


def report(results: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    kill, stop = results["failover"]["SIGKILL"], results["failover"]["SIGSTOP"]
    failover_rows = [
        [
            how,
            str(len(times)),
            f"{median(times):.2f}",
            f"{percentile(times, 99):.2f}",
            f"{max(times):.2f}",
        ]
        for how, times in (
            ("leader killed (SIGKILL; its process gone)", kill),
            ("leader frozen (SIGSTOP; the lease must run out)", stop),
        )
    ]
    k = results["kills"]
    kill_rows = [
        [
            where,
            str(k[where]["requests"]),
            str(k[where]["errors"]),
            k[where]["span"],
            f"{k[where]['p99_ms']:.1f}",
        ]
        for where in ("follower killed", "leader killed", "elsewhere")
    ]
    scale_rows = [
        [
            str(row["replicas"]),
            f"{row['per_s']:.0f}",
            str(row["errors"]),
            f"{row['p99_ms']:.1f}",
            ", ".join(f"{c:.1f}" for c in row["cpu_s"]),
        ]
        for row in results["scaling"]
    ]
    push = results["push"]
    push_rows = [
        ["local disk", f"{push['local_s']:.1f}", f"{push['mb'] / push['local_s']:.1f}"],
        ["S3 bucket (moto)", f"{push['bucket_s']:.1f}", f"{push['mb'] / push['bucket_s']:.1f}"],
    ]
    info = machine_info()
    return "\n".join(
        [
            "### Control-plane replicas (`bench/replicas.py`)",
            "",
            f"Command: `{command}` (source {source_revision()}, {info.get('cpus', '')} CPUs"
            f" {info.get('cpu', '')}, {info.get('date', '')}).",
            "",
            "Leader failover (from the signal to another replica's `/readyz` saying it leads;"
            " `CHANGEOVER_LEADER_LEASE_S` 5):",
            "",
            markdown_table(["how", "times", "p50 s", "p99 s", "max s"], failover_rows),
            "",
            f"Allocations at {args.rate:.0f}/s through HAProxy to three replicas, a follower"
            f" then the leader killed (SIGKILL) at a third and two thirds of {args.window:.0f}"
            " s: the requests due within a second of each kill, and the rest. An error is a"
            " request that got no answer or not 201 (the ones in flight on the killed"
            " replica: the balancer cannot know whether they were done, so it does not"
            " resend them):",
            "",
            markdown_table(
                ["when", "requests", "errors", "errors from/to (vs the kill)", "p99 ms"],
                kill_rows,
            ),
            "",
            f"Allocations/s with 1-3 replicas serving ({args.concurrency} connections"
            f" split over one load generator per replica, {args.duration:.0f} s, on one"
            " 2-core machine shared with PostgreSQL and the generators); CPU seconds of"
            " each serving replica:",
            "",
            markdown_table(["replicas", "allocations/s", "errors", "p99 ms", "CPU s"], scale_rows),
            "",
            f"Push of {push['mb']:.0f} MB (incompressible 4 MB files, `push --wait`):",
            "",
            markdown_table(["content store", "seconds", "MB/s"], push_rows),
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--kills", type=int, default=20, help="kills and freezes of the leader")
    p.add_argument("--instances", type=int, default=1000, help="simulated instances")
    p.add_argument("--rate", type=float, default=1000.0, help="allocations/s around kills")
    p.add_argument("--window", type=float, default=9.0, help="seconds of the kill load")
    p.add_argument("--concurrency", type=int, default=32, help="connections when scaling")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per scaling load")
    p.add_argument("--push-mb", type=int, default=200, help="size of the pushed build")
    p.add_argument("--pg-url", default=PG_BASE, help="PostgreSQL database for the schemas")
    p.add_argument("--out", type=Path, default=BENCHMARKS_MD, help="markdown file to update")
    p.add_argument("--no-write", action="store_true", help="print only; leave --out alone")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, invoked_as: str | None = None) -> int:
    args = parse_args(argv)
    clean_up_on_signals()
    command = invoked_as or "python bench/replicas.py " + " ".join(argv or sys.argv[1:])
    try:
        results = run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    body = report(results, args, command.strip())
    print(body)
    if not args.no_write:
        write_section(args.out, SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
