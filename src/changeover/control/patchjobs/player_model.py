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

``fit`` derives a model from the fleet's ended sessions (kept 7 days): arrivals per slice
of the day, lengths as equal-count slices of the observed ones; ``fit_or_given`` prefers
explicit parameters, falls back to the history, and says which it used.

Everything is drawn from the ``random.Random`` the caller passes, so a simulation is
reproducible from its seed. The model is checked when built: a negative or infinite rate,
a share outside [0, 1], a zero length raise ``InvalidInput`` naming the field.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from changeover.errors import InvalidInput

DAY_S: Final = 86400.0
MAX_BUCKETS: Final = 1440
"""At most one rate per minute of the day."""
MAX_SESSION_S: Final = 30 * DAY_S
MIN_SESSIONS: Final = 30
"""Fewer ended sessions than this fit nothing worth trusting."""
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


@dataclass(frozen=True)
class EndedSession:
    """One ended session of the fleet's history (``sessions`` rows, kept 7 days)."""

    started_at: float
    ended_at: float
    players: int = 1


@dataclass(frozen=True)
class Fitted:
    """A player model and where it came from, for the answer to say so."""

    model: PlayerModel
    source: str
    """``history`` or ``explicit``."""
    note: str


def fit(
    history: Sequence[EndedSession],
    now: float,
    *,
    window_s: float = 7 * DAY_S,
    buckets: int = 24,
    components: int = 12,
    friend_join_share: float = 0.0,
    notice_leave_share: float = 0.0,
) -> PlayerModel | None:
    """A model fitted from the sessions that ended within ``window_s`` before ``now``:
    arrivals per ``buckets`` slices of the day (flat when the history spans less than a
    day), lengths as ``components`` equal-count slices of the observed lengths (each a
    log-normal around its median). None with fewer than ``MIN_SESSIONS`` sessions.
    Friend joins and notice behaviour are not in the history: they are given."""
    kept = [h for h in history if now - window_s <= h.started_at <= h.ended_at <= now]
    if len(kept) < MIN_SESSIONS:
        return None
    span = max(1.0, now - min(h.started_at for h in kept))
    players = sum(max(1, h.players) for h in kept)
    if span < DAY_S:
        rates: tuple[float, ...] = (players / span,)
    else:
        counts = [0] * buckets
        for h in kept:
            counts[int((h.started_at % DAY_S) / DAY_S * buckets) % buckets] += max(1, h.players)
        days = span / DAY_S
        rates = tuple(c / (days * DAY_S / buckets) for c in counts)
    lengths = sorted(max(1.0, h.ended_at - h.started_at) for h in kept)
    k = max(1, min(components, len(lengths)))
    bins = [lengths[len(lengths) * j // k : len(lengths) * (j + 1) // k] for j in range(k)]
    bins = [b for b in bins if b]
    mix = tuple(
        SessionComponent(
            share=len(b) / len(lengths),
            median_s=min(MAX_SESSION_S, b[len(b) // 2]),
            sigma=min(2.0, math.log(b[-1] / b[0]) / 4),
        )
        for b in bins
    )
    # Float shares may miss 1 by an ulp: give the rest to the last component.
    last = mix[-1]
    mix = (*mix[:-1], replace(last, share=1.0 - sum(c.share for c in mix[:-1])))
    return PlayerModel(rates, mix, friend_join_share, notice_leave_share)


def fit_or_given(history: Sequence[EndedSession], now: float, given: PlayerModel | None) -> Fitted:
    """The explicit model when given; else one fitted from the history; and a note saying
    which (a fleet without history falls back to the explicit parameters, and says so).

    Raises:
        InvalidInput: neither a model nor enough history to fit one.
    """
    if given is not None:
        n = len(history)
        return Fitted(given, "explicit", f"explicit player model ({n} ended sessions ignored)")
    fitted = fit(history, now)
    if fitted is None:
        raise InvalidInput(
            f"the fleet's history holds {len(history)} ended sessions (at least "
            f"{MIN_SESSIONS} are needed to fit a player model): give the arrival rate and "
            "session lengths explicitly",
            field="players",
        )
    return Fitted(fitted, "history", f"fitted from {len(history)} ended sessions")


def joins(rng: random.Random, share: float) -> bool:
    """One draw with probability ``share`` (shared so every caller draws alike)."""
    return share > 0 and rng.random() < share


__all__ = [
    "DAY_S",
    "MIN_SESSIONS",
    "EndedSession",
    "Fitted",
    "PlayerModel",
    "SessionComponent",
    "fit",
    "fit_or_given",
    "joins",
]
