"""The small vocabularies of patch jobs: methods, job statuses, cancel modes, instance states.

Kept free of other imports so the API (``GET /patchjobs/methods``, ``.../statuses``) and
every planner share one table. The numbers are stable: they are stored in the database
and returned by the API (seed 001's ``patchJobMethodId`` and ``status``).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final


class Method(IntEnum):
    FORCED = 1
    ROLLING = 2
    AB = 3
    BLEED_OFF = 4
    CANARY = 5
    CUSTOM = 6

    @property
    def label(self) -> str:
        return METHOD_NAMES[self]


METHOD_NAMES: Final[dict[Method, str]] = {
    Method.FORCED: "Forced deployment",
    Method.ROLLING: "Rolling update",
    Method.AB: "A/B deployment",
    Method.BLEED_OFF: "Bleed-off",
    Method.CANARY: "Canary",
    Method.CUSTOM: "Custom steps",
}


class JobStatus(IntEnum):
    """Before start the reconciler sets SCHEDULED / WAITING / PRESTAGING from ``schedule``;
    from start on the planner keeps ``JobProgress.status``."""

    SCHEDULED = 1
    WAITING = 2
    PRESTAGING = 3
    RUNNING = 4
    PAUSED = 5
    ROLLING_BACK = 6
    COMPLETED = 7
    FAILED = 8
    ROLLED_BACK = 9
    CANCELLED = 10
    FINALIZED_BY_FORCE = 11

    @property
    def label(self) -> str:
        return self.name.replace("_", " ").capitalize()

    @property
    def terminal(self) -> bool:
        return self >= JobStatus.COMPLETED


class CancelMode(StrEnum):
    REVERT = "revert"
    """Go back to the old builds (still staged on every host)."""
    WRAP_UP = "wrap_up"
    """Stop the job and leave every instance as it is."""


# Observed instance states, as the agent reports them (``control.fleet.models.Instance``).
STAGING: Final = "staging"
STARTING: Final = "starting"
READY: Final = "ready"
STOPPING: Final = "stopping"
STOPPED: Final = "stopped"
FAILED: Final = "failed"
LOST: Final = "lost"
GONE_STATES: Final = frozenset({STOPPED, LOST})
"""An instance in one of these (or missing from the view) no longer runs."""

# Desired instance states, as the control plane writes them.
RUNNING: Final = "running"
DRAINING: Final = "draining"

__all__ = [
    "DRAINING",
    "FAILED",
    "GONE_STATES",
    "LOST",
    "METHOD_NAMES",
    "READY",
    "RUNNING",
    "STAGING",
    "STARTING",
    "STOPPED",
    "STOPPING",
    "CancelMode",
    "JobStatus",
    "Method",
]

FINISHED_EVENT: Final = "finished"
"""The last event of a job: its result (what result reports are made of)."""
FINISHED_WAIT_S: Final = 10.0
"""How long a follower of a final job waits for its ``finished`` event. The Finish action
commits the final status and that event together, but a follower (the CLI's ``--wait``,
the dashboard's stream) reads events and status in separate queries: one that sees the
final status reads the events again until the event is there, this long at most."""
