"""Downloading content objects: bounded in size and in time, resumable, rate-limited, retried.

Every download has an upper bound on its size (a server that sends more is cut off), is
kept in a ``.part`` file so a later run resumes it with an HTTP range request (falling back
to a full download where the server ignores ranges), and is retried with back-off on
timeouts, resets and 5xx answers. Nothing here trusts the bytes: callers verify them.

Every attempt also has a deadline, from the size it may fetch (:class:`Pace`): the gap
timeout alone lets a server that trickles a byte a second, in the headers or the body,
hold a download for days. A watchdog thread cuts the connection of an attempt past its
deadline, whatever phase it is blocked in; the attempt is then retried (resuming what
arrived) like a timeout. Time spent in our own rate limit does not count against it.

Spoken with urllib3 rather than httpx, our HTTP client elsewhere: python-tuf's client
uses urllib3 already, and importing httpx (which imports its command-line tool, with
Click and Rich) would add ~0.2 s to every ``launcher sync`` a player waits for. The
launcher's signed metadata comes through here too (``launcher.trust``), under the same
rules.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError as TransportError

from changeover.errors import ChangeoverError, RemoteError

CHUNK = 1 << 16
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MIN_RATE = 32 << 10
"""Bytes per second below which a download is given up (and retried): 256 kbit/s, a poor
mobile link. A 100 MB file then has 30 s + 53 min per attempt."""


def compressed_bound(size: int) -> int:
    """The most bytes a zstd frame of ``size`` raw bytes can take (zstd's own bound)."""
    return size + (size >> 8) + 4096


@dataclass(frozen=True)
class Pace:
    """How long a download may take: ``timeout_s`` to connect and between two pieces of
    data, and ``timeout_s + bytes / min_rate`` for an attempt as a whole (``bytes``: what
    it may still fetch, bounded by the size signed metadata gives)."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    min_rate: int = DEFAULT_MIN_RATE

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.min_rate <= 0:
            raise ValueError("a pace needs a positive timeout and minimum rate")

    def allowed_s(self, size: int) -> float:
        return self.timeout_s + size / self.min_rate


class RateLimit:
    """A token bucket shared by all download threads (bytes per second).

    It starts empty and holds at most ``BURST_S`` of the rate (at least one piece): a
    bucket that started full let a whole second's worth through at once, so a download
    limited to 600 kB/s ran at twice that in its first second (and looked faster still).
    """

    BURST_S = 0.1

    def __init__(self, bytes_per_s: int | None) -> None:
        self.rate = bytes_per_s
        self._lock = threading.Lock()
        self._capacity = max(float(CHUNK), (bytes_per_s or 0) * self.BURST_S)
        self._allowance = 0.0
        self._last = time.monotonic()

    def take(self, n: int) -> float:
        """Wait until ``n`` bytes may pass; returns the seconds waited."""
        if not self.rate:
            return 0.0
        with self._lock:
            now = time.monotonic()
            self._allowance = min(self._capacity, self._allowance + (now - self._last) * self.rate)
            self._last = now
            self._allowance -= n
            wait = -self._allowance / self.rate if self._allowance < 0 else 0.0
        if wait > 0:
            time.sleep(wait)  # pacing the transfer is the point of a rate limit
        return wait


@dataclass
class Fetcher:
    base_url: str
    limit: RateLimit
    on_bytes: Callable[[int], None] | None = None
    retries: int = 4
    pace: Pace = field(default_factory=Pace)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.http = http_pool(self.pace.timeout_s)

    def close(self) -> None:
        self.http.clear()

    def download(self, rel: str, part: Path, max_bytes: int, *, name: str | None = None) -> int:
        """Fetch ``rel`` (under the base URL) into ``part``, resuming what it holds;
        returns the bytes received. ``name`` is how errors call the file (default: ``rel``).

        Raises:
            RemoteError: the server kept failing or stalling, or sent more than
                ``max_bytes`` (fact ``oversized``), or has no such file (fact ``status``).
        """
        return self.download_url(f"{self.base_url}/{rel}", part, max_bytes, name=name or rel)

    def download_url(self, url: str, part: Path, max_bytes: int, *, name: str | None = None) -> int:
        """:meth:`download` of a full URL."""
        what = name or url
        received = [0]  # counts bytes of cut-off attempts too: they were downloaded
        for attempt in range(self.retries + 1):
            try:
                self._once(url, what, part, max_bytes, received)
            except _Retry as e:
                if attempt == self.retries:
                    raise RemoteError(
                        f"could not download {what} from {url}: {e} (tried {attempt + 1} times)",
                        url=url,
                    ) from e
                time.sleep(min(0.2 * 2**attempt, 5.0))  # back off before retrying
            else:
                return received[0]
        raise AssertionError("unreachable")

    def _once(self, url: str, what: str, part: Path, max_bytes: int, received: list[int]) -> None:
        have = part.stat().st_size if part.exists() else 0
        if have > max_bytes:
            part.unlink()
            have = 0
        allowed = self.pace.allowed_s(max_bytes - have)
        transfer = _Transfer(time.monotonic() + allowed)
        headers = {"Range": f"bytes={have}-"} if have else {}
        _local.transfer = transfer
        _WATCHDOG.watch(transfer)
        try:
            self._request(url, what, part, have, max_bytes, received, headers, transfer)
        except TransportError as e:  # timeouts, resets, refused, a body cut short
            if transfer.expired:
                raise _Retry(self._too_slow(allowed, max_bytes - have)) from e
            raise _Retry(_plain(e)) from e
        except OSError as e:
            if transfer.expired:  # the watchdog's cut, surfacing as a socket error
                raise _Retry(self._too_slow(allowed, max_bytes - have)) from e
            raise  # the disk's: the caller reports it
        finally:
            _WATCHDOG.forget(transfer)
            _local.transfer = None

    def _request(
        self,
        url: str,
        what: str,
        part: Path,
        have: int,
        max_bytes: int,
        received: list[int],
        headers: dict[str, str],
        transfer: _Transfer,
    ) -> None:
        r = self.http.request("GET", url, headers=headers, preload_content=False)
        complete = False
        try:
            if r.status == 416 and have:
                return  # we already hold the whole object
            if r.status in RETRYABLE_STATUS:
                raise _Retry(f"the server answered HTTP {r.status}")
            if r.status in (403, 404, 410):
                raise RemoteError(
                    f"{what} is not on the server ({url} answered HTTP {r.status})",
                    url=url,
                    status=r.status,
                )
            if r.status not in (200, 206):
                raise RemoteError(
                    f"the server answered HTTP {r.status} for {what} ({url})",
                    url=url,
                    status=r.status,
                )
            mode = "ab" if r.status == 206 else "wb"
            offset = have if r.status == 206 else 0
            with open(part, mode) as out:
                for chunk in r.stream(CHUNK):
                    offset += len(chunk)
                    if offset > max_bytes:
                        out.truncate(0)
                        raise RemoteError(
                            f"the server sent more than the {max_bytes} bytes {what} is"
                            f" signed to have ({url})",
                            url=url,
                            oversized=True,
                        )
                    transfer.deadline += self.limit.take(len(chunk))
                    out.write(chunk)
                    received[0] += len(chunk)
                    if self.on_bytes is not None:
                        self.on_bytes(len(chunk))
                    if time.monotonic() > transfer.deadline:
                        transfer.expired = True
                if transfer.expired:
                    # Cut by the watchdog: what looks like the end of the answer may be
                    # the end of headers or of a body without a length.
                    raise TransportError("deadline passed")
                # Not fsynced: a part is read back at once (decoded, or hashed and applied)
                # and checked by its signed hash, so one a power loss cut short is fetched
                # again; a fsync per download cost more than the download on loopback.
                complete = True
        finally:
            if not complete or transfer.expired:
                # Part of its answer is unread (an error page, a body cut off): the
                # connection goes back closed, so the next request opens a new one
                # instead of reading what is left of this answer as its own.
                r.close()
            r.release_conn()

    def _too_slow(self, allowed: float, size: int) -> str:
        return (
            f"too slow: not complete within {allowed:.0f} s (up to {size} bytes at the"
            f" minimum rate of {self.pace.min_rate} bytes/s, plus {self.pace.timeout_s:g} s;"
            " see --min-rate and --timeout)"
        )


def _plain(e: BaseException) -> str:
    """urllib3's errors without their class names and repr()s of pools."""
    reason = getattr(e, "reason", None)
    if isinstance(reason, BaseException) and reason is not e:
        return _plain(reason)
    text = re.sub(r"^\w+\(host=[^)]*\): ", "", str(e))  # the pool's repr, no news to a player
    kind = type(e).__name__
    if "Timeout" in kind or isinstance(e, TimeoutError | socket.timeout):
        return f"no data for too long ({text})"
    if isinstance(e, ConnectionError) or "NewConnection" in kind:
        return f"cannot connect or connection lost ({text})"
    if "Protocol" in kind or "IncompleteRead" in kind:
        return f"the connection broke off ({text})"
    return text


def http_pool(timeout_s: float) -> urllib3.PoolManager:
    """Connections for the download threads: keep-alive, redirects followed, no retries
    of urllib3's own (``Fetcher.download`` retries, resuming where the body stopped),
    and every request's connection known to the deadline watchdog."""
    pool = urllib3.PoolManager(
        maxsize=32,  # the most download threads ``launcher sync --workers`` allows
        timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        retries=urllib3.Retry(total=0, connect=0, read=0, redirect=5, status=0),
    )
    pool.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
    return pool


# -- deadlines --------------------------------------------------------------------------------


class _Transfer:
    """One attempt's deadline (``time.monotonic``) and the connection it runs on."""

    __slots__ = ("conn", "deadline", "expired", "sock")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: Any = None
        self.sock: socket.socket | None = None
        """The socket the request went out on. An answer that closes its connection
        (HTTP/1.0, ``Connection: close``) takes the socket from ``conn`` with it, so the
        watchdog must still be able to cut it from here."""
        self.expired = False

    def cut(self) -> bool:
        """Shut the connection's socket so that a read blocked on it returns at once;
        False while there is no socket yet (connecting: ``timeout_s`` bounds that)."""
        sock = getattr(self.conn, "sock", None) or self.sock
        if sock is None:
            return False
        # socket.socket's own shutdown, also for a TLS socket: SSLSocket's would drop its
        # TLS state under a read in progress on another thread. An error: already closed.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        return True


class _Watchdog:
    """One thread for the process that cuts the connection of any attempt past its
    deadline. It sleeps until the earliest deadline; a deadline pushed back meanwhile
    (rate-limit waits) only makes it look again."""

    POLL_S = 0.05
    """How often an expired attempt that has no socket yet (still connecting) is looked at."""

    def __init__(self) -> None:
        self._active: set[_Transfer] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, transfer: _Transfer) -> None:
        with self._cond:
            self._active.add(transfer)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="download-deadlines", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def forget(self, transfer: _Transfer) -> None:
        with self._cond:
            self._active.discard(transfer)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                wait: float | None = None
                for t in list(self._active):
                    if now < t.deadline:
                        left = t.deadline - now
                        wait = left if wait is None else min(wait, left)
                        continue
                    t.expired = True
                    if t.cut():
                        self._active.discard(t)
                    else:
                        wait = self.POLL_S if wait is None else min(wait, self.POLL_S)
                self._cond.wait(wait)


_WATCHDOG = _Watchdog()
_local = threading.local()
"""``transfer``: the attempt the current thread is making, for the connection to join."""


class _WatchedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        transfer = _join_transfer(self)
        super().request(*args, **kwargs)
        if transfer is not None:
            transfer.sock = self.sock


class _WatchedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        transfer = _join_transfer(self)
        super().request(*args, **kwargs)
        if transfer is not None:
            transfer.sock = self.sock


def _join_transfer(conn: HTTPConnection) -> _Transfer | None:
    # Called on the thread making the request, before it connects, sends or waits for
    # anything: from here on the watchdog can cut whatever the request blocks on.
    transfer: _Transfer | None = getattr(_local, "transfer", None)
    if transfer is not None:
        transfer.conn = conn
    return transfer


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Retry(ChangeoverError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
