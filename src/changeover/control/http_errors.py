"""How our errors become HTTP answers: the status code of each kind, and the one body shape
``{"error": code, "message": text, ...facts}``. Used by the application's exception
handlers and by the handlers that answer without the framework (``fleet.lanes``).
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


HTTP_CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}
"""The ``error`` code of an answer the web framework gives itself (no route, wrong method,
a body it cannot parse), so that it reads like ours."""


def http_error_body(status: int, detail: object) -> dict[str, object]:
    message = detail if isinstance(detail, str) else f"HTTP {status}"
    return {"error": HTTP_CODES.get(status, "error"), "message": message}


def internal_error_body(request_id: str | None) -> dict[str, object]:
    """A bug's answer: nothing about its cause (that is in the server log), the request id
    to find it there."""
    rid = f" (request id {request_id})" if request_id else ""
    return {
        "error": "internal",
        "message": f"internal server error{rid}: the server log has the details",
    }


def validation_message(errors: Sequence[Any]) -> str:
    """One line from Pydantic's (or FastAPI's) list of validation errors."""
    parts = []
    for err in errors[:5]:
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        msg = err.get("msg")
        reason = (err.get("ctx") or {}).get("error")
        if err.get("type") == "json_invalid" and reason:
            where, msg = "body", f"{msg}: {reason}"
        parts.append(f"{where or 'body'}: {msg}")
    return "invalid request: " + "; ".join(parts)


def database_unavailable(exc: Exception) -> dict[str, str]:
    """The 503 body for a database that did not answer (``OperationalError``: restarting,
    out of reach, a lock not got in time). The transaction was rolled back (or, lost in its
    commit, may have landed): the same request later, or through another replica, is the
    way on. Not a bug of ours, so not a 500."""
    orig = getattr(exc, "orig", None)
    reason = str(orig or exc).splitlines()[0][:300] if str(orig or exc) else type(exc).__name__
    return {
        "error": "unavailable",
        "message": f"the database did not answer ({reason}): try again in a moment",
    }
