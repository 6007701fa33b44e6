"""Helpers for tests that speak HTTP to a real server (imported as ``tests_helpers``)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CLI = [sys.executable, "-m", "changeover.cli"]


def wait_for(
    condition: Callable[[], Any],
    timeout_s: float = 30.0,
    what: str = "condition",
    max_delay_s: float = 0.2,
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``.
    The polls come closer together than ``max_delay_s`` (they start at 10 ms and back off),
    so a condition that holds only briefly needs a small one."""
    deadline = time.monotonic() + timeout_s
    delay = min(0.01, max_delay_s)
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, max_delay_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(
    *args: str, env: dict[str, str] | None = None, input_: str | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [*CLI, *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        input=input_,
        check=False,
    )


def build_manifest(files: dict[str, bytes], executable: Collection[str] = ()) -> dict[str, Any]:
    return {
        "files": [
            {
                "path": p,
                "size": len(b),
                "sha256": hashlib.sha256(b).hexdigest(),
                "mode": 0o755 if p in executable else 0o644,
            }
            for p, b in sorted(files.items())
        ]
    }


def push_files(
    c: httpx.Client,
    image: str,
    files: dict[str, bytes],
    label: str | None,
    executable: Collection[str] = (),
) -> Any:
    """Create an update, upload what is missing, complete it; returns the created update."""
    manifest = build_manifest(files, executable)
    r = c.post(f"/images/{image}/updates", json={"label": label, "manifest": manifest})
    assert r.status_code == 201, r.text
    upd = r.json()
    by_sha = {hashlib.sha256(b).hexdigest(): b for b in files.values()}
    for m in upd["missing"]:
        body = by_sha[m["sha256"]]
        put = c.put(
            f"/uploads/{m['sha256']}", params={"offset": 0, "size": len(body)}, content=body
        )
        assert put.status_code == 200, put.text
    assert c.post(f"/updates/{upd['id']}/complete").status_code == 200
    return upd


def release(c: httpx.Client, image: str, files: dict[str, bytes], label: str | None) -> Any:
    """Push, analyse and accept a build through the API; returns the completed version."""
    upd = push_files(c, image, files, label)
    assert wait_job(c, f"/updates/{upd['id']}")["status_name"] == "Completed"
    d = c.post(f"/images/{image}/diffs", json={"update_id": upd["id"]})
    assert d.status_code == 201, d.text
    assert wait_job(c, f"/diffs/{d.json()['id']}")["status"] == 5
    v = c.post(f"/diffs/{d.json()['id']}/accept")
    assert v.status_code == 201, v.text
    return wait_job(c, f"/versions/{v.json()['id']}")


def wait_job(c: httpx.Client, path: str, timeout_s: float = 60) -> Any:
    def done() -> Any:
        job = c.get(path).json()
        return job if job["status"] in (5, 6) else None

    return wait_for(done, timeout_s, f"job {path} to finish")


@dataclass
class Server:
    url: str
    data: Path
    database_url: str | None
    admin_token: str
    process: subprocess.Popen[bytes]
    log: Path
    _clients: list[httpx.Client] = field(default_factory=list)

    def env(self, token: str | None = None) -> dict[str, str]:
        return {
            "CHANGEOVER_URL": self.url,
            "CHANGEOVER_TOKEN": self.admin_token if token is None else token,
        }

    def cli(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env(token))

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        c = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=60)
        self._clients.append(c)
        return c

    def token(self, scope: str, **extra: Any) -> str:
        r = self.client().post("/tokens", json={"scope": scope, "name": f"{scope}-test", **extra})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def close(self) -> None:
        for c in self._clients:
            c.close()


def start_server(
    data: Path,
    database_url: str | None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Server:
    """A real ``changeover server`` on ``data``; ``port`` again after a kill keeps the URL
    that agents and players already use. ``env`` adds settings for this server's process
    alone (tests never change their own environment to configure a server)."""
    db_args = ["--database", database_url] if database_url else []
    token = admin_token(data, database_url)
    port = port or free_port()
    log = data / "server.log"
    server_env = {**os.environ}
    server_env.pop("CHANGEOVER_DATABASE_URL", None)
    # Jobs made through the API wake the runner at once; the poll finds the rest (a
    # waiting job come due, one another process queued) and costs CPU every pass.
    server_env["CHANGEOVER_JOB_POLL_S"] = "0.25"
    server_env.update(env or {})
    with open(log, "ab") as out:  # a restarted server adds to its predecessor's log
        proc = subprocess.Popen(
            [*CLI, "server", "--data", str(data), "--port", str(port), *db_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server_env,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, 90, "the control plane to answer /healthz")
    except BaseException:
        proc.kill()  # never leave a server behind to slow every later test
        proc.wait()
        raise
    return Server(url, data, database_url, token, proc, log)


def admin_token(data: Path, database_url: str | None) -> str:
    """A new admin token written into the server's database, as ``changeover token create
    --scope admin --data DIR`` does (the README's first step; ``test_readme`` runs it), but
    in this process: the command's own process spent 1.6 CPU-seconds importing, once per
    server the suite starts."""
    from changeover import settings
    from changeover.control.auth.services import create_token
    from changeover.control.db import Database

    data.mkdir(parents=True, exist_ok=True)
    db = Database(settings.load(data_dir=data, database_url=database_url).db_url)
    try:
        db.migrate()
        with db.write() as session:
            _, secret = create_token(session, "admin", "admin token", None)
    finally:
        db.dispose()
    return secret


def stop_server(server: Server) -> None:
    server.close()
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
