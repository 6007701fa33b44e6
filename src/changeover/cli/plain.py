"""Output helpers that need nothing beyond the standard library, and how every command
reports our errors (one line, an exit code).

``cli.output`` re-exports them beside its Rich tables; ``cli.fastpath`` uses them alone,
because importing Rich and Typer costs more than the commands it serves.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from changeover import errors

EXIT_CODES: list[tuple[type[errors.ChangeoverError], int]] = [
    (errors.Forbidden, 6),
    (errors.AuthError, 6),
    (errors.NotFound, 4),
    (errors.Conflict, 5),
    (errors.IntegrityError, 7),
    (errors.InvalidInput, 3),
    (errors.RemoteError, 8),
    (errors.DiskError, 9),
    (errors.Interrupted, 130),
]
JOB_FAILED = 1
"""Exit code of a command whose work ran and found a problem (a failed job, a damaged
install); our errors have theirs in ``EXIT_CODES``."""


def exit_code(exc: errors.ChangeoverError) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return 1


def print_error(exc: errors.ChangeoverError) -> int:
    """``exc`` as one line on stderr (red on a terminal); its exit code."""
    label = "\x1b[1;31merror:\x1b[0m" if sys.stderr.isatty() else "error:"
    sys.stderr.write(f"{label} {exc.message}\n")
    return exit_code(exc)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
