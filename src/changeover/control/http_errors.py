"""How our errors become HTTP answers: the status code of each kind, and the one body shape
``{"error": code, "message": text, ...facts}``. Used by the application's exception
handlers and by the handlers that answer without the framework (``fleet.allocate_lane``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from changeover.control.fleet.allocator import Unavailable
from changeover.errors import (
    AuthError,
    ChangeoverError,
    Conflict,
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotFound,
    RemoteError,
)

STATUS: list[tuple[type[ChangeoverError], int]] = [
    (Unavailable, 503),  # overloaded or stopping: retry later or elsewhere
    (Forbidden, 403),
    (AuthError, 401),
    (NotFound, 404),
    (Conflict, 409),
    (IntegrityError, 422),
    (InvalidInput, 400),
    (RemoteError, 502),
]


def status_for(exc: ChangeoverError) -> int:
    for kind, code in STATUS:
        if isinstance(exc, kind):
            return code
    return 500


def validation_message(errors: Sequence[Any]) -> str:
    """One line from Pydantic's (or FastAPI's) list of validation errors."""
    parts = []
    for err in errors[:5]:
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{where or 'body'}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts)
