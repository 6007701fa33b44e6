"""``make demo``: the builds flow of Changeover, end to end, on embedded defaults.

Starts a control plane on SQLite in a fresh directory, makes an admin token, and then runs
exactly the commands a release engineer would type: push two builds of the sample arena
game, analyse what changed, accept each as a version and point branches at them.
Every command is printed before it runs, so the output doubles as a tutorial.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
ARENA = ROOT / "examples" / "arena"
CLI = [sys.executable, "-m", "changeover.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str, env: dict[str, str], capture: bool = False) -> str:
    print(f"\n$ changeover {' '.join(args)}", flush=True)
    result = subprocess.run([*CLI, *args], env=env, text=True, capture_output=capture, check=False)
    if capture:  # JSON for the script; a one-line summary for the reader
        job = json.loads(result.stdout or "{}")
        if "status_name" in job:
            print(f"job {job['id']}: {job['status_name']} ({job['status']})")
        print(result.stderr, end="", file=sys.stderr)
    if result.returncode != 0:
        raise SystemExit(
            f"demo step failed (exit {result.returncode}): changeover {' '.join(args)}"
        )
    return result.stdout if capture else ""


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the control plane exited during start-up")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the control plane did not start in time")


def main() -> None:
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
    server = subprocess.Popen(
        [*CLI, "server", "--data", str(data), "--port", str(port)],
        env=base_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {**base_env, "CHANGEOVER_URL": url, "CHANGEOVER_TOKEN": token, "COLUMNS": "100"}
    started = time.monotonic()
    try:
        wait_healthy(url, server)
        run("image", "create", "arena-server", env=env)
        for build, label in (("build-v1", "1.0.0"), ("build-v2", "1.1.0")):
            pushed = json.loads(
                run(
                    "push",
                    str(ARENA / build),
                    "--image",
                    "arena-server",
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
                    "arena-server",
                    "--update",
                    str(pushed["id"]),
                    "--wait",
                    "--json",
                    env=env,
                    capture=True,
                )
            )
            run("diff", "show", str(diff["id"]), env=env)
            run("diff", "accept", str(diff["id"]), "--wait", env=env)
        run("branch", "set", "production", "--image", "arena-server", "--version", "1.0.0", env=env)
        run("branch", "set", "staging", "--image", "arena-server", "--version", "latest", env=env)
        run(
            "branch", "set", "production", "--image", "arena-server", "--version", "latest", env=env
        )
        run("version", "list", "--image", "arena-server", env=env)
        run("branch", "history", "production", "--image", "arena-server", env=env)
        print(f"\n== done in {time.monotonic() - started:.1f}s. API docs were at {url}/docs")
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
