"""The scan raises deadline alerts and sends them once by e-mail (a local aiosmtpd server)
and by webhook (a local HTTP server); a failed channel is retried by the next scan."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ledger.services import alerts as alert_service
from ledger.services.notify import Notifier, NotifySettings
from ledger.services.verify import verify


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller

    class Sink:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            self.messages.append((envelope.rcpt_tos, envelope.content))
            return "250 OK"

    sink = Sink()
    ctl = Controller(sink, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield ctl.port, sink.messages
    ctl.stop()


@pytest.fixture
def webhook():
    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook", got
    srv.shutdown()


def test_registration_expiry_deadline_mailed_and_posted_once(clinic, smtp, webhook):
    port, mails = smtp
    url, posts = webhook
    alert_service.record_registration_expiry(clinic.ledger, clinic.manager, "2027-01-01")  # 60 days after 2 Nov
    notifier = Notifier(NotifySettings(smtp_host="127.0.0.1", smtp_port=port, alert_mail_to=["cole@clinic.test"],
                                       alert_webhook_url=url, alert_webhook_secret="s3cret"))
    res = alert_service.scan(clinic.ledger, clinic.dea, now=clinic.ledger.clock(), notifier=notifier)
    [aid] = res.raised
    assert sorted(res.notified) == [(aid, "email"), (aid, "webhook")] and res.failures == []
    [(rcpt, raw)] = mails
    msg = message_from_bytes(raw)
    assert rcpt == ["cole@clinic.test"]
    assert msg["Subject"] == f"[csledger {clinic.dea}] MEDIUM dea_registration_expiry, due 2027-01-01"
    body = msg.get_payload()
    assert "Due (dea_registration): 2027-01-01 23:59 CST" in body and f"Alert {aid}" in body
    [(headers, raw_body)] = posts
    sig = "sha256=" + hmac.new(b"s3cret", raw_body, hashlib.sha256).hexdigest()
    assert headers["X-Csledger-Signature"] == sig
    payload = json.loads(raw_body)
    assert payload["alert"]["alert_id"] == aid and payload["alert"]["figures"]["days_left"] == "60"
    again = alert_service.scan(clinic.ledger, clinic.dea, now=clinic.ledger.clock(), notifier=notifier)
    assert again.raised == [] and again.notified == [] and len(mails) == 1 and len(posts) == 1
    assert verify(clinic.ledger, deep=True).ok


def test_registration_61_days_out_raises_nothing(clinic):
    alert_service.record_registration_expiry(clinic.ledger, clinic.manager, "2027-01-02")
    assert alert_service.scan(clinic.ledger, clinic.dea, now=clinic.ledger.clock()).raised == []


def test_failed_webhook_is_retried_next_scan(clinic, smtp, webhook):
    port, mails = smtp
    url, posts = webhook
    alert_service.record_registration_expiry(clinic.ledger, clinic.manager, "2026-12-01")
    down = Notifier(NotifySettings(smtp_host="127.0.0.1", smtp_port=port, alert_mail_to=["m@clinic.test"],
                                   alert_webhook_url=f"http://127.0.0.1:{free_port()}/nothing-listens"))
    res = alert_service.scan(clinic.ledger, clinic.dea, now=clinic.ledger.clock(), notifier=down)
    assert [c for _, c in res.notified] == ["email"] and len(res.failures) == 1
    up = Notifier(NotifySettings(smtp_host="127.0.0.1", smtp_port=port, alert_mail_to=["m@clinic.test"],
                                 alert_webhook_url=url))
    res2 = alert_service.scan(clinic.ledger, clinic.dea, now=clinic.ledger.clock(), notifier=up)
    assert [c for _, c in res2.notified] == ["webhook"] and len(mails) == 1 and len(posts) == 1


def test_resolved_deadline_is_not_sent(clinic, smtp):
    port, mails = smtp
    alert_service.record_registration_expiry(clinic.ledger, clinic.manager, "2026-12-01")
    [aid] = alert_service.scan(clinic.ledger, clinic.dea, now=clinic.ledger.clock()).raised
    alert_service.resolve_alert(clinic.ledger, clinic.compliance, aid, "explained", "Renewal filed online on 1 Nov")
    n = Notifier(NotifySettings(smtp_host="127.0.0.1", smtp_port=port, alert_mail_to=["m@clinic.test"]))
    assert alert_service.scan(clinic.ledger, clinic.dea, now=clinic.ledger.clock(), notifier=n).notified == []
    assert mails == []


def test_registration_expiry_refusals(clinic):
    from ledger.domain.errors import Forbidden, InvalidInput

    with pytest.raises(InvalidInput):
        alert_service.record_registration_expiry(clinic.ledger, clinic.manager, "2027-13-01")
    with pytest.raises(Forbidden):
        alert_service.record_registration_expiry(clinic.ledger, clinic.nurse, "2027-01-01")
