"""Both channels for one message, as the config's ``notifications:`` section says."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ..config import Config
from .message import Message, NotifyError
from .slack import send_slack
from .smtp import send_email

log = logging.getLogger(__name__)


def notify(message: Message, config: Config, slack_webhook_conn_id: str | None = None) -> dict[str, Any]:
    """Post to Slack (if a webhook connection is configured), then email (if anyone is to get it).

    Returns ``{"email": {"recipients", "message_id", "refused"} | None, "slack": {"ok", "error"} |
    None}`` (None: that channel is not configured). A Slack failure is logged and returned, never
    stops the email; an email failure raises ``NotifyError``. ``slack_webhook_conn_id`` overrides
    ``notifications.slack_webhook_conn_id`` (the scan gate's deprecated key)."""
    settings = config.notifications
    out: dict[str, Any] = {"email": None, "slack": None}
    slack_conn = slack_webhook_conn_id or settings.slack_webhook_conn_id
    if slack_conn:
        try:
            blocks = list(message.chat_blocks) if message.chat_blocks else None
            send_slack(message.chat_text or message.subject, blocks, slack_conn)
            out["slack"] = {"ok": True, "error": None}
        except NotifyError as exc:
            log.error("notify: Slack not notified (the email still goes out): %s", exc)
            out["slack"] = {"ok": False, "error": str(exc)}
    recipients = message.recipients or tuple(settings.recipients)
    if not recipients:
        log.warning("notify: %r not emailed: notifications.recipients is empty", message.subject)
        return out
    message = dataclasses.replace(message, recipients=recipients, sender=message.sender or settings.sender)
    out["email"] = send_email(message, settings.smtp_conn_id).as_dict()
    return out
