"""Unit tests for the coalescing HTTP protocol (``control.http_protocol``).

uvicorn's real httptools protocol answers a real ASGI app; only the socket is replaced,
by a transport that records each ``write`` (one write is one ``send`` system call).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from changeover.control import http_protocol
from changeover.control.http_protocol import CoalescingHttpToolsProtocol, CoalescingTransport

pytestmark = pytest.mark.timeout(30)


class SocketTransport(asyncio.Transport):
    """Records what reaches the socket, write by write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    body = b'{"ok": true}' if scope["path"] == "/small" else b"x" * 100_000
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _serve(request: bytes) -> SocketTransport:
    config = Config(app=_app, http=CoalescingHttpToolsProtocol, log_config=None)
    config.load()
    protocol = CoalescingHttpToolsProtocol(config, ServerState(), {})
    transport = SocketTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(1000):
        if b"".join(transport.writes).count(b"HTTP/1.1 200") == request.count(b"GET "):
            break
        await asyncio.sleep(0.001)
    await asyncio.sleep(0)  # one more turn: anything still held goes out
    protocol.connection_lost(None)
    return transport


def test_a_small_response_reaches_the_socket_in_one_write() -> None:
    transport = asyncio.run(_serve(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 12" in head
    assert body == b'{"ok": true}'


def test_pipelined_requests_are_answered_in_order() -> None:
    request = b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n" * 3
    sent = b"".join(asyncio.run(_serve(request)).writes)
    assert sent.count(b"HTTP/1.1 200") == 3
    assert sent.count(b'{"ok": true}') == 3


def test_a_large_body_is_not_held_and_comes_after_its_head() -> None:
    transport = asyncio.run(_serve(b"GET /large HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert len(transport.writes) == 2  # the head (held, sent first), then the body at once
    assert transport.writes[0].startswith(b"HTTP/1.1 200")
    assert transport.writes[1] == b"x" * 100_000


def test_held_writes_go_out_at_the_end_of_the_turn_and_before_a_close() -> None:
    async def scenario() -> SocketTransport:
        sock = SocketTransport()
        t = CoalescingTransport(sock, asyncio.get_running_loop())
        t.write(b"a")
        t.write(bytearray(b"b"))
        t.writelines([b"c", b"d"])
        assert sock.writes == []  # nothing yet: the turn is not over
        await asyncio.sleep(0)
        assert sock.writes == [b"abcd"]
        t.write(b"e")
        t.close()  # a close sends what is held first
        assert sock.writes == [b"abcd", b"e"] and sock.closed
        await asyncio.sleep(0)
        assert sock.writes == [b"abcd", b"e"]  # nothing twice
        return sock

    asyncio.run(scenario())


def test_nothing_is_written_to_a_closing_or_aborted_connection() -> None:
    async def scenario() -> None:
        sock = SocketTransport()
        t = CoalescingTransport(sock, asyncio.get_running_loop())
        t.write(b"lost")
        sock.closed = True  # the peer went away before the turn ended
        await asyncio.sleep(0)
        assert sock.writes == []
        other = SocketTransport()
        t = CoalescingTransport(other, asyncio.get_running_loop())
        t.write(b"dropped")
        t.abort()
        await asyncio.sleep(0)
        assert other.writes == [] and other.aborted

    asyncio.run(scenario())


def test_writes_past_the_hold_limit_keep_their_order() -> None:
    async def scenario() -> None:
        sock = SocketTransport()
        t = CoalescingTransport(sock, asyncio.get_running_loop())
        t.write(b"h" * 10)
        t.write(b"B" * http_protocol.HOLD_LIMIT)  # over the limit with what is held
        t.write(b"t")
        await asyncio.sleep(0)
        assert sock.writes == [b"h" * 10, b"B" * http_protocol.HOLD_LIMIT, b"t"]

    asyncio.run(scenario())
