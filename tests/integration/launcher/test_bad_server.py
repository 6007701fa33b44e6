"""A misbehaving server between the launcher and the content: 5xx, truncated bodies,
stalls, extra bytes, wrong bytes, missing files. Each ends in a retry that succeeds or a
clear error, and the install is never left half-updated."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests_helpers import run_cli

from .conftest import Published, expected, on_disk

pytestmark = pytest.mark.timeout(180)


@dataclass
class Faults:
    """What to do to blob responses: a fault name per path, used ``times`` times each."""

    kind: str | None = None
    times: int = 1
    seen: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, path: str) -> str | None:
        if self.kind is None or "/blobs/" not in path:
            return None
        with self.lock:
            n = self.seen.get(path, 0)
            self.seen[path] = n + 1
        return self.kind if n < self.times else None


@pytest.fixture
def proxy(published: Published) -> Iterator[tuple[str, Faults]]:
    faults = Faults()
    upstream = published.server.url

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:
            fault = faults.take(self.path)
            if fault == "503":
                self._send(503, b"busy")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() == "range"}
            r = httpx.get(upstream + self.path, headers=headers)
            body = r.content
            if fault == "missing":
                self._send(404, b"gone")
            elif fault == "truncate" and r.status_code == 200:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif fault == "stall" and r.status_code == 200:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:10])
                self.wfile.flush()
                time.sleep(8)  # the stall under test: longer than the client's 3 s timeout
                self.close_connection = True
            elif fault == "extra":
                self._send(r.status_code, body + b"\0" * 4096)
            elif fault == "wrong":
                self._send(r.status_code, bytes(len(body)))
            else:
                self._send(r.status_code, body, r.headers.get("content-range"))

        def _send(self, status: int, body: bytes, content_range: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if content_range:
                self.send_header("Content-Range", content_range)
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/content", faults
    finally:
        httpd.shutdown()
        httpd.server_close()


def sync(url: str, target: Path, *extra: str) -> tuple[int, dict[str, Any] | None, str]:
    r = run_cli(
        "launcher",
        "sync",
        url,
        str(target),
        "--image",
        "game",
        "--branch",
        "faulty",
        "--json",
        "--timeout",
        "3",
        *extra,
    )
    return r.returncode, json.loads(r.stdout) if r.returncode == 0 else None, r.stderr


@pytest.mark.parametrize("kind", ["503", "truncate", "stall"])
def test_transient_faults_are_retried(
    published: Published, proxy: tuple[str, Faults], tmp_path: Path, kind: str
) -> None:
    url, faults = proxy
    published.point("faulty", 2)
    faults.kind = kind
    faults.times = 2 if kind == "503" else 1
    code, report, err = sync(url, tmp_path / "game")
    assert code == 0, err
    assert on_disk(tmp_path / "game") == expected(published.versions[1])
    assert faults.seen  # the faults really happened
    if kind == "truncate":
        # Resumed by range request: the halves already received were not fetched again.
        clean = sync(published.content_url, tmp_path / "reference", "--cache", str(tmp_path / "c2"))
        assert report is not None
        assert clean[1] is not None
        assert report["downloaded_bytes"] == clean[1]["downloaded_bytes"]


@pytest.mark.parametrize(
    ("kind", "exit_code", "message"),
    [
        ("extra", 8, "sent more than"),
        ("wrong", 7, "expected sha256"),
        ("missing", 8, "is not on the server"),
    ],
)
def test_lasting_faults_fail_clearly_and_keep_the_install(
    published: Published,
    proxy: tuple[str, Faults],
    tmp_path: Path,
    kind: str,
    exit_code: int,
    message: str,
) -> None:
    url, faults = proxy
    target = tmp_path / "game"
    published.point("faulty", 1)
    assert sync(url, target)[0] == 0
    published.point("faulty", 3)
    faults.kind = kind
    faults.times = 100
    code, _, err = sync(url, target)
    assert code == exit_code, err
    assert message in err
    assert on_disk(target) == expected(published.versions[0])
