"""Logging of the control plane: text or one JSON object per line, with request and job ids.

Two context variables carry the ids: :data:`request_id` is set by the request middleware
(``observability.RequestMiddleware``) from the caller's ``X-Request-ID`` header or a new
one; :func:`job_context` is set by the job runner around each job it runs. A filter copies
both onto every record, so any ``log.info(...)`` anywhere says which request or job it was
part of without passing ids around.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)

LOG_FORMATS = ("text", "json")
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


@contextmanager
def job_context(kind: str, ident: int | str) -> Iterator[None]:
    """Mark every log line inside as part of job ``kind:ident``."""
    token = job_id.set(f"{kind}:{ident}")
    try:
        yield
    finally:
        job_id.reset(token)


class ContextFilter(logging.Filter):
    """Copy the current request and job ids onto each record (None when outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.job_id = job_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids and any ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, with ``[req=… job=…]`` when the record has them."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [
            f"{name}={value}"
            for name, value in (
                ("req", getattr(record, "request_id", None)),
                ("job", getattr(record, "job_id", None)),
            )
            if value
        ]
        return f"{line} [{' '.join(ids)}]" if ids else line


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send every log record of the process to stderr in ``log_format`` (text or json).

    Raises:
        ValueError: an unknown format.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request it makes at INFO: the server's own (web.stream polling the
    # API, CDN purges) would drown the access log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Uvicorn's own loggers would print in their format; let them go through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
