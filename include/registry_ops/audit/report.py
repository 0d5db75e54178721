"""The access audit's email: new findings first, then what changed since the last audit, the
gate, the rest in short; the access matrix attached as CSV.

It goes to ``notifications.security_recipients`` (default ``notifications.recipients``) by
email only: the report names principals and their weaknesses, which a chat channel shared more
widely should not carry. Every run sends it (weekly): a run with nothing new says so.

What it shows comes from the run's tables and diff, which hold names, ARNs, access key ids
(not secret) and policy references, never a secret: the audit reads no secret key (IAM never
returns one after creation), and error texts, which come from AWS and Airflow, have the
user-info of any URL in them redacted before they are stored, logged or sent (:func:`redact`).
"""

from __future__ import annotations

import csv
import html
import io
from typing import Any

from .. import redact as _redact
from ..config import Config
from ..notify import Attachment, Message
from .history import ACCESS_SCHEMA

MAX_ROWS = 200
MATRIX_COLUMNS = [c for c in ACCESS_SCHEMA.names if c != "audited_at"]
_FINDING_HEAD = (
    "Severity",
    "Finding",
    "Principal",
    "Repository",
    "Registry",
    "Policy",
    "Statement",
    "Detail",
)


def redact(text: str) -> str:
    """``text`` with credentials replaced by ``***`` (``redact.py``: URL user-info and the rest)."""
    return _redact.text(text)


def recipients(config: Config) -> tuple[str, ...]:
    n = config.notifications
    return tuple(n.security_recipients if n.security_recipients is not None else n.recipients)


def subject(summary: dict[str, Any]) -> str:
    c, gate = summary["counts"], summary["gate"]
    state = "gate failed" if not gate["passed"] else "passed"
    if summary["errors"]:
        state += (
            f", {len(summary['errors'])} registr{'y' if len(summary['errors']) == 1 else 'ies'} not audited"
        )
    return (
        f"[registry-ops] IAM audit {summary['run_at'][:10]}: {state}; {c['findings_new']} new finding(s), "
        f"{c['findings_resolved']} resolved; grants +{c['grants_gained']}/-{c['grants_lost']}"
    )


def _who(f: dict[str, Any]) -> str:
    return f.get("principal") or "-"


def _finding_cells(f: dict[str, Any]) -> list[Any]:
    return [
        f["severity"],
        f["id"],
        _who(f),
        f.get("repository"),
        f["registry"],
        f.get("policy"),
        f.get("statement"),
        f["detail"],
    ]


def _table(head: tuple[str, ...] | list[str], rows: list[list[Any]], more_in: str) -> str:
    cell = lambda v: f"<td>{html.escape(str(v if v is not None else '-'))}</td>"  # noqa: E731
    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows[:MAX_ROWS])
    out = (
        "<table border='1' cellpadding='4' cellspacing='0'><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + f"</tr>{body}</table>"
    )
    if len(rows) > MAX_ROWS:
        out += f"<p>... and {len(rows) - MAX_ROWS} more in {html.escape(more_in)}.</p>"
    return out


def _gate_text(f: dict[str, Any]) -> str:
    if f.get("gate") == "acknowledged":
        return f"acknowledged by {f.get('ack_by') or '?'} until {f['ack_until']}: {f['ack_reason']}"
    if f.get("gate") and f.get("ack_until"):
        return f"{f['gate']} (acknowledgement ended {f['ack_until']})"
    return f.get("gate") or "-"


def _new(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f["change"] in ("new", "escalated")]


def _grant_rows(grants: list[dict[str, Any]], state: str = "state") -> list[list[Any]]:
    return [[g["registry"], g["principal"], g["repository"], g["capability"], g.get(state)] for g in grants]


def html_body(summary: dict[str, Any], findings: list[dict[str, Any]], changes: dict[str, Any]) -> str:
    c, gate, keys = summary["counts"], summary["gate"], summary["keys"]
    where = f"s3://{summary['bucket']}/{keys['findings']}"
    new = _new(findings)
    parts = [
        f"<h2>IAM access audit, {html.escape(summary['run_at'][:10])}</h2>",
        f"<p>{c['access_rows']} principal x repository grant rows in {len(summary['registries'])} "
        f"registr{'y' if len(summary['registries']) == 1 else 'ies'}; {c['findings']} open finding(s) "
        f"({html.escape(_by_severity(c))}). Gate ({html.escape(gate['fail_severity'])} or worse): "
        f"<b>{'passed' if gate['passed'] else 'FAILED'}</b>, {gate['new']} new, "
        f"{gate['unacknowledged']} unacknowledged, {gate['acknowledged']} acknowledged.</p>",
        f"<h3>New findings ({len(new)})</h3>",
    ]
    if new:
        head = (*_FINDING_HEAD, "What is new", "Gate", "Key")
        rows = [
            [
                *_finding_cells(f),
                "new" if f["change"] == "new" else f"escalated from {f['previous_severity']}",
                _gate_text(f),
                f["key"],
            ]
            for f in new
        ]
        parts.append(_table(head, rows, where))
    else:
        parts.append("<p>None.</p>")
    parts += _changes_html(changes, summary)
    standing = [f for f in findings if f["change"] == "known"]
    if standing:
        parts.append(f"<h3>Open findings reported before ({len(standing)})</h3>")
        rows = [[*_finding_cells(f), _gate_text(f), f["key"]] for f in standing]
        parts.append(_table((*_FINDING_HEAD, "Gate", "Key"), rows, where))
    if summary["errors"]:
        items = "".join(
            f"<li>{html.escape(e['registry'])}: {html.escape(e['error'])}</li>" for e in summary["errors"]
        )
        parts.append(f"<h3>Registries not audited</h3><ul>{items}</ul>")
    parts.append(
        f"<p>Every finding: <code>{html.escape(where)}</code>; the access matrix is attached (CSV) and in "
        f"<code>{html.escape(keys['access'])}</code>. To accept a finding for now: "
        "<code>registry-ops audit ack --finding KEY --reason TEXT --until YYYY-MM-DD</code></p>"
    )
    return "\n".join(parts)


def _by_severity(c: dict[str, Any]) -> str:
    return ", ".join(f"{n} {s}" for s, n in c["by_severity"].items() if n) or "none"


def _changes_html(changes: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    g, f = changes["grants"], changes["findings"]
    base = changes["baseline"]
    since = f"since the last audit ({base['run_at'][:10]})" if base else "(first audit: nothing to compare)"
    out = [
        f"<h3>Change {html.escape(since)}</h3>",
        f"<p>Grants gained {len(g['gained'])}, lost {len(g['lost'])}, changed {len(g['changed'])}; findings "
        f"new {len(f['new'])}, escalated {len(f['escalated'])}, resolved {len(f['resolved'])}.</p>",
    ]
    if changes.get("baseline_error"):
        out.append(f"<p>{html.escape(changes['baseline_error'])}: every finding counts as new.</p>")
    if changes["new_registries"]:
        out.append(f"<p>Audited for the first time: {html.escape(', '.join(changes['new_registries']))}.</p>")
    if changes["not_compared"]:
        out.append(
            f"<p>Not compared (not audited now): {html.escape(', '.join(changes['not_compared']))}.</p>"
        )
    more_in = f"s3://{summary['bucket']}/{summary['keys']['changes']}"
    head = ("Registry", "Principal", "Repository", "Capability", "State")
    for title, rows in (("Grants gained", _grant_rows(g["gained"])), ("Grants lost", _grant_rows(g["lost"]))):
        if rows:
            out += [f"<h4>{title}</h4>", _table(head, rows, more_in)]
    if g["changed"]:
        rows = [
            [x["registry"], x["principal"], x["repository"], x["capability"], f"{x['from']} -> {x['to']}"]
            for x in g["changed"]
        ]
        out += ["<h4>Grants changed</h4>", _table(head, rows, more_in)]
    if f["resolved"]:
        rows = [_finding_cells(x) for x in f["resolved"]]
        out += ["<h4>Findings resolved</h4>", _table(_FINDING_HEAD, rows, more_in)]
    return out


def _finding_line(f: dict[str, Any], extra: str = "") -> str:
    where = " ".join(x for x in (_who(f), f.get("repository") or "") if x)
    cause = f" [{f['policy']} {f.get('statement') or ''}]".rstrip() if f.get("policy") else ""
    return f"- {f['severity']} {f['id']} {where} ({f['registry']}){cause}: {f['detail']}{extra}"


def text_body(summary: dict[str, Any], findings: list[dict[str, Any]], changes: dict[str, Any]) -> str:
    """The plain-text alternative: what the HTML says."""
    c, gate = summary["counts"], summary["gate"]
    new = _new(findings)
    lines = [
        f"IAM access audit, {summary['run_at'][:10]}",
        "",
        f"{c['access_rows']} grant rows, {c['findings']} open finding(s) ({_by_severity(c)}). Gate "
        f"({gate['fail_severity']} or worse): {'passed' if gate['passed'] else 'FAILED'}, {gate['new']} new, "
        f"{gate['unacknowledged']} unacknowledged, {gate['acknowledged']} acknowledged.",
        "",
        f"NEW FINDINGS ({len(new)})",
        *(_finding_line(f, f" (gate: {_gate_text(f)}; key {f['key']})") for f in new[:MAX_ROWS]),
    ]
    if len(new) > MAX_ROWS:
        lines.append(f"... and {len(new) - MAX_ROWS} more in findings.parquet")
    g, fc = changes["grants"], changes["findings"]
    base = changes["baseline"]
    lines += [
        "",
        "CHANGE "
        + (f"since the last audit ({base['run_at'][:10]})" if base else "(first audit: nothing to compare)"),
        f"grants gained {len(g['gained'])}, lost {len(g['lost'])}, changed {len(g['changed'])}; findings new "
        f"{len(fc['new'])}, escalated {len(fc['escalated'])}, resolved {len(fc['resolved'])}",
    ]
    for sign, items in (("+", g["gained"]), ("-", g["lost"])):
        lines += [
            f"{sign} {x['registry']} {x['principal']} {x['repository']} {x['capability']} ({x['state']})"
            for x in items[:MAX_ROWS]
        ]
    lines += [
        f"~ {x['registry']} {x['principal']} {x['repository']} {x['capability']} {x['from']} -> {x['to']}"
        for x in g["changed"][:MAX_ROWS]
    ]
    lines += [_finding_line(x, " (resolved)") for x in fc["resolved"][:MAX_ROWS]]
    standing = [f for f in findings if f["change"] == "known"]
    if standing:
        lines += ["", f"OPEN FINDINGS REPORTED BEFORE ({len(standing)})"]
        lines += [_finding_line(f, f" (gate: {_gate_text(f)}; key {f['key']})") for f in standing[:MAX_ROWS]]
    if summary["errors"]:
        lines += [
            "",
            "REGISTRIES NOT AUDITED",
            *(f"- {e['registry']}: {e['error']}" for e in summary["errors"]),
        ]
    lines += [
        "",
        f"Every finding: s3://{summary['bucket']}/{summary['keys']['findings']}; the access matrix is "
        "attached.",
        "To accept a finding for now: registry-ops audit ack --finding KEY --reason TEXT --until YYYY-MM-DD",
    ]
    return "\n".join(lines)


def matrix_csv(access: list[dict[str, Any]]) -> bytes:
    """The access matrix: one row per principal x repository; each capability allow/conditional/empty."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(MATRIX_COLUMNS)
    for r in access:
        w.writerow(["" if r.get(col) is None else r[col] for col in MATRIX_COLUMNS])
    return out.getvalue().encode("utf-8")


def message(
    config: Config,
    summary: dict[str, Any],
    findings: list[dict[str, Any]],
    changes: dict[str, Any],
    access: list[dict[str, Any]],
) -> Message:
    name = f"access-matrix-{summary['run_at'][:10]}.csv"
    return Message(
        subject=subject(summary),
        text=text_body(summary, findings, changes),
        html=html_body(summary, findings, changes),
        attachments=(Attachment(name, matrix_csv(access), "text/csv"),),
        recipients=recipients(config),
        sender=config.notifications.sender,
    )
