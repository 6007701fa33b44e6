"""The notifier: delivers patch-job events by mail and webhook, at least once, never twice
at the same time, without ever holding up the job runner.

A periodic task of the job runner calls :meth:`Notifier.tick`, which starts one delivery
pass on its own thread unless the previous one still runs, so a slow SMTP server or a
hanging webhook delays reports, never jobs. One pass (:meth:`Notifier.deliver_once`):

    read undelivered events (mailed_at or hooked_at null, attempts < max) in id order
    for each event that is due (retry_at null or past):
        claim it: attempts + 1 and retry_at = now + lease, compare-and-set on attempts,
                  so of two control planes exactly one delivers it
        POST it to the webhook (in id order; after a failure, later events wait their turn)
    mail the claimed events: one progress mail per job for its status/phase changes,
        one result mail for its ``finished`` event
    record: mailed_at / hooked_at on success; otherwise last_error and retry_at = now +
        backoff; after the last attempt, the reason goes into the event's data
        (``data.delivery``), where the events API shows it

A process that dies between sending and recording sends again once the claim's lease runs
out: receivers drop duplicates by the ``X-Changeover-Event`` id. Events that need nothing
(no mail address for them, a channel not configured) are marked handled, so configuring a
channel later does not flood it with old news.
"""

from __future__ import annotations

import contextvars
import json
import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from changeover.control.db import Database
from changeover.control.patchjobs import services
from changeover.control.patchjobs.records import PatchJob, PatchJobEmail, PatchJobEvent
from changeover.control.patchjobs.reports import (
    EventView,
    JobView,
    Mail,
    RegionProgress,
    SmtpTarget,
    compose_progress,
    compose_result,
    mail_kind,
    parse_smtp_url,
    region_progress,
    retry_delay_s,
    to_message,
    webhook_body,
    webhook_headers,
)
from changeover.errors import ChangeoverError, RemoteError
from changeover.settings import Settings

log = logging.getLogger("changeover.patchjobs.notify")

SEND_TIMEOUT_S = 10.0
CLAIM_S = 300.0
"""A claim's lease: longer than a whole pass can take (claiming and mailing each stop
after ``budget_s``), so no second sender starts while the first may still send. It only
delays a retry when a process died mid-pass; otherwise recording replaces it."""


class MailTransport(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Raises: RemoteError: the server could not be reached or refused every address."""


class WebhookTransport(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Raises: RemoteError: no 2xx answer."""


class SmtpTransport:
    def __init__(self, target: SmtpTarget, timeout_s: float = SEND_TIMEOUT_S) -> None:
        self.target = target
        self.timeout_s = timeout_s

    def send(self, message: EmailMessage) -> None:
        t = self.target
        try:
            smtp: smtplib.SMTP
            if t.security == "ssl":
                ctx = ssl.create_default_context()
                smtp = smtplib.SMTP_SSL(t.host, t.port, timeout=self.timeout_s, context=ctx)
            else:
                smtp = smtplib.SMTP(t.host, t.port, timeout=self.timeout_s)
            with smtp:
                if t.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if t.username:
                    smtp.login(t.username, t.password or "")
                refused = smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as e:
            raise RemoteError(f"mail via {t} failed: {e}") from e
        if refused:
            # The others got it; sending again would mail them twice. Say who did not.
            log.warning("mail via %s: refused %s", t, refused)


class HttpWebhook:
    def __init__(self, timeout_s: float = SEND_TIMEOUT_S) -> None:
        self.http = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            r = self.http.post(url, content=body, headers=dict(headers))
        except httpx.HTTPError as e:
            raise RemoteError(f"webhook {url} unreachable: {type(e).__name__}: {e}") from e
        if not r.is_success:
            raise RemoteError(f"webhook {url} answered {r.status_code}: {r.text[:200]}")

    def close(self) -> None:
        self.http.close()


@dataclass(frozen=True)
class NotifierConfig:
    smtp: SmtpTarget | None = None
    mail_from: str = "changeover@localhost"
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    retry_s: float = 5.0
    max_attempts: int = 10
    claim_s: float = CLAIM_S
    batch: int = 200
    """Events read per pass; the next pass takes the rest."""
    budget_s: float = 30.0
    """A pass stops claiming after this long, so a backlog is worked off in slices."""

    @classmethod
    def from_settings(cls, s: Settings) -> NotifierConfig:
        """Raises: InvalidInput: a malformed ``CHANGEOVER_SMTP_URL``."""
        return cls(
            smtp=parse_smtp_url(s.smtp_url) if s.smtp_url else None,
            mail_from=s.mail_from,
            webhook_url=s.webhook_url,
            webhook_secret=s.webhook_secret,
            retry_s=s.report_retry_s,
            max_attempts=s.report_max_attempts,
        )


@dataclass
class _Claim:
    event: EventView
    attempts: int
    """The attempt count this process set when it claimed the event."""
    mail: bool
    hook: bool
    mailed: bool = False
    hooked: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Recipients:
    progress: tuple[str, ...] = ()
    result: tuple[str, ...] = ()


class Notifier:
    def __init__(
        self,
        db: Database,
        config: NotifierConfig,
        *,
        mail: MailTransport | None = None,
        webhook: WebhookTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.config = config
        self.mail = mail or (SmtpTransport(config.smtp) if config.smtp else None)
        self._own_webhook = HttpWebhook() if webhook is None and config.webhook_url else None
        self.webhook = webhook or self._own_webhook
        self.clock = clock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- running -----------------------------------------------------------------------------

    def tick(self) -> None:
        """Start a delivery pass in the background unless one is still running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            # With this thread's context: the leader's fence (``control.leadership``) holds
            # in the pass too.
            self._thread = threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._background_pass,),
                name="patchjob-notifier",
                daemon=True,
            )
            self._thread.start()

    def _background_pass(self) -> None:
        try:
            self.deliver_once()
        except Exception:  # the next tick tries again; the runner must never see this
            log.exception("patch-job report delivery pass failed")

    def close(self) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=SEND_TIMEOUT_S * 2)
        if self._own_webhook is not None:
            self._own_webhook.close()

    # -- one pass ----------------------------------------------------------------------------

    def deliver_once(self) -> int:
        """One delivery pass; returns how many events it claimed."""
        now = self.clock()
        with self.db.read() as s:
            rows = list(
                s.scalars(
                    select(PatchJobEvent)
                    .where(
                        or_(PatchJobEvent.mailed_at.is_(None), PatchJobEvent.hooked_at.is_(None)),
                        PatchJobEvent.attempts < self.config.max_attempts,
                    )
                    .order_by(PatchJobEvent.id)
                    .limit(self.config.batch)
                )
            )
            if not rows:
                return 0
            recipients = _recipients(s, {r.job_id for r in rows})
        # Read on first use: only jobs with an event to send this pass are described.
        jobs = _Jobs(self.db, now)
        stop_at = time.monotonic() + self.config.budget_s
        claims = self._claim_and_hook(rows, jobs, recipients, now, stop_at)
        self._mail(claims, jobs, recipients, stop_at + self.config.budget_s)
        self._record(claims, self.clock())
        return len(claims)

    def _needs_mail(self, row: PatchJobEvent, recipients: Mapping[int, _Recipients]) -> bool:
        kind = mail_kind(row.kind)
        if row.mailed_at is not None or kind is None or self.mail is None:
            return False
        to = recipients.get(row.job_id, _Recipients())
        return bool(to.result if kind == "result" else to.progress)

    def _claim_and_hook(
        self,
        rows: Sequence[PatchJobEvent],
        jobs: _Jobs,
        recipients: Mapping[int, _Recipients],
        now: float,
        stop_at: float,
    ) -> list[_Claim]:
        claims: list[_Claim] = []
        # Handled without sending: no address wants it, or the channel is off.
        nothing_to_mail: list[int] = []
        nothing_to_hook: list[int] = []
        hooks_on = self.webhook is not None and bool(self.config.webhook_url)
        # Webhooks go out in id order: once one is waiting (backoff, failure, another
        # process's claim), later events wait behind it rather than overtake it.
        hook_blocked = False
        for row in rows:
            needs_mail = self._needs_mail(row, recipients)
            if row.mailed_at is None and not needs_mail:
                nothing_to_mail.append(row.id)
            needs_hook = row.hooked_at is None and hooks_on
            if row.hooked_at is None and not hooks_on:
                nothing_to_hook.append(row.id)
            if not needs_mail and not needs_hook:
                continue
            due = row.retry_at is None or row.retry_at <= now
            hook_now = needs_hook and not hook_blocked
            if not due or not (needs_mail or hook_now) or time.monotonic() > stop_at:
                hook_blocked = hook_blocked or needs_hook
                continue
            if not self._claim(row.id, row.attempts, now):
                hook_blocked = hook_blocked or needs_hook
                continue
            claim = _Claim(_view(row), row.attempts + 1, needs_mail, hook_now)
            claims.append(claim)
            if hook_now:
                if self._post(claim, jobs.get(row.job_id, row.status)):
                    claim.hooked = True
                else:
                    hook_blocked = True
            elif needs_hook:
                hook_blocked = True
        if nothing_to_mail or nothing_to_hook:
            e = PatchJobEvent
            with self.db.write() as s:
                for ids, column in ((nothing_to_mail, e.mailed_at), (nothing_to_hook, e.hooked_at)):
                    if ids:
                        s.execute(
                            update(e)
                            .where(e.id.in_(ids), column.is_(None))
                            .values({column.key: now})
                        )
        return claims

    def _claim(self, event_id: int, seen_attempts: int, now: float) -> bool:
        with self.db.write() as s:
            won = s.execute(
                update(PatchJobEvent)
                .where(
                    PatchJobEvent.id == event_id,
                    PatchJobEvent.attempts == seen_attempts,
                    or_(PatchJobEvent.retry_at.is_(None), PatchJobEvent.retry_at <= now),
                )
                .values(attempts=seen_attempts + 1, retry_at=now + self.config.claim_s)
            ).rowcount  # type: ignore[attr-defined]
        return bool(won)

    def _post(self, claim: _Claim, job: JobView) -> bool:
        assert self.webhook is not None
        assert self.config.webhook_url is not None
        body = webhook_body(claim.event, job)
        headers = webhook_headers(
            self.config.webhook_secret or "", claim.event.id, body, self.clock()
        )
        try:
            self.webhook.post(self.config.webhook_url, body, headers)
        except RemoteError as e:
            claim.errors.append(f"webhook: {e.message}")
            log.warning("patch-job event %s: %s", claim.event.id, e.message)
            return False
        return True

    def _mail(
        self,
        claims: Sequence[_Claim],
        jobs: _Jobs,
        recipients: Mapping[int, _Recipients],
        stop_at: float,
    ) -> None:
        progress: dict[int, list[_Claim]] = {}
        mails: list[tuple[Mail, list[_Claim]]] = []
        for c in claims:
            if not c.mail:
                continue
            if mail_kind(c.event.kind) == "progress":
                progress.setdefault(c.event.job_id, []).append(c)
        # One mail per job and pass for its progress: a busy job does not flood inboxes.
        for job_id, group in progress.items():
            job = jobs.get(job_id, group[-1].event.status)
            to = recipients[job_id].progress
            mails.append((compose_progress(job, [c.event for c in group], to), group))
        for c in claims:
            if c.mail and mail_kind(c.event.kind) == "result":
                job = jobs.get(c.event.job_id, c.event.status)
                mails.append((compose_result(job, c.event, recipients[job.id].result), [c]))
        for mail, group in mails:
            assert self.mail is not None
            if time.monotonic() > stop_at:
                # Claimed but not tried (no error recorded): due again at the next pass.
                break
            try:
                self.mail.send(to_message(mail, self.config.mail_from, now=self.clock()))
            except RemoteError as e:
                log.warning("patch-job report for events %s: %s", mail.event_ids, e.message)
                for c in group:
                    c.errors.append(f"mail: {e.message}")
            else:
                for c in group:
                    c.mailed = True

    def _record(self, claims: Sequence[_Claim], now: float) -> None:
        with self.db.write() as s:
            for c in claims:
                e = PatchJobEvent
                done: dict[str, Any] = {}
                if c.mailed:
                    done["mailed_at"] = now
                if c.hooked:
                    done["hooked_at"] = now
                # What was sent stays sent, whoever holds the claim by now.
                for column, value in done.items():
                    s.execute(
                        update(e)
                        .where(e.id == c.event.id, getattr(e, column).is_(None))
                        .values({column: value})
                    )
                mine = (e.id == c.event.id, e.attempts == c.attempts)
                if not c.errors:
                    # Untried channels (a webhook waiting its turn) are due at once.
                    s.execute(update(e).where(*mine).values(retry_at=None))
                    continue
                error = "; ".join(c.errors)[:2000]
                values: dict[str, Any] = {
                    "last_error": error,
                    "retry_at": now + retry_delay_s(c.attempts, self.config.retry_s),
                }
                if c.attempts >= self.config.max_attempts:
                    values["retry_at"] = None
                    values["data"] = json.dumps(
                        {
                            **c.event.data,
                            "delivery": {
                                "gave_up": True,
                                "attempts": c.attempts,
                                "last_error": error,
                            },
                        },
                        sort_keys=True,
                    )
                    log.error(
                        "patch-job event %s: giving up after %d attempts: %s",
                        c.event.id,
                        c.attempts,
                        error,
                    )
                s.execute(update(e).where(*mine).values(values))


def _view(row: PatchJobEvent) -> EventView:
    try:
        data = json.loads(row.data or "{}")
    except ValueError:
        data = {"raw": row.data}
    if not isinstance(data, dict):
        data = {"value": data}
    return EventView(row.id, row.job_id, row.at, row.kind, row.status, row.message, data)


class _Jobs:
    """Jobs as the reports describe them, read once per pass on first use."""

    def __init__(self, db: Database, now: float) -> None:
        self.db = db
        self.now = now
        self._views: dict[int, JobView] = {}

    def get(self, job_id: int, status: int) -> JobView:
        """The job; a bare one (``status`` of its event) if it cannot be read."""
        if job_id not in self._views:
            with self.db.read() as s:
                job = s.get(PatchJob, job_id)
                self._views[job_id] = (
                    JobView(job_id, "", status) if job is None else _describe(s, job, self.now)
                )
        return self._views[job_id]


def _describe(s: Session, job: PatchJob, now: float) -> JobView:
    try:
        progress = json.loads(job.progress or "{}")
    except ValueError:
        progress = {}
    if not isinstance(progress, dict):
        progress = {}
    return JobView(
        id=job.id,
        name=job.name,
        status=job.status,
        phase=str(progress.get("phase") or ""),
        reason=job.reason or str(progress.get("reason") or ""),
        regions=_regions(s, job, progress, now),
    )


def _regions(
    s: Session, job: PatchJob, progress: Mapping[str, Any], now: float
) -> tuple[RegionProgress, ...]:
    """Where each region stands as the API shows it (instances observed: old, new,
    draining …); from the job's own record if that cannot be read, since a report
    about a broken job matters more than its table."""
    try:
        summary = services.progress_summary(s, job, now)
        return tuple(
            RegionProgress(str(r["region"]), {k: int(v) for k, v in r.items() if k != "region"})
            for r in summary["regions"]
        )
    except (ChangeoverError, KeyError, TypeError, ValueError) as e:
        log.info("progress of patch job %s from its record: %s", job.id, e)
        return region_progress(progress)


def _recipients(s: Session, job_ids: set[int]) -> dict[int, _Recipients]:
    progress: dict[int, list[str]] = {}
    result: dict[int, list[str]] = {}
    rows = s.scalars(
        select(PatchJobEmail).where(PatchJobEmail.job_id.in_(job_ids)).order_by(PatchJobEmail.id)
    )
    for r in rows:
        if r.progress_report:
            progress.setdefault(r.job_id, []).append(r.email)
        if r.result_report:
            result.setdefault(r.job_id, []).append(r.email)
    return {j: _Recipients(tuple(progress.get(j, ())), tuple(result.get(j, ()))) for j in job_ids}


__all__ = [
    "HttpWebhook",
    "MailTransport",
    "Notifier",
    "NotifierConfig",
    "SmtpTransport",
    "WebhookTransport",
]
