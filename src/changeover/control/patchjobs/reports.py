"""Patch-job reports, the pure part: which events are told, the mails, the webhook bytes.

The notifier (``notify``) reads undelivered ``patch_job_events`` and delivers them; every
decision it makes that does not need a socket or the database lives here:

    mail_kind(event)            progress / result / nothing
    compose_progress(...)       one plain-text mail for several events of one job
    compose_result(...)         the final report of a job
    webhook_body(...)           the JSON a webhook receives (stable, sorted keys)
    sign / webhook_headers      HMAC-SHA256 over "<timestamp>.<body>"
    verify_signature(...)       what a receiver calls (documented in docs/patchjobs.md)
    retry_delay_s(attempt)      the backoff schedule
    parse_smtp_url(url)         smtp://, smtp+starttls://, smtps:// with user:pass

The timestamp is part of the signed material so a captured request cannot be replayed
later: a receiver refuses one whose timestamp is more than ``tolerance_s`` away from its
clock, and cannot change the timestamp without breaking the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from changeover.control.patchjobs.states import FINISHED_EVENT, JobStatus
from changeover.errors import AuthError, InvalidInput
from changeover.times import utc

PROGRESS_KINDS: Final = frozenset({"status", "phase", "cancel", "resume"})
"""Events mailed to addresses with progress reports: the job changed status or phase, or
an operator cancelled or resumed it. Actions and checks are too many to mail; the
webhook gets every event."""
RESULT_KIND: Final = FINISHED_EVENT
"""The last event of a job: mailed to addresses with result reports."""

EVENT_HEADER: Final = "X-Changeover-Event"
TIMESTAMP_HEADER: Final = "X-Changeover-Timestamp"
SIGNATURE_HEADER: Final = "X-Changeover-Signature"
SIGNATURE_TOLERANCE_S: Final = 300.0
"""How far a receiver accepts a webhook's timestamp from its own clock (both ways)."""

RETRY_BASE_S: Final = 5.0
RETRY_CAP_S: Final = 3600.0
MAX_ATTEMPTS: Final = 10
"""5 s, 10 s, 20 s … capped at an hour: about 43 minutes of retries before giving up."""

INTENT_LABELS: Final[Mapping[str, str]] = {
    "": "waiting",
    "replace": "replacing",
    "notice": "notified",
    "drain": "draining",
    "undrain": "kept",
    "stop": "stopped",
}
"""What a job last asked of an instance (``JobProgress.intents``), as a report says it."""


class BadSignature(AuthError):
    """A webhook request whose signature, timestamp or headers do not check out."""

    code = "bad_signature"


# -- what is told ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EventView:
    """One ``patch_job_events`` row, as the reports need it."""

    id: int
    job_id: int
    at: float
    kind: str
    status: int
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RegionProgress:
    region: str
    counts: Mapping[str, int]
    """State (``waiting``, ``stopped`` …, or ``old``/``new`` when observed) -> instances."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class JobView:
    """The job an event belongs to, as it is when the report is written."""

    id: int
    name: str
    status: int
    phase: str = ""
    reason: str = ""
    regions: tuple[RegionProgress, ...] = ()

    @property
    def status_name(self) -> str:
        return status_name(self.status)


@dataclass(frozen=True)
class Mail:
    to: tuple[str, ...]
    subject: str
    body: str
    event_ids: tuple[int, ...]
    """The events this mail reports (marked mailed once it is sent)."""


MailKind = Literal["progress", "result"]


def status_name(status: int) -> str:
    try:
        return JobStatus(status).label
    except ValueError:
        return f"status {status}"


def mail_kind(kind: str) -> MailKind | None:
    """Which report an event of ``kind`` belongs to, if any."""
    if kind == RESULT_KIND:
        return "result"
    if kind in PROGRESS_KINDS:
        return "progress"
    return None


def region_progress(progress: Mapping[str, Any]) -> tuple[RegionProgress, ...]:
    """Per region, how many instances of the selection are in each step of the job, from a
    stored ``JobProgress`` (``codec.progress_to_dict``); regions sorted by name.

    A malformed record gives what can be read of it: a report must never fail on it.
    """
    intents = progress.get("intents") or {}
    by_region: dict[str, Counter[str]] = {}
    for member in progress.get("selection") or ():
        if not isinstance(member, Mapping):
            continue
        intent = str(intents.get(str(member.get("instance_id")), ""))
        label = INTENT_LABELS.get(intent, intent)
        by_region.setdefault(str(member.get("region") or "-"), Counter())[label] += 1
    return tuple(RegionProgress(r, dict(c)) for r, c in sorted(by_region.items()))


def _job_title(job: JobView) -> str:
    return f'patch job {job.id} "{job.name}"' if job.name else f"patch job {job.id}"


def _summary(job: JobView) -> list[str]:
    lines = [f"Status: {job.status_name} ({job.status})"]
    if job.phase:
        lines.append(f"Phase: {job.phase}")
    if job.reason:
        lines.append(f"Reason: {job.reason}")
    lines += ["", *_progress_table(job.regions)]
    return lines


def _progress_table(regions: Sequence[RegionProgress]) -> list[str]:
    if not regions:
        return ["Progress: no instances selected yet."]
    states = sorted({s for r in regions for s in r.counts})
    header = ["region", "instances", *states]
    rows = [[r.region, str(r.total), *(str(r.counts.get(s, 0)) for s in states)] for r in regions]
    total = sum(r.total for r in regions)
    rows.append(
        ["all", str(total), *(str(sum(r.counts.get(s, 0) for r in regions)) for s in states)]
    )
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return ["Progress by region:", line(header), *(line(r) for r in rows)]


def _event_line(e: EventView) -> str:
    return f"  {utc(e.at)}  {e.kind:<8} {status_name(e.status)}: {e.message}"


FOOTER: Final = (
    "This report was sent by Changeover because this address is on the job's report list. "
    "`changeover patchjob show {id}` shows the job; `changeover patchjob update {id} "
    "--email ...` changes who gets reports."
)


def _footer(job_id: int) -> str:
    return textwrap.fill(FOOTER.format(id=job_id), width=72, break_on_hyphens=False)


def compose_progress(job: JobView, events: Sequence[EventView], to: Iterable[str]) -> Mail:
    """One progress mail for ``events`` (several changes of one job, oldest first)."""
    if not events:
        raise InvalidInput("a progress report needs at least one event")
    n = len(events)
    what = events[-1].message if n == 1 else f"{n} changes"
    subject = f"[changeover] {_job_title(job)}: {job.status_name} - {what}"
    body = [
        f"Progress report for {_job_title(job)}.",
        "",
        "What happened:",
        *(_event_line(e) for e in events),
        "",
        *_summary(job),
        "",
        _footer(job.id),
    ]
    return Mail(_addresses(to), _one_line(subject), "\n".join(body) + "\n", _ids(events))


def compose_result(job: JobView, event: EventView, to: Iterable[str]) -> Mail:
    """The result report: how the job ended, and where every region stands."""
    outcome = status_name(event.status)
    subject = f"[changeover] {_job_title(job)} finished: {outcome}"
    body = [
        f"Result report for {_job_title(job)}.",
        "",
        f"The job finished at {utc(event.at)}: {outcome}.",
        f"  {event.message}",
        "",
        *_summary(job),
        "",
        _footer(job.id),
    ]
    return Mail(_addresses(to), _one_line(subject), "\n".join(body) + "\n", (event.id,))


def _addresses(to: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({a.strip().lower(): a.strip() for a in to}.values()))


def _ids(events: Iterable[EventView]) -> tuple[int, ...]:
    return tuple(e.id for e in events)


def _one_line(text: str) -> str:
    # A newline in a subject (a job name, a message) would end the header early.
    return " ".join(text.split())[:200]


def to_message(mail: Mail, sender: str, *, now: float, domain: str = "changeover") -> EmailMessage:
    """The RFC 5322 message for ``mail``: plain text, UTF-8, one per report."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(mail.to)
    msg["Subject"] = mail.subject
    msg["Date"] = formatdate(now, usegmt=True)
    msg["Message-ID"] = make_msgid("patchjob", domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    msg.set_content(mail.body)
    return msg


# -- webhooks --------------------------------------------------------------------------------


def webhook_body(event: EventView, job: JobView) -> bytes:
    """The event, with the job's id, name and current status, as compact sorted JSON."""
    doc = {
        "id": event.id,
        "job_id": event.job_id,
        "at": event.at,
        "kind": event.kind,
        "status": event.status,
        "status_name": status_name(event.status),
        "message": event.message,
        "data": dict(event.data),
        "job": {
            "id": job.id,
            "name": job.name,
            "status": job.status,
            "status_name": job.status_name,
            "phase": job.phase,
            "reason": job.reason,
        },
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def webhook_headers(secret: str, event_id: int, body: bytes, now: float) -> dict[str, str]:
    timestamp = str(int(now))
    return {
        "Content-Type": "application/json",
        EVENT_HEADER: str(event_id),
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "User-Agent": "changeover-webhook",
    }


def verify_signature(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> int:
    """Check a webhook request as a receiver; returns the event id (to drop duplicates:
    a delivery is retried until acknowledged, so the same event may arrive twice).

    ``headers`` may use any case; ``body`` must be the raw bytes received (not re-encoded
    JSON); ``now`` is the receiver's clock (``time.time()``).

    Raises:
        BadSignature: a header is missing, the timestamp is more than ``tolerance_s`` from
            ``now`` (a replay), or the signature does not match (wrong secret, changed body).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    for name in (EVENT_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
        if name.lower() not in lower:
            raise BadSignature(f"webhook request without the {name} header")
    event = lower[EVENT_HEADER.lower()]
    timestamp = lower[TIMESTAMP_HEADER.lower()]
    signature = lower[SIGNATURE_HEADER.lower()]
    try:
        sent_at, event_id = float(timestamp), int(event)
    except ValueError:
        raise BadSignature("webhook timestamp or event id is not a number") from None
    if not math.isfinite(sent_at) or abs(now - sent_at) > tolerance_s:
        raise BadSignature(
            f"webhook timestamp {timestamp} is more than {tolerance_s:g} s from now: "
            "a replayed or delayed request (or a clock off by that much)",
            timestamp=timestamp,
        )
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        raise BadSignature("webhook signature does not match (wrong secret or altered body)")
    return event_id


# -- retries ---------------------------------------------------------------------------------


def retry_delay_s(attempt: int, base_s: float = RETRY_BASE_S, cap_s: float = RETRY_CAP_S) -> float:
    """How long to wait after failed attempt number ``attempt`` (1, 2 …): doubling from
    ``base_s``, never more than ``cap_s``."""
    if attempt < 1:
        return 0.0
    return min(cap_s, base_s * 2.0 ** min(attempt - 1, 60))


# -- SMTP ------------------------------------------------------------------------------------

Security = Literal["plain", "starttls", "ssl"]
DEFAULT_PORTS: Final[Mapping[Security, int]] = {"plain": 25, "starttls": 587, "ssl": 465}


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    security: Security = "plain"
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        # Never the password: this goes into logs and error messages.
        user = f"{self.username}@" if self.username else ""
        return f"{self.security} SMTP {user}{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp://[user:pass@]host[:port][?starttls=1]``, ``smtp+starttls://…`` or
    ``smtps://…`` (TLS from the first byte). User and password are percent-decoded.

    Raises:
        InvalidInput: another scheme, no host, or a bad port.
    """
    parts = urlsplit(url)
    schemes: Mapping[str, Security] = {
        "smtp": "plain",
        "smtp+starttls": "starttls",
        "smtps": "ssl",
    }
    security = schemes.get(parts.scheme.lower())
    if security is None:
        raise InvalidInput(
            f"CHANGEOVER_SMTP_URL must start with smtp://, smtp+starttls:// or smtps://, "
            f"got {parts.scheme or 'no scheme'}"
        )
    query = parse_qs(parts.query)
    if security == "plain" and query.get("starttls", ["0"])[-1].lower() in ("1", "true", "yes"):
        security = "starttls"
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput("CHANGEOVER_SMTP_URL has a bad port") from None
    if not parts.hostname:
        raise InvalidInput("CHANGEOVER_SMTP_URL names no host")
    return SmtpTarget(
        host=parts.hostname,
        port=port or DEFAULT_PORTS[security],
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


__all__ = [
    "EVENT_HEADER",
    "MAX_ATTEMPTS",
    "PROGRESS_KINDS",
    "RESULT_KIND",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "BadSignature",
    "EventView",
    "JobView",
    "Mail",
    "RegionProgress",
    "SmtpTarget",
    "compose_progress",
    "compose_result",
    "mail_kind",
    "parse_smtp_url",
    "region_progress",
    "retry_delay_s",
    "sign",
    "status_name",
    "to_message",
    "verify_signature",
    "webhook_body",
    "webhook_headers",
]
