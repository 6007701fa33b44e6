"""Start-up milestones, for the cold-start benchmark and the packaged app's test.

When ``CHANGEOVER_LAUNCHER_TIMINGS`` names a file, the window appends one JSON line per
milestone the first time it is reached: ``painted`` (the window's first paint) and
``ready`` (the first paint after the selected branch became "ready to play": what the
player sees, not when the state was known, which can come before any paint). Each line carries
the wall-clock time, so a caller that noted when it spawned the process measures from
there, through the interpreter's or the frozen executable's own start. Unset, nothing is
written and nothing is watched.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEvent, QObject
from PySide6.QtWidgets import QWidget

ENV = "CHANGEOVER_LAUNCHER_TIMINGS"
PAINTED = "painted"
READY = "ready"


class Milestones(QObject):
    """Writes each milestone once; watches for the first paint of ``window``."""

    def __init__(self, window: QWidget, path: Path | None) -> None:
        super().__init__(window)
        self.window = window
        self.path = path
        self.reached: set[str] = set()
        self.ready_pending = False
        app = QCoreApplication.instance()
        if path is not None and app is not None:
            # Children paint too, and the first of them may come before the window's
            # own background: any widget of this window counts.
            app.installEventFilter(self)

    @classmethod
    def from_environment(cls, window: QWidget) -> Milestones:
        value = os.environ.get(ENV)
        return cls(window, Path(value) if value else None)

    def ready_to_play(self) -> None:
        """The window now shows "ready to play": ``ready`` is marked when it is painted."""
        if self.path is not None and READY not in self.reached:
            self.ready_pending = True
            self.window.update()

    def mark(self, name: str) -> None:
        if self.path is None or name in self.reached:
            return
        self.reached.add(name)
        line = json.dumps({"event": name, "t": time.time(), "pid": os.getpid()})
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 — Qt's name
        if (
            event.type() == QEvent.Type.Paint
            and isinstance(watched, QWidget)
            and watched.window() is self.window
        ):
            self.mark(PAINTED)
            if self.ready_pending:
                self.mark(READY)
                app = QCoreApplication.instance()
                if app is not None:
                    app.removeEventFilter(self)
        return False
