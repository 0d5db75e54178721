"""Tell people what is new when the gate fails: email through Airflow's SMTP connection, Slack too.

Only news goes out in full (a new violation, new CVE ids on a known one, an acknowledgement that
ended: ``gate_state.classify``); known violations get one line each, so a violation that
persists is not mailed again every day. The caller sends only when there is news.

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
MAX_KNOWN = 50


def _news(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Violations worth an email; a result never classified (``gate.evaluate`` alone): every
    protected one."""
    return [v for v in result["violations"] if (v["news"] if "status" in v else v["protected"])]


def _known(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in result["violations"] if v["protected"] and v not in _news(result)]


def subject(result: dict[str, Any]) -> str:
    news, known = len(_news(result)), len(_known(result))
    return (
        f"[registry-ops] scan gate failed: {news} protected image(s) newly violate the vulnerability "
        f"policy ({known} known)"
    )


def _cell(value: Any) -> str:
    return f"<td>{html.escape(str(value if value is not None else '-'))}</td>"


def _news_table(news: list[dict[str, Any]]) -> list[str]:
    head = [
        "Registry",
        "Repository",
        "Newest tag",
        "Platform",
        "Digest",
        "Critical",
        "High",
        "IDs",
        "What is new",
    ]
    rows = []
    for v in news[:MAX_ROWS]:
        cells = [
            v["registry"],
            v["repository"],
            v["newest_tag"],
            v["platform"],
            v["digest"],  # in full: `registry-ops scan ack --digest` takes it from here
            v["critical"],
            v["high"],
            ", ".join(v["critical_ids"] + v["high_ids"]),
            "; ".join(v.get("news") or ["new violation"]),
        ]
        rows.append("<tr>" + "".join(_cell(c) for c in cells) + "</tr>")
    out = [
        "<table border='1' cellpadding='4' cellspacing='0'><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    ]
    if len(news) > MAX_ROWS:
        out.append(f"<p>... and {len(news) - MAX_ROWS} more (see gate.json).</p>")
    return out


def _known_item(v: dict[str, Any]) -> str:
    where = f"{v['registry']}/{v['repository']}:{v['newest_tag']} ({v['digest'][:19]})"
    ack = v.get("ack")
    state = v.get("status", "known")
    if state == "acknowledged" and ack:
        state += f" by {ack.get('by') or '?'} until {ack['until']}: {ack['reason']}"
    since = f", reported since {v['first_reported_at'][:10]}" if v.get("first_reported_at") else ""
    return f"<li>{html.escape(where)}: {html.escape(state)}{html.escape(since)}</li>"


def html_body(result: dict[str, Any], run: str = "") -> str:
    """New violations in full; known ones (reported before) as a short list."""
    policy = result["policy"]
    news, known = _news(result), _known(result)
    parts = [
        "<h2>Vulnerability gate failed</h2>",
        f"<p>{len(news)} image(s) under protected tags newly exceed the policy (at most "
        f"{policy['max_critical']} critical and {policy['max_high']} high vulnerabilities per image, counted "
        f"as unique ids after the allowlist). {html.escape(run)}</p>",
        *_news_table(news),
    ]
    if known:
        unacked = sum(v.get("status") == "unacknowledged" for v in known)
        items = "".join(_known_item(v) for v in known[:MAX_KNOWN])
        more = (
            f"<p>... and {len(known) - MAX_KNOWN} more (see gate.json).</p>" if len(known) > MAX_KNOWN else ""
        )
        parts.append(
            f"<h3>Known violations (reported before, not repeated in full)</h3><p>{len(known)} known: "
            f"{unacked} unacknowledged (they fail every run until fixed or acknowledged), "
            f"{len(known) - unacked} acknowledged.</p><ul>{items}</ul>{more}"
        )
    unprotected = len(result["violations"]) - result["protected_violations"]
    if unprotected:
        parts.append(
            f"<p>{unprotected} violating image(s) without a protected tag are listed in gate.json.</p>"
        )
    parts.append(
        "<p>To accept a violation for now (its current CVE ids only, until a date): <code>registry-ops scan "
        "ack --registry R --repository P --digest D --reason TEXT --until YYYY-MM-DD</code></p>"
    )
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
    for v in _news(result)[:20]:
        lines.append(
            f"• {v['registry']}/{v['repository']}:{v['newest_tag']} ({v['platform'] or '-'}) "
            f"critical {v['critical']}, high {v['high']}: {'; '.join(v.get('news') or ['new violation'])}"
        )
    known = _known(result)
    if known:
        unacked = sum(v.get("status") == "unacknowledged" for v in known)
        lines.append(f"Known: {unacked} unacknowledged, {len(known) - unacked} acknowledged (see the email)")
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
