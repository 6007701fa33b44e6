"""Patch-job reports end to end: a real SMTP server (aiosmtpd), a real webhook receiver
that verifies signatures, a real database (SQLite and PostgreSQL) and a real server.

The notifier tests drive ``Notifier.deliver_once`` with a clock they move forward, so
backoff is tested without waiting for it; the server test checks the periodic task.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from changeover.control.db import Database
from changeover.control.fleet.models import Application, Environment
from changeover.control.patchjobs.notify import Notifier, NotifierConfig
from changeover.control.patchjobs.records import PatchJob, PatchJobEmail, PatchJobEvent
from changeover.control.patchjobs.reports import parse_smtp_url
from fleet_helpers import ok
from patchjob_helpers import job_body, two_build_fleet, wait_status
from reports_helpers import SmtpServer, WebhookReceiver
from tests_helpers import free_port, start_server, stop_server, wait_for

pytestmark = pytest.mark.timeout(120)

SECRET = "hook-secret"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as s:
        yield s


@pytest.fixture
def hooks() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as r:
        yield r


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def make_job(
    db: Database,
    name: str = "Arena 2.0.5",
    emails: tuple[tuple[str, bool, bool], ...] = (),
    progress: dict[str, Any] | None = None,
) -> int:
    now = time.time()
    with db.write() as s:
        env = s.scalar(select(Environment).where(Environment.name == "prod"))
        if env is None:
            env = Environment(name="prod", created_at=now)
            app = Application(name="arena", type="game", created_at=now)
            s.add_all([env, app])
            s.flush()
        app_id = s.scalar(select(Application.id).where(Application.name == "arena"))
        assert app_id is not None
        job = PatchJob(
            name=name,
            environment_id=env.id,
            application_id=app_id,
            method=4,
            spec="{}",
            start_at=now,
            status=4,
            progress=json.dumps(progress or {"phase": "bleed"}),
            reason="draining",
            created_at=now,
            updated_at=now,
            created_by="test",
        )
        s.add(job)
        s.flush()
        for address, progress_report, result_report in emails:
            s.add(
                PatchJobEmail(
                    job_id=job.id,
                    email=address,
                    progress_report=progress_report,
                    result_report=result_report,
                    created_at=now,
                )
            )
        return job.id


def add_event(db: Database, job_id: int, kind: str, status: int = 4, message: str = "") -> int:
    with db.write() as s:
        e = PatchJobEvent(
            job_id=job_id,
            at=time.time(),
            kind=kind,
            status=status,
            message=message or kind,
            data=json.dumps({"kind": kind}),
            attempts=0,
        )
        s.add(e)
        s.flush()
        return e.id


def events(db: Database) -> list[PatchJobEvent]:
    with db.read() as s:
        return list(s.scalars(select(PatchJobEvent).order_by(PatchJobEvent.id)))


def notifier(
    db: Database,
    smtp: SmtpServer | None,
    hooks: WebhookReceiver | None,
    clock: Clock,
    **config: Any,
) -> Notifier:
    cfg = NotifierConfig(
        smtp=parse_smtp_url(smtp.url) if smtp else None,
        mail_from="changeover@example.com",
        webhook_url=hooks.url if hooks else None,
        webhook_secret=SECRET if hooks else None,
        retry_s=1.0,
        **config,
    )
    return Notifier(db, cfg, clock=clock)


def test_progress_is_batched_result_is_mailed_and_every_event_is_hooked_in_order(
    db: Database, smtp: SmtpServer, hooks: WebhookReceiver
) -> None:
    progress = {
        "phase": "bleed",
        "selection": [
            {"instance_id": 1, "region": "eu"},
            {"instance_id": 2, "region": "us"},
        ],
        "intents": {"1": "stop"},
    }
    job = make_job(
        db,
        emails=(("ops@example.com", True, False), ("boss@example.com", False, True)),
        progress=progress,
    )
    ids = [
        add_event(db, job, "created"),
        add_event(db, job, "status", 4, "started"),
        add_event(db, job, "action", 4, "stop instance 1"),
        add_event(db, job, "phase", 4, "phase bleed"),
        add_event(db, job, "finished", 7, "completed: 2 of 2 instances on the new build"),
    ]
    n = notifier(db, smtp, hooks, Clock())
    try:
        assert n.deliver_once() == 5
    finally:
        n.close()

    assert hooks.ids() == ids
    assert not hooks.refused
    first = hooks.hooks[0]
    assert first.doc["job"]["name"] == "Arena 2.0.5"
    assert first.headers["X-Changeover-Event"] == str(ids[0])
    assert first.headers["X-Changeover-Signature"].startswith("sha256=")

    progress_mails = smtp.inbox.to("ops@example.com")
    assert len(progress_mails) == 1  # status and phase in one mail, no mail for the action
    body = progress_mails[0].get_content()
    assert "started" in body and "phase bleed" in body and "stop instance 1" not in body
    assert "eu" in body and "stopped" in body
    assert progress_mails[0]["From"] == "changeover@example.com"
    result_mails = smtp.inbox.to("boss@example.com")
    assert len(result_mails) == 1
    assert "finished: Completed" in result_mails[0]["Subject"]
    assert "2 of 2 instances on the new build" in result_mails[0].get_content()

    rows = events(db)
    assert all(r.mailed_at is not None and r.hooked_at is not None for r in rows)
    assert all(r.attempts == 1 and r.last_error is None for r in rows)
    n2 = notifier(db, smtp, hooks, Clock())
    assert n2.deliver_once() == 0  # idempotent: a new process finds nothing to send
    assert len(smtp.inbox.messages) == 2
    assert len(hooks.hooks) == 5


def test_a_failing_webhook_is_retried_with_backoff_and_keeps_the_order(
    db: Database, hooks: WebhookReceiver
) -> None:
    job = make_job(db)
    first, second = add_event(db, job, "status"), add_event(db, job, "phase")
    clock = Clock()
    n = notifier(db, None, hooks, clock)
    hooks.fail = 2
    assert n.deliver_once() == 1  # the first fails; the second waits behind it
    row = events(db)[0]
    assert row.attempts == 1 and row.hooked_at is None
    assert "503" in (row.last_error or "")
    assert row.retry_at == pytest.approx(clock.t + 1.0)
    assert events(db)[1].attempts == 0

    assert n.deliver_once() == 0  # not due yet: nothing is tried, nothing overtakes
    clock.t += 1.0
    assert n.deliver_once() == 1  # second failure: now 2 s of backoff
    assert events(db)[0].retry_at == pytest.approx(clock.t + 2.0)
    clock.t += 2.0
    assert n.deliver_once() == 2
    assert hooks.ids() == [first, second]
    rows = events(db)
    assert [r.attempts for r in rows] == [3, 1]
    assert all(r.hooked_at is not None for r in rows)
    n.close()


def test_gives_up_after_the_last_attempt_and_says_why_in_the_event_data(
    db: Database, hooks: WebhookReceiver
) -> None:
    job = make_job(db)
    add_event(db, job, "status")
    clock = Clock()
    n = notifier(db, None, hooks, clock, max_attempts=3)
    hooks.fail = 100
    for _ in range(3):
        assert n.deliver_once() == 1
        clock.t += 3600
    assert n.deliver_once() == 0
    (row,) = events(db)
    assert row.attempts == 3
    assert row.hooked_at is None
    delivery = json.loads(row.data)["delivery"]
    assert delivery["gave_up"] is True
    assert delivery["attempts"] == 3
    assert "503" in delivery["last_error"]
    assert json.loads(row.data)["kind"] == "status"  # the event's own data stays
    n.close()


def test_mail_is_retried_when_the_smtp_server_refuses_or_is_down(
    db: Database, smtp: SmtpServer, hooks: WebhookReceiver
) -> None:
    job = make_job(db, emails=(("ops@example.com", True, True),))
    add_event(db, job, "status", 4, "started")
    clock = Clock()
    down = NotifierConfig(
        smtp=parse_smtp_url(f"smtp://127.0.0.1:{free_port()}"),
        webhook_url=hooks.url,
        webhook_secret=SECRET,
        retry_s=1.0,
    )
    n = Notifier(db, down, clock=clock)
    assert n.deliver_once() == 1
    (row,) = events(db)
    assert row.hooked_at is not None  # the webhook does not wait for the mail
    assert row.mailed_at is None
    assert (row.last_error or "").startswith("mail: ")
    n.close()

    smtp.inbox.fail = 1
    n = notifier(db, smtp, hooks, clock)
    clock.t += 1.0
    assert n.deliver_once() == 1
    assert "451" in (events(db)[0].last_error or "")
    clock.t += 2.0
    assert n.deliver_once() == 1
    (row,) = events(db)
    assert row.mailed_at is not None and row.attempts == 3
    assert len(smtp.inbox.to("ops@example.com")) == 1
    assert len(hooks.hooks) == 1  # the webhook was not sent again with the mail
    n.close()


# AUTH without TLS is what this loopback test means to do; aiosmtpd warns about it.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_mail_logs_in_with_the_user_and_password_of_the_url(db: Database) -> None:
    job = make_job(db, emails=(("ops@example.com", True, True),))
    add_event(db, job, "status", 4, "started")
    clock = Clock()
    with SmtpServer(login=("ops@x.io", "p:w")) as smtp:
        url = f"smtp://ops%40x.io:wrong@127.0.0.1:{smtp.port}"
        n = Notifier(db, NotifierConfig(smtp=parse_smtp_url(url), retry_s=1.0), clock=clock)
        assert n.deliver_once() == 1
        (row,) = events(db)
        assert row.mailed_at is None
        assert "535" in (row.last_error or "")  # authentication failed, said so
        assert "wrong" not in (row.last_error or "")  # never the password
        url = f"smtp://ops%40x.io:p%3Aw@127.0.0.1:{smtp.port}"
        n = Notifier(db, NotifierConfig(smtp=parse_smtp_url(url), retry_s=1.0), clock=clock)
        clock.t += 1.0
        assert n.deliver_once() == 1
        assert events(db)[0].mailed_at is not None
        assert len(smtp.inbox.to("ops@example.com")) == 1


def test_a_hanging_webhook_never_holds_up_the_caller(db: Database) -> None:
    job = make_job(db)
    add_event(db, job, "status")
    release = threading.Event()
    calls: list[int] = []

    class Hanging:
        def post(self, url: str, body: bytes, headers: Any) -> None:
            calls.append(1)
            release.wait(30)

    cfg = NotifierConfig(webhook_url="http://hook.invalid/", webhook_secret=SECRET)
    n = Notifier(db, cfg, webhook=Hanging())
    started = time.monotonic()
    n.tick()
    wait_for(lambda: calls, 10, "the pass to reach the webhook")
    n.tick()  # a pass is still running: this one does not start a second
    assert time.monotonic() - started < 5
    assert len(calls) == 1
    release.set()
    n.close()
    wait_for(lambda: events(db)[0].hooked_at is not None, 10, "the event to be marked")


def test_events_nobody_wants_are_marked_without_sending(db: Database) -> None:
    job = make_job(db, emails=(("ops@example.com", False, True),))
    add_event(db, job, "status")
    n = notifier(db, None, None, Clock())
    assert n.deliver_once() == 0
    (row,) = events(db)
    assert row.mailed_at is not None and row.hooked_at is not None and row.attempts == 0


def test_two_notifiers_never_send_an_event_twice(
    db: Database, smtp: SmtpServer, hooks: WebhookReceiver
) -> None:
    job = make_job(db, emails=(("ops@example.com", True, True),))
    ids = [add_event(db, job, "status", 4, f"change {i}") for i in range(20)]
    add_event(db, job, "finished", 7, "done")
    clock = Clock()
    a, b = notifier(db, smtp, hooks, clock), notifier(db, smtp, hooks, clock)
    start = threading.Barrier(2)

    def run(n: Notifier) -> None:
        start.wait()
        for _ in range(5):
            n.deliver_once()

    threads = [threading.Thread(target=run, args=(n,)) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    a.close()
    b.close()
    assert sorted(hooks.ids()) == sorted({*hooks.ids()})  # no duplicates
    assert sorted(hooks.ids()) == [*ids, ids[-1] + 1]
    mailed = [
        line for m in smtp.inbox.to("ops@example.com") for line in m.get_content().splitlines()
    ]
    for i in range(20):
        assert sum(line.endswith(f": change {i}") for line in mailed) == 1
    assert len([m for m in smtp.inbox.messages if "finished" in m.message["Subject"]]) == 1
    assert all(r.mailed_at and r.hooked_at for r in events(db))


def test_the_server_reports_a_job_made_and_cancelled_through_the_api(
    tmp_path: Path, smtp: SmtpServer, hooks: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHANGEOVER_SMTP_URL", smtp.url)
    monkeypatch.setenv("CHANGEOVER_MAIL_FROM", "reports@example.com")
    monkeypatch.setenv("CHANGEOVER_WEBHOOK_URL", hooks.url)
    monkeypatch.setenv("CHANGEOVER_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("CHANGEOVER_REPORT_EVERY_S", "0.1")
    monkeypatch.setenv("CHANGEOVER_PATCH_TICK_S", "0.1")
    server = start_server(tmp_path / "data", None)
    try:
        c, _ = two_build_fleet(server, "rep", ["rep-h1"], per_host=1)
        body = job_body(
            "rep",
            "bleed-off",
            scheduled_start=time.time() + 3600,
            emails=[
                {"email": "ops@example.com", "progress": True, "result": False},
                {"email": "boss@example.com", "progress": False, "result": True},
            ],
        )
        job = ok(c.post("/patchjobs", json=body), 201)
        ok(c.post(f"/patchjobs/{job['id']}/cancel", json={"mode": "wrap_up"}))
        wait_status(c, job["id"], {10})

        def all_events() -> list[dict[str, Any]]:
            return list(ok(c.get(f"/patchjobs/{job['id']}/events"))["events"])

        wait_for(lambda: all_events()[-1]["kind"] == "finished", 30, "the finished event")
        ids = [e["id"] for e in all_events()]
        wait_for(lambda: hooks.ids() == ids, 30, "every event at the webhook, in order")
        assert not hooks.refused
        assert hooks.hooks[-1].doc["job"]["status_name"] == "Cancelled"
        result = wait_for(lambda: smtp.inbox.to("boss@example.com"), 30, "the result mail")
        assert len(result) == 1
        assert 'patch job 1 "rep to v2" finished: Cancelled' in str(result[0]["Subject"])
        assert result[0]["From"] == "reports@example.com"
        progress = wait_for(lambda: smtp.inbox.to("ops@example.com"), 30, "a progress mail")
        text = progress[0].get_content()
        print(text)
        assert "Cancelled" in text or "cancel" in text
        for m in smtp.inbox.messages:  # nobody gets a report they did not ask for
            kind = "result" if "finished:" in str(m.message["Subject"]) else "progress"
            assert m.rcpt == (["boss@example.com"] if kind == "result" else ["ops@example.com"])
    finally:
        stop_server(server)
