"""Job states shared by the server and its clients (kept free of heavy imports).

The numbers are those of seed 000's Image Version Status: 1 Created, 2 Pending,
3 Queued, 4 Running, 5 Completed, 6 Failed. ``control.jobs`` explains the transitions.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class JobState(IntEnum):
    CREATED = 1
    PENDING = 2
    QUEUED = 3
    RUNNING = 4
    COMPLETED = 5
    FAILED = 6

    @property
    def label(self) -> str:
        return self.name.capitalize()

    @property
    def done(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED)


def state_dict(value: int) -> dict[str, Any]:
    s = JobState(value)
    return {"status": int(s), "status_name": s.label}
