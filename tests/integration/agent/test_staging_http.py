"""The agent's staging over real HTTP (issue 18, class 1: no download may hang forever).

A real HTTP server on 127.0.0.1 serves a content tree, honestly or trickling its bytes; the
agent's ``HttpFetcher`` must stage from the honest one, and give up on the trickling one
within its deadline (retried, then a clear error) instead of staging for days, leaving no
half-written object behind.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from changeover.agent.staging import HttpFetcher, Staging
from changeover.content.manifest import FileEntry, Manifest
from changeover.content.store import LocalStore
from changeover.errors import RemoteError
from changeover.launcher.fetch import Pace
from tests_helpers import wait_for

pytestmark = pytest.mark.timeout(120)


class _Handler(http.server.BaseHTTPRequestHandler):
    content: Path
    trickle: str | None = None
    """A path prefix whose bodies are sent a byte every 50 ms."""
    protocol_version = "HTTP/1.0"
    """Each answer closes its connection: the socket leaves the client's connection object
    with the answer, where a deadline must still reach it."""
    cut: list[int]
    """Per trickled answer, how many bytes went out before the client cut it."""

    def do_GET(self) -> None:
        rel = self.path.removeprefix("/content/")
        path = self.content / rel
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.trickle is not None and rel.startswith(self.trickle):
            for i in range(len(data)):
                try:
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    self.cut.append(i)
                    return
                time.sleep(0.05)  # the hostile server's pace, not the test waiting
            self.cut.append(len(data))
        else:
            self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[str, type[_Handler], str, Manifest]]:
    store = LocalStore(tmp_path / "store")
    data = bytes(range(256)) * 64
    src = tmp_path / "file"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    store.put_file(src, digest)
    manifest = Manifest.of([FileEntry("game.bin", len(data), digest, 0o644)])
    mid = store.put_manifest(manifest)
    handler = type("Handler", (_Handler,), {"content": store.content, "cut": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/content", handler, mid, manifest
    finally:
        server.shutdown()
        server.server_close()


def test_stages_from_an_honest_server(tmp_path: Path, tree: tuple) -> None:
    url, _, mid, manifest = tree
    work = tmp_path / "work"
    fetcher = HttpFetcher(url, work / "objects")
    try:
        version = Staging(work).stage(fetcher, mid)
    finally:
        fetcher.close()
    staged = (version / "game.bin").read_bytes()
    assert hashlib.sha256(staged).hexdigest() == manifest.files[0].sha256
    assert not list((work / "objects").glob(".tmp-*"))


def test_a_trickling_server_is_given_up_on_not_waited_for(tmp_path: Path, tree: tuple) -> None:
    url, handler, mid, _ = tree
    handler.trickle = "blobs/"
    work = tmp_path / "work"
    # A deadline of 1 s plus the blob's bound at 1 MB/s per attempt: the trickle of a
    # byte every 50 ms would need minutes for the blob's few hundred bytes.
    fetcher = HttpFetcher(url, work / "objects", pace=Pace(timeout_s=1.0, min_rate=1 << 20))
    staging = Staging(work)
    try:
        with pytest.raises(RemoteError) as caught:
            staging.stage(fetcher, mid)
    finally:
        fetcher.close()
    message = str(caught.value)
    assert "too slow" in message
    assert "tried 5 times" in message
    # Cut mid-body, not read to the end and judged after (a larger blob would take days).
    blob_size = next((work.parent / "store").rglob("blobs/*/*")).stat().st_size
    # The server learns of the last cut at its next write.
    wait_for(lambda: len(handler.cut) == 5, what="the server to see all five attempts end")
    assert all(sent < blob_size for sent in handler.cut), handler.cut
    assert not staging.is_staged(mid)
    assert not list((work / "objects").iterdir()), "nothing half-written stays behind"
