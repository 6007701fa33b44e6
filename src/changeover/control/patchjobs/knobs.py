"""The tuning knobs of a patch job, with the defaults docs/architecture.md promises.

Each group is a frozen dataclass that checks itself when built and raises ``InvalidInput``
naming the field (``rolling.max_surge``, ``drain.notice_before_s`` …), so a bad job spec is
refused when it is submitted, never halfway through a rollout.

    rolling   max_unavailable 25 % (at least 1), max_surge 25 %, min_healthy_time 10 s,
              healthy_deadline 5 min, progress_deadline 10 min, auto_revert on
    stop      the profile's stop signal and stop_timeout_s, then SIGKILL; a job overrides
              either only where it gives it
    drain     deadline 12 h, notices 60, 15, 5 and 1 min before it
    canary    share 10 %, analysis window 10 min, auto_promote on
    ab        optional verification command against the new set, 5 min to pass
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from changeover.errors import InvalidInput

PERCENT_RE: Final = re.compile(r"(\d{1,3})%")
SIGNALS: Final = frozenset({"SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2"})
"""Graceful stop signals a profile may choose; SIGKILL is the forced one."""
MAX_DEADLINE_S: Final = 7 * 24 * 3600.0

Amount = int | str
"""A count of instances (``2``) or a share of the selection (``"25%"``)."""


def check_amount(field: str, value: Amount) -> None:
    """Raises: InvalidInput: not a count >= 0 nor a ``"N%"`` string with N in 0..100."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"{field} must be a count or a percentage such as '25%'")
    if isinstance(value, int):
        if value < 0:
            raise InvalidInput(f"{field} must be >= 0, got {value}", field=field)
        return
    m = PERCENT_RE.fullmatch(value)
    if m is None or int(m.group(1)) > 100:
        raise InvalidInput(f"{field} must be a percentage 0%..100%, got {value!r}", field=field)


def resolve_amount(value: Amount, total: int, *, round_up: bool) -> int:
    """``value`` as a number of instances out of ``total`` (integer arithmetic, no float
    rounding surprises: 25 % of 6 is 1 rounded down, 2 rounded up)."""
    if isinstance(value, int):
        return value
    share = int(value[:-1]) * total
    return -(-share // 100) if round_up else share // 100


def _finite(field: str, value: float, *, low: float, high: float, low_ok: bool = True) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    ok = (
        number
        and math.isfinite(value)
        and (value >= low if low_ok else value > low)
        and value <= high
    )
    if not ok:
        bound = "[" if low_ok else "("
        raise InvalidInput(f"{field} must be in {bound}{low:g}, {high:g}], got {value!r}")


@dataclass(frozen=True)
class RollingKnobs:
    max_unavailable: Amount = "25%"
    """Rounded down, but a percentage never below 1; a count of 0 needs max_surge > 0."""
    max_surge: Amount = "25%"
    """Rounded up."""
    min_healthy_time_s: float = 10.0
    healthy_deadline_s: float = 300.0
    progress_deadline_s: float = 600.0
    auto_revert: bool = True

    def __post_init__(self) -> None:
        check_amount("rolling.max_unavailable", self.max_unavailable)
        check_amount("rolling.max_surge", self.max_surge)
        if self.max_unavailable == 0 and self.max_surge in (0, "0%"):
            raise InvalidInput("rolling.max_unavailable and rolling.max_surge cannot both be 0")
        _finite("rolling.min_healthy_time_s", self.min_healthy_time_s, low=0, high=3600)
        _finite(
            "rolling.healthy_deadline_s",
            self.healthy_deadline_s,
            low=self.min_healthy_time_s,
            high=MAX_DEADLINE_S,
            low_ok=False,
        )
        _finite(
            "rolling.progress_deadline_s",
            self.progress_deadline_s,
            low=self.healthy_deadline_s,
            high=MAX_DEADLINE_S,
        )


@dataclass(frozen=True)
class StopPolicy:
    """A job's stop method: each field overrides the profile's only when given."""

    signal: str | None = None
    """None: each instance's profile's ``stop_signal``. SIGKILL means a hard kill with no
    grace (seed 001's stop method "Hard kill")."""
    timeout_s: float | None = None
    """How long a graceful stop may take before the agent sends SIGKILL; None: the
    profile's ``stop_timeout_s``."""

    def __post_init__(self) -> None:
        if self.signal is not None and self.signal != "SIGKILL" and self.signal not in SIGNALS:
            allowed = ", ".join(sorted({*SIGNALS, "SIGKILL"}))
            raise InvalidInput(f"stop.signal must be one of {allowed}, got {self.signal!r}")
        if self.timeout_s is not None:
            _finite("stop.timeout_s", self.timeout_s, low=0, high=3600)

    @property
    def graceful(self) -> bool:
        return self.signal != "SIGKILL"


@dataclass(frozen=True)
class DrainPolicy:
    """How an instance with players leaves: never stopped before ``deadline_s`` after it
    was drained, always stopped by then, told ``notice_before_s`` before."""

    deadline_s: float = 12 * 3600.0
    notice_before_s: tuple[float, ...] = (3600.0, 900.0, 300.0, 60.0)

    def __post_init__(self) -> None:
        _finite("drain.deadline_s", self.deadline_s, low=0, high=MAX_DEADLINE_S, low_ok=False)
        notices = self.notice_before_s
        if not isinstance(notices, tuple) or len(notices) > 10:
            raise InvalidInput("drain.notice_before_s must be a list of at most 10 times")
        for t in notices:
            _finite("drain.notice_before_s", t, low=0, high=self.deadline_s, low_ok=False)
        if len(set(notices)) != len(notices):
            raise InvalidInput("drain.notice_before_s must not repeat a time")
        # Stored longest first: the planner walks them in the order they fall due.
        object.__setattr__(self, "notice_before_s", tuple(sorted(notices, reverse=True)))


@dataclass(frozen=True)
class CanaryKnobs:
    share: float = 0.10
    """Of the selection, rounded up: at least one instance."""
    analysis_window_s: float = 600.0
    auto_promote: bool = True
    """Off: pause after a good window until an operator resumes (promotes)."""

    def __post_init__(self) -> None:
        _finite("canary.share", self.share, low=0, high=1, low_ok=False)
        _finite("canary.analysis_window_s", self.analysis_window_s, low=0, high=MAX_DEADLINE_S)


@dataclass(frozen=True)
class ABKnobs:
    verify_command: str | None = None
    """Run against the new set before any player reaches it; exit 0 passes."""
    verify_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.verify_command is not None and not self.verify_command.strip():
            raise InvalidInput("ab.verify_command must not be empty (leave it out instead)")
        _finite("ab.verify_timeout_s", self.verify_timeout_s, low=0, high=86400, low_ok=False)


__all__ = [
    "ABKnobs",
    "Amount",
    "CanaryKnobs",
    "DrainPolicy",
    "RollingKnobs",
    "StopPolicy",
    "check_amount",
    "resolve_amount",
]
