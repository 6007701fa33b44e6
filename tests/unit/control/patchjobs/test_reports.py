"""The pure parts of patch-job reports: mails, signatures, backoff, SMTP URLs."""

from __future__ import annotations

import email
import hashlib
import hmac
import json

import pytest

from changeover.control.patchjobs.notify import NotifierConfig
from changeover.control.patchjobs.reports import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadSignature,
    EventView,
    JobView,
    RegionProgress,
    compose_progress,
    compose_result,
    mail_kind,
    parse_smtp_url,
    region_progress,
    retry_delay_s,
    sign,
    to_message,
    verify_signature,
    webhook_body,
    webhook_headers,
)
from changeover.errors import AuthError, InvalidInput
from changeover.settings import load

NOW = 1_900_000_000.0
JOB = JobView(
    id=7,
    name="Arena 2.0.5",
    status=4,
    phase="bleed",
    reason="draining 3 instances",
    regions=(
        RegionProgress("eu", {"waiting": 1, "stopped": 7}),
        RegionProgress("us", {"draining": 4}),
    ),
)


def ev(id_: int, kind: str, status: int = 4, message: str = "m", **data: object) -> EventView:
    return EventView(id_, 7, NOW + id_, kind, status, message, data)


def test_which_events_are_mailed() -> None:
    assert mail_kind("finished") == "result"
    for kind in ("status", "phase", "cancel", "resume"):
        assert mail_kind(kind) == "progress"
    for kind in ("action", "check", "created", "updated"):
        assert mail_kind(kind) is None


def test_progress_mail_batches_events_of_a_job() -> None:
    events = [ev(1, "status", 4, "started"), ev(2, "phase", 4, "phase bleed")]
    mail = compose_progress(JOB, events, ["ops@example.com", "OPS@example.com ", "b@x.io"])
    assert mail.event_ids == (1, 2)
    assert len(mail.to) == 2  # one address once, whatever its case
    assert mail.subject == '[changeover] patch job 7 "Arena 2.0.5": Running - 2 changes'
    body = mail.body
    assert "started" in body and "phase bleed" in body
    assert "Status: Running (4)" in body
    assert "Phase: bleed" in body
    assert "Reason: draining 3 instances" in body
    lines = body.splitlines()
    header = next(line for line in lines if line.strip().startswith("region"))
    assert header.split() == ["region", "instances", "draining", "stopped", "waiting"]
    assert next(ln for ln in lines if ln.strip().startswith("eu")).split() == [
        "eu",
        "8",
        "0",
        "7",
        "1",
    ]
    assert next(ln for ln in lines if ln.strip().startswith("all")).split() == [
        "all",
        "12",
        "4",
        "7",
        "1",
    ]
    assert "http" not in body  # link-free


def test_single_event_subject_says_what_happened() -> None:
    mail = compose_progress(JOB, [ev(3, "status", 5, "paused: canary window passed")], ["a@b.c"])
    assert mail.subject.endswith("Running - paused: canary window passed")


def test_progress_mail_needs_events() -> None:
    with pytest.raises(InvalidInput):
        compose_progress(JOB, [], ["a@b.c"])


def test_result_mail() -> None:
    job = JobView(7, "Arena", 9, "done", "health gate failed on 2 of 8")
    mail = compose_result(job, ev(9, "finished", 9, "rolled back"), ["a@b.c"])
    assert mail.subject == '[changeover] patch job 7 "Arena" finished: Rolled back'
    assert "Rolled back" in mail.body
    assert "health gate failed on 2 of 8" in mail.body
    assert "no instances selected" in mail.body
    assert mail.event_ids == (9,)


def test_a_newline_in_a_name_cannot_inject_headers() -> None:
    job = JobView(1, "x\nBcc: evil@example.com", 4)
    mail = compose_progress(job, [ev(1, "status")], ["a@b.c"])
    assert "\n" not in mail.subject
    msg = to_message(mail, "changeover@example.com", now=NOW)
    parsed = email.message_from_bytes(msg.as_bytes())
    assert parsed["Bcc"] is None
    assert parsed["To"] == "a@b.c"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed.get_content_type() == "text/plain"


def test_region_progress_from_a_stored_record() -> None:
    progress = {
        "selection": [
            {"instance_id": 1, "region": "eu"},
            {"instance_id": 2, "region": "eu"},
            {"instance_id": 3, "region": "us"},
        ],
        "intents": {"1": "stop", "3": "drain"},
    }
    assert region_progress(progress) == (
        RegionProgress("eu", {"stopped": 1, "waiting": 1}),
        RegionProgress("us", {"draining": 1}),
    )
    assert region_progress({}) == ()
    assert region_progress({"selection": ["junk"], "intents": None}) == ()


def test_webhook_body_is_stable_json_with_the_job() -> None:
    body = webhook_body(ev(5, "status", 8, "failed", reason="x"), JOB)
    doc = json.loads(body)
    assert doc["id"] == 5
    assert doc["kind"] == "status"
    assert doc["status_name"] == "Failed"
    assert doc["data"] == {"reason": "x"}
    assert doc["job"] == {
        "id": 7,
        "name": "Arena 2.0.5",
        "status": 4,
        "status_name": "Running",
        "phase": "bleed",
        "reason": "draining 3 instances",
    }
    assert webhook_body(ev(5, "status", 8, "failed", reason="x"), JOB) == body


def test_signature_is_hmac_sha256_of_timestamp_and_body() -> None:
    body = b'{"id":1}'
    expected = hmac.new(b"s3cret", b"1900000000." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", "1900000000", body) == "sha256=" + expected
    headers = webhook_headers("s3cret", 1, body, NOW)
    assert headers[EVENT_HEADER] == "1"
    assert headers[TIMESTAMP_HEADER] == "1900000000"
    assert headers[SIGNATURE_HEADER] == "sha256=" + expected


def test_verify_signature_accepts_a_fresh_signed_request_in_any_header_case() -> None:
    body = b'{"id":42}'
    headers = {k.lower(): v for k, v in webhook_headers("k", 42, body, NOW).items()}
    assert verify_signature("k", body, headers, now=NOW + 10) == 42


@pytest.mark.parametrize(
    ("secret", "body", "now", "why"),
    [
        ("wrong", b'{"id":42}', NOW, "does not match"),
        ("k", b'{"id":43}', NOW, "does not match"),
        ("k", b'{"id":42}', NOW + 301, "more than 300 s"),
        ("k", b'{"id":42}', NOW - 301, "more than 300 s"),
    ],
)
def test_verify_signature_refuses(secret: str, body: bytes, now: float, why: str) -> None:
    headers = webhook_headers("k", 42, b'{"id":42}', NOW)
    with pytest.raises(BadSignature, match=why) as e:
        verify_signature(secret, body, headers, now=now)
    assert isinstance(e.value, AuthError)


def test_a_replay_with_a_new_timestamp_breaks_the_signature() -> None:
    body = b'{"id":42}'
    headers = webhook_headers("k", 42, body, NOW)
    headers[TIMESTAMP_HEADER] = str(int(NOW + 3600))
    with pytest.raises(BadSignature, match="does not match"):
        verify_signature("k", body, headers, now=NOW + 3600)


def test_verify_signature_needs_every_header() -> None:
    headers = webhook_headers("k", 1, b"{}", NOW)
    for name in (EVENT_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
        partial = {k: v for k, v in headers.items() if k != name}
        with pytest.raises(BadSignature, match=name):
            verify_signature("k", b"{}", partial, now=NOW)
    with pytest.raises(BadSignature, match="not a number"):
        verify_signature("k", b"{}", {**headers, TIMESTAMP_HEADER: "soon"}, now=NOW)


def test_backoff_doubles_and_is_capped() -> None:
    assert [retry_delay_s(n) for n in range(1, 6)] == [5, 10, 20, 40, 80]
    assert retry_delay_s(0) == 0
    assert retry_delay_s(30) == 3600
    assert retry_delay_s(10_000) == 3600
    assert retry_delay_s(3, base_s=0.1, cap_s=0.3) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("url", "host", "port", "security", "user", "password"),
    [
        ("smtp://127.0.0.1:8025", "127.0.0.1", 8025, "plain", None, None),
        ("smtp://mail.example.com", "mail.example.com", 25, "plain", None, None),
        ("smtp://mail.example.com?starttls=1", "mail.example.com", 587, "starttls", None, None),
        ("smtp+starttls://u:p@m.io:2525", "m.io", 2525, "starttls", "u", "p"),
        ("smtps://ops%40x.io:p%3Aw@m.io", "m.io", 465, "ssl", "ops@x.io", "p:w"),
    ],
)
def test_smtp_urls(
    url: str, host: str, port: int, security: str, user: str | None, password: str | None
) -> None:
    t = parse_smtp_url(url)
    assert (t.host, t.port, t.security, t.username, t.password) == (
        host,
        port,
        security,
        user,
        password,
    )
    assert "p:w" not in str(t) and "p:w" not in repr(t)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://m.io", "must start with smtp://"),
        ("m.io:25", "must start with smtp://"),
        ("smtp://", "no host"),
        ("smtp://m.io:99999", "bad port"),
    ],
)
def test_bad_smtp_urls(url: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        parse_smtp_url(url)


def test_report_settings_from_the_environment() -> None:
    s = load(
        {
            "CHANGEOVER_SMTP_URL": "smtp+starttls://u:secret@mail.example.com",
            "CHANGEOVER_MAIL_FROM": "changeover@example.com",
            "CHANGEOVER_WEBHOOK_URL": "https://hooks.example.com/changeover",
            "CHANGEOVER_WEBHOOK_SECRET": "k",
            "CHANGEOVER_REPORT_EVERY_S": "0.5",
            "CHANGEOVER_REPORT_RETRY_S": "2",
            "CHANGEOVER_REPORT_MAX_ATTEMPTS": "4",
        }
    )
    assert "secret" not in repr(s)
    cfg = NotifierConfig.from_settings(s)
    assert cfg.smtp is not None
    assert (cfg.smtp.host, cfg.smtp.port, cfg.smtp.security) == (
        "mail.example.com",
        587,
        "starttls",
    )
    assert (cfg.mail_from, cfg.webhook_secret, cfg.retry_s, cfg.max_attempts) == (
        "changeover@example.com",
        "k",
        2.0,
        4,
    )
    assert s.report_every_s == 0.5


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"CHANGEOVER_WEBHOOK_URL": "https://h.example.com"}, "needs CHANGEOVER_WEBHOOK_SECRET"),
        ({"CHANGEOVER_WEBHOOK_URL": "ftp://h", "CHANGEOVER_WEBHOOK_SECRET": "k"}, "http"),
        ({"CHANGEOVER_REPORT_MAX_ATTEMPTS": "0"}, "count >= 1"),
        ({"CHANGEOVER_REPORT_RETRY_S": "soon"}, "number of seconds"),
    ],
)
def test_bad_report_settings(env: dict[str, str], why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        load(env)
