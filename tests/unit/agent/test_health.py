"""Each kind of health check against a real socket, server or command on localhost."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from changeover.agent import health
from changeover.runspec import HealthCheck
from changeover.sdk.state import InstanceSDKState


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sdk_check_needs_ready_and_a_fresh_heartbeat() -> None:
    t = [100.0]
    state = InstanceSDKState("i1", clock=lambda: t[0])
    hc = HealthCheck(timeout_s=5)
    assert health.sdk_check(hc, None)[0] is False
    assert "not called ready" in health.sdk_check(hc, state)[1]
    state.mark_ready()
    assert health.sdk_check(hc, state) == (True, "")
    t[0] += 6
    ok, why = health.sdk_check(hc, state)
    assert not ok and "no SDK heartbeat for 6.0 s" in why


def test_tcp_and_udp() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        assert health.tcp_check("127.0.0.1", srv.getsockname()[1], 1) == (True, "")
    assert health.tcp_check("127.0.0.1", free_port(), 1)[0] is False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        assert health.udp_check("127.0.0.1", u.getsockname()[1], 0.2) == (True, "")
    ok, why = health.udp_check("127.0.0.1", free_port(), 1)
    assert not ok and "nothing is listening" in why


def test_checks_go_to_the_address_games_listen_on() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.2", 0))  # only there, as a game told CHANGEOVER_HOST would
        srv.listen()
        port = srv.getsockname()[1]
        assert health.tcp_check("127.0.0.2", port, 1) == (True, "")
        assert health.tcp_check("127.0.0.1", port, 1)[0] is False


def test_udp_probe_needs_the_expected_reply() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        # Bound but silent (a hung server): the plain check passes it, the probe does not.
        assert health.udp_check("127.0.0.1", port, 0.2) == (True, "")
        ok, why = health.udp_probe("127.0.0.1", port, b"ping", b"pong", 0.2)
        assert not ok and "no reply to the probe within 0.2 s" in why

        u.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:  # the datagrams of the checks above, whose senders are gone
                u.recv(100)
        u.setblocking(True)

        def answer(reply: bytes) -> None:
            data, peer = u.recvfrom(100)
            assert data == b"ping"
            u.sendto(reply, peer)

        for reply, healthy in ((b"pong 3 players", True), (b"busy", False)):
            t = threading.Thread(target=answer, args=(reply,))
            t.start()
            ok, why = health.udp_probe("127.0.0.1", port, b"ping", b"pong", 1)
            t.join()
            assert ok is healthy, why
            if not healthy:
                assert "does not start with b'pong'" in why
    ok, why = health.udp_probe("127.0.0.1", free_port(), b"ping", b"", 1)
    assert not ok and "nothing is listening" in why


def test_http() -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert health.http_check("127.0.0.1", port, "/healthz", 2) == (True, "")
        ok, why = health.http_check("127.0.0.1", port, "/other", 2)
        assert not ok and "answered 503" in why
    finally:
        server.shutdown()
        server.server_close()


def test_command(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    assert health.command_check([sys.executable, "-c", "pass"], tmp_path, env, 5) == (True, "")
    ok, why = health.command_check(
        [sys.executable, "-c", "print('db down'); raise SystemExit(2)"], tmp_path, env, 5
    )
    assert not ok and "exited with 2: db down" in why
    ok, why = health.command_check(
        [sys.executable, "-c", "import time; time.sleep(5)"], tmp_path, env, 0.2
    )
    assert not ok and "did not finish" in why
