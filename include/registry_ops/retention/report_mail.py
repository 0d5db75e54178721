"""The email an executed retention run sends: what it removed, what it saved, what failed.

Sent only when a run changed something or did not finish: an executing run (not a dry run) that
removed or untagged images, or has failed or cap-stopped repositories. A dry run never sends
(its audit is the report). The content is built here; ``registry_ops.notify`` sends it to
``notifications.recipients`` (and Slack, if configured), with the per-repository results as a
CSV attachment. Sending never fails the run: the deletions are done and recorded, so a failure
is logged and kept in the summary's ``notification`` (``{"error": ...}``).
"""

from __future__ import annotations

import csv
import html
import io
import logging
from datetime import datetime
from typing import Any

from .. import notify as notifier
from ..config import Config
from . import audit

log = logging.getLogger(__name__)
MAX_ROWS = 100
CSV_COLUMNS = (
    "registry",
    "repository",
    "status",
    "deleted",
    "already_deleted",
    "bytes_deleted",
    "untagged",
    "failed",
    "skipped",
    "audit_key",
    "message",
)


def worth_sending(summary: dict[str, Any]) -> bool:
    """An executing run that changed something, or left repositories failed or stopped."""
    if summary["dry_run"]:
        return False
    return bool(
        summary["images_removed"]
        or summary["untagged"]
        or summary["repositories_failed"]
        or summary["repositories_stopped"]
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def subject(summary: dict[str, Any]) -> str:
    parts = [
        f"removed {summary['images_removed']} image(s), {_mib(summary['bytes_removed'])}, "
        f"saving about ${summary['monthly_cost_saved_usd']:,.2f}/month"
    ]
    if summary["repositories_failed"]:
        parts.append(f"{len(summary['repositories_failed'])} repositories failed")
    if summary["repositories_stopped"]:
        parts.append(f"{len(summary['repositories_stopped'])} stopped by caps")
    return f"[registry-ops] retention run {summary['run_id']}: " + "; ".join(parts)


def audit_location(config: Config, summary: dict[str, Any]) -> str:
    """The run's audit folder (``audit.audit_key`` without registry and repository)."""
    run_day = datetime.fromisoformat(summary["now"])
    run = audit.safe_run_id(summary["run_id"])
    return f"s3://{config.storage.bucket}/{config.retention.audit_prefix}dt={run_day:%Y-%m-%d}/run={run}/"


def _changed(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Repositories the run changed or did not finish, problems first; counts default to 0 (a
    result the DAG made up for an item that never stored one has no byte counts)."""
    counts = ("deleted", "already_deleted", "bytes_deleted", "untagged")
    rows = [{**r, **{c: int(r.get(c) or 0) for c in counts}} for r in results]
    keep = [r for r in rows if r["deleted"] or r["already_deleted"] or r["untagged"] or r["status"] != "done"]
    return sorted(keep, key=lambda r: (r["status"] == "done", r["registry"], r["repository"]))


def _problems(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, registry/repository, message) of each failed and stopped repository."""
    out = []
    for kind in ("failed", "stopped"):
        for name in summary[f"repositories_{kind}"]:
            text = next((m for m in summary["messages"] if m.startswith(name + ":")), "")
            out.append((kind, name, text.removeprefix(name + ":").strip() or "(no message)"))
    return out


def text_body(config: Config, summary: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = [
        f"Retention run {summary['run_id']} (executed at {summary['now']})",
        "",
        f"Removed: {summary['images_removed']} image(s), {_mib(summary['bytes_removed'])} "
        f"({summary['bytes_removed']} bytes), saving about ${summary['monthly_cost_saved_usd']:,.2f}/month "
        f"at ${summary['usd_per_gb_month']}/GB-month. Untagged: {summary['untagged']}.",
    ]
    problems = _problems(summary)
    if problems:
        lines += ["", "Not completed:"]
        lines += [f"- {kind}: {name}: {text}" for kind, name, text in problems]
    changed = [r for r in _changed(results) if r["status"] == "done"]
    if changed:
        lines += ["", "Removed per repository:"]
        lines += [
            f"- {r['registry']}/{r['repository']}: {r['deleted'] + r['already_deleted']} image(s), "
            f"{_mib(r['bytes_deleted'])}, untagged {r['untagged']}"
            for r in changed[:MAX_ROWS]
        ]
        if len(changed) > MAX_ROWS:
            lines.append(f"... and {len(changed) - MAX_ROWS} more (see the attached CSV)")
    lines += [
        "",
        f"Audit records (one JSON-lines object per repository): {audit_location(config, summary)}",
        f"Run summary: s3://{config.storage.bucket}/{summary.get('summary_key') or '(not written)'}",
        "Every removed image was archived first: registry-ops restore --digest sha256:... "
        "--registry R --repository P puts one back.",
    ]
    return "\n".join(lines)


def _td(value: Any) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def html_body(config: Config, summary: dict[str, Any], results: list[dict[str, Any]]) -> str:
    parts = [
        f"<h2>Retention run {html.escape(summary['run_id'])}</h2>",
        f"<p>Removed <b>{summary['images_removed']}</b> image(s), <b>{_mib(summary['bytes_removed'])}</b>, "
        f"saving about <b>${summary['monthly_cost_saved_usd']:,.2f}/month</b> "
        f"(at ${summary['usd_per_gb_month']}/GB-month); untagged {summary['untagged']}. "
        f"Executed at {html.escape(summary['now'])}.</p>",
    ]
    problems = _problems(summary)
    if problems:
        items = "".join(
            f"<li><b>{kind}</b> {html.escape(name)}: {html.escape(text)}</li>"
            for kind, name, text in problems
        )
        parts.append(f"<h3>Not completed</h3><ul>{items}</ul>")
    rows = _changed(results)
    if rows:
        head = ("Registry", "Repository", "Status", "Removed", "Size", "Untagged", "Audit")
        body = "".join(
            "<tr>"
            + _td(r["registry"])
            + _td(r["repository"])
            + _td(r["status"])
            + _td(r["deleted"] + r["already_deleted"])
            + _td(_mib(r["bytes_deleted"]))
            + _td(r["untagged"])
            + _td(r.get("audit_key") or "-")
            + "</tr>"
            for r in rows[:MAX_ROWS]
        )
        more = ""
        if len(rows) > MAX_ROWS:
            more = f"<p>... and {len(rows) - MAX_ROWS} more (see the attached CSV).</p>"
        parts.append(
            "<table border='1' cellpadding='4' cellspacing='0'><tr>"
            + "".join(f"<th>{h}</th>" for h in head)
            + f"</tr>{body}</table>{more}"
        )
    parts.append(
        f"<p>Audit records: <code>{html.escape(audit_location(config, summary))}</code><br>"
        f"Run summary: <code>s3://{html.escape(config.storage.bucket)}/"
        f"{html.escape(summary.get('summary_key') or '(not written)')}</code></p>"
        "<p>Every removed image was archived first; <code>registry-ops restore --digest sha256:... "
        "--registry R --repository P</code> puts one back.</p>"
    )
    return "\n".join(parts)


def results_csv(results: list[dict[str, Any]]) -> bytes:
    """Every repository of the run, one row each (the email's table is capped; this is not)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for r in sorted(results, key=lambda r: (r["registry"], r["repository"])):
        writer.writerow({c: r.get(c) if r.get(c) is not None else "" for c in CSV_COLUMNS})
    return out.getvalue().encode()


def message(config: Config, summary: dict[str, Any], results: list[dict[str, Any]]) -> notifier.Message:
    name = f"retention-{audit.safe_run_id(summary['run_id'])}.csv"
    return notifier.Message(
        subject=subject(summary),
        text=text_body(config, summary, results),
        html=html_body(config, summary, results),
        attachments=(notifier.Attachment(name, results_csv(results), "text/csv"),),
    )


def send_summary(
    config: Config, summary: dict[str, Any], results: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """Email (and Slack) the run's summary when :func:`worth_sending`; None when not. Never
    raises: a failure is logged and returned as ``{"error": ...}``."""
    if not worth_sending(summary):
        return None
    try:
        return notifier.notify(message(config, summary, results), config)
    except Exception as exc:  # the run is done and recorded: nothing here may fail it
        log.error("retention: run %s: summary not sent: %s", summary["run_id"], exc)
        return {"error": str(exc)}
