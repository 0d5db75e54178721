"""Reports: the last usage report that went out (its period and window, when it was sent and to
how many people), the Great Expectations result it passed, pull success per registry against
``reports.success_target``, the monthly cost and its weekly trend; and a newer report that was
not sent (a failed expectation keeps it from stakeholders), with the expectations that failed.

Reads what ``registry_reports`` wrote (``reports/jobs.py``): per period (weekly, monthly)
``<reports>usage/<period>/latest.json`` names the last published report, whose folder holds
``report.json``, ``tables/*.parquet``, ``validation/results.json`` and ``email/sent.json``. The
runs after it are found by one listing (``StartAfter`` the published folder: usually nothing).
A warm load costs, per period, the pointer's GET and that listing; the report's objects are read
once per pointer version (the memo).
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..reports import jobs
from ..store import objects
from ..store.runs import RunLayout
from ._artefacts import (
    ArtefactError,
    Part,
    Unreachable,
    after_run,
    assemble,
    list_after,
    parse_time,
    read_dict,
    read_json,
    read_pointer,
    read_table,
    run_time,
)
from .context import PageContext
from .model import Chart, Column, Figure, Section, Series, Table, never_run

log = logging.getLogger(__name__)
ID, TITLE, DAG = "reports", "Reports", "registry_reports"
PERIODS = ("weekly", "monthly")
FAILED_SHOWN = 50
SUCCESS_FIELDS = ("registry", "pulls", "failed", "success_rate")
TREND_FIELDS = ("snapshot_at", "registry", "usd_month")
_RUN = re.compile(r"dt=\d{4}-\d{2}-\d{2}/\d{6}Z/")

SUCCESS_COLUMNS = [
    Column("registry", "Registry"),
    Column("pulls", "Pulls", "count"),
    Column("failed", "Failed", "count"),
    Column("success_rate", "Success rate", "percent"),
    Column("target", "Target", "percent"),
    Column("status", "Target met", "status"),
]
RUN_COLUMNS = [
    Column("period", "Period"),
    Column("run_at", "Run", "time"),
    Column("label", "Window"),
    Column("status", "Status", "status"),
    Column("sent_at", "Sent", "time"),
    Column("recipients", "Recipients", "count"),
    Column("usd_month", "USD / month", "usd"),
    Column("pull_success_rate", "Pull success", "percent"),
]
FAILED_COLUMNS = [
    Column("period", "Period"),
    Column("run_at", "Run", "time"),
    Column("table", "Table"),
    Column("expectation", "Expectation"),
    Column("column", "Column(s)"),
    Column("observed", "Observed"),
]


def load(ctx: PageContext) -> Section:
    states = [_state_or_error(ctx, p) for p in PERIODS]
    if all(s.never_run for s in states):
        return never_run(ID, TITLE, DAG, "usage report")
    published = [s.report for s in states if s.report is not None]
    latest = max(published, key=lambda r: r["run_at"], default=None)
    parts = [Part(error=s.error) for s in states if s.error]
    if latest is not None:
        parts.append(_report_part(ctx, latest))
    runs = [_run_row(r) for r in published] + [s.unsent for s in states if s.unsent]
    failed = [row for s in states for row in s.unsent_failures]
    notes = [s.note for s in states if s.note]
    if runs or failed:
        parts.append(_runs_part(runs, failed, notes, none_sent=latest is None))
    return assemble(ID, TITLE, parts, None)


@dataclass
class _State:
    """One period: its last published report (read once per pointer version) and the newest run
    after it that was not sent, if any."""

    report: dict[str, Any] | None = None
    unsent: dict[str, Any] | None = None
    unsent_failures: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None
    error: str | None = None

    @property
    def never_run(self) -> bool:
        return self.report is None and self.unsent is None and self.error is None


def _state_or_error(ctx: PageContext, period: str) -> _State:
    try:
        return _state(ctx, period)
    except Exception as exc:  # one period's broken pointer must not hide the other period
        log.warning("registry page: %s reports failed: %s", period, exc)
        return _State(error=f"{period} reports: {type(exc).__name__}: {exc}")


def _state(ctx: PageContext, period: str) -> _State:
    layout = jobs.layout(ctx.config, period)
    found = read_pointer(ctx.s3, layout)
    state = _State()
    after = None
    if found is not None:
        pointer, version = found
        prefix = pointer.get("prefix")
        if not isinstance(prefix, str) or not prefix.startswith(layout.root):
            raise ArtefactError(f"{layout.url(layout.latest_key)} names no report folder (prefix)")
        state.report = ctx.memo.get(
            ("page.reports", ctx.bucket, layout.latest_key, version),
            lambda: _read_report(ctx, period, pointer, prefix),
        )
        after = after_run(prefix)
    newer = list_after(ctx.s3, ctx.bucket, layout.root + "dt=", after)
    if newer:
        _unsent(ctx, layout, period, newer, state)
    return state


# -- the published report --------------------------------------------------------------------------
def _read_report(ctx: PageContext, period: str, pointer: dict[str, Any], prefix: str) -> dict[str, Any]:
    """What the section shows of one published report; an object that cannot be parsed is an
    error naming it (kept with the rest: the objects of a published run never change)."""
    s3, bucket = ctx.s3, ctx.bucket
    errors: list[str] = []
    report_key = pointer.get("report") or prefix + "report.json"
    doc = read_dict(s3, bucket, report_key)
    tables = doc.get("tables") if isinstance(doc.get("tables"), dict) else {}
    named = f"{objects.url(bucket, report_key)} names no"

    def safe(what: str, read: Any) -> Any:
        try:
            return read()
        except (ArtefactError, KeyError, TypeError, ValueError) as exc:
            errors.append(f"{what}: {exc}")
            return None

    jobs_ = {
        "manifest": lambda: read_dict(s3, bucket, pointer["manifest"]),
        "validation": lambda: read_json(s3, bucket, prefix + "validation/results.json"),
        "sent_at": lambda: _modified(s3, bucket, prefix + "email/sent.json"),
        "pull_success": lambda: _frame(
            s3, bucket, tables.get("pull_success"), SUCCESS_FIELDS, f"{named} pull_success table"
        ),
        "trend": lambda: _frame(s3, bucket, tables.get("trend"), TREND_FIELDS, f"{named} trend table"),
    }
    with ThreadPoolExecutor(len(jobs_), thread_name_prefix="page-reports") as pool:
        futures = {k: pool.submit(safe, k.replace("_", " "), f) for k, f in jobs_.items()}
        got = {k: f.result() for k, f in futures.items()}
    validation = None
    if got["validation"] is not None:
        validation = safe("validation", lambda: _expectations(got["validation"], objects.url(bucket, prefix)))
    email = (got["manifest"] or {}).get("email") or {}
    headline = doc.get("headline") if isinstance(doc.get("headline"), dict) else {}
    return {
        "period": period,
        "run_at": run_time(prefix),
        "label": str(pointer.get("label") or f"{doc.get('start')}..{doc.get('end')}"),
        "generated_at": parse_time(doc.get("generated_at")),
        "sent_at": got["sent_at"],
        "recipients": len(email.get("recipients") or []) if isinstance(email, dict) else None,
        "headline": headline,
        "problems": len(doc.get("problems") or []),
        "validation": validation,
        "pull_success": got["pull_success"],
        "trend": got["trend"],
        "errors": errors,
        "source": objects.url(bucket, report_key),
    }


def _modified(s3: Any, bucket: str, key: str) -> datetime | None:
    """When the object was written (the email's marker: when it was sent); None when absent."""
    try:
        return parse_time(s3.head_object(Bucket=bucket, Key=key)["LastModified"])
    except ClientError as exc:
        if objects.is_missing(exc):
            return None
        raise Unreachable(f"{objects.url(bucket, key)} cannot be read ({exc})") from None
    except BotoCoreError as exc:
        raise Unreachable(f"{objects.url(bucket, key)} cannot be read ({exc})") from None


def _frame(s3: Any, bucket: str, key: Any, columns: tuple[str, ...], absent: str) -> list[dict[str, Any]]:
    """The columns of a report table (ArtefactError naming the object, or the report.json that
    does not name it)."""
    if not isinstance(key, str):
        raise ArtefactError(absent)
    table = read_table(s3, bucket, key)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ArtefactError(f"{objects.url(bucket, key)}: no column(s) {', '.join(missing)}")
    return table.select(list(columns)).to_pylist()


def _expectations(doc: Any, where: str) -> dict[str, Any]:
    """Expectations checked and met, and the failed ones, from GX's per-table results."""
    if not isinstance(doc, dict):
        raise ArtefactError(f"{where}validation/results.json is not a mapping of tables")
    checked = met = 0
    failed = []
    for table, result in sorted(doc.items()):
        for r in (result or {}).get("results") or []:
            checked += 1
            if r.get("success"):
                met += 1
                continue
            failed.append(_failure(table, r.get("expectation_config") or {}, (r.get("result") or {})))
    return {"checked": checked, "met": met, "failed": failed}


def _failure(table: str, config: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    kwargs = config.get("kwargs") or {}
    observed = result.get("observed_value", result.get("unexpected_count"))
    return {
        "table": table,
        "expectation": config.get("type") or config.get("expectation_type"),
        "column": kwargs.get("column") or ", ".join(kwargs.get("column_list") or []) or None,
        "observed": None if observed is None else str(observed)[:200],
    }


def _report_part(ctx: PageContext, r: dict[str, Any]) -> Part:
    h, target = r["headline"], ctx.config.reports.success_target
    rate = h.get("pull_success_rate")
    v = r["validation"]
    week = h.get("week_over_week") if isinstance(h.get("week_over_week"), dict) else {}
    figures = [
        Figure("Last report", f"{r['period']} {r['label']}"),
        Figure("Sent", r["sent_at"], "time"),
        Figure("Recipients", r["recipients"], "count"),
        Figure(
            "Validation",
            "unknown" if v is None else "passed" if not v["failed"] else "failed",
            "status",
            alert=v is None or bool(v["failed"]),
        ),
        Figure("Expectations met", None if v is None else v["met"], "count"),
        Figure("Expectations checked", None if v is None else v["checked"], "count"),
        Figure("Total USD / month", h.get("total_usd_month"), "usd"),
        Figure("Cost change, week over week", week.get("change"), "percent"),
        Figure("Pull success rate", rate, "percent", alert=rate is not None and rate < target),
        Figure("Success target", target, "percent"),
        Figure("Pulls", h.get("total_pulls"), "count"),
        Figure("Failed pulls", h.get("failed_pulls"), "count"),
        Figure("Input problems", r["problems"], "count", alert=r["problems"] > 0),
    ]
    rows = [
        {
            **p,
            "target": target,
            "status": "met" if p["success_rate"] is not None and p["success_rate"] >= target else "below",
        }
        for p in sorted(r["pull_success"] or [], key=lambda p: p["registry"])
    ]
    tables = [Table("pull_success", "Pull success per registry", SUCCESS_COLUMNS, rows)]
    if v and v["failed"]:
        failed = [{"period": r["period"], "run_at": r["run_at"], **f} for f in v["failed"][:FAILED_SHOWN]]
        tables.append(
            Table("report_failed_expectations", "Failed expectations of this report", FAILED_COLUMNS, failed)
        )
    charts = [c for c in [_trend_chart(r["trend"])] if c is not None]
    notes = []
    if r["problems"]:
        notes.append(f"{r['problems']} input file(s) or record(s) could not be read for this report.")
    return Part(
        figures=figures,
        tables=tables,
        charts=charts,
        notes=notes,
        problems=[f"{r['period']} report {r['label']}: {e}" for e in r["errors"]],
        source=r["source"],
        as_of=r["sent_at"] or r["generated_at"],
    )


def _trend_chart(trend: list[dict[str, Any]] | None) -> Chart | None:
    if not trend:
        return None
    days = sorted({parse_time(t["snapshot_at"]).date().isoformat() for t in trend})
    registries = sorted({t["registry"] for t in trend})
    cell: dict[tuple[str, str], float] = {}
    for t in trend:
        day = parse_time(t["snapshot_at"]).date().isoformat()
        cell[(t["registry"], day)] = cell.get((t["registry"], day), 0.0) + float(t["usd_month"] or 0)
    series = [Series(reg, [cell.get((reg, d)) for d in days]) for reg in registries]
    totals = [round(sum(cell.get((reg, d), 0.0) for reg in registries), 4) for d in days]
    return Chart(
        "cost_trend", "Monthly cost by week (USD / month)", days, [*series, Series("total", totals)], "usd"
    )


# -- runs after the published one ------------------------------------------------------------------
def _unsent(
    ctx: PageContext, layout: RunLayout, period: str, listed: list[dict[str, Any]], state: _State
) -> None:
    """The newest run after the published one: why it was not sent (its validation summary)."""
    runs = sorted({m.group(0) for o in listed if (m := _RUN.search(o["Key"]))})
    if not runs:
        return
    prefix = layout.root + runs[-1]
    keys = {o["Key"]: o for o in listed if o["Key"].startswith(prefix)}
    summary_key = prefix + "validation/summary.json"
    when = run_time(prefix)
    failures: list[dict[str, Any]] = []
    if summary_key in keys:
        summary = ctx.memo.get(
            ("page.reports.unsent", ctx.bucket, summary_key, keys[summary_key].get("ETag")),
            lambda: read_dict(ctx.s3, ctx.bucket, summary_key),
        )
        failures = [f for f in summary.get("failures") or [] if isinstance(f, dict)]
        if summary.get("success") is False:
            status = f"validation failed ({len(failures)} expectation(s))"
        elif layout.manifest_key(prefix) in keys:
            status = "published, latest.json not moved"
        else:
            status = "validated, not sent"
    elif prefix + "report.json" in keys:
        status = "built, not validated"
    else:
        status = "started, not built"
    state.unsent = {
        "period": period,
        "run_at": when,
        "label": None,
        "status": status,
        "sent_at": None,
        "recipients": None,
        "usd_month": None,
        "pull_success_rate": None,
    }
    state.unsent_failures = [
        {
            "period": period,
            "run_at": when,
            "table": f.get("table"),
            "expectation": f.get("expectation"),
            "column": (f.get("kwargs") or {}).get("column"),
            "observed": None if f.get("observed") is None else str(f.get("observed"))[:200],
        }
        for f in failures[:FAILED_SHOWN]
    ]
    state.note = (
        f"The {period} report of {when:%Y-%m-%d %H:%M} UTC ({layout.url(prefix)}) did not go out: {status}"
        + (
            " (" + "; ".join(f"{f['table']}: {f['expectation']}" for f in state.unsent_failures[:5]) + ")"
            if state.unsent_failures
            else ""
        )
        + "."
    )


def _run_row(r: dict[str, Any]) -> dict[str, Any]:
    h = r["headline"]
    return {
        "period": r["period"],
        "run_at": r["run_at"],
        "label": r["label"],
        "status": "sent",
        "sent_at": r["sent_at"],
        "recipients": r["recipients"],
        "usd_month": h.get("total_usd_month"),
        "pull_success_rate": h.get("pull_success_rate"),
    }


def _runs_part(
    runs: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str], none_sent: bool
) -> Part:
    tables = [
        Table("reports", "Last reports", RUN_COLUMNS, sorted(runs, key=lambda r: r["run_at"], reverse=True))
    ]
    if failed:
        tables.append(
            Table("failed_expectations", "Expectations that stopped a report", FAILED_COLUMNS, failed)
        )
    problems = [f"{DAG} ran but no report was sent yet."] if none_sent else []
    return Part(tables=tables, notes=notes, problems=problems)
