"""A one-line download progress display on a terminal: bytes, rate and ETA.

Written with the standard library because ``launcher sync`` is run by players' launchers
on every update, and importing Rich costs more than many a small update takes. Called from
the download threads; redraws at most ``REDRAW_S`` apart and only on a terminal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

from changeover.cli.plain import human_bytes

REDRAW_S = 0.1


def render(label: str, done: int, total: int | None, elapsed_s: float) -> str:
    """``downloading  3.0 MiB / 12.0 MiB  1.5 MiB/s  ETA 0:06``; the rate and ETA once
    something has arrived."""
    parts = [label, human_bytes(done) + (f" / {human_bytes(total)}" if total else "")]
    if done and elapsed_s > 0:
        rate = done / elapsed_s
        parts.append(f"{human_bytes(int(rate))}/s")
        if total and total > done:
            left = int((total - done) / rate)
            parts.append(f"ETA {left // 60}:{left % 60:02d}")
    return "  ".join(parts)


class ProgressLine:
    """``with ProgressLine(sys.stderr) as line: ... line.add(n, total)``: redrawn in place,
    erased at the end. Does nothing when ``stream`` is not a terminal or ``enabled`` is
    false (``--json``, a pipe, a log file)."""

    def __init__(
        self,
        stream: TextIO,
        label: str = "downloading",
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._label = label
        self._enabled = enabled and stream.isatty()
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._drawn_at = float("-inf")
        self._width = 0
        self.done = 0
        self.total: int | None = None

    def add(self, n: int, total: int | None = None) -> None:
        self._update(n, None, total)

    def set(self, done: int, total: int | None = None) -> None:
        """Show ``done`` bytes (a running total; an older, smaller one is ignored)."""
        self._update(0, done, total)

    def _update(self, n: int, done: int | None, total: int | None) -> None:
        with self._lock:
            self.done = max(done, self.done) if done is not None else self.done + n
            self.total = total if total is not None else self.total
            now = self._clock()
            if self._enabled and now - self._drawn_at >= REDRAW_S:
                self._drawn_at = now
                self._draw(render(self._label, self.done, self.total, now - self._started))

    def _draw(self, text: str) -> None:
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._enabled and self._width:
                self._stream.write("\r" + " " * self._width + "\r")
                self._stream.flush()
                self._width = 0
