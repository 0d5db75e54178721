"""The one notifier against real services: the session's SMTP sink (every message parsed as the
MIME that arrived), an SMTP server that requires a login (for the secrets), and a Slack
incoming-webhook stand-in on 127.0.0.1."""

from __future__ import annotations

import email
import json
import logging
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import airflow.providers.smtp.hooks.smtp  # noqa: F401  (Airflow sets logging up at import: before caplog)
import pytest

from include.registry_ops import notify
from include.registry_ops.config import Config
from include.registry_ops.notify import Attachment, InlineImage, Message, NotifyError

SMTP_PASSWORD = "smtp-pass-Zq81x"
SLACK_TOKEN = "T0NOTIFY/B0NOTIFY/slack-secret-9f3e"


def png(width: int = 2, height: int = 1) -> bytes:
    """A real PNG (red pixels), as a chart library would return it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def config(**notifications: Any) -> Config:
    return Config.model_validate(
        {
            "registries": [{"name": "oci-local", "kind": "oci", "conn_id": "oci_local"}],
            "storage": {"bucket": "notify-test"},
            "notifications": notifications,
        }
    )


def body(part: email.message.EmailMessage) -> str:
    """A text part's content with the wire's CRLF line ends back to LF (and the final line end
    ``set_content`` adds taken off)."""
    return part.get_content().replace("\r\n", "\n").rstrip("\n")


def raw(smtp_server, index: int) -> email.message.EmailMessage:
    """The message as it arrived on the wire (its .eml file), parsed by the modern parser."""
    data = (smtp_server.maildir / f"{index + 1:04d}.eml").read_bytes()
    return email.message_from_bytes(data, policy=policy.default)


def report_message(**kw: Any) -> Message:
    csv = "repository,bytes\r\nteam/app,1024\r\nteam/café,2048\r\n".encode()
    defaults: dict[str, Any] = {
        "subject": "[registry-ops] weekly storage report: USD 12.34/month, 99.2% pulls succeeded (test)",
        "text": "Storage by repository\nteam/app 1 KiB",
        "html": '<h2>Storage</h2><p><img src="cid:bytes-chart" alt="bytes"></p><p>team/app 1 KiB</p>',
        "images": (InlineImage("bytes-chart", png(), "bytes.png"),),
        "attachments": (Attachment("cost.csv", csv, "text/csv"),),
        "recipients": ("ops@example.com", "finance@example.com"),
        "sender": "reports@example.com",
    }
    return Message(**{**defaults, **kw})


# -- email structure ------------------------------------------------------------------------------
def test_email_arrives_as_alternative_related_and_mixed(smtp_server):
    message = report_message()
    before = len(smtp_server.messages)
    sent = notify.send_email(message, "smtp_default")
    assert len(smtp_server.messages) == before + 1
    msg = raw(smtp_server, before)
    assert msg["Subject"] == message.subject
    assert smtp_server.messages[before]["Subject"] == message.subject  # one line even to compat32 readers
    assert msg["From"] == "reports@example.com"
    assert [a.addr_spec for a in msg["To"].addresses] == ["ops@example.com", "finance@example.com"]
    assert sent.recipients == ["ops@example.com", "finance@example.com"] and sent.refused == {}
    assert msg["Message-ID"] == sent.message_id and sent.message_id.endswith("@example.com>")
    assert msg["Date"]

    # mixed( alternative( text/plain, related( text/html, image/png ) ), text/csv attachment )
    assert msg.get_content_type() == "multipart/mixed"
    alternative, attachment = msg.get_payload()
    assert alternative.get_content_type() == "multipart/alternative"
    text, related = alternative.get_payload()
    assert text.get_content_type() == "text/plain" and body(text) == message.text
    assert related.get_content_type() == "multipart/related"
    html, image = related.get_payload()
    assert html.get_content_type() == "text/html" and body(html) == message.html
    assert image.get_content_type() == "image/png"
    assert image["Content-ID"] == "<bytes-chart>" and 'src="cid:bytes-chart"' in html.get_content()
    assert image.get_content_disposition() == "inline" and image.get_filename() == "bytes.png"
    assert image.get_content() == png()

    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_filename() == "cost.csv"
    assert attachment.get_payload(decode=True) == message.attachments[0].data  # bytes, CRLF and é intact

    # every line within RFC 5322's 998; bodies at 78 (base64, quoted-printable)
    wire = (smtp_server.maildir / f"{before + 1:04d}.eml").read_bytes()
    assert max(len(line) for line in wire.split(b"\r\n")) <= 998


def test_html_without_images_or_attachments_is_just_alternative(smtp_server):
    message = report_message(images=(), attachments=(), html="<p>plain <b>html</b></p>")
    before = len(smtp_server.messages)
    notify.send_email(message, "smtp_default")
    msg = raw(smtp_server, before)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.get_payload()] == ["text/plain", "text/html"]


def test_a_non_ascii_subject_and_text_only_message(smtp_server):
    message = report_message(subject="Rétention: 3 images supprimées", html=None, images=(), attachments=())
    before = len(smtp_server.messages)
    notify.send_email(message, "smtp_default")
    msg = raw(smtp_server, before)
    assert msg["Subject"] == "Rétention: 3 images supprimées"
    assert msg.get_content_type() == "text/plain" and body(msg) == message.text


def test_the_connection_gives_the_sender_when_the_message_has_none(smtp_server):
    before = len(smtp_server.messages)
    notify.send_email(report_message(sender=None), "smtp_default")
    assert raw(smtp_server, before)["From"] == "registry-ops@example.com"  # the sink's from_email


def test_messages_that_cannot_render_are_refused_before_sending():
    with pytest.raises(ValueError, match="never referenced as cid: other"):
        report_message(images=(InlineImage("bytes-chart", png()), InlineImage("other", png())))
    with pytest.raises(ValueError, match="referenced but not attached: bytes-chart"):
        report_message(images=())
    with pytest.raises(ValueError, match="not PNG bytes"):
        InlineImage("chart", b"GIF89a...")
    with pytest.raises(ValueError, match="a plain file name"):
        Attachment("../etc/passwd", b"x")
    with pytest.raises(ValueError, match="one non-empty line"):
        report_message(subject="two\nlines")


# -- failures name the connection -------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_failures_name_the_connection_and_the_problem(monkeypatch):
    with pytest.raises(
        NotifyError, match=r"SMTP connection 'smtp_nowhere' is not defined.*AIRFLOW_CONN_SMTP_NOWHERE"
    ):
        notify.send_email(report_message(), "smtp_nowhere")
    port = _closed_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_CLOSED",
        json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                    "extra": {"disable_tls": True, "disable_ssl": True}}),
    )  # fmt: skip
    with pytest.raises(
        NotifyError, match=rf"SMTP connection 'smtp_closed' \(127.0.0.1:{port}\): ConnectionRefused"
    ):
        notify.send_email(report_message(), "smtp_closed")
    with pytest.raises(NotifyError, match=r"Slack webhook connection 'slack_nowhere'.*not defined"):
        notify.send_slack("hello", webhook_conn_id="slack_nowhere")
    assert issubclass(NotifyError, OSError)  # callers that catch OSError around sending keep working


# -- Slack ------------------------------------------------------------------------------------------
class _Webhook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []
    status: ClassVar[int] = 200
    answer: ClassVar[bytes] = b"ok"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Webhook.received.append({"path": self.path, "json": json.loads(body)})
        self.send_response(_Webhook.status)
        self.end_headers()
        self.wfile.write(_Webhook.answer)

    def log_message(self, *args):
        pass


@contextmanager
def webhook(monkeypatch, status: int = 200, answer: bytes = b"ok") -> Iterator[list[dict]]:
    """A Slack incoming-webhook stand-in, and connection ``slack_test`` pointing at it."""
    _Webhook.received, _Webhook.status, _Webhook.answer = [], status, answer
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_TEST",
        json.dumps(
            {
                "conn_type": "slackwebhook",
                "host": f"http://127.0.0.1:{server.server_address[1]}/services",
                "password": SLACK_TOKEN,
            }
        ),
    )
    try:
        yield _Webhook.received
    finally:
        server.shutdown()
        server.server_close()


def test_notify_posts_to_slack_and_emails(smtp_server, monkeypatch):
    blocks = ({"type": "section", "text": {"type": "mrkdwn", "text": "*12.34 USD*"}},)
    message = report_message(recipients=(), chat_text="weekly report: 12.34 USD", chat_blocks=blocks)
    before = len(smtp_server.messages)
    with webhook(monkeypatch) as received:
        out = notify.notify(
            message, config(recipients=["ops@example.com"], slack_webhook_conn_id="slack_test")
        )
    assert out["slack"] == {"ok": True, "error": None}
    (call,) = received
    assert call["path"] == "/services/" + SLACK_TOKEN
    assert call["json"] == {"text": "weekly report: 12.34 USD", "blocks": list(blocks)}
    assert out["email"]["recipients"] == ["ops@example.com"]  # the config's, as the message named none
    assert raw(smtp_server, before)["Message-ID"] == out["email"]["message_id"]


def test_a_slack_failure_never_stops_the_email(smtp_server, monkeypatch, caplog):
    before = len(smtp_server.messages)
    with webhook(monkeypatch, status=500, answer=b"internal_error") as received:
        out = notify.notify(report_message(), config(slack_webhook_conn_id="slack_test"))
    assert len(received) == 1
    assert out["slack"]["ok"] is False
    assert (
        "Slack webhook connection 'slack_test'" in out["slack"]["error"]
        and "HTTP 500" in out["slack"]["error"]
    )
    assert len(smtp_server.messages) == before + 1 and out["email"]["message_id"]
    assert "Slack not notified" in caplog.text


def test_nobody_to_email_sends_nothing(smtp_server):
    before = len(smtp_server.messages)
    out = notify.notify(report_message(recipients=()), config())
    assert out == {"email": None, "slack": None} and len(smtp_server.messages) == before


# -- secrets ----------------------------------------------------------------------------------------
@pytest.fixture
def auth_smtp(monkeypatch):
    """An SMTP server that requires LOGIN/PLAIN with ``ops`` / SMTP_PASSWORD (no TLS: loopback)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    received: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope.original_content or envelope.content)
            return "250 OK"

    def authenticate(server, session, envelope, mechanism, auth_data):
        if auth_data.login == b"ops" and auth_data.password == SMTP_PASSWORD.encode():
            return AuthResult(success=True)
        # a careless server that echoes what it got: the notifier must not pass it on
        echo = f"535 5.7.8 rejected ops/{auth_data.password.decode()}"
        return AuthResult(success=False, handled=False, message=echo)

    port = _closed_port()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()

    def connection(conn_id: str, password: str) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_" + conn_id.upper(),
            json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": port,
                    "login": "ops",
                    "password": password,
                    "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "ops@example.com"},
                }
            ),
        )

    yield connection, received
    controller.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_secrets_are_never_logged_nor_raised(auth_smtp, monkeypatch, caplog, capfd):
    caplog.set_level(logging.WARNING, logger="mail.log")  # the test server's own log echoes its answers
    caplog.set_level(logging.DEBUG)  # last: this also sets caplog's handler level
    connection, received = auth_smtp
    wrong = "wrong-pass-Kx73"
    connection("smtp_auth", SMTP_PASSWORD)
    connection("smtp_wrong", wrong)

    sent = notify.send_email(report_message(), "smtp_auth")  # logs in, sends
    assert len(received) == 1 and sent.message_id.encode() in received[0]
    with pytest.raises(NotifyError) as err:
        notify.send_email(report_message(), "smtp_wrong")
    assert "smtp_wrong" in str(err.value) and "535" in str(err.value)  # authentication failed
    assert "rejected ops/***" in str(err.value)  # the echoed password, scrubbed

    # Slack: refused connection (requests puts the URL in its error) and an answer echoing the URL
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_CLOSED",
        json.dumps({"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{_closed_port()}/services",
                    "password": SLACK_TOKEN}),
    )  # fmt: skip
    closed = notify.notify(
        report_message(), config(smtp_conn_id="smtp_auth", slack_webhook_conn_id="slack_closed")
    )
    assert "ConnectionError" in closed["slack"]["error"] and "slack_closed" in closed["slack"]["error"]
    with webhook(monkeypatch, status=404, answer=f"no_service: /services/{SLACK_TOKEN}".encode()):
        echoed = notify.notify(
            report_message(), config(smtp_conn_id="smtp_auth", slack_webhook_conn_id="slack_test")
        )
    assert "HTTP 404 no_service" in echoed["slack"]["error"]

    out, errs = capfd.readouterr()
    seen = caplog.text + out + errs + str(err.value) + json.dumps([closed, echoed])
    for secret in (SMTP_PASSWORD, wrong, SLACK_TOKEN, "slack-secret-9f3e"):
        assert secret not in seen
    assert "Slack not notified" in caplog.text  # the failures were logged, without the secrets
    assert '"POST *** HTTP/1.1" 404' in caplog.text  # urllib3's DEBUG line, redacted


# -- the scan gate's Slack key ----------------------------------------------------------------------
def test_the_scan_gate_posts_to_the_notifications_webhook_and_the_old_key_still_wins(monkeypatch, caplog):
    from include.registry_ops.scan import notify as gate_notify

    result = {"violations": [], "allowlist_expired": [{"id": "CVE-1", "expires": "2026-01-01"}]}
    shared = config(slack_webhook_conn_id="slack_test")
    assert gate_notify.slack_conn_id(shared) == "slack_test"
    with webhook(monkeypatch) as received:
        assert gate_notify.send_slack(shared, result)
    assert received[0]["json"]["text"] == gate_notify.slack_text(result)
    old = shared.model_copy(
        update={"scan": shared.scan.model_copy(update={"slack_webhook_conn_id": "slack_old"})}
    )
    assert gate_notify.slack_conn_id(old) == "slack_old"
    assert "scan.slack_webhook_conn_id is deprecated" in caplog.text
