"""Verification commands of patch jobs (A/B ``verify_command``, custom ``run_check``).

A check runs in its own thread, so the reconciler never waits on it: the command is split
with ``shlex`` (no shell), run with ``CHANGEOVER_CHECK_TARGETS="host:port,…"`` (the new
instances) and the job's timeout, and its exit status (0 passes) is written into the job's
``progress.check_results`` with the compare-and-set of ``storage.mutate_progress``, plus a
``check`` event carrying the tail of its output. The control plane's own ``CHANGEOVER_*``
variables (database URL, tokens) are not passed on.

A control plane that dies while a check runs loses it: the planner then sees no result
within the check's timeout and fails the gate (a rollback by default), which is the safe
side.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
from typing import Final

from sqlalchemy.orm import Session

from changeover.control.db import Database, now
from changeover.control.patchjobs.appliers import CheckRequest
from changeover.control.patchjobs.model import JobProgress
from changeover.control.patchjobs.records import PatchJob
from changeover.control.patchjobs.storage import add_event, mutate_progress, with_check_result

log = logging.getLogger("changeover.patchjobs")
OUTPUT_TAIL: Final = 2000


def run_command(command: str, targets: tuple[str, ...], timeout_s: float) -> tuple[bool, str]:
    """Run one check; (passed, what to tell)."""
    try:
        argv = shlex.split(command)
    except ValueError as e:
        return False, f"cannot parse the command: {e}"
    if not argv:
        return False, "empty command"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEOVER_")}
    env["CHANGEOVER_CHECK_TARGETS"] = ",".join(targets)
    try:
        done = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return False, f"no result within {timeout_s:g} s: killed"
    except OSError as e:
        return False, f"cannot run {argv[0]!r}: {e.strerror or e}"
    out = (done.stdout + done.stderr).decode(errors="replace")[-OUTPUT_TAIL:]
    return done.returncode == 0, f"exit status {done.returncode}: {out.strip()}"


class CheckRunner:
    """Starts checks in background threads and records their results."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def start(self, request: CheckRequest) -> None:
        with self._lock:
            if request.key in self._running:
                return
            self._running.add(request.key)
        threading.Thread(
            target=self._run, args=(request,), name=f"check-{request.key}", daemon=True
        ).start()

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def _run(self, request: CheckRequest) -> None:
        try:
            passed, detail = run_command(request.command, request.targets, request.timeout_s)
            self.record(request, passed, detail)
        except Exception:  # a broken check must not take the runner down; it times out
            log.exception("check %s failed to run", request.key)
        finally:
            with self._lock:
                self._running.discard(request.key)

    def record(self, request: CheckRequest, passed: bool, detail: str) -> None:
        def change(s: Session, job: PatchJob, progress: JobProgress) -> JobProgress | None:
            if request.key in progress.check_results:
                return None  # recorded already (another process ran it too)
            verdict = "passed" if passed else "failed"
            add_event(
                s,
                job,
                "check",
                f"verification {request.command!r} {verdict}: {detail[:300]}",
                now(),
                {"key": request.key, "passed": passed, "output": detail},
            )
            return with_check_result(progress, request.key, passed)

        mutate_progress(self.db, request.job_id, change, now())


__all__ = ["CheckRunner", "run_command"]
