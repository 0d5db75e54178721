"""Tell people when the gate fails: email through Airflow's SMTP connection, Slack if configured.

The message is built here from the gate result (not from a Jinja template) because it is a
table of images; sending goes through the smtp provider's ``SmtpHook`` (connection
``notifications.smtp_conn_id``; sender from ``notifications.sender`` or the connection's
``from_email``). Slack uses an incoming webhook whose URL is held by a connection
(``scan.slack_webhook_conn_id``): the password is the full ``https://hooks.slack.com/...`` URL,
or the ``T.../B.../...`` path appended to the host (default ``https://hooks.slack.com/services``),
as the Slack provider's ``slackwebhook`` connection stores it. Secrets never reach the logs.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import requests

from ..clients import get_connection
from ..config import Config

log = logging.getLogger("airflow.task")
SLACK_DEFAULT = "https://hooks.slack.com/services"
MAX_ROWS = 200


def subject(result: dict[str, Any]) -> str:
    return (
        f"[registry-ops] scan gate failed: {result['protected_violations']} protected image(s) "
        "violate the vulnerability policy"
    )


def _cell(value: Any) -> str:
    return f"<td>{html.escape(str(value if value is not None else '-'))}</td>"


def html_body(result: dict[str, Any], run: str = "") -> str:
    policy = result["policy"]
    head = [
        "Registry",
        "Repository",
        "Newest tag",
        "Platform",
        "Digest",
        "Critical",
        "High",
        "IDs",
        "Protected",
    ]
    rows = []
    for v in result["violations"][:MAX_ROWS]:
        ids = ", ".join(v["critical_ids"] + v["high_ids"])
        cells = [
            v["registry"],
            v["repository"],
            v["newest_tag"],
            v["platform"],
            v["digest"][:19],
            v["critical"],
            v["high"],
            ids,
            "yes" if v["protected"] else "no",
        ]
        rows.append("<tr>" + "".join(_cell(c) for c in cells) + "</tr>")
    more = len(result["violations"]) - MAX_ROWS
    parts = [
        "<h2>Vulnerability gate failed</h2>",
        f"<p>{result['protected_violations']} image(s) under protected tags exceed the policy "
        f"(at most {policy['max_critical']} critical and {policy['max_high']} high vulnerabilities per "
        f"image, counted as unique ids after the allowlist). {html.escape(run)}</p>",
        "<table border='1' cellpadding='4' cellspacing='0'><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table>",
    ]
    if more > 0:
        parts.append(f"<p>... and {more} more (see gate.json).</p>")
    if result["allowlist_expired"]:
        items = "".join(
            f"<li>{html.escape(e['id'])} (expired {e['expires']}): {html.escape(e['reason'])}; "
            f"would cover {len(e['would_cover'])} image(s)</li>"
            for e in result["allowlist_expired"]
        )
        parts.append(f"<h3>Expired allowlist entries (no longer suppress)</h3><ul>{items}</ul>")
    return "\n".join(parts)


def slack_text(result: dict[str, Any]) -> str:
    lines = [f":rotating_light: {subject(result)}"]
    for v in [v for v in result["violations"] if v["protected"]][:20]:
        lines.append(
            f"• {v['registry']}/{v['repository']}:{v['newest_tag']} ({v['platform'] or '-'}) "
            f"critical {v['critical']}, high {v['high']}"
        )
    if result["allowlist_expired"]:
        lines.append("Expired allowlist entries: " + ", ".join(e["id"] for e in result["allowlist_expired"]))
    return "\n".join(lines)


def send_email(config: Config, result: dict[str, Any], run: str = "") -> list[str]:
    """Send the gate email; returns the recipients (none configured: nothing sent)."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    to = list(config.notifications.recipients)
    if not to:
        log.warning("scan: gate failed but notifications.recipients is empty; no email sent")
        return []
    with SmtpHook(smtp_conn_id=config.notifications.smtp_conn_id) as hook:
        hook.send_email_smtp(
            to=to,
            subject=subject(result),
            html_content=html_body(result, run),
            from_email=config.notifications.sender,
        )
    log.info("scan: gate email sent to %d recipient(s)", len(to))
    return to


def slack_url(conn: Any) -> str:
    secret = conn.password or ""
    if secret.startswith(("https://", "http://")):
        return secret
    host = (conn.host or SLACK_DEFAULT).rstrip("/")
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    return f"{host}/{secret.lstrip('/')}"


def send_slack(config: Config, result: dict[str, Any]) -> bool:
    """Post to the Slack webhook if one is configured; returns whether a message was sent."""
    conn_id = config.scan.slack_webhook_conn_id
    if not conn_id:
        return False
    resp = requests.post(slack_url(get_connection(conn_id)), json={"text": slack_text(result)}, timeout=30)
    if resp.status_code >= 300:
        # the URL is a secret: report only the status
        raise RuntimeError(f"Slack webhook answered HTTP {resp.status_code}")
    log.info("scan: Slack notified")
    return True
