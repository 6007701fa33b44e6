"""uvicorn's httptools protocol, sending each small response in one system call.

An ASGI response is two messages, its head and its body, and uvicorn writes each to the
socket as it comes: two ``send`` calls and two TCP segments for a 200-byte answer, and on
loopback each send also runs the receiver's side of TCP. Measured under allocation load,
those two writes were 30 % of the event loop's time. Here the writes a connection makes
in one turn of the event loop are held and sent together at the end of that turn (one
``call_soon``, so no answer waits for anything but the callbacks already due). Large
writes, a file being streamed, go out at once after what is held, so nothing big sits in
memory and uvicorn's flow control sees the real transport's buffer.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HOLD_LIMIT = 16 * 1024
"""Bytes held per connection at most: above it, writes go straight to the socket."""


class CoalescingTransport:
    """A transport whose small writes within one loop turn reach the socket as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held_bytes + len(data) > HOLD_LIMIT:
            self.flush()
            self._transport.write(data)
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._held_bytes += len(data)

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def flush(self) -> None:
        """Send what is held (nothing once the connection is closing)."""
        if not self._held:
            return
        data = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._held_bytes = 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # Everything else (extra info, reading and writing flow control) is the socket's.
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` on a :class:`CoalescingTransport`; pass it as uvicorn's ``http``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        real = cast(asyncio.Transport, transport)
        super().connection_made(cast(asyncio.Transport, CoalescingTransport(real, self.loop)))
