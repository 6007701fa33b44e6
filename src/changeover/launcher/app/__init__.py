"""The players' desktop app (PySide6): a window over :mod:`changeover.launcher.engine`.

``state`` decides what the window shows (pure, tested without a display), ``jobs`` runs
engine calls on worker threads, ``window`` renders, ``sources`` are the seams to the news
feed and the game's process, ``texts`` every translatable string, ``run`` the entry.
Importing this package does not import Qt: ``run()`` does, so ``changeover-launcher``'s
CLI commands start without it.
"""

from __future__ import annotations

from pathlib import Path


def run(config: Path | None = None) -> int:
    """Open the launcher's window for ``config`` (see :func:`changeover.launcher.app.run.run`)."""
    from changeover.launcher.app.run import run as run_window

    return run_window(config)


__all__ = ["run"]
