"""``crash_helpers.kill_mid_job`` on a real child process whose job is counting to 300:
the kill lands where asked, and a job that finished first fails the test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crash_helpers import JobProgress, assert_landed_mid_job, kill_mid_job
from tests_helpers import wait_for

COUNT = (
    "import os, sys, time\n"
    "path, n = sys.argv[1], int(sys.argv[2])\n"
    "for i in range(1, n + 1):\n"
    "    with open(path + '.tmp', 'w') as f: f.write(str(i))\n"
    "    os.replace(path + '.tmp', path)\n"
    "    time.sleep(0.002)\n"
    "with open(path + '.tmp', 'w') as f: f.write('done')\n"
    "os.replace(path + '.tmp', path)\n"
)


def counter(tmp_path: Path, n: int) -> tuple[subprocess.Popen[bytes], object]:
    record = tmp_path / "progress"
    proc = subprocess.Popen([sys.executable, "-c", COUNT, str(record), str(n)])

    def progress() -> JobProgress | None:
        text = record.read_text() if record.exists() else "0"
        if text == "done":
            return JobProgress(started=True, finished=True)
        return JobProgress(started=int(text) > 0, finished=False, done=int(text))

    return proc, progress


def test_the_kill_lands_where_asked_and_the_record_shows_it(tmp_path: Path) -> None:
    proc, progress = counter(tmp_path, 300)
    at_kill = kill_mid_job(proc, progress, "counting", at=100)  # type: ignore[arg-type]
    assert proc.returncode == -9
    assert 100 <= at_kill.done < 300
    after = progress()  # type: ignore[operator]
    assert after == at_kill  # frozen at the look: nothing ran between it and the kill
    assert_landed_mid_job(at_kill, after, "counting")


def test_a_job_that_finished_first_fails_the_test(tmp_path: Path) -> None:
    proc, progress = counter(tmp_path, 1)
    wait_for(lambda: progress().finished, 30, "the short job to finish")  # type: ignore[operator]
    with pytest.raises(AssertionError, match="finished before the kill could land mid-job"):
        kill_mid_job(proc, progress, "a short job")  # type: ignore[arg-type]
    proc.wait(30)


def test_a_record_that_says_finished_is_not_mid_job() -> None:
    with pytest.raises(AssertionError, match="after the kill"):
        assert_landed_mid_job(JobProgress(True, False), JobProgress(True, True), "a job")
