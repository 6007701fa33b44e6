"""How often agents sync: every second while the control plane has few hosts and time to
spare, less often as hosts grow in number or as its syncs take longer (a busy control
plane asks for fewer of them rather than answering them all late). Never less often than
four times in the ``LOST_AFTER_S`` after which a silent host counts as lost."""

from __future__ import annotations

from typing import Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from changeover.control.fleet.models import Host
from changeover.control.fleet.services import LOST_AFTER_S

SYNC_INTERVAL_S: Final = 1.0
"""How often an agent syncs while the control plane has few hosts to hear from."""
MAX_SYNC_INTERVAL_S: Final = LOST_AFTER_S / 4
"""The longest interval we ask for: a host misses four syncs before it counts as lost."""
SYNCS_PER_S: Final = 40.0
"""The sync rate one control-plane process answers with room to spare (a sync of 100
instances costs a few milliseconds of CPU); a fleet with more hosts syncs less often."""
SYNC_SHARE: Final = 0.5
"""The share of one process's time that answering syncs may take, by their measured cost."""


def sync_interval(live_hosts: int, seconds_per_sync: float = 0.0) -> float:
    """How often each of ``live_hosts`` agents should sync, so that all of them together
    stay near ``SYNCS_PER_S`` and take at most ``SYNC_SHARE`` of the time when a sync
    costs ``seconds_per_sync`` (agents also sync at once when something changes)."""
    wanted = max(
        SYNC_INTERVAL_S,
        live_hosts / SYNCS_PER_S,
        live_hosts * max(0.0, seconds_per_sync) / SYNC_SHARE,
    )
    return min(MAX_SYNC_INTERVAL_S, wanted)


class SyncPacer:
    """What a sync has cost lately (a moving average of the time each took once it had
    the database), for ``sync_interval``. One per process; a float's update is atomic
    enough here (a lost sample only nudges an average)."""

    def __init__(self, weight: float = 0.05) -> None:
        self.weight = weight
        self.seconds_per_sync = 0.0
        self._live: tuple[float, int] = (float("-inf"), 0)

    def record(self, seconds: float) -> None:
        self.seconds_per_sync += self.weight * (max(0.0, seconds) - self.seconds_per_sync)

    def interval(self, live_hosts: int) -> float:
        return sync_interval(live_hosts, self.seconds_per_sync)

    def interval_for(self, s: Session, now: float) -> float:
        """``interval`` for the hosts alive now, counted at most once a second (every
        sync asks; the count moves slowly)."""
        counted_at, live = self._live
        if not 0 <= now - counted_at < 1.0:
            live = s.scalar(
                select(func.count(Host.id)).where(Host.last_seen_at > now - LOST_AFTER_S)
            )
            self._live = (now, live or 0)
        return self.interval(self._live[1])
