"""The one API the launcher's front ends drive: ``changeover launcher`` and the desktop app.

An :class:`Engine` is one install directory following one branch of one image. It answers
what is installed (from local files only, so it works offline), what the branch points at
now (``check``), and it syncs, verifies and repairs, reporting :class:`ProgressEvent` s to a
callback and obeying a :class:`Control` that another thread (a window's button) uses to
pause or cancel. Pausing is cancelling with the intent to resume: the sync stops at its
next chunk, everything verified or partly downloaded is kept, and the next ``sync``
continues by range requests from where this one stopped.

Nothing here imports a GUI toolkit or the control plane; the methods block, so a window
calls them from a worker thread.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from changeover.content.delivery import DeliveryIndex
from changeover.content.manifest import Manifest
from changeover.errors import IntegrityError, Interrupted, InvalidInput
from changeover.launcher.fetch import DEFAULT_MIN_RATE, DEFAULT_TIMEOUT_S, Fetcher
from changeover.launcher.install import (
    Install,
    InstallMode,
    VerifyReport,
    default_cache,
    verify_tree,
)
from changeover.launcher.locks import metadata_lock
from changeover.launcher.sync import Syncer, SyncReport, plan_steps
from changeover.launcher.trust import TrustedTargets

PhaseName = Literal["checking", "downloading", "installing", "done"]


@dataclass(frozen=True)
class ProgressEvent:
    """Where a sync is: its phase, and in ``downloading`` the bytes so far of those planned."""

    phase: PhaseName
    done_bytes: int = 0
    total_bytes: int = 0
    bytes_per_s: float = 0.0
    """The rate over the last few seconds (:class:`RateMeter`); 0.0 in the first second,
    before it means anything."""
    eta_s: float | None = None
    """Seconds left at that rate; ``None`` ("estimating") in the first seconds."""


OnEvent = Callable[[ProgressEvent], None]


class Control:
    """Pause or cancel a running sync from another thread. One per run."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.reason: Literal["paused", "cancelled"] | None = None

    def pause(self) -> None:
        self.reason = self.reason or "paused"
        self._stop.set()

    def cancel(self) -> None:
        self.reason = "cancelled"
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def check(self) -> None:
        """Raises Interrupted once ``pause`` or ``cancel`` was called."""
        if self._stop.is_set():
            raise Interrupted(
                f"the update was {self.reason}; what was downloaded is kept",
                reason=self.reason,
            )


@dataclass(frozen=True)
class Installed:
    """What an install holds, from its record (no network)."""

    image: str
    branch: str
    version: int
    label: str | None
    manifest: str
    install_mode: str = "link"


@dataclass(frozen=True)
class Available:
    """What the branch points at now, and what moving to it would download."""

    version: int
    label: str | None
    manifest: str
    up_to_date: bool
    download_bytes: int
    total_bytes: int


class RateMeter:
    """A download's rate over a sliding window of the last ``window_s`` seconds, and the
    time left at it. Pure: the caller passes the clock.

    An average since the start is wrong at the start: the first pieces come out of
    buffers at once (the connection's, a rate limit's), and a few hundred kilobytes over
    a few milliseconds read as megabytes a second and "0 s left". So there is no rate
    before ``min_s`` of downloading, no time left before ``eta_after_s``, and the rate is
    over the recent window, so that it follows a link that slows down or speeds up.
    """

    def __init__(
        self,
        started: float,
        *,
        window_s: float = 5.0,
        min_s: float = 1.0,
        eta_after_s: float = 2.0,
    ) -> None:
        self.started = started
        self.window_s = window_s
        self.min_s = min_s
        self.eta_after_s = eta_after_s
        self.done = 0
        self._samples: collections.deque[tuple[float, int]] = collections.deque([(started, 0)])
        """(time, bytes done then): the newest at or before the window's start, then
        every one since."""

    def add(self, now: float, n: int) -> None:
        self.done += n
        self._samples.append((now, self.done))
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()

    def rate(self, now: float) -> float:
        """Bytes per second over the window; 0.0 before ``min_s`` has passed."""
        if now - self.started < self.min_s:
            return 0.0
        since, base = self._samples[0]
        span = now - since
        return (self.done - base) / span if span > 0 else 0.0

    def eta(self, now: float, total: int) -> float | None:
        """Seconds until ``total`` bytes at the current rate; ``None`` while estimating."""
        rate = self.rate(now)
        if now - self.started < self.eta_after_s or rate <= 0:
            return None
        return max(total - self.done, 0) / rate


class _Tracker:
    """Turns the syncer's byte counts into events, and checks the control on each."""

    def __init__(self, on_event: OnEvent, control: Control) -> None:
        self.on_event = on_event
        self.control = control
        self.lock = threading.Lock()
        self.meter = RateMeter(time.monotonic())

    @property
    def done(self) -> int:
        return self.meter.done

    def phase(self, name: str) -> None:
        self.control.check()
        if name == "downloading":
            self.meter = RateMeter(time.monotonic())
        self.on_event(ProgressEvent("downloading" if name == "downloading" else "installing"))

    def progress(self, n: int, total: int) -> None:
        self.control.check()
        with self.lock:
            now = time.monotonic()
            self.meter.add(now, n)
            event = ProgressEvent(
                "downloading",
                self.meter.done,
                total,
                self.meter.rate(now),
                self.meter.eta(now, total),
            )
        self.on_event(event)


def _ignore(event: ProgressEvent) -> None:
    return None


class Engine:
    """One install directory following ``branch`` of ``image`` at ``base_url``."""

    def __init__(
        self,
        base_url: str,
        directory: Path,
        image: str,
        branch: str = "production",
        *,
        cache: Path | None = None,
        root: bytes | None = None,
        max_bytes_per_s: int | None = None,
        workers: int = 4,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        min_rate: int = DEFAULT_MIN_RATE,
        install_mode: InstallMode | None = None,
    ) -> None:
        """``install_mode``: "link" (read-only hard links shared between versions, the
        default) or "copy" (writable copies, for games that write beside their files);
        ``None`` keeps what the install was made with."""
        self.base_url = base_url
        self.directory = directory
        self.image = image
        self.branch = branch
        self.cache = cache or default_cache(directory)
        self.root = root
        self._options: dict[str, Any] = {
            "max_bytes_per_s": max_bytes_per_s,
            "workers": workers,
            "timeout_s": timeout_s,
            "min_rate": min_rate,
            "install_mode": install_mode,
        }

    @classmethod
    def from_install(cls, directory: Path, cache: Path | None = None, **options: Any) -> Engine:
        """The engine of an existing install: its server, image and branch from its record.

        Raises:
            InvalidInput: ``directory`` holds no install record.
        """
        cache = cache or default_cache(directory)
        record = Install(directory, cache).record() or {}
        base_url, image, branch = record.get("base_url"), record.get("image"), record.get("branch")
        if not all(isinstance(v, str) for v in (base_url, image, branch)):
            raise InvalidInput(
                f"{directory} has no install record; run 'changeover launcher sync' first"
            )
        return cls(str(base_url), directory, str(image), str(branch), cache=cache, **options)

    def _syncer(self, tracker: _Tracker | None = None) -> Syncer:
        hooks: dict[str, Any] = {}
        if tracker is not None:
            hooks = {
                "on_progress": tracker.progress,
                "on_phase": tracker.phase,
                "checkpoint": tracker.control.check,
            }
        return Syncer(
            self.base_url,
            self.directory,
            cache=self.cache,
            root=self.root,
            **self._options,
            **hooks,
        )

    def installed(self) -> Installed | None:
        """What the directory holds, or ``None`` when it holds no complete install."""
        install = Install(self.directory, self.cache)
        record = install.record()
        if record is None or install.current_tree() is None:
            return None
        try:
            return Installed(
                image=str(record["image"]),
                branch=str(record["branch"]),
                version=int(record.get("version", 0)),
                label=record.get("label"),
                manifest=str(record["manifest"]),
                install_mode=str(record.get("install_mode", "link")),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def check(self) -> Available:
        """Ask the server what the branch points at now (verified metadata only).

        Raises:
            RemoteError: the server cannot be reached; UntrustedMetadata: what it serves
                does not verify; NotFound/RemoteError: the branch does not exist.
        """
        syncer = self._syncer()
        pointer, manifest, index = syncer.resolve(self.image, self.branch)
        installed = self.installed()
        up_to_date = installed is not None and installed.manifest == manifest.id
        steps = [] if up_to_date else plan_steps(manifest, index, syncer.objects)
        return Available(
            version=int(pointer.get("version", 0)),
            label=pointer.get("label"),
            manifest=manifest.id,
            up_to_date=up_to_date,
            download_bytes=sum(s.download_bytes for s in steps),
            total_bytes=manifest.total_bytes,
        )

    def fetch_signed(self, path: str, *, what: str | None = None) -> bytes:
        """The verified bytes of another signed target of the server (such as the servers'
        client compatibility, ``launcher.compat``), trusted as the branch pointers are.

        Raises:
            NotFound: the server does not publish ``path``; RemoteError: it cannot be
                reached; UntrustedMetadata: what it serves does not verify.
        """
        syncer = self._syncer()
        fetcher = Fetcher(syncer.base_url, syncer.limit, pace=syncer.pace)
        try:
            with metadata_lock(syncer.trust_dir):
                trusted = TrustedTargets(
                    syncer.base_url, syncer.trust_dir, syncer.root, fetcher=fetcher
                )
                return trusted.fetch(path, what=what)
        finally:
            fetcher.close()

    def sync(
        self,
        on_event: OnEvent | None = None,
        control: Control | None = None,
        *,
        force_rebuild: bool = False,
    ) -> SyncReport:
        """Install or update the directory to what the branch points at.

        Raises:
            Interrupted: ``control`` paused or cancelled it; the install is as it was.
            ChangeoverError: as :meth:`Syncer.sync`, with what became of the install.
        """
        tracker = _Tracker(on_event or _ignore, control or Control())
        tracker.on_event(ProgressEvent("checking"))
        report = self._syncer(tracker).sync(self.image, self.branch, force_rebuild=force_rebuild)
        tracker.on_event(ProgressEvent("done", tracker.done, tracker.done))
        return report

    def verify(self) -> VerifyReport:
        """Hash every file against the manifest it was installed from (no network)."""
        install = Install(self.directory, self.cache)
        manifest = install.current_manifest()
        if manifest is None or install.current_tree() is None:
            raise InvalidInput(f"{self.directory} is not a changeover install")
        return verify_tree(self.directory, manifest)

    def repair(
        self, on_event: OnEvent | None = None, control: Control | None = None
    ) -> tuple[VerifyReport, SyncReport]:
        """Verify, then re-fetch whatever is damaged, missing or extra."""
        tracker = _Tracker(on_event or _ignore, control or Control())
        tracker.on_event(ProgressEvent("checking"))
        found, report = self._syncer(tracker).repair()
        tracker.on_event(ProgressEvent("done", tracker.done, tracker.done))
        return found, report

    def adopt(self, directory: Path) -> int:
        """Take into the cache the files of ``directory`` that the branch's version holds
        at the same paths, so that a sync downloads only the rest; returns the bytes
        adopted. Each file is hashed as it is copied and kept only if it is the content
        the signed manifest names (a file that differs is skipped), so any folder may be
        offered: the launcher offers the one it runs from before its first self-update.

        Raises:
            RemoteError, UntrustedMetadata: as :meth:`check`.
        """
        syncer = self._syncer()
        _, manifest, index = syncer.resolve(self.image, self.branch)
        # Used like a sync's: no collection removes an object as it is adopted.
        with syncer.users.using():
            return self._adopt(syncer, directory, manifest, index)

    def _adopt(
        self, syncer: Syncer, directory: Path, manifest: Manifest, index: DeliveryIndex
    ) -> int:
        adopted = 0
        for f in manifest:
            source = directory / f.path
            if f.link is not None or syncer.objects.has(f.sha256, f.executable):
                continue
            try:
                if source.is_symlink() or source.stat().st_size != f.size:
                    continue
                syncer.objects.add_from_file(
                    source,
                    f.sha256,
                    f.size,
                    f.executable,
                    blake3=index.chunks.blake3_of(f.sha256),
                    name=f.path,
                )
            except (OSError, IntegrityError):
                continue  # not the published content (or unreadable): it will be fetched
            adopted += f.size
        return adopted
