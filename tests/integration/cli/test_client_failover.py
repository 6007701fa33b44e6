"""The API client (CLI and agent) with several replicas' URLs: it goes on with another
replica when one cannot be reached, or broke off or answered 502/503/504 a request safe
to send twice, and never sends twice one that is not. The replicas that misbehave are
real HTTP servers on loopback that answer as a dying replica or a balancer would."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from changeover.client import ApiClient
from changeover.errors import InvalidInput, RemoteError
from tests_helpers import free_port, run_cli

pytestmark = pytest.mark.timeout(120)


@contextmanager
def misbehaving(mode: str) -> Iterator[tuple[str, list[str]]]:
    """A server that answers every request as ``mode`` says (``503``, or ``hang up``: read
    the request, close without an answer; ``hang up once``: that, then ``[]`` with 200 to
    every later request, as a balancer does once it has noticed a dead replica); yields its
    URL and the requests it saw."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            seen.append(f"{self.command} {self.path}")
            if mode == "hang up once" and len(seen) > 1:
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"[]")
                return
            if mode.startswith("hang up"):
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            body = b'{"error": "unavailable", "message": "going down"}'
            self.send_response(int(mode))
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _any  # noqa: N815 (http.server names them)

        def log_message(self, *_: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def _dead() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_an_unreachable_replica_is_passed_over_and_the_next_one_kept(server: Any) -> None:
    with ApiClient(f"{_dead()},{server.url}", server.admin_token) as api:
        assert isinstance(api.get("/images"), list)
        assert api.server == server.url  # kept for the next request
        # Not sent at all, so even a request that must not be sent twice goes on.
        made = api.post("/tokens", json={"name": "failover", "scope": "viewer"})
        assert made["name"] == "failover"


@pytest.mark.parametrize("mode", ["503", "hang up"])
def test_a_replica_going_down_passes_on_only_what_is_safe_to_resend(server: Any, mode: str) -> None:
    with misbehaving(mode) as (url, seen):
        with ApiClient(f"{url},{server.url}", server.admin_token) as api:
            assert isinstance(api.get("/images"), list)  # GET: safe, sent on
            assert seen == ["GET /api/v1/images"]
        with ApiClient(f"{url},{server.url}", server.admin_token) as api:
            with pytest.raises(RemoteError) as refused:
                api.post("/tokens", json={"name": "never-twice", "scope": "viewer"})
            assert (url if mode == "hang up" else "503") in refused.value.message
            assert seen[-1] == "POST /api/v1/tokens"
            # The other replica never saw it: a POST that may have been done is not resent.
            with ApiClient(server.url, server.admin_token) as direct:
                names = [t["name"] for t in direct.get("/tokens")]
            assert "never-twice" not in names
            # A caller that knows its POST is safe to resend (the agent's sync) says so.
            token = api.post("/tokens", json={"name": "resent", "scope": "viewer"}, retry=True)
            assert token["name"] == "resent" and api.server == server.url


def test_through_one_url_a_request_safe_to_resend_is_tried_again() -> None:
    """One URL (a balancer): a GET broken off is sent again, and answered once the
    balancer sends it elsewhere; a POST broken off is not; a GET is tried three times in
    all before the client gives up."""
    with misbehaving("hang up once") as (url, seen), ApiClient(url, "t") as api:
        assert api.get("/images") == []
        assert seen == ["GET /api/v1/images"] * 2
    with misbehaving("hang up once") as (url, seen), ApiClient(url, "t") as api:
        with pytest.raises(RemoteError):
            api.post("/tokens", json={"name": "never-twice", "scope": "viewer"})
        assert seen == ["POST /api/v1/tokens"]
    with misbehaving("503") as (url, seen), ApiClient(url, "t") as api:
        with pytest.raises(RemoteError) as e:
            api.get("/images")
        assert seen == ["GET /api/v1/images"] * 3 and "going down" in e.value.message


def test_every_replica_down_is_one_error_naming_each() -> None:
    first, second = _dead(), _dead()
    with ApiClient(f"{first}, {second}", "t") as api, pytest.raises(RemoteError) as e:
        api.get("/images")
    message = e.value.message
    assert message.startswith("cannot reach any replica; ")
    assert f"{first}: connection refused" in message and f"{second}: connection refused" in message


def test_bad_lists_of_urls_are_refused() -> None:
    for bad in ("", " , ", "http://ok,ftp://no"):
        with pytest.raises(InvalidInput):
            ApiClient(bad, "t")


def test_the_cli_takes_several_servers(server: Any) -> None:
    r = run_cli(
        "env",
        "list",
        env={"CHANGEOVER_URL": f"{_dead()},{server.url}", "CHANGEOVER_TOKEN": server.admin_token},
    )
    assert r.returncode == 0, r.stderr
