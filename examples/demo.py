"""``make demo``: a zero-downtime release of the sample game, end to end, on embedded defaults.

Everything is real and runs on this machine: a control plane on SQLite in a fresh
directory, two host agents in two regions (separate processes), the sample arena game
(examples/arena, build 1 then build 2) and ``changeover bots`` playing it. The release
engineer's commands are printed before they run, so the output doubles as a tutorial:

1. push two builds, analyse what changed, accept each as a version;
2. describe how to run them (profiles) and where (a fleet over hosts h1 in eu and h2 in
   us); start the two agents, which stage build 1 and start its servers;
3. start the player simulator;
4. run a bleed-off patch job from build 1 to build 2 with a short deadline: new players go
   to build 2 at once, players on build 1 finish their games or are told to move before
   the deadline;
5. print a summary: sessions completed, moved and dropped, bytes staged per host, time.

The dashboard URL and an admin token are printed at the start; the control plane stays up
for ``--linger`` seconds at the end so it can be looked at.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
ARENA = ROOT / "examples" / "arena"
CLI = [sys.executable, "-m", "changeover.cli"]
HOSTS = (("h1", "eu"), ("h2", "us"))
PER_HOST = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def game_ports(n: int = 21) -> str:
    """A range of ports for one agent's game servers, below the kernel's ephemeral range:
    a port there is never taken by an outgoing connection or a ``bind(0)`` between the
    agent's check that it is free and its game's bind."""
    while True:
        base = random.randrange(20000, 32768 - n)
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return f"{base}-{base + n - 1}"


def run(*args: str, env: dict[str, str], capture: bool = False) -> str:
    """Run ``changeover ARGS`` as a user would, printing the command first."""
    print(f"\n$ changeover {shlex.join(args)}", flush=True)
    result = subprocess.run([*CLI, *args], env=env, text=True, capture_output=capture, check=False)
    if capture:
        print(result.stderr, end="", file=sys.stderr)
    if result.returncode != 0:
        raise SystemExit(
            f"demo step failed (exit {result.returncode}): changeover {' '.join(args)}"
        )
    return result.stdout if capture else ""


def wait_until(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise SystemExit(f"demo: timed out after {timeout_s:g} s waiting for {what}")


def release(env: dict[str, str], build: str, label: str) -> None:
    pushed = json.loads(
        run(
            "push",
            str(ARENA / build),
            "--image",
            "arena",
            "--label",
            label,
            "--wait",
            "--json",
            env=env,
            capture=True,
        )
    )
    diff = json.loads(
        run(
            "diff",
            "create",
            "--image",
            "arena",
            "--update",
            str(pushed["id"]),
            "--wait",
            "--json",
            env=env,
            capture=True,
        )
    )
    run("diff", "accept", str(diff["id"]), "--wait", env=env)


def setup_fleet(env: dict[str, str]) -> None:
    run("env", "create", "production", env=env)
    for _, region in HOSTS:
        run("region", "create", region, env=env)
    run("app", "create", "arena", "--type", "game", env=env)
    for label in ("1.0.0", "1.1.0"):
        run(
            "profile",
            "create",
            f"arena-{label}",
            "--app",
            "arena",
            "--image",
            "arena",
            "--version",
            label,
            "--command",
            f"{sys.executable} arena_server.py",
            "--capacity",
            "4",
            "--stop-timeout",
            "10",
            env=env,
        )
    hosts = [a for name, _ in HOSTS for a in ("--host", name)]
    run(
        "fleet",
        "create",
        "arena",
        "--app",
        "arena",
        "--env",
        "production",
        *hosts,
        "--per-host",
        str(PER_HOST),
        "--profile",
        "arena-1.0.0",
        env=env,
    )


def start_agent(
    work: Path, url: str, token: str, name: str, region: str
) -> subprocess.Popen[bytes]:
    print(f"\n$ changeover agent --name {name} --region {region} --work {work / name}  &")
    log = open(work / f"agent-{name}.log", "ab")  # noqa: SIM115 (the child owns it)
    try:
        return subprocess.Popen(
            [
                *CLI,
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
                game_ports(),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("CHANGEOVER_")},
        )
    finally:
        log.close()


def instances(c: httpx.Client) -> list[dict[str, Any]]:
    r = c.get("/api/v1/fleets/arena/instances")
    r.raise_for_status()
    return list(r.json())


def staged_bytes(work: Path) -> dict[str, int]:
    """Bytes each agent holds in its object store: what it downloaded to stage builds."""
    out = {}
    for name, _ in HOSTS:
        objects = work / name / "objects"
        out[name] = sum(p.stat().st_size for p in objects.rglob("*") if p.is_file())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=12, help="simulated players")
    parser.add_argument(
        "--play-s", type=int, default=90, help="seconds the players play (outlast the job)"
    )
    parser.add_argument("--deadline", default="40s", help="bleed-off deadline")
    parser.add_argument("--linger", type=float, default=0, help="keep serving N s at the end")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="changeover-demo-"))
    data = work / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEOVER_")}
    made = subprocess.run(
        [*CLI, "token", "create", "--scope", "admin", "--data", str(data), "--json"],
        env=base_env,
        capture_output=True,
        text=True,
        check=True,
    )
    token = json.loads(made.stdout)["token"]
    print(f"== Changeover demo: control plane at {url}, data in {data}")
    print(f"== Dashboard: {url}/ui  (log in with the admin token {token})")
    server = subprocess.Popen(
        [*CLI, "server", "--data", str(data), "--port", str(port)],
        env=base_env,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "server.log", "ab"),  # noqa: SIM115 (the child owns it)
    )
    env = {**base_env, "CHANGEOVER_URL": url, "CHANGEOVER_TOKEN": token, "COLUMNS": "100"}
    procs: list[subprocess.Popen[Any]] = []
    started = time.monotonic()
    c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    try:
        wait_until("the control plane", lambda: _healthy(c, server), 30)
        play(c, env, work, url, args, started, procs)
    finally:
        c.close()
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        server.terminate()
        server.wait(timeout=20)
        stop_games(work)
        shutil.rmtree(work, ignore_errors=True)


def stop_games(work: Path) -> None:
    """Kill the game servers the agents ran: they outlive their agent by design (a restarted
    agent adopts them), so stopping the agents leaves them playing to nobody."""
    for name, _ in HOSTS:
        for record in (work / name / "instances").glob("*.json"):
            pid = json.loads(record.read_text()).get("pid")
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


def play(
    c: httpx.Client,
    env: dict[str, str],
    work: Path,
    url: str,
    args: argparse.Namespace,
    started: float,
    procs: list[subprocess.Popen[Any]],
) -> None:
    """Steps 1 to 5; every process it starts goes into ``procs``, for ``main`` to stop."""
    print("\n== 1. Two builds of the game become versions 1.0.0 and 1.1.0")
    run("image", "create", "arena", env=env)
    release(env, "build-v1", "1.0.0")
    release(env, "build-v2", "1.1.0")
    run("version", "list", "--image", "arena", env=env)

    print("\n== 2. A fleet of two hosts in two regions runs version 1.0.0")
    setup_fleet(env)
    agent_token = json.loads(
        run("token", "create", "--scope", "agent", "--json", env=env, capture=True)
    )["token"]
    procs += [start_agent(work, url, agent_token, n, r) for n, r in HOSTS]
    total = PER_HOST * len(HOSTS)
    wait_until(
        f"{total} ready servers",
        lambda: [i["state"] for i in instances(c)] == ["ready"] * total,
        120,
    )
    run("fleet", "instances", "arena", env=env)

    print(f"\n== 3. {args.players} simulated players start playing, half near each host")
    bots = []
    for i, (_, region) in enumerate(HOSTS):
        share = args.players // len(HOSTS) + (i < args.players % len(HOSTS))
        cmd = ["bots", "--fleet", "arena", "--region", region, "--players", str(share)]
        print(f"$ changeover {shlex.join(cmd)} --duration {args.play_s} &")
        bots.append(
            subprocess.Popen(
                [
                    *CLI,
                    *cmd,
                    "--duration",
                    str(args.play_s),
                    *("--session-min", "10", "--session-max", "120"),
                    "--seed",
                    str(7 + i),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
    procs.extend(bots)
    wait_until("players on both hosts", lambda: _busy_hosts(c) == {n for n, _ in HOSTS}, 60)

    print("\n== 4. A bleed-off patch job moves the fleet to 1.1.0 without dropping anyone")
    run(
        "patchjob",
        "create",
        "--name",
        "Arena 1.1.0",
        "--environment",
        "production",
        "--application",
        "arena",
        "--method",
        "bleed-off",
        "--build",
        "arena-1.0.0=arena-1.1.0",
        "--fleet",
        "arena",
        "--drain-deadline",
        args.deadline,
        "--notice-before",
        "15s",
        "--wait",
        env=env,
    )
    run("fleet", "instances", "arena", env=env)

    reports = [json.loads(b.communicate(timeout=180)[0]) for b in bots]
    report = {
        k: sum(r[k] for r in reports) for k in ("completed", "moved", "dropped_without_notice")
    }
    staged = staged_bytes(work)
    print("\n== 5. Summary")
    print(f"sessions completed:          {report['completed']}")
    print(f"sessions moved after notice: {report['moved']}")
    print(f"sessions dropped:            {report['dropped_without_notice']}")
    for name, size in staged.items():
        print(f"bytes staged on {name}:        {size:,}")
    print(f"time:                        {time.monotonic() - started:.1f} s")
    if args.linger > 0:
        print(f"\n== The dashboard stays at {url}/ui for {args.linger:g} s")
        time.sleep(args.linger)
    if report["dropped_without_notice"]:
        raise SystemExit("demo: sessions were dropped without notice")


def _healthy(c: httpx.Client, server: subprocess.Popen[bytes]) -> bool:
    if server.poll() is not None:
        raise SystemExit("the control plane exited during start-up")
    try:
        return c.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def _busy_hosts(c: httpx.Client) -> set[str]:
    return {i["host"] for i in instances(c) if i["players"] > 0}


if __name__ == "__main__":
    main()
