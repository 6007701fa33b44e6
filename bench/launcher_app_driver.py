"""One update through the desktop app's window, for ``bench/launcher_app.py``.

    python bench/launcher_app_driver.py CONFIG BRANCH

Opens the launcher's window (Qt's offscreen platform) on ``CONFIG`` as a player would,
waits for "update available", presses Update (the window's own ``start_sync``, what the
button calls), waits for "ready to play" and prints one JSON line: what the sync
downloaded and how long it took. Before pressing Update it prints ``idle`` on a line of
its own, so the caller can sample the idle process first. Exits 1 with the window's
message if the branch ends anywhere else.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from changeover.launcher.app.run import build
from changeover.launcher.app.state import Phase, view
from changeover.launcher.app.window import LauncherWindow

POLL_MS = 20


def main(config: Path, branch: str) -> int:
    app = QApplication([sys.argv[0]])
    window = build(config)
    if not isinstance(window, LauncherWindow):
        print(json.dumps({"error": getattr(window, "message", "no window")}), flush=True)
        return 1
    window.show()
    window.select_branch(branch)
    started: list[float] = []
    outcome: dict[str, object] = {}

    def phase() -> Phase:
        return view(window.states[branch]).phase

    def step() -> None:
        now = phase()
        if not started and now is Phase.UPDATE_AVAILABLE:
            print("idle", flush=True)
            sys.stdin.readline()  # the caller sampled the idle process
            started.append(time.perf_counter())
            window.start_sync()
        elif started and now is Phase.READY:
            report = window.reports[branch]
            outcome.update(
                downloaded_bytes=report.downloaded_bytes,
                seconds=time.perf_counter() - started[0],
            )
            app.quit()
        elif now in (Phase.ERROR, Phase.OFFLINE, Phase.NOT_INSTALLED):
            state = window.states[branch]
            outcome.update(error=f"{now.value}: {state.error or state.notice}")
            app.quit()

    timer = QTimer()
    timer.timeout.connect(step)
    timer.start(POLL_MS)
    app.exec()
    window.close()
    window.jobs.close(60_000)
    print(json.dumps(outcome), flush=True)
    return 1 if "error" in outcome else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
