"""launcher.fetch over kept-alive connections: an answer the fetcher does not read to its
end (an error page, a body that would overflow) must not be left for the next request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from changeover.errors import RemoteError
from changeover.launcher.fetch import Fetcher, RateLimit

BODY = b"the object's bytes\n" * 100


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves every request
    answers: list[tuple[int, bytes]] = []
    connections = 0

    def setup(self) -> None:  # once per connection, however many requests it carries
        super().setup()
        type(self).connections += 1

    def do_GET(self) -> None:
        status, body = type(self).answers.pop(0) if type(self).answers else (200, BODY)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.answers, _Handler.connections = [], 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_unread_error_page_is_not_read_as_the_next_answer(server: str, tmp_path: Path) -> None:
    # Two 503s, each with a page the fetcher has no use for, then the object.
    _Handler.answers = [(503, b"busy, come back later " * 50)] * 2
    fetcher = Fetcher(server, RateLimit(None), retries=2)
    try:
        got = fetcher.download("blobs/x", tmp_path / "x.part", len(BODY))
        assert (tmp_path / "x.part").read_bytes() == BODY and got == len(BODY)
        # The retries came on new connections: the old ones had unread bytes.
        assert _Handler.connections == 3
        # A complete answer leaves its connection open for the next request.
        fetcher.download("blobs/y", tmp_path / "y.part", len(BODY))
        assert _Handler.connections == 3
    finally:
        fetcher.close()


def test_a_body_cut_off_for_overflowing_is_not_reused(server: str, tmp_path: Path) -> None:
    _Handler.answers = [(200, b"x" * (4 << 20))]  # far more than one read: cut off midway
    fetcher = Fetcher(server, RateLimit(None), retries=0)
    try:
        with pytest.raises(RemoteError, match="sent more than the 100000 bytes"):
            fetcher.download("blobs/big", tmp_path / "big.part", 100_000)
        assert fetcher.download("blobs/ok", tmp_path / "ok.part", len(BODY)) == len(BODY)
        assert (tmp_path / "ok.part").read_bytes() == BODY
        assert _Handler.connections == 2
    finally:
        fetcher.close()
