"""Slack through an incoming webhook whose URL an Airflow connection holds.

The password is the full ``https://hooks.slack.com/services/...`` URL, or the ``T.../B.../...``
path appended to the host (default ``https://hooks.slack.com/services``), as the Slack
provider's ``slackwebhook`` connection stores it. The URL is the secret: it never reaches a log
line or an error. ``requests`` puts the URL into its connection errors (rewritten here) and
urllib3 logs each request's path at DEBUG (``registry-ops -vv``; Airflow masks connection
passwords only inside tasks), so a filter on urllib3's logger redacts the webhook URLs in use.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import requests

from ..clients import ConnectionMissing, get_connection
from .message import NotifyError
from .smtp import scrub

log = logging.getLogger(__name__)
SLACK_DEFAULT = "https://hooks.slack.com/services"
TIMEOUT = 30


class _Redact(logging.Filter):
    """Replaces the registered secrets in a record's text (installed on urllib3's pool logger)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = scrub(text, sorted(self.secrets, key=len, reverse=True))
        if clean != text:
            record.msg, record.args = clean, None
        return True


_REDACT = _Redact()


def _redact_in_logs(secrets: list[str | None]) -> None:
    _REDACT.secrets.update(s for s in secrets if s)
    pool_log = logging.getLogger("urllib3.connectionpool")
    if _REDACT not in pool_log.filters:
        pool_log.addFilter(_REDACT)


def webhook_url(conn: Any) -> str:
    secret = conn.password or ""
    if secret.startswith(("https://", "http://")):
        return secret
    host = (conn.host or SLACK_DEFAULT).rstrip("/")
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    return f"{host}/{secret.lstrip('/')}"


def send_slack(text: str, blocks: list[dict] | None = None, webhook_conn_id: str = "slack_default") -> None:
    """Post ``text`` (and Block Kit ``blocks``, with ``text`` as their fallback); ``NotifyError``
    names the connection, the webhook's host and the problem, never the URL's path."""
    try:
        conn = get_connection(webhook_conn_id)
    except ConnectionMissing as exc:
        raise NotifyError(f"Slack webhook connection {webhook_conn_id!r}: {exc}") from None
    url = webhook_url(conn)
    where = f"Slack webhook connection {webhook_conn_id!r} (host {urlsplit(url).netloc or '?'})"
    if not conn.password:
        raise NotifyError(f"{where}: no webhook URL or token in the connection's password")
    payload: dict[str, Any] = {"text": text}
    if blocks:
        payload["blocks"] = blocks
    path = urlsplit(url).path
    secrets = [url, conn.password, path if len(path) > 1 else None]
    _redact_in_logs(secrets)
    try:
        resp = requests.post(url, json=payload, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise NotifyError(scrub(f"{where}: {type(exc).__name__}: {exc}", secrets)) from None
    if resp.status_code >= 300:
        # Slack answers a short error code (invalid_token, channel_not_found, ...)
        body = scrub(resp.text[:200].strip(), secrets)
        raise NotifyError(f"{where}: HTTP {resp.status_code} {body}".rstrip())
    log.info("notify: Slack message posted via connection %r", webhook_conn_id)
