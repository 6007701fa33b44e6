"""Report tests (imported as ``reports_helpers``): a real SMTP server and webhook receiver.

The receiver checks every request with ``verify_signature``, the way a user's receiver
would, and can be told to fail its next requests (to exercise retries).
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from changeover.control.patchjobs.reports import BadSignature, verify_signature
from tests_helpers import free_port


@dataclass
class Received:
    rcpt: list[str]
    message: EmailMessage


@dataclass
class Inbox:
    """An aiosmtpd handler that keeps what it receives; ``fail`` answers 451 that often."""

    messages: list[Received] = field(default_factory=list)
    fail: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        with self.lock:
            if self.fail > 0:
                self.fail -= 1
                return "451 4.3.0 try again later"
            raw = envelope.content if isinstance(envelope.content, bytes) else b""
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            self.messages.append(Received([str(r) for r in envelope.rcpt_tos], msg))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [r.message for r in self.messages if address in r.rcpt]


class SmtpServer:
    """aiosmtpd on loopback; with ``login``, it requires AUTH with that user and password
    (over plain SMTP: this is loopback)."""

    def __init__(self, login: tuple[str, str] | None = None) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self.login = login
        auth: dict[str, Any] = {}
        if login is not None:
            auth = {
                "auth_required": True,
                "auth_require_tls": False,
                "authenticator": self._authenticate,
            }
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **auth)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.login == (
            data.login.decode(),
            data.password.decode(),
        )
        return AuthResult(success=ok, handled=False)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.controller.stop()


@dataclass
class Hook:
    event_id: int
    doc: dict[str, Any]
    headers: dict[str, str]


class WebhookReceiver:
    """POSTs land in ``hooks`` if their signature checks out, in ``refused`` otherwise."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.hooks: list[Hook] = []
        self.refused: list[str] = []
        self.fail = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers.items())
                status = receiver.receive(body, headers)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def receive(self, body: bytes, headers: dict[str, str]) -> int:
        with self.lock:
            if self.fail > 0:
                self.fail -= 1
                return 503
            try:
                event_id = verify_signature(self.secret, body, headers, now=time.time())
            except BadSignature as e:
                self.refused.append(e.message)
                return 401
            self.hooks.append(Hook(event_id, json.loads(body), headers))
            return 204

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/changeover"

    def ids(self) -> list[int]:
        with self.lock:
            return [h.event_id for h in self.hooks]

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
