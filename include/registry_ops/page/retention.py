"""Retention: every run of the last year (dry or executed; images, bytes and USD/month removed
or that would be; caps hit; failed repositories), the images deleted with why and where they
were archived, each with the ``registry_restore`` Params that bring it back, and a chart of
bytes removed per run.

Sources (``retention/audit.py``, ``retention/jobs.py``): ``<runs_prefix><run id>/summary.json``
per run (totals and one result per repository, each naming its audit object) and the audit
records ``<audit_prefix>dt=.../run=<id>/<registry>/<repository>.jsonl``. Runs are found by
listing the folders under ``runs_prefix`` (one request per 1,000 runs) and their summaries read
by a pool of GETs; a summary is read once per process (only ``summary.json`` of the run
``latest.json`` names can change: a rerun rewrites it and then the pointer), so a new run costs
one more GET. The section carries the newest :data:`PREVIEW` deletions (the audit objects of the
newest runs only); :func:`search_deleted` serves the rest.

Cold, the year comes from the history of runs each publish writes (``retention/history.py``:
one LIST and two GETs), when it names the summary the pointer names and knows every run folder;
otherwise from the summaries and audit objects as above, which is what it caches.

A summary or audit object that cannot be read is named in the section's notes (a run row with
status ``error``); the other runs still show.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..retention import audit, history
from ..retention.restore_request import MODE_RESTORE
from ..store import objects
from ..store.runs import ManifestError, RunLayout
from . import _read
from .context import PageContext
from .model import Chart, Column, Figure, Section, Series, Table, never_run

ID, TITLE, DAG = "retention", "Retention", "registry_retention"
PREVIEW = 200
SUMMARY_BUDGET = 0.6  # seconds a request spends reading run summaries; the rest load behind it
PREVIEW_BUDGET = 0.4
SEARCH_BUDGET = 0.8
WINDOW = timedelta(days=365)
RUN_COLUMNS = [
    Column("run_id", "Run"),
    Column("at", "Time", "time"),
    Column("mode", "Mode", "status"),
    Column("status", "Status", "status"),
    Column("images_removed", "Images removed", "count"),
    Column("bytes_removed", "Bytes removed", "bytes"),
    Column("usd_month_saved", "USD / month saved", "usd"),
    Column("would_remove_images", "Would remove", "count"),
    Column("would_remove_bytes", "Would remove (bytes)", "bytes"),
    Column("would_save_usd_month", "Would save USD / month", "usd"),
    Column("caps_hit", "Caps hit", "list"),
    Column("failed", "Failed repositories", "list"),
]
DELETED_COLUMNS = [
    Column("at", "Deleted", "time"),
    Column("digest", "Digest", "digest"),
    Column("tags", "Tags", "list"),
    Column("registry", "Registry"),
    Column("repository", "Repository"),
    Column("rule", "Rule"),
    Column("reason", "Reason"),
    Column("size_bytes", "Size", "bytes"),
    Column("archive_key", "Archive key"),
    Column("run_id", "Run"),
    Column("restore", "Restore", "restore"),
]


@dataclass
class Run:
    """One run's row, and the audit objects holding its deletions (newest run first)."""

    key: str
    row: dict[str, Any]
    at: datetime | None
    audits: dict[str, int] = field(default_factory=dict)  # audit key -> images it removed
    error: str | None = None


def _layout(ctx: PageContext) -> RunLayout:
    return audit.run_layout(ctx.bucket, ctx.config.retention.runs_prefix)


def load(ctx: PageContext) -> Section:
    layout = _layout(ctx)
    found = _read.read_pointer(ctx.s3, layout)
    if found is None:
        return never_run(ID, TITLE, DAG, "retention run summary")
    year = _year(ctx, layout, found)
    runs, pending = (year.runs, 0) if year else _runs(ctx, layout, found)
    recent = [r for r in runs if r.at is None or r.at >= ctx.now - WINDOW]
    if year:
        deleted, problems = _public(_year_rows(year, recent)[:PREVIEW]), list(year.problems)
    else:
        deleted, problems, _ = _deleted(ctx, recent, PREVIEW, PREVIEW_BUDGET)
        _audits(ctx).get([k for r in recent for k in r.audits], 0.0)  # the search's objects, read behind
    total = sum(int(r.row.get("images_removed") or 0) for r in recent)
    notes = [r.error for r in recent if r.error] + problems
    if pending:
        notes.append(
            f"{pending} older run summaries are still being read (a year of runs is one GET each): "
            "refresh in a few seconds for the whole year"
        )
    if total > len(deleted):
        notes.append(
            f"The newest {len(deleted)} of {total} deletions of the last year are shown; search them all."
        )
    executed = [r for r in recent if r.row["mode"] == "executed"]
    last = recent[0] if recent else None
    figures = [
        Figure("Runs (last year)", len(recent), "count"),
        Figure("Last run", last.at if last else None, "time"),
        Figure("Last run mode", last.row["mode"] if last else None, "status"),
        Figure("Images removed (year)", total, "count"),
        Figure("Bytes removed (year)", sum(int(r.row["bytes_removed"] or 0) for r in executed), "bytes"),
        Figure(
            "USD / month saved (year)",
            round(sum(float(r.row["usd_month_saved"] or 0) for r in executed), 2),
            "usd",
        ),
        Figure(
            "Last run failed repositories",
            last.row["failed"] if last else [],
            "list",
            alert=bool(last and (last.row["failed"] or last.error)),
        ),
    ]
    return Section(
        ID,
        TITLE,
        as_of=last.at.isoformat() if last and last.at else None,
        source=layout.url(found[0].get("manifest") or layout.latest_key),
        figures=figures,
        tables=[
            Table("runs", "Runs", RUN_COLUMNS, [r.row for r in recent]),
            Table("deleted", "Deleted images", DELETED_COLUMNS, deleted, total=max(total, len(deleted))),
        ],
        charts=[_chart(recent)],
        notes=notes,
    )


def search_deleted(ctx: PageContext, query: str, limit: int = PREVIEW, offset: int = 0) -> Table:
    """The deletions of the last year whose digest, tag, repository, rule (policy, reason) or run
    contains ``query`` (case-insensitive), newest first: ``rows[offset:offset+limit]`` and the
    number of matches as ``total``. Every audit object of the year is read once per process (in
    the background after the first request's budget; ``note`` says when some are still out)."""
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must be >= 0 (got limit={limit}, offset={offset})")
    layout = _layout(ctx)
    found = _read.read_pointer(ctx.s3, layout)
    if found is None:
        return Table("deleted", "Deleted images", DELETED_COLUMNS, [], total=0, note=f"{DAG} has not run yet")
    year = _year(ctx, layout, found)
    runs, pending = (year.runs, 0) if year else _runs(ctx, layout, found)
    recent = [r for r in runs if r.at is None or r.at >= ctx.now - WINDOW]
    loader = _audits(ctx)
    whole = ("page.retention.deleted", layout.latest_key, found[1], ctx.now.date())
    if year:
        rows, problems, unread = _year_rows(year, recent), list(year.problems), 0
    elif pending == 0 and loader.complete is not None and loader.complete[0] == whole:
        rows, problems, unread = loader.complete[1], list(loader.complete[2]), 0
    else:
        rows, problems, unread = _deleted(ctx, recent, None, SEARCH_BUDGET, wait=True)
        if pending == 0 and unread == 0:  # every deletion of the year read: kept until a new run
            loader.complete = (whole, rows, tuple(problems))
    needle = query.strip().lower()
    hits = [r for r in rows if needle in r["_text"]] if needle else rows
    if pending or unread:
        problems.append(
            f"{pending} run summaries and {unread} audit objects are still being read: search again shortly"
        )
    return Table(
        "deleted",
        "Deleted images",
        DELETED_COLUMNS,
        _public(hits[offset : offset + limit]),
        total=len(hits),
        note="; ".join(problems) or None,
    )


def loading(ctx: PageContext) -> bool:
    """Whether summaries or audit objects are still being read in the background."""
    return _summaries(ctx).busy() or _audits(ctx).busy()


# -- runs ------------------------------------------------------------------------------------------
_RUN_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2})[:_](\d{2})[:_](\d{2})")


def _summaries(ctx: PageContext) -> _read.Loader:
    layout = _layout(ctx)
    return ctx.memo.get(
        ("page.retention.summaries", ctx.bucket, layout.root),
        lambda: _read.Loader(ctx.s3, ctx.bucket, lambda key, body: _run(layout, key, body)),
    )


def _audits(ctx: PageContext) -> _read.Loader:
    return ctx.memo.get(
        ("page.retention.audits", ctx.bucket, ctx.config.retention.audit_prefix),
        lambda: _read.Loader(ctx.s3, ctx.bucket, _audit_rows),
    )


def _newest_first(folder: str) -> tuple[int, str]:
    """Order to read run folders in: ids without a time first (a CLI's ``plan-<hash>``: could be
    any age), then Airflow's ``scheduled__2026-11-27T03:00:00+00:00``-style ids, newest first."""
    m = _RUN_DATE.search(folder)
    return (1, "".join(m.groups())) if m else (2, folder)


def _runs(ctx: PageContext, layout: RunLayout, found: tuple[dict[str, Any], Any]) -> tuple[list[Run], int]:
    """Published runs, newest first, and how many summaries are still being read. Once all are
    read, the list is kept for this pointer version (a warm request reads only the pointer)."""
    pointer, version = found
    done_key = ("page.retention.runs", layout.latest_key, version)
    loader = _summaries(ctx)
    complete = loader.complete
    if complete is not None and complete[0] == done_key:
        return complete[1], 0
    named = pointer.get("manifest")
    if isinstance(named, str) and loader.version != version:
        loader.forget(named)  # the one summary a new pointer version can have rewritten
        loader.version = version
    folders = sorted(
        layout.run_folders(ctx.s3),
        key=_newest_first,
        reverse=True,
    )
    keys = [layout.manifest_key(f) for f in folders]
    if isinstance(named, str) and named in keys:
        keys.remove(named)
        keys.insert(0, named)
    got, pending = loader.get(keys, SUMMARY_BUDGET)
    runs = _newest_runs_first(r for r in got.values() if r is not None)
    if not pending:
        loader.complete = (done_key, runs)
    return runs, pending


def _run(layout: RunLayout, key: str, body: bytes) -> Run:
    """One summary as a run row; an unreadable one as a row with status ``error`` naming it."""
    try:
        doc = layout.check(_read.json_of(layout.bucket, key, body), key)
    except (ManifestError, _read.ArtefactError) as exc:
        return _broken(key, _run_id(layout, key), str(exc))
    return _run_of(layout, key, doc, audit.removed_by_audit(doc.get("results") or []))


def _run_id(layout: RunLayout, key: str) -> str:
    return key[len(layout.root) : -len("/" + layout.manifest_name)]


def _run_of(layout: RunLayout, key: str, doc: dict[str, Any], audits: dict[str, int]) -> Run:
    """A summary (from its object, or the history's copy) as a run row."""
    run_id = _run_id(layout, key)
    try:
        at = datetime.fromisoformat(str(doc["now"]))
        at = at if at.tzinfo else at.replace(tzinfo=UTC)  # compared with the request's time
        dry = bool(doc["dry_run"])
        row = {
            "run_id": str(doc.get("run_id", run_id)),
            "at": at,
            "mode": "dry run" if dry else "executed",
            "status": _status(doc),
            "images_removed": int(doc["images_removed"]),
            "bytes_removed": int(doc["bytes_removed"]),
            "usd_month_saved": float(doc["monthly_cost_saved_usd"]),
            "would_remove_images": int(doc["would_remove_images"]),
            "would_remove_bytes": int(doc["would_remove_bytes"]),
            "would_save_usd_month": float(doc["would_save_usd_month"]),
            "caps_hit": [str(x) for x in doc.get("repositories_stopped") or []],
            "failed": [str(x) for x in doc.get("repositories_failed") or []],
        }
    except (KeyError, TypeError, ValueError) as exc:
        return _broken(
            key, run_id, f"{layout.url(key)}: not a retention summary ({type(exc).__name__}: {exc})"
        )
    return Run(key, row, at, audits)


def _status(doc: dict[str, Any]) -> str:
    if doc.get("repositories_failed"):
        return "failed"
    if doc.get("repositories_stopped"):
        return "stopped"
    return "ok"


def _broken(key: str, run_id: str, problem: str) -> Run:
    row = dict.fromkeys((c.key for c in RUN_COLUMNS), None)
    row.update(run_id=run_id, status="error", mode=None, caps_hit=[], failed=[])
    return Run(key, row, None, error=problem)


# -- the year at once (``retention/history.py``) ------------------------------------------------------
@dataclass
class _Year:
    runs: list[Run]
    rows: list[dict[str, Any]]  # every deletion the history holds, newest first
    problems: list[str]
    by_runs: dict[tuple[str, ...], list[dict[str, Any]]] = field(default_factory=dict)


def _year(ctx: PageContext, layout: RunLayout, found: tuple[dict[str, Any], Any]) -> _Year | None:
    """The runs and deletions from the history the last publish wrote (one LIST and two GETs),
    kept for this pointer version; None when there is none or it is not current (then the
    summaries and audit objects are read one by one, as before)."""

    def build() -> _Year | None:
        hist = history.current(ctx.s3, layout, found[0])
        if hist is None:
            return None
        runs = _newest_runs_first(
            _broken(e["key"], _run_id(layout, e["key"]), e["error"])
            if "error" in e
            else _run_of(layout, e["key"], e["summary"], e["audits"])
            for e in hist.runs
        )
        return _Year(runs, _newest_rows_first(_rows_of(hist.deleted.to_pylist())), list(hist.problems))

    return ctx.memo.get(("page.retention.year", ctx.bucket, layout.latest_key, found[1]), build)


def _year_rows(year: _Year, runs: list[Run]) -> list[dict[str, Any]]:
    """The year's deletions made by ``runs`` (the runs within the window at this request), kept
    per set of runs: the window moves once a day, a warm request must not filter the year again."""
    key = tuple(r.key for r in runs)
    found = year.by_runs.get(key)
    if found is None:
        wanted = set(key)
        found = year.by_runs[key] = [r for r in year.rows if r["_run"] in wanted]
    return found


# -- deletions -------------------------------------------------------------------------------------
def _deleted(
    ctx: PageContext, runs: list[Run], limit: int | None, budget: float, wait: bool = False
) -> tuple[list[dict[str, Any]], list[str], int]:
    """Deleted images of ``runs`` (newest first) from their audit objects: those of the newest
    runs until ``limit`` rows are found, or all (``None``); the problems met; how many objects
    are still being read."""
    keys = [k for r in runs for k in r.audits]
    if limit is not None:  # the newest runs' objects only: about limit / deletions per object
        rows_so_far, cut = 0, 0
        counts = {k: n for r in runs for k, n in r.audits.items()}
        while cut < len(keys) and rows_so_far < limit:
            rows_so_far += counts[keys[cut]]
            cut += 1
        keys = keys[:cut]
    got, unread = _audits(ctx).get(keys, budget, wait)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for key in keys:
        if key not in got:
            continue
        value = got[key]
        if value is None:
            problems.append(f"{objects.url(ctx.bucket, key)}: audit object named by a summary is missing")
        elif isinstance(value, str):
            problems.append(f"{objects.url(ctx.bucket, key)}: {value}")
        else:
            rows.extend(value)
    rows = _newest_rows_first(rows)
    if limit is not None:
        rows = _public(rows[:limit])
    return rows, problems, unread


def _newest_runs_first(runs: Iterable[Run]) -> list[Run]:
    """Runs newest first, those without a time (unreadable summaries) last."""
    return sorted(runs, key=lambda r: (r.at is not None, r.at or datetime.min), reverse=True)


def _newest_rows_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["at"] or "", r["digest"]), reverse=True)


def _public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the fields only the page uses (``_text`` searched, ``_run`` the run's key)."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def _audit_rows(key: str, body: bytes) -> list[dict[str, Any]] | str:
    """An audit object's deletions as rows, or the problem reading it (a string)."""
    try:
        return _deleted_rows(body)
    except (ValueError, KeyError, TypeError) as exc:
        return f"not JSON-lines audit records ({exc})"


def _deleted_rows(body: bytes) -> list[dict[str, Any]]:
    return _rows_of(audit.parse_audit(body))


def _rows_of(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Audit records (from an audit object, or the history's table) as deleted-image rows:
    those that removed an image; ``_run`` keeps the history's run key, when there is one."""
    out = []
    for rec in records:
        if rec.get("result") not in audit.REMOVED:
            continue
        rule = rec.get("policy") or ""
        if rec.get("rule") is not None:
            rule = f"{rule} rule {rec['rule']}".strip()
        row = {
            "at": rec.get("at"),
            "digest": rec["digest"],
            "tags": list(rec.get("tags") or []),
            "registry": rec["registry"],
            "repository": rec["repository"],
            "rule": rule or None,
            "reason": rec.get("reason"),
            "size_bytes": rec.get("size_bytes"),
            "archive_key": rec.get("archive_key"),
            "run_id": rec.get("run_id"),
            "restore": {
                "mode": MODE_RESTORE,
                "digest": rec["digest"],
                "registry": rec["registry"],
                "repository": rec["repository"],
            },
        }
        parts = [row["digest"], row["repository"], row["rule"], row["reason"], row["run_id"], *row["tags"]]
        row["_text"] = "\n".join(str(p) for p in parts if p).lower()
        row["_run"] = rec.get("run_key")
        out.append(row)
    return out


def _chart(runs: list[Run]) -> Chart:
    ordered = sorted((r for r in runs if r.at is not None), key=lambda r: r.at)
    executed = [r.row["mode"] == "executed" for r in ordered]
    return Chart(
        "bytes_removed",
        "Bytes removed per run (executed) and that would be (dry runs)",
        [r.at.isoformat() for r in ordered],
        [
            Series(
                "removed",
                [r.row["bytes_removed"] if e else None for r, e in zip(ordered, executed, strict=True)],
            ),
            Series(
                "would remove",
                [r.row["would_remove_bytes"] for r in ordered],
            ),
        ],
        kind="bytes",
    )
