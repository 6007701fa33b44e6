"""Engine calls on worker threads, their results back on the window's thread.

Every call that touches the network or the disk (reading the install record, checking the
branch, syncing, verifying, the news) runs as a :class:`_Job` on a ``QThreadPool``. The job
reports through Qt signals of :class:`Jobs`, a QObject that lives on the GUI thread, so the
callbacks a caller gives (``on_progress``, ``on_done``, ``on_error``) always run there: the
window never waits on I/O, and never touches a widget from a worker.

Engine calls that use the install folder's shared cache (check, sync, repair) run one at
a time, on a second pool of one thread (``serial=True``), in the order they were asked
for: the engine is not safe for two of them at once on one cache (a finishing sync deletes
the objects no install references yet, which another branch's running sync may be
writing; python-tuf replaces the trusted root's symlink by remove-then-create). Reading
the install record, verifying and the news run beside them.

Progress events come from the engine per received chunk (hundreds per second on a fast
link); a job forwards at most one every ``PROGRESS_EVERY_S``, plus every change of phase.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from changeover.launcher.engine import ProgressEvent

PROGRESS_EVERY_S = 0.1

Work = Callable[[Callable[[ProgressEvent], None]], Any]
"""A blocking call given a progress callback: ``lambda on_event: engine.sync(on_event, c)``."""


@dataclass
class _Callbacks:
    on_done: Callable[[Any], None]
    on_error: Callable[[BaseException], None]
    on_progress: Callable[[ProgressEvent], None] | None


class _Job(QRunnable):
    def __init__(self, job_id: int, work: Work, jobs: Jobs) -> None:
        super().__init__()
        self.job_id = job_id
        self.work = work
        self.jobs = jobs
        self._last = 0.0
        self._last_phase = ""
        self.setAutoDelete(True)

    def _progress(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if event.phase == self._last_phase and now - self._last < PROGRESS_EVERY_S:
            return
        self._last, self._last_phase = now, event.phase
        self.jobs.progressed.emit(self.job_id, event)

    def run(self) -> None:
        try:
            result = self.work(self._progress)
        except BaseException as e:  # noqa: BLE001 — every failure goes back to the window
            self.jobs.failed.emit(self.job_id, e)
        else:
            self.jobs.succeeded.emit(self.job_id, result)


class Jobs(QObject):
    """Starts work on a thread pool; calls back on the thread that created this object."""

    progressed = Signal(int, object)
    succeeded = Signal(int, object)
    failed = Signal(int, object)

    def __init__(self, parent: QObject | None = None, max_threads: int = 8) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self.serial = QThreadPool(self)
        self.serial.setMaxThreadCount(1)
        self._ids = itertools.count(1)
        self._callbacks: dict[int, _Callbacks] = {}
        self._lock = threading.Lock()
        self.closed = False
        self.progressed.connect(self._on_progress)
        self.succeeded.connect(self._on_done)
        self.failed.connect(self._on_error)

    def start(
        self,
        work: Work,
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
        on_progress: Callable[[ProgressEvent], None] | None = None,
        *,
        serial: bool = False,
    ) -> int:
        job_id = next(self._ids)
        if self.closed:  # the window is going away: start nothing that would outlive it
            return job_id
        with self._lock:
            self._callbacks[job_id] = _Callbacks(on_done, on_error, on_progress)
        (self.serial if serial else self.pool).start(_Job(job_id, work, self))
        return job_id

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._callbacks)

    def close(self, timeout_ms: int) -> bool:
        """Start nothing more, drop the callbacks still due, wait for the workers; True
        when all have finished. After this no callback runs (the window may be gone)."""
        self.closed = True
        with self._lock:
            self._callbacks.clear()
        return self.wait(timeout_ms)

    def wait(self, timeout_ms: int) -> bool:
        """Wait for the workers; True when all have finished."""
        return bool(self.serial.waitForDone(timeout_ms)) and bool(self.pool.waitForDone(timeout_ms))

    @Slot(int, object)
    def _on_progress(self, job_id: int, event: ProgressEvent) -> None:
        callbacks = self._callbacks.get(job_id)
        if callbacks is not None and callbacks.on_progress is not None:
            callbacks.on_progress(event)

    @Slot(int, object)
    def _on_done(self, job_id: int, result: Any) -> None:
        with self._lock:
            callbacks = self._callbacks.pop(job_id, None)
        if callbacks is not None:
            callbacks.on_done(result)

    @Slot(int, object)
    def _on_error(self, job_id: int, error: BaseException) -> None:
        with self._lock:
            callbacks = self._callbacks.pop(job_id, None)
        if callbacks is not None:
            callbacks.on_error(error)
