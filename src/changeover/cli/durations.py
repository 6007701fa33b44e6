"""The one duration syntax of the CLI: ``30`` (seconds), ``30s``, ``5m``, ``12h``, ``1d``,
with decimals (``1.5h``). Every option that takes a time parses it here, through
``seconds`` (flags read as text) or ``parser`` (a Typer option's ``parser=``).

Kept free of Typer and of the control plane so that the launcher's fast path can use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Final

from changeover.errors import InvalidInput

DURATION_RE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
UNIT_S: Final[Mapping[str, float]] = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
UNIT_NAMES: Final[Mapping[str, str]] = {
    "": "seconds",
    "s": "seconds",
    "m": "minutes",
    "h": "hours",
    "d": "days",
}
EXAMPLES: Final = "30, 30s, 5m, 12h or 1d"


def split(flag: str, value: str) -> tuple[float, str]:
    """``value`` as (amount, unit letter, "" for none).

    Raises:
        InvalidInput: not a duration; the message names ``flag`` and shows the syntax.
    """
    m = DURATION_RE.fullmatch(value)
    if m is None:
        raise InvalidInput(f"{flag} {value!r}: give a duration such as {EXAMPLES}", field=flag)
    return float(m.group(1)), m.group(2)


def seconds(flag: str, value: str | float, *, low: float = 0.0) -> float:
    """``value`` in seconds (a number is taken as seconds already).

    Raises:
        InvalidInput: not a duration, below ``low``, or too large.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        out = float(value)
    else:
        amount, unit = split(flag, str(value))
        out = amount * UNIT_S[unit]
    if not math.isfinite(out):
        raise InvalidInput(f"{flag} {value!r} is too large", field=flag)
    if out < low:
        raise InvalidInput(f"{flag} {value!r}: give at least {low:g} s", field=flag)
    return out


def parser(flag: str, *, low: float = 0.0) -> Callable[[str | float], float]:
    """A Typer ``parser=`` for ``flag`` (it also gets the option's default, a number)."""

    def parse(value: str | float) -> float:
        return seconds(flag, value, low=low)

    return parse


__all__ = ["DURATION_RE", "EXAMPLES", "UNIT_NAMES", "UNIT_S", "parser", "seconds", "split"]
