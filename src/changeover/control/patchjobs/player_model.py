"""How players behave, for the rollout simulator (``simulate``): when they arrive, how long
they play, whether they join a friend, what they do when their server gives notice.

    PlayerModel        arrivals per second over the day (one rate, or a curve of evenly
                       spaced buckets over 24 h UTC), a mix of session lengths, the share
                       of arrivals that join a friend already playing, the share of
                       players who leave (and play on elsewhere) at their server's notice
    SessionComponent   one part of the mix: a share, a median length and a log-normal
                       spread (0 = every session that long); many short matches, some
                       hour-long sessions, a few near-endless ones give the heavy tail of
                       seed 002

Everything is drawn from the ``random.Random`` the caller passes, so a simulation is
reproducible from its seed. The model is checked when built: a negative or infinite rate,
a share outside [0, 1], a zero length raise ``InvalidInput`` naming the field.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

from changeover.errors import InvalidInput

DAY_S: Final = 86400.0
MAX_BUCKETS: Final = 1440
"""At most one rate per minute of the day."""
MAX_SESSION_S: Final = 30 * DAY_S
RESIDUAL_TRIES: Final = 200
"""Draws spent looking for a length beyond a running session's age before falling back."""


def _number(field: str, value: object, *, low: float, high: float, low_ok: bool = True) -> float:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= low if low_ok else value > low)
        and value <= high
    )
    if not ok:
        bound = "[" if low_ok else "("
        raise InvalidInput(
            f"{field} must be in {bound}{low:g}, {high:g}], got {value!r}", field=field
        )
    assert isinstance(value, int | float)
    return float(value)


@dataclass(frozen=True)
class SessionComponent:
    """``share`` of sessions last about ``median_s`` (log-normal with ``sigma``)."""

    share: float
    median_s: float
    sigma: float = 0.0

    def __post_init__(self) -> None:
        _number("sessions.share", self.share, low=0, high=1)
        _number("sessions.median_s", self.median_s, low=0, high=MAX_SESSION_S, low_ok=False)
        _number("sessions.sigma", self.sigma, low=0, high=5)

    def draw(self, rng: random.Random) -> float:
        if self.sigma == 0:
            return self.median_s
        return min(MAX_SESSION_S, rng.lognormvariate(math.log(self.median_s), self.sigma))


@dataclass(frozen=True)
class PlayerModel:
    """Player behaviour (module docstring). Raises ``InvalidInput`` when built with an
    absurd value; the message names the field."""

    arrivals_per_s: tuple[float, ...]
    """New players per second: one value for all day, or N values for N equal slices of
    the UTC day (24 = hourly)."""
    sessions: tuple[SessionComponent, ...]
    friend_join_share: float = 0.0
    """Of arriving players, the share that joins a friend who is playing (picked at
    random among the players online); such a join may land on a draining server."""
    notice_leave_share: float = 0.0
    """Of the players on a server when it gives its first shutdown notice, the share that
    leaves at once and plays the rest of its session elsewhere."""

    def __post_init__(self) -> None:
        rates = self.arrivals_per_s
        if not isinstance(rates, tuple) or not 1 <= len(rates) <= MAX_BUCKETS:
            raise InvalidInput(
                f"arrivals_per_s must list 1 to {MAX_BUCKETS} rates", field="arrivals_per_s"
            )
        for r in rates:
            _number("arrivals_per_s", r, low=0, high=1e6)
        if not isinstance(self.sessions, tuple) or not self.sessions:
            raise InvalidInput("sessions must list at least one component", field="sessions")
        total = sum(c.share for c in self.sessions)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise InvalidInput(f"sessions: the shares must add up to 1, got {total:g}")
        _number("friend_join_share", self.friend_join_share, low=0, high=1)
        _number("notice_leave_share", self.notice_leave_share, low=0, high=1)

    @property
    def peak_rate(self) -> float:
        return max(self.arrivals_per_s)

    def rate_at(self, t: float) -> float:
        """Arrivals per second at unix time ``t``."""
        n = len(self.arrivals_per_s)
        return self.arrivals_per_s[int((t % DAY_S) / DAY_S * n) % n]

    def next_arrival(self, rng: random.Random, t: float, until: float) -> float | None:
        """The first arrival after ``t`` (a Poisson process thinned to the day's curve), or
        None if there is none before ``until``."""
        peak = self.peak_rate
        if peak <= 0:
            return None
        while True:
            t += rng.expovariate(peak)
            if t >= until:
                return None
            if rng.random() * peak < self.rate_at(t):
                return t

    def session_length(self, rng: random.Random) -> float:
        """A fresh session's length in seconds."""
        x = rng.random()
        for c in self.sessions:
            x -= c.share
            if x < 0:
                return c.draw(rng)
        return self.sessions[-1].draw(rng)

    def remaining(self, rng: random.Random, age_s: float) -> float:
        """How long a session already ``age_s`` old still lasts: a length drawn from the
        mix given that it exceeds the age (a long-running session is likely a long one)."""
        for _ in range(RESIDUAL_TRIES):
            length = self.session_length(rng)
            if length > age_s:
                return length - age_s
        return self.session_length(rng)  # older than the mix allows: treat it as fresh


def joins(rng: random.Random, share: float) -> bool:
    """One draw with probability ``share`` (shared so every caller draws alike)."""
    return share > 0 and rng.random() < share


__all__ = ["DAY_S", "PlayerModel", "SessionComponent", "joins"]
