"""Downloading content objects: bounded, resumable, rate-limited, retried.

Every download has an upper bound on its size (a server that sends more is cut off), is
kept in a ``.part`` file so a later run resumes it with an HTTP range request (falling back
to a full download where the server ignores ranges), and is retried with back-off on
timeouts, resets and 5xx answers. Nothing here trusts the bytes: callers verify them.

Spoken with urllib3 rather than httpx, our HTTP client elsewhere: python-tuf's client
uses urllib3 already, and importing httpx (which imports its command-line tool, with
Click and Rich) would add ~0.2 s to every ``launcher sync`` a player waits for.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import urllib3
from urllib3.exceptions import HTTPError as TransportError

from changeover.errors import ChangeoverError, RemoteError

CHUNK = 1 << 16
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def compressed_bound(size: int) -> int:
    """The most bytes a zstd frame of ``size`` raw bytes can take (zstd's own bound)."""
    return size + (size >> 8) + 4096


class RateLimit:
    """A token bucket shared by all download threads (bytes per second)."""

    def __init__(self, bytes_per_s: int | None) -> None:
        self.rate = bytes_per_s
        self._lock = threading.Lock()
        self._allowance = float(bytes_per_s or 0)
        self._last = time.monotonic()

    def take(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            self._allowance = min(
                float(self.rate), self._allowance + (now - self._last) * self.rate
            )
            self._last = now
            self._allowance -= n
            wait = -self._allowance / self.rate if self._allowance < 0 else 0.0
        if wait > 0:
            time.sleep(wait)  # pacing the transfer is the point of a rate limit


@dataclass
class Fetcher:
    base_url: str
    limit: RateLimit
    on_bytes: Callable[[int], None] | None = None
    retries: int = 4
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.http = http_pool(self.timeout_s)

    def close(self) -> None:
        self.http.clear()

    def download(self, rel: str, part: Path, max_bytes: int) -> int:
        """Fetch ``rel`` into ``part`` (resuming what it holds); returns bytes received.

        Raises:
            RemoteError: the server kept failing, or sent more than ``max_bytes``.
        """
        received = [0]  # counts bytes of cut-off attempts too: they were downloaded
        for attempt in range(self.retries + 1):
            try:
                self._once(rel, part, max_bytes, received)
            except _Retry as e:
                if attempt == self.retries:
                    raise RemoteError(
                        f"giving up on {self.base_url}/{rel} after {attempt + 1} attempts: {e}"
                    ) from e
                time.sleep(min(0.2 * 2**attempt, 5.0))  # back off before retrying
            else:
                return received[0]
        raise AssertionError("unreachable")

    def _once(self, rel: str, part: Path, max_bytes: int, received: list[int]) -> None:
        have = part.stat().st_size if part.exists() else 0
        if have > max_bytes:
            part.unlink()
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        url = f"{self.base_url}/{rel}"
        try:
            r = self.http.request("GET", url, headers=headers, preload_content=False)
            complete = False
            try:
                if r.status == 416 and have:
                    return  # we already hold the whole object
                if r.status in RETRYABLE_STATUS:
                    raise _Retry(f"HTTP {r.status}")
                if r.status == 404:
                    raise RemoteError(f"{url} is not on the server (404)")
                if r.status not in (200, 206):
                    raise RemoteError(f"{url} answered HTTP {r.status}")
                mode = "ab" if r.status == 206 else "wb"
                offset = have if r.status == 206 else 0
                with open(part, mode) as out:
                    for chunk in r.stream(CHUNK):
                        offset += len(chunk)
                        if offset > max_bytes:
                            out.truncate(0)
                            raise RemoteError(
                                f"{url} sent more than the {max_bytes} bytes it can hold"
                            )
                        self.limit.take(len(chunk))
                        out.write(chunk)
                        received[0] += len(chunk)
                        if self.on_bytes is not None:
                            self.on_bytes(len(chunk))
                    complete = True
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                if not complete:
                    # Part of its answer is unread (an error page, a body cut off): the
                    # connection goes back closed, so the next request opens a new one
                    # instead of reading what is left of this answer as its own.
                    r.close()
                r.release_conn()
        except TransportError as e:  # timeouts, resets, refused, a body cut short
            raise _Retry(f"{type(e).__name__}: {e}") from e


def http_pool(timeout_s: float) -> urllib3.PoolManager:
    """Connections for the download threads: keep-alive, redirects followed, no retries
    of urllib3's own (``Fetcher.download`` retries, resuming where the body stopped)."""
    return urllib3.PoolManager(
        maxsize=32,  # the most download threads ``launcher sync --workers`` allows
        timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        retries=urllib3.Retry(total=0, connect=0, read=0, redirect=5, status=0),
    )


class _Retry(ChangeoverError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
