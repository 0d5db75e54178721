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

A summary or audit object that cannot be read is named in the section's notes (a run row with
status ``error``); the other runs still show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..retention import audit
from ..retention.restore_request import MODE_RESTORE
from ..store import objects
from ..store.runs import ManifestError, RunLayout
from . import _read
from .context import PageContext
from .model import Chart, Column, Figure, Section, Series, Table, never_run

ID, TITLE, DAG = "retention", "Retention", "registry_retention"
PREVIEW = 200
WINDOW = timedelta(days=365)
REMOVED = ("deleted", "already_deleted")
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
    audits: list[str] = field(default_factory=list)
    error: str | None = None


def _layout(ctx: PageContext) -> RunLayout:
    return audit.run_layout(ctx.bucket, ctx.config.retention.runs_prefix)


def load(ctx: PageContext) -> Section:
    layout = _layout(ctx)
    found = _read.read_pointer(ctx.s3, layout)
    if found is None:
        return never_run(ID, TITLE, DAG, "retention run summary")
    runs = _runs(ctx, layout, found)
    recent = [r for r in runs if r.at is None or r.at >= ctx.now - WINDOW]
    deleted, problems = ctx.memo.get(
        ("page.retention.preview", layout.latest_key, found[1], ctx.now.date()),
        lambda: _deleted(ctx, recent, PREVIEW),
    )
    total = sum(int(r.row.get("images_removed") or 0) for r in recent)
    notes = [r.error for r in recent if r.error] + problems
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
    number of matches as ``total``. All audit objects are read once per pointer version and day."""
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must be >= 0 (got limit={limit}, offset={offset})")
    layout = _layout(ctx)
    found = _read.read_pointer(ctx.s3, layout)
    if found is None:
        return Table("deleted", "Deleted images", DELETED_COLUMNS, [], total=0, note=f"{DAG} has not run yet")
    runs = [r for r in _runs(ctx, layout, found) if r.at is None or r.at >= ctx.now - WINDOW]
    rows, problems = ctx.memo.get(
        ("page.retention.deleted", layout.latest_key, found[1], ctx.now.date()),
        lambda: _deleted(ctx, runs, None),
    )
    needle = query.strip().lower()
    hits = [r for r in rows if needle in _haystack(r)] if needle else rows
    return Table(
        "deleted",
        "Deleted images",
        DELETED_COLUMNS,
        hits[offset : offset + limit],
        total=len(hits),
        note="; ".join(problems) or None,
    )


def _haystack(row: dict[str, Any]) -> str:
    parts = [row["digest"], row["repository"], row["rule"], row["reason"], row["run_id"], *row["tags"]]
    return "\n".join(str(p) for p in parts if p).lower()


# -- runs ------------------------------------------------------------------------------------------
def _runs(ctx: PageContext, layout: RunLayout, found: tuple[dict[str, Any], Any]) -> list[Run]:
    """Every published run, newest first (computed once per pointer version)."""
    pointer, version = found
    return ctx.memo.get(
        ("page.retention.runs", layout.latest_key, version), lambda: _read_runs(ctx, layout, pointer)
    )


def _read_runs(ctx: PageContext, layout: RunLayout, pointer: dict[str, Any]) -> list[Run]:
    known: dict[str, Run | None] = ctx.memo.get(("page.retention.summaries", layout.latest_key), dict)
    named = pointer.get("manifest")
    keys = [
        layout.manifest_key(f)
        for f in _read.folders(ctx.s3, ctx.bucket, layout.root)
        if f != layout.root + "_parts/"  # a run's mapped-task objects, not a run
    ]
    todo = [k for k in keys if k not in known or k == named]
    for key, body in _read.get_many(ctx.s3, ctx.bucket, todo).items():
        known[key] = None if body is None else _run(layout, key, body)
    runs = [r for k in keys if (r := known.get(k)) is not None]
    return sorted(runs, key=lambda r: (r.at is not None, r.at or datetime.min), reverse=True)


def _run(layout: RunLayout, key: str, body: bytes) -> Run:
    """One summary as a run row; an unreadable one as a row with status ``error`` naming it."""
    run_id = key[len(layout.root) : -len("/" + layout.manifest_name)]
    try:
        doc = layout.check(_read.json_of(layout.bucket, key, body), key)
        at = datetime.fromisoformat(str(doc["now"]))
        dry = bool(doc["dry_run"])
        results = doc.get("results") or []
        audits = [
            r["audit_key"]
            for r in results
            if isinstance(r, dict) and r.get("audit_key") and any(int(r.get(k) or 0) for k in REMOVED)
        ]
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
    except (ManifestError, _read.ArtefactError) as exc:
        return _broken(key, run_id, str(exc))
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


# -- deletions -------------------------------------------------------------------------------------
def _deleted(ctx: PageContext, runs: list[Run], limit: int | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Deleted images of ``runs`` (newest first), from their audit objects: all of them, or
    those of the newest runs until ``limit`` rows are found. Also the problems met."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    keys = [k for r in runs for k in r.audits]
    step = _read.WORKERS * 2
    for start in range(0, len(keys), step):
        batch = keys[start : start + step]
        for key, body in _read.get_many(ctx.s3, ctx.bucket, batch).items():
            if body is None:
                problems.append(f"{objects.url(ctx.bucket, key)}: audit object named by a summary is missing")
                continue
            try:
                rows.extend(_deleted_rows(body))
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"{objects.url(ctx.bucket, key)}: not JSON-lines audit records ({exc})")
        if limit is not None and len(rows) >= limit:
            break
    rows.sort(key=lambda r: (r["at"] or "", r["digest"]), reverse=True)
    return (rows if limit is None else rows[:limit]), problems


def _deleted_rows(body: bytes) -> list[dict[str, Any]]:
    out = []
    for line in body.decode().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("result") not in REMOVED:
            continue
        rule = rec.get("policy") or ""
        if rec.get("rule") is not None:
            rule = f"{rule} rule {rec['rule']}".strip()
        out.append(
            {
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
        )
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
