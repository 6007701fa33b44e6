"""Kills that provably land mid-job (imported as ``crash_helpers``).

A crash test proves nothing if its kill lands before the job started or after it ended:
a random sleep before ``kill -9`` cannot tell. ``kill_mid_job`` looks at the job's own
record (a database row, the files of a download) with the process frozen (``SIGSTOP``),
so the record it reads is exactly what the ``SIGKILL`` that follows interrupts, and it
fails the test when the job had already finished.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy

RUNNING, COMPLETED, FAILED = 4, 5, 6
"""Build jobs' states (``control.states.JobState``)."""


@dataclass(frozen=True)
class JobProgress:
    """What a job's record says at one moment."""

    started: bool
    finished: bool
    done: float = 0.0
    """How far it got, in the job's own unit (bytes fetched, actions applied)."""
    detail: str = ""
    """The record itself, for failure messages."""


class FinishedFirst(AssertionError):
    """The job finished before ``kill_mid_job`` could kill it (a test may try again)."""


def kill_mid_job(
    process: subprocess.Popen[Any],
    progress: Callable[[], JobProgress | None],
    what: str,
    *,
    at: float = 0.0,
    timeout_s: float = 60.0,
) -> JobProgress:
    """SIGKILL ``process`` once its job has started and got ``at`` far (``done``), and
    return the job's record at the kill, which shows it started and not finished.

    Every look freezes the process first; a look that finds the job not far enough along
    lets it run again for a millisecond. ``progress`` may return None when it cannot look
    this time (a database busy for a moment). Fails if the job finished (``FinishedFirst``),
    or the process exited, before the kill could land; either way the process is reaped.
    """
    deadline = time.monotonic() + timeout_s
    last: JobProgress | None = None
    try:
        while True:
            exited = process.poll() is not None
            if not exited:
                process.send_signal(signal.SIGSTOP)
            now = progress()
            if now is not None:
                last = now
                if now.finished:
                    raise FinishedFirst(
                        f"{what} finished before the kill could land mid-job ({now.detail}):"
                        " the job is too short for this test"
                    )
                if now.started and now.done >= at and not exited:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return now
            if exited:
                raise AssertionError(f"{what}: the process exited before the kill; last: {last}")
            process.send_signal(signal.SIGCONT)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s}s waiting for {what}; last: {last}"
                )
            time.sleep(0.001)
    except BaseException:
        process.kill()  # a failed test leaves no process behind (nor a warning in another)
        process.wait()
        raise


def assert_landed_mid_job(at_kill: JobProgress, after: JobProgress | None, what: str) -> None:
    """The record the dead process left says what ``kill_mid_job`` saw: started, not
    finished (nothing ran between the look and the kill)."""
    assert at_kill.started and not at_kill.finished, f"{what}: {at_kill.detail}"
    assert after is not None, f"{what}: the record cannot be read after the kill"
    assert after.started and not after.finished, f"{what} after the kill: {after.detail}"


@contextmanager
def database(url: str | None, data: Path) -> Iterator[sqlalchemy.Engine]:
    """An engine on a test server's database (SQLite in ``data`` when ``url`` is None)."""
    if url is None:
        engine = sqlalchemy.create_engine(
            f"sqlite:///{data / 'changeover.db'}", connect_args={"timeout": 0.2}
        )
    else:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        yield engine
    finally:
        engine.dispose()


def build_job(
    engine: sqlalchemy.Engine, table: str, job_id: int
) -> Callable[[], JobProgress | None]:
    """The recorded state of build job ``job_id`` in ``table`` (updates, diffs, versions):
    started once claimed (Running), finished once Completed or Failed."""
    query = sqlalchemy.text(f"SELECT status, lease_owner FROM {table} WHERE id = :id")

    def read() -> JobProgress | None:
        try:
            with engine.connect() as c:
                status, owner = c.execute(query, {"id": job_id}).one()
        except sqlalchemy.exc.OperationalError:
            return None  # SQLite busy: the frozen server holds a lock; look again later
        return JobProgress(
            started=status >= RUNNING,
            finished=status in (COMPLETED, FAILED),
            detail=f"{table} {job_id}: status {status}, lease owner {owner}",
        )

    return read


def patch_job(engine: sqlalchemy.Engine, job_id: int) -> Callable[[], JobProgress | None]:
    """The recorded state of patch job ``job_id``: started once it applied an action,
    finished once its status is terminal; ``done`` counts the actions applied."""
    query = sqlalchemy.text(
        "SELECT j.status, (SELECT count(*) FROM patch_job_actions a"
        " WHERE a.job_id = j.id AND a.applied_at IS NOT NULL),"
        " (SELECT count(*) FROM patch_job_actions a WHERE a.job_id = j.id)"
        " FROM patch_jobs j WHERE j.id = :id"
    )

    def read() -> JobProgress | None:
        try:
            with engine.connect() as c:
                status, applied, recorded = c.execute(query, {"id": job_id}).one()
        except sqlalchemy.exc.OperationalError:
            return None
        return JobProgress(
            started=applied > 0,
            finished=status >= 7,
            done=applied,
            detail=f"patch job {job_id}: status {status}, {applied} of {recorded} actions applied",
        )

    return read
