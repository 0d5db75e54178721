"""Email through the SMTP provider's hook.

``SmtpHook`` resolves the Airflow connection (host, port, TLS/SSL switches, login, retries of the
connect, ``from_email``) and logs in; we use that for the session. Its ``send_email_smtp`` is not
used because it builds its own MIME: ``multipart/mixed`` holding one ``text/html`` part and
attachments read from file paths (each given ``Content-ID: <file name>``), with no
``text/plain`` alternative and no ``multipart/related``, so an HTML body cannot reference inline
``cid:`` images and clients without HTML get nothing readable. The message is therefore built
with the stdlib (``message.to_mime``) and handed, as ``message.to_bytes``, to the hook's
logged-in ``smtplib`` client, which the hook keeps as ``_smtp_client`` (it has no public
accessor).

Secrets: the connection's password is never logged nor put into an error; an error text that
came from elsewhere is scrubbed of it before it is raised.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass, field
from typing import Any

from .message import Message, NotifyError, to_bytes, to_mime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmailSent:
    recipients: list[str]
    message_id: str
    refused: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"recipients": self.recipients, "message_id": self.message_id, "refused": self.refused}


def scrub(text: str, secrets: list[str | None]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _secrets(hook: Any) -> list[str | None]:
    """What the hook's connection holds that must not be shown (none before it was read)."""
    conn = hook.smtp_connection
    if conn is None:
        return []
    extra = conn.extra_dejson
    return [conn.password, extra.get("access_token"), extra.get("client_secret")]


def _problem(hook: Any, smtp_conn_id: str, exc: Exception) -> str:
    if hook.smtp_connection is None:  # the hook read no connection: it is not defined
        env = "AIRFLOW_CONN_" + smtp_conn_id.upper()
        return f"SMTP connection {smtp_conn_id!r} is not defined (outside a task define {env}): {exc}"
    conn = hook.smtp_connection
    return f"SMTP connection {smtp_conn_id!r} ({conn.host}:{conn.port}): {type(exc).__name__}: {exc}"


def send_email(message: Message, smtp_conn_id: str = "smtp_default") -> EmailSent:
    """Send ``message`` to ``message.recipients`` (sender: ``message.sender``, else the
    connection's ``from_email``); ``NotifyError`` names the connection and the problem."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    recipients = list(message.recipients)
    if not recipients:
        raise NotifyError(f"email {message.subject!r}: no recipients")
    hook = SmtpHook(smtp_conn_id=smtp_conn_id)
    try:
        with hook:
            sender = message.sender or hook.from_email
            if not sender:
                raise NotifyError(
                    f"SMTP connection {smtp_conn_id!r}: no sender (set notifications.sender or the "
                    "connection's extra from_email)"
                )
            mime = to_mime(message, sender, recipients)
            client: smtplib.SMTP = hook._smtp_client  # the hook's logged-in session
            refused = client.sendmail(sender, recipients, to_bytes(mime))
    except NotifyError:
        raise
    except Exception as exc:  # smtplib, socket, ssl and the hook's AirflowException alike
        raise NotifyError(
            scrub(f"email {message.subject!r} not sent: {_problem(hook, smtp_conn_id, exc)}", _secrets(hook))
        ) from None
    refused_text = {r: f"{c} {m.decode(errors='replace')}" for r, (c, m) in refused.items()}
    accepted = [r for r in recipients if r not in refused]
    sent = EmailSent(accepted, str(mime["Message-ID"]), refused_text)
    log.info(
        "notify: email %r sent to %d recipient(s) via SMTP connection %r, Message-ID %s%s",
        message.subject,
        len(accepted),
        smtp_conn_id,
        sent.message_id,
        f"; refused: {refused_text}" if refused_text else "",
    )
    return sent
