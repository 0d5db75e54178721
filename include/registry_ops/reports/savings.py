"""What retention saved: bytes its executed runs deleted in the report's window ("made") and
bytes its latest run would delete ("projected"), per registry, from the runs' ``summary.json``.

Where the summaries are (``retention.audit``, ``retention.jobs``): each run's summary is its
manifest at ``<runs_prefix><run id>/summary.json``, with per-repository ``results``
(``deleted``, ``already_deleted``, ``bytes_deleted``, ``would_delete``, ``would_delete_bytes``)
and the run's ``now`` and ``dry_run``; ``<runs_prefix>latest.json`` names the last one written.
Run ids are not ordered by time, so the runs of a window are found through the audit trail,
which is dated by the run's day: ``<audit_prefix>dt=YYYY-MM-DD/run=<run id>/``, one delimited
listing per day of the window and the day either side (the folder's day is the run's ``now`` in
its own offset), not a listing of every journal ever written. A run that changed nothing writes
no audit object and saved nothing.

- made: what runs whose ``now`` falls on a UTC day in [start, end) deleted: images = deleted +
  already deleted (a rerun counts what its first attempt deleted), bytes = ``bytes_deleted``.
  Only executing runs delete: a dry run, and an executing run's dry-run policies, count
  ``would_delete`` only, so they add no made row. Bytes are the images' ``size_bytes`` (shared
  layers counted in each image), as the retention summary counts them: an upper bound of the
  storage freed.
- projected: the run ``latest.json`` names, whatever its mode: what it would delete
  (``would_delete``: a dry run's actions, or an executing run's dry-run policies).

Rows with no image are left out. ``usd_month`` is bytes / 2^30 x the report's price.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from ..config import Config
from ..retention.audit import run_layout
from ..store import objects
from ..store.runs import ManifestError, RunLayout, RunMissing
from . import cost, tables

log = logging.getLogger(__name__)

MADE, PROJECTED = "made", "projected"


def _days(start: date, end: date) -> list[date]:
    """The audit days to list: the window and one day either side (an audit folder is dated by
    the run's ``now`` in its own offset; the window is taken on UTC days)."""
    if end <= start:
        raise ValueError(f"savings window {start}..{end}: the end (excluded) must come after the start")
    return [start + timedelta(days=n) for n in range(-1, (end - start).days + 1)]


def run_ids_on(s3: Any, bucket: str, audit_prefix: str, day: date) -> list[str]:
    """Run ids with audit records dated ``day`` (one delimited listing)."""
    prefix = f"{audit_prefix}dt={day:%Y-%m-%d}/"
    ids = []
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
    for page in pages:
        for common in page.get("CommonPrefixes", []):
            name = common["Prefix"][len(prefix) :].rstrip("/")
            if name.startswith("run=") and len(name) > 4:
                ids.append(name[4:])
    return ids


def _run_time(summary: dict[str, Any], where: str) -> datetime:
    try:
        at = datetime.fromisoformat(str(summary["now"]))
    except (KeyError, ValueError):
        raise ManifestError(f"{where}: 'now' missing or not ISO-8601: {summary.get('now')!r}") from None
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def _results(summary: dict[str, Any], where: str) -> list[dict[str, Any]]:
    results = summary.get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) and "registry" in r for r in results):
        raise ManifestError(f"{where}: no per-repository 'results' list with registries")
    return results


def _rows(kind: str, summary: dict[str, Any], where: str) -> list[dict[str, Any]]:
    per: dict[str, list[int]] = {}
    for r in _results(summary, where):
        if kind == MADE:
            images = int(r.get("deleted", 0)) + int(r.get("already_deleted", 0))
            size = int(r.get("bytes_deleted", 0))
        else:
            images, size = int(r.get("would_delete", 0)), int(r.get("would_delete_bytes", 0))
        total = per.setdefault(str(r["registry"]), [0, 0])
        total[0] += images
        total[1] += size
    return [
        {"kind": kind, "run_id": str(summary["run_id"]), "registry": reg, "images": n, "bytes": b}
        for reg, (n, b) in sorted(per.items())
        if n > 0
    ]


def made(layout: RunLayout, s3: Any, audit_prefix: str, start: date, end: date) -> list[dict[str, Any]]:
    """Rows of the runs of the window that deleted images (a summary that is missing is logged and skipped:
    its run is still going, or died before summing up; its audit records remain)."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for day in _days(start, end):
        for run_id in run_ids_on(s3, layout.bucket, audit_prefix, day):
            key = layout.manifest_key(layout.id_prefix(run_id))
            if key in seen:
                continue
            seen.add(key)
            try:
                summary = layout.read_manifest(s3, key)
            except RunMissing:
                log.warning(
                    "reports: retention run %s has audit records but no summary at %s",
                    run_id,
                    layout.url(key),
                )
                continue
            where = layout.url(key)
            if start <= _run_time(summary, where).date() < end:
                rows.extend(_rows(MADE, summary, where))
    return rows


def projected(layout: RunLayout, s3: Any) -> list[dict[str, Any]]:
    """Rows of the run ``latest.json`` names (none before the first run)."""
    latest = layout.latest(s3)
    if latest is None:
        return []
    pointer, summary = latest
    return _rows(PROJECTED, summary, layout.url(pointer["manifest"]))


def savings(config: Config, s3: Any, *, start: date, end: date, price_per_gb_month: float) -> pd.DataFrame:
    """SAVINGS of the window [start, end) (UTC days, end excluded): made, then projected."""
    price = cost.price_of(config.reports, price_per_gb_month)
    objects.require_bucket(s3, config.storage.bucket, config.source)
    layout = run_layout(config.storage.bucket, config.retention.runs_prefix)
    rows = made(layout, s3, config.retention.audit_prefix, start, end) + projected(layout, s3)
    if not rows:
        return tables.empty(tables.SAVINGS)
    frame = pd.DataFrame(rows).astype({"images": "int64", "bytes": "int64"})
    frame["usd_month"] = cost.usd(frame["bytes"].astype("float64"), price)
    frame = frame.sort_values(list(tables.SAVINGS_KEY), kind="stable")
    return tables.conform(frame, "savings")


def explained_drop_bytes(frame: pd.DataFrame) -> int:
    """Bytes retention deleted in the window (the made rows): a storage drop this large is
    explained (the quality check's ±50 % rule)."""
    if frame.empty:
        return 0
    return int(frame.loc[frame["kind"] == MADE, "bytes"].sum())
