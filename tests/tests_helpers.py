"""Helpers for tests that speak HTTP to a real server (imported as ``tests_helpers``)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

CLI = [sys.executable, "-m", "changeover.cli"]


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


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


def build_manifest(files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "files": [
            {"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest(), "mode": 0o644}
            for p, b in sorted(files.items())
        ]
    }


def push_files(c: httpx.Client, image: str, files: dict[str, bytes], label: str | None) -> Any:
    """Create an update, upload what is missing, complete it; returns the created update."""
    r = c.post(f"/images/{image}/updates", json={"label": label, "manifest": build_manifest(files)})
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


def wait_job(c: httpx.Client, path: str, timeout_s: float = 60) -> Any:
    def done() -> Any:
        job = c.get(path).json()
        return job if job["status"] in (5, 6) else None

    return wait_for(done, timeout_s, f"job {path} to finish")
