"""Tell people what is new when the gate fails: email through Airflow's SMTP connection, Slack too.

Only news goes out in full (a new violation, new CVE ids on a known one, an acknowledgement that
ended: ``gate_state.classify``); known violations get one line each, so a violation that
persists is not mailed again every day. The caller sends only when there is news.

Only the gate's content lives here (subject, plain text, HTML table of the violations, the
Slack line); the notifier (``registry_ops.notify``) sends it: email through the SMTP provider's
hook (``notifications.smtp_conn_id``; sender ``notifications.sender`` or the connection's
``from_email``), Slack through the webhook connection ``notifications.slack_webhook_conn_id``
(``scan.slack_webhook_conn_id``, deprecated, still wins for the gate when set).
"""

from __future__ import annotations

import dataclasses
import html
import logging
from typing import Any

from .. import notify as notifier
from ..config import Config

log = logging.getLogger(__name__)
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


def _text_line(v: dict[str, Any]) -> str:
    ids = ", ".join(v["critical_ids"] + v["high_ids"])
    return (
        f"- {v['registry']}/{v['repository']}:{v['newest_tag']} ({v['platform'] or '-'}) {v['digest']}\n"
        f"  critical {v['critical']}, high {v['high']}: {ids}\n"
        f"  new: {'; '.join(v.get('news') or ['new violation'])}"
    )


def text_body(result: dict[str, Any], run: str = "") -> str:
    """The plain-text alternative: what the HTML says, for clients that do not show HTML."""
    policy = result["policy"]
    news, known = _news(result), _known(result)
    lines = [
        "Vulnerability gate failed",
        "",
        f"{len(news)} image(s) under protected tags newly exceed the policy (at most "
        f"{policy['max_critical']} critical and {policy['max_high']} high vulnerabilities per image). {run}",
        "",
        *(_text_line(v) for v in news[:MAX_ROWS]),
    ]
    if len(news) > MAX_ROWS:
        lines.append(f"... and {len(news) - MAX_ROWS} more (see gate.json).")
    if known:
        unacked = sum(v.get("status") == "unacknowledged" for v in known)
        lines += ["", f"Known violations (reported before): {unacked} unacknowledged, "
                  f"{len(known) - unacked} acknowledged."]  # fmt: skip
        lines += [
            f"- {v['registry']}/{v['repository']}:{v['newest_tag']} ({v['digest'][:19]}): "
            f"{v.get('status', 'known')}"
            for v in known[:MAX_KNOWN]
        ]
    if result["allowlist_expired"]:
        lines += ["", "Expired allowlist entries (no longer suppress):"]
        lines += [f"- {e['id']} (expired {e['expires']}): {e['reason']}" for e in result["allowlist_expired"]]
    lines += [
        "",
        "To accept a violation for now: registry-ops scan ack --registry R --repository P --digest D "
        "--reason TEXT --until YYYY-MM-DD",
    ]
    return "\n".join(lines)


def message(result: dict[str, Any], run: str = "") -> notifier.Message:
    return notifier.Message(
        subject=subject(result),
        text=text_body(result, run),
        html=html_body(result, run),
        chat_text=slack_text(result),
    )


def slack_conn_id(config: Config) -> str | None:
    """The webhook connection: ``notifications.slack_webhook_conn_id``, unless the deprecated
    ``scan.slack_webhook_conn_id`` is set."""
    if config.scan.slack_webhook_conn_id:
        log.warning(
            "scan: scan.slack_webhook_conn_id is deprecated; set notifications.slack_webhook_conn_id (%s)",
            config.source,
        )
        return config.scan.slack_webhook_conn_id
    return config.notifications.slack_webhook_conn_id


def send_email(config: Config, result: dict[str, Any], run: str = "") -> list[str]:
    """Send the gate email; returns the recipients (none configured: nothing sent). A failure
    raises ``NotifyError`` (an ``OSError``) naming the SMTP connection."""
    settings = config.notifications
    to = list(settings.recipients)
    if not to:
        log.warning("scan: gate failed but notifications.recipients is empty; no email sent")
        return []
    msg = dataclasses.replace(message(result, run), recipients=tuple(to), sender=settings.sender)
    sent = notifier.send_email(msg, settings.smtp_conn_id)
    log.info("scan: gate email sent to %d recipient(s)", len(sent.recipients))
    return sent.recipients


def send_slack(config: Config, result: dict[str, Any]) -> bool:
    """Post to the Slack webhook if one is configured; returns whether a message was sent. A
    failure raises ``NotifyError`` naming the connection (never the webhook URL)."""
    conn_id = slack_conn_id(config)
    if not conn_id:
        return False
    notifier.send_slack(slack_text(result), webhook_conn_id=conn_id)
    log.info("scan: Slack notified")
    return True
