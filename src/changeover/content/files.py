"""Writing a small file atomically, on any platform (the launcher runs on Windows too)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PUBLIC_MODE = 0o644
"""Readable by whatever static server or sync tool serves the tree."""


def atomic_write(path: Path, data: bytes, mode: int = PUBLIC_MODE) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # By name, not os.fchmod: Python 3.11 has no fchmod on Windows (where only the
        # read-only bit of a mode means anything).
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
