"""The steps of ``registry_reports`` (and ``registry-ops report send``, which chains them).

Each step takes the config and returns small JSON; the report itself travels through S3::

    <reports>usage/<period>/dt=YYYY-MM-DD/HHMMSSZ/
        report.json                  window, headline, problems, notes (``Report`` minus tables)
        tables/<table>.parquet       every table of ``tables.TABLES`` the report has
        validation/results.json      every suite's Great Expectations result
        validation/docs/...          GX's data docs (HTML)
        email/report.html, email/<chart>.png, email/<table>.csv, email/sent.json
        manifest.json                written last by ``publish``
    <reports>usage/<period>/latest.json   the last published report (the next one's baseline)

    ingest    new event files -> the day-partitioned events dataset (``ingest``)
    build     the window's tables from the newest inventory snapshot, the events, earlier
              snapshots, retention runs and the archive's listing; writes report.json + tables
    validate  the GX suites; on failure ops get an alert naming each failed expectation and the
              step raises ``ReportInvalid``: stakeholders get nothing
    send      render, store the HTML, charts and CSVs, email the stakeholders (once: a marker
              ``email/sent.json`` makes a retry after a sent email a no-op)
    publish   manifest.json, then latest.json

Why a baseline per period: the subject's change compares like with like (this week with last
week, this month with last month); a manual run compares with the last weekly report and never
becomes a baseline.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa

from .. import snapshots
from ..config import Config
from ..notify import send_email
from ..store import objects
from ..store.clients import s3_client
from ..store.runs import RunLayout
from . import cost, ingest, pulls, s3_cost, savings, tables, trend
from .model import Period, Problem, Report

log = logging.getLogger(__name__)

KIND = "usage-report"
SCHEMA_VERSION = 1
WINDOW_HELP = "'auto' (weekly, or monthly on the 1st at 07:30), 'week', 'month', or 'YYYY-MM-DD..YYYY-MM-DD'"


class ReportInvalid(RuntimeError):
    """A Great Expectations suite failed: the report was not sent (the message names each failure)."""


class ReportNotSent(RuntimeError):
    """The report could not be emailed (no stakeholder recipients, or SMTP failed)."""


# -- the window -------------------------------------------------------------------------------------
def window(spec: str, run_after: datetime, window_days: int = 7) -> tuple[Period, date, date]:
    """(period, first day, day after the last) of the report.

    ``auto``: a scheduled run on the 1st of a month at or after 07:30 UTC reports the previous
    month; any other reports the ``window_days`` full UTC days before the run's day. ``week`` and
    ``month`` force one of them; ``YYYY-MM-DD..YYYY-MM-DD`` (both days included) is a manual window."""
    now = run_after.astimezone(UTC)
    today = now.date()
    spec = (spec or "auto").strip()
    if spec == "auto":
        spec = "month" if today.day == 1 and (now.hour, now.minute) >= (7, 30) else "week"
    if spec == "week":
        return "weekly", today - timedelta(days=window_days), today
    if spec == "month":
        end = today.replace(day=1)
        return "monthly", (end - timedelta(days=1)).replace(day=1), end
    first, sep, last = spec.partition("..")
    try:
        start, stop = date.fromisoformat(first), date.fromisoformat(last)
    except ValueError:
        raise ValueError(f"report window {spec!r}: expected {WINDOW_HELP}") from None
    if not sep or stop < start:
        raise ValueError(f"report window {spec!r}: the last day is before the first (expected {WINDOW_HELP})")
    if (stop - start).days > 366:
        raise ValueError(f"report window {spec!r}: longer than 366 days")
    return "manual", start, stop + timedelta(days=1)


# -- where reports live -----------------------------------------------------------------------------
def layout(config: Config, period: Period) -> RunLayout:
    root = f"{config.storage.prefixes.reports}usage/{period}/"
    return RunLayout(config.storage.bucket, root, KIND, SCHEMA_VERSION)


def baseline(config: Config, s3: Any, period: Period) -> dict[str, Any] | None:
    """The last published report of the same period (manual runs: the last weekly one)."""
    found = layout(config, "weekly" if period == "manual" else period).latest(s3)
    return None if found is None else found[0]


def _put_frame(s3: Any, bucket: str, key: str, frame: pd.DataFrame) -> None:
    objects.put_table(s3, bucket, key, pa.Table.from_pandas(frame, preserve_index=False))


def _get_frame(s3: Any, bucket: str, key: str) -> pd.DataFrame:
    return objects.get_table(s3, bucket, key).to_pandas()


def store_report(s3: Any, bucket: str, prefix: str, report: Report) -> dict[str, str]:
    """Write ``report`` under ``prefix``; returns role -> key of what was written."""
    keys = {}
    for name, frame in report.tables.items():
        key = f"{prefix}tables/{name}.parquet"
        _put_frame(s3, bucket, key, frame)
        keys[name] = key
    doc = {
        "period": report.period,
        "start": report.start.isoformat(),
        "end": report.end.isoformat(),
        "generated_at": report.generated_at.isoformat(),
        "price_per_gb_month": report.price_per_gb_month,
        "headline": report.headline,
        "problems": [p.as_dict() for p in report.problems],
        "notes": report.notes,
        "snapshot_at": report.snapshot_at.isoformat() if report.snapshot_at else None,
        "tables": keys,
    }
    objects.put_json(s3, bucket, f"{prefix}report.json", doc)
    return {"report": f"{prefix}report.json", **keys}


def load_report(s3: Any, bucket: str, prefix: str) -> Report:
    """The report ``store_report`` wrote under ``prefix``."""
    doc = objects.get_json(s3, bucket, f"{prefix}report.json")
    snapshot_at = doc.get("snapshot_at")
    return Report(
        period=doc["period"],
        start=date.fromisoformat(doc["start"]),
        end=date.fromisoformat(doc["end"]),
        generated_at=datetime.fromisoformat(doc["generated_at"]),
        price_per_gb_month=float(doc["price_per_gb_month"]),
        tables={name: _restore(name, _get_frame(s3, bucket, key)) for name, key in doc["tables"].items()},
        headline=doc["headline"],
        problems=[Problem(**p) for p in doc["problems"]],
        notes=list(doc["notes"]),
        snapshot_at=datetime.fromisoformat(snapshot_at) if snapshot_at else None,
    )


def _restore(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet round trip: ``day`` back to ``datetime.date`` values, lists back to lists."""
    if "day" in frame.columns and len(frame):
        frame["day"] = pd.to_datetime(frame["day"]).dt.date
    if "tags" in frame.columns:
        frame["tags"] = frame["tags"].map(lambda v: [] if v is None else list(v))
    return tables.conform(frame, name)


# -- steps ------------------------------------------------------------------------------------------
def ingest_step(config: Config, now: datetime) -> dict[str, Any]:
    """Read the event files that arrived since the last run into the events dataset."""
    s3 = s3_client(config)
    objects.require_bucket(s3, config.storage.bucket, config.source)
    return ingest.ingest(config, s3, now=now)


def build(config: Config, s3: Any, period: Period, start: date, end: date, now: datetime) -> Report:
    """Every table of the report for the window, and its headline."""
    settings = config.reports
    price = settings.price_per_gb_month
    snapshot = snapshots.load(config, s3, [])  # latest.json's, validated; its location has the time
    inventory = snapshot.frame
    report = Report(period, start, end, now.astimezone(UTC), price, snapshot_at=snapshot.location.snapshot_at)

    costs = cost.cost_tables(inventory, settings, price)
    # never_pulled looks back N days, often further than the window: read from there (the pull
    # tables keep to the window; metrics filters them)
    since = min(start, now.date() - timedelta(days=settings.never_pulled_days))
    events = ingest.read_events(config, s3, since, max(end, now.date() + timedelta(days=1)))
    # problems are filed by the day the file was delivered: those delivered after the window
    # (up to this run) are named too, or a bad file arriving on report day would never be shown
    report.problems = ingest.read_problems(config, s3, start, max(end, now.date() + timedelta(days=1)))
    pull_tables = pulls.metrics(
        events,
        inventory,
        start=start,
        end=end,
        success_target=settings.success_target,
        never_pulled_days=settings.never_pulled_days,
        now=now,
        exclude_principals=config.retention.pulls.exclude_principals,  # scanners' pulls keep nothing alive
    )
    week_ago, month_ago = now - timedelta(days=7), now - timedelta(days=30)
    points = trend.weekly(now, 8)
    # one pass over the snapshots for the trend and the comparisons (each snapshot read once)
    earlier = trend.read_snapshots(config, s3, now=now, at=[*points, week_ago, month_ago])
    before = {
        at: None if earlier[at] is None else cost.cost_tables(earlier[at], settings, price)["cost"]
        for at in (week_ago, month_ago)
    }
    changes = trend.changes(costs["cost"], before[week_ago], before[month_ago])
    baseline_cost = before[month_ago] if period == "monthly" else before[week_ago]
    report.tables = {
        **costs,
        **pull_tables,
        "trend": trend.trend_of({at: earlier[at] for at in points}, price),
        "growers": trend.growers(baseline_cost, costs["cost"], settings.top),
        "savings": savings.savings(config, s3, start=start, end=end, price_per_gb_month=price),
        "s3_storage": s3_cost.s3_storage(config, s3, settings.s3_prices),
    }
    report.headline = headline(config, report, changes, baseline(config, s3, period))
    return report  # an empty window is said by render (empty_window_sentence), not as a note


def headline(
    config: Config, report: Report, changes: dict[str, Any], previous: dict[str, Any] | None
) -> dict[str, Any]:
    t = report.tables
    total = cost.total_usd_month(t)
    stored = int(t["cost"]["size_bytes"].sum()) if len(t["cost"]) else 0
    success = t["pull_success"]
    pulls_total = int(success["pulls"].sum()) if len(success) else 0
    failed = int(success["failed"].sum()) if len(success) else 0
    saved = t["savings"]
    prev = (previous or {}).get("headline") or {}
    prev_usd = prev.get("total_usd_month")
    return {
        "total_usd_month": round(total, 4),
        "previous_usd_month": prev_usd,
        "usd_month_change": (total - prev_usd) / prev_usd if prev_usd else None,
        "stored_bytes": stored,
        "previous_stored_bytes": prev.get("stored_bytes"),
        "total_pulls": pulls_total,
        "failed_pulls": failed,
        "pull_success_rate": (pulls_total - failed) / pulls_total if pulls_total else None,
        "success_target": config.reports.success_target,
        "never_pulled_days": config.reports.never_pulled_days,
        "images": len(t["cost"]),
        "repositories": len(t["cost_by_repository"]),
        "savings_made_usd_month": round(float(saved.loc[saved["kind"] == "made", "usd_month"].sum()), 4),
        "savings_projected_usd_month": round(
            float(saved.loc[saved["kind"] == "projected", "usd_month"].sum()), 4
        ),
        "s3_usd_month": round(float(t["s3_storage"]["usd_month"].sum()), 4) if len(t["s3_storage"]) else 0.0,
        "week_over_week": changes.get("week_over_week"),
        "month_over_month": changes.get("month_over_month"),
    }


def build_step(config: Config, spec: str, run_after: datetime, now: datetime | None = None) -> dict[str, Any]:
    """Build the report of the window ``spec`` names and store it; small JSON for the next steps."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    period, start, end = window(spec, run_after, config.reports.window_days)
    s3 = s3_client(config)
    objects.require_bucket(s3, config.storage.bucket, config.source)
    report = build(config, s3, period, start, end, now)
    prefix = layout(config, period).run_prefix(run_after.astimezone(UTC))
    keys = store_report(s3, config.storage.bucket, prefix, report)
    log.info(
        "reports: %s report %s built: $%.2f/month, %d pull(s), %d input problem(s) -> %s",
        period,
        report.label,
        report.headline["total_usd_month"],
        report.headline["total_pulls"],
        len(report.problems),
        objects.url(config.storage.bucket, prefix),
    )
    return {
        "period": period,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "label": report.label,
        "prefix": prefix,
        "keys": keys,
        "headline": {k: report.headline[k] for k in ("total_usd_month", "pull_success_rate", "total_pulls")},
        "problems": len(report.problems),
    }


def validate_step(config: Config, built: dict[str, Any]) -> dict[str, Any]:
    """Run the suites, store their results beside the report; on failure alert ops and raise."""
    from . import quality, render

    s3 = s3_client(config)
    bucket, prefix = config.storage.bucket, built["prefix"]
    report = load_report(s3, bucket, prefix)
    explained = savings.explained_drop_bytes(report.tables["savings"])
    result = quality.validate(
        report,
        previous_stored_bytes=report.headline.get("previous_stored_bytes"),
        explained_drop_bytes=explained,
        max_change=config.reports.max_bytes_change,
    )
    objects.put_json(s3, bucket, f"{prefix}validation/results.json", result.results)
    for path, data in result.data_docs.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}validation/docs/{path}", Body=data)
    summary = {"success": result.success, "failures": result.failures, "prefix": prefix}
    objects.put_json(s3, bucket, f"{prefix}validation/summary.json", summary)
    if result.success:
        log.info("reports: %s: every expectation met", built["label"])
        return {"success": True, "failures": 0, "results": f"{prefix}validation/results.json"}
    text = quality.alert_text(result, report)
    alert = render.quality_alert(report, text, ops_recipients(config), result.failures)
    sent = send_email(alert, config.notifications.smtp_conn_id)
    log.error(
        "reports: %s NOT sent to stakeholders; ops alerted (%s):\n%s", built["label"], sent.message_id, text
    )
    raise ReportInvalid(
        f"report {built['label']} not sent: {len(result.failures)} expectation(s) failed: "
        + "; ".join(f"{f['table']}: {f['expectation']}" for f in result.failures)
    )


def ops_recipients(config: Config) -> tuple[str, ...]:
    n = config.notifications
    return tuple(n.ops_recipients or n.recipients)


def stakeholder_recipients(config: Config) -> tuple[str, ...]:
    n = config.notifications
    return tuple(n.stakeholder_recipients or n.recipients)


def send_step(config: Config, built: dict[str, Any], validated: dict[str, Any]) -> dict[str, Any]:
    """Render, store the email's parts, send it to the stakeholders once."""
    from . import render

    if not validated.get("success"):
        raise ReportInvalid(f"report {built['label']} was not validated: not sent")
    s3 = s3_client(config)
    bucket, prefix = config.storage.bucket, built["prefix"]
    marker = f"{prefix}email/sent.json"
    already = objects.get_json_or_none(s3, bucket, marker)
    if already is not None:
        log.info("reports: %s already sent (%s): not sent again", built["label"], already["message_id"])
        return already
    report = load_report(s3, bucket, prefix)
    quality = objects.get_json(s3, bucket, f"{prefix}validation/summary.json")
    limit = int(config.reports.max_attachments_mb * 2**20)
    rendered = render.render(report, quality, top=config.reports.top, max_attachment_bytes=limit)
    s3.put_object(
        Bucket=bucket, Key=f"{prefix}email/report.html", Body=rendered.html.encode(), ContentType="text/html"
    )
    for name, png in rendered.charts.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}email/{name}.png", Body=png, ContentType="image/png")
    for name, data in rendered.csvs.items():  # every CSV in full, attached or not
        s3.put_object(Bucket=bucket, Key=f"{prefix}email/{name}", Body=data, ContentType="text/csv")
    recipients = stakeholder_recipients(config)
    if not recipients:
        raise ReportNotSent(
            f"{config.source}: notifications.stakeholder_recipients and notifications.recipients are empty"
        )
    message = dataclasses.replace(rendered.message(recipients), sender=config.notifications.sender)
    sent = send_email(message, config.notifications.smtp_conn_id)
    out = {**sent.as_dict(), "subject": rendered.subject, "html": f"{prefix}email/report.html"}
    objects.put_json(s3, bucket, marker, out)
    return out


def publish_step(config: Config, built: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """The run's manifest, then the period's latest.json (manual runs are never a baseline)."""
    s3 = s3_client(config)
    period = built["period"]
    report = objects.get_json(s3, config.storage.bucket, built["keys"]["report"])
    manifest = {
        "label": built["label"],
        "start": built["start"],
        "end": built["end"],
        "objects": built["keys"],
        "email": sent,
    }
    if period == "manual":
        key = layout(config, period).manifest_key(built["prefix"])
        objects.put_json(
            s3, config.storage.bucket, key, {**manifest, "kind": KIND, "schema_version": SCHEMA_VERSION}
        )
        return {"manifest": key, "latest": False}
    layout(config, period).publish(
        s3,
        built["prefix"],
        manifest,
        named={"report": built["keys"]["report"]},
        extra={"headline": report["headline"], "label": built["label"], "prefix": built["prefix"]},
    )
    return {"manifest": layout(config, period).manifest_key(built["prefix"]), "latest": True}


def run(config: Config, spec: str, run_after: datetime, *, send: bool = True) -> dict[str, Any]:
    """Every step in one process (``registry-ops report send``)."""
    ingested = ingest_step(config, run_after)
    built = build_step(config, spec, run_after)
    out: dict[str, Any] = {"ingest": ingested, "report": built}
    try:
        out["validation"] = validate_step(config, built)
    except ReportInvalid as exc:
        out["validation"] = {"success": False, "error": str(exc)}
        return out
    if send:
        out["email"] = send_step(config, built, out["validation"])
        out["published"] = publish_step(config, built, out["email"])
    return out
