"""How a moment is written for people, in messages, reasons and reports: a UTC date and
time, never a raw epoch. (API fields stay epoch seconds: they are for programs.)"""

from __future__ import annotations

from datetime import UTC, datetime


def utc(ts: float) -> str:
    """``ts`` (epoch seconds) as ``2026-12-02 04:56:32 UTC``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
