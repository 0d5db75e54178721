"""The last year of retention runs and their deletions in two objects, rewritten by each publish,
so a reader that wants the whole year (the Registry page) pays two GETs and one LIST instead of
one GET per run summary and one per audit object (hundreds, then thousands).

It is a cache of what the summaries and audit records say, never the record itself: every field
comes from them, and a history that is missing, unreadable or of a newer version is rebuilt by
the next publish. Readers check it before trusting it (:func:`current`): it must name the summary
the ``latest`` pointer names, and know every run folder there is; otherwise they read the
summaries as before.

Objects under ``retention.runs_prefix``::

    history.json                  runs (each summary without its per-repository results, plus
                                  the audit objects holding its deletions), the summary it was
                                  built for (``covers``), folders without a summary yet
                                  (``pending``), problems met, and the deletions' table
    history-<sha256>.parquet      the deletions (audit records that removed an image), one row
                                  each; named by content so ``history.json`` never names a
                                  half-written table

Each publish lists the run folders (one LIST per 1,000 runs) and adds any run the history lacks
(a publish whose history update failed, two runs publishing at once), so an update that was lost
heals on the next run. Runs older than :data:`WINDOW` at the publish are dropped.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..store import objects
from ..store.runs import ManifestError, RunLayout, schema_version
from . import audit

log = logging.getLogger(__name__)

KIND = "registry-ops/retention-history"
VERSION = 1
NAME = "history.json"
WINDOW = timedelta(days=365)
DELETED_SCHEMA = pa.schema(
    [
        ("run_key", pa.string()),
        ("at", pa.string()),
        ("run_id", pa.string()),
        ("registry", pa.string()),
        ("repository", pa.string()),
        ("digest", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("policy", pa.string()),
        ("rule", pa.int64()),
        ("reason", pa.string()),
        ("size_bytes", pa.int64()),
        ("archive_key", pa.string()),
        ("result", pa.string()),
    ]
)


class HistoryError(ValueError):
    """A history object this code cannot use (the message names it and why)."""


@dataclass
class History:
    """The year as one value: ``runs`` newest first, each ``{"key", "summary", "audits"}`` or
    ``{"key", "error"}`` for a summary that could not be read; ``deleted`` one row per image."""

    covers: str | None
    runs: list[dict[str, Any]]
    deleted: pa.Table
    pending: list[str] = field(default_factory=list)
    older: list[str] = field(default_factory=list)  # summaries of runs before the window
    problems: list[str] = field(default_factory=list)
    table_key: str | None = None  # the Parquet object it was read from

    def keys(self) -> set[str]:
        """Every summary key it accounts for: a run folder outside these is news to it."""
        return {r["key"] for r in self.runs} | set(self.pending) | set(self.older)


def key_of(layout: RunLayout) -> str:
    return layout.root + NAME


# -- reading ---------------------------------------------------------------------------------------
def read(s3: Any, layout: RunLayout) -> History | None:
    """The stored history, None when there is none; HistoryError naming the object when it (or
    the table it names) cannot be used."""
    key = key_of(layout)
    body = objects.get_bytes(s3, layout.bucket, key)
    if body is None:
        return None
    where = layout.url(key)
    try:
        doc = json.loads(body)
        schema_version(doc, where, VERSION)
        if doc.get("kind") != KIND:
            raise HistoryError(f"{where}: kind is {doc.get('kind')!r}, not {KIND!r}")
        table_key = str(doc["deleted"])
        data = objects.get_bytes(s3, layout.bucket, table_key)
        if data is None:
            raise HistoryError(f"{where} names {layout.url(table_key)}, which does not exist")
        table = pq.read_table(io.BytesIO(data))
        if not table.schema.equals(DELETED_SCHEMA) or table.num_rows != int(doc["deleted_rows"]):
            raise HistoryError(f"{layout.url(table_key)}: not the deletions {where} names")
        return History(
            covers=doc.get("covers"),
            runs=list(doc["runs"]),
            deleted=table,
            pending=list(doc.get("pending") or []),
            older=list(doc.get("older") or []),
            problems=list(doc.get("problems") or []),
            table_key=table_key,
        )
    except HistoryError:
        raise
    except (ManifestError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        raise HistoryError(f"{where}: not a retention history ({type(exc).__name__}: {exc})") from None


def current(s3: Any, layout: RunLayout, pointer: dict[str, Any]) -> History | None:
    """The history if it describes what is in S3 now: built for the summary ``pointer`` names,
    and knowing every run folder (one LIST). None otherwise (read the summaries instead); a
    broken history is logged and treated as absent."""
    try:
        found = read(s3, layout)
    except HistoryError as exc:
        log.warning("retention history: %s; reading the run summaries instead", exc)
        return None
    if found is None or found.covers != pointer.get("manifest"):
        return None
    unknown = {layout.manifest_key(f) for f in layout.run_folders(s3)} - found.keys()
    return None if unknown else found


# -- writing ---------------------------------------------------------------------------------------
def update(s3: Any, layout: RunLayout, summary_key: str, summary: dict[str, Any], now: datetime) -> History:
    """The history with this run's summary (``results`` included, as published) put in, any run
    folder it lacked read in, and runs older than :data:`WINDOW` dropped; written, then returned.
    Called before the summary is published, so a reader never sees a pointer newer than its
    history for the same summary key (a rerun rewrites both)."""
    try:
        before = read(s3, layout)
    except HistoryError as exc:
        log.warning("retention history: %s; rebuilding it from the run summaries", exc)
        before = None
    runs = {r["key"]: r for r in (before.runs if before else [])}
    deleted = before.deleted if before else DELETED_SCHEMA.empty_table()
    folders = {layout.manifest_key(f) for f in layout.run_folders(s3)}
    older = {k for k in (before.older if before else []) if k in folders and k != summary_key}
    known = set(runs) | older
    runs = {k: r for k, r in runs.items() if k in folders}  # a run folder that was removed
    missing = sorted(folders - known - {summary_key})
    read_in, pending, problems = _read_runs(s3, layout, missing)
    records = _records(s3, layout.bucket, summary_key, summary, problems)
    runs[summary_key] = _entry(summary_key, summary)
    for entry, entry_records in read_in:
        runs[entry["key"]] = entry
        records.extend(entry_records)
    cutoff = now - WINDOW
    older |= {k for k, r in runs.items() if (at := _at(r)) is not None and at < cutoff}
    runs = {k: r for k, r in runs.items() if k not in older}
    # a rerun's rows replace its own; runs gone from the window or from S3 take theirs along
    kept = pc.is_in(deleted["run_key"], pa.array(sorted(set(runs) - {summary_key}), pa.string()))
    table = pa.concat_tables([deleted.filter(kept), _table(records)])
    history = History(
        covers=summary_key,
        runs=sorted(runs.values(), key=_newest_first, reverse=True),
        deleted=table,
        pending=pending,
        older=sorted(older),
        problems=problems,
    )
    _write(s3, layout, history, before.table_key if before else None)
    return history


def _write(s3: Any, layout: RunLayout, history: History, stale: str | None) -> None:
    buf = io.BytesIO()
    pq.write_table(history.deleted, buf, compression="zstd")
    data = buf.getvalue()
    table_key = f"{layout.root}history-{hashlib.sha256(data).hexdigest()}.parquet"
    objects.put_once(s3, layout.bucket, table_key, data, "application/vnd.apache.parquet")
    doc = {
        "kind": KIND,
        "schema_version": VERSION,
        "covers": history.covers,
        "runs": history.runs,
        "pending": history.pending,
        "older": history.older,
        "problems": history.problems,
        "deleted": table_key,
        "deleted_rows": history.deleted.num_rows,
    }
    objects.put_json(s3, layout.bucket, key_of(layout), doc)
    history.table_key = table_key
    if stale and stale != table_key:
        objects.delete_keys(s3, layout.bucket, [stale])  # a reader holding it has read it already


def _entry(key: str, summary: dict[str, Any]) -> dict[str, Any]:
    results = summary.get("results") or []
    return {
        "key": key,
        "summary": {k: v for k, v in summary.items() if k != "results"},
        "audits": audit.removed_by_audit(results),
    }


def _at(entry: dict[str, Any]) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(entry["summary"]["now"]))
    except (KeyError, TypeError, ValueError):
        return None  # a broken summary: kept, so the reader names it
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _newest_first(entry: dict[str, Any]) -> tuple[bool, str, str]:
    """Sort key, with ``reverse``: newest first, a run without a time last."""
    at = _at(entry)
    return (at is not None, "" if at is None else at.isoformat(), entry["key"])


def _read_runs(
    s3: Any, layout: RunLayout, keys: list[str]
) -> tuple[list[tuple[dict[str, Any], list[dict[str, Any]]]], list[str], list[str]]:
    """The summaries at ``keys`` and their deletions; keys without a summary yet (a run still
    going, or one that died before publishing) as pending; problems met."""
    read_in: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    pending: list[str] = []
    problems: list[str] = []
    bodies = objects.get_many(s3, layout.bucket, keys)
    for key in keys:
        body = bodies[key]
        if body is None:
            pending.append(key)
            continue
        try:
            summary = layout.check(json.loads(body), key)
            if not isinstance(summary.get("results", []), list):
                raise TypeError("results is not a list")
        except (ManifestError, ValueError, TypeError) as exc:
            read_in.append(({"key": key, "error": f"{layout.url(key)}: not a retention summary ({exc})"}, []))
            continue
        read_in.append((_entry(key, summary), _records(s3, layout.bucket, key, summary, problems)))
    return read_in, pending, problems


def _records(
    s3: Any, bucket: str, run_key: str, summary: dict[str, Any], problems: list[str]
) -> list[dict[str, Any]]:
    """The audit records of the run's deletions, each with ``run_key``; an audit object that is
    missing or unreadable is named in ``problems``."""
    keys = list(audit.removed_by_audit(summary.get("results") or []))
    out: list[dict[str, Any]] = []
    for key, body in objects.get_many(s3, bucket, keys).items():
        if body is None:
            problems.append(f"{objects.url(bucket, key)}: audit object named by a summary is missing")
            continue
        try:
            recs = audit.parse_audit(body)
            out.extend({**r, "run_key": run_key} for r in recs if r.get("result") in audit.REMOVED)
        except (ValueError, AttributeError) as exc:
            problems.append(f"{objects.url(bucket, key)}: not JSON-lines audit records ({exc})")
    return out


def _table(records: list[dict[str, Any]]) -> pa.Table:
    columns = {name: [r.get(name) for r in records] for name in DELETED_SCHEMA.names}
    columns["tags"] = [list(t or []) for t in columns["tags"]]
    for name in ("rule", "size_bytes"):
        columns[name] = [None if v is None else int(v) for v in columns[name]]
    for name in ("at", "run_id", "registry", "repository", "digest", "policy", "reason", "archive_key"):
        columns[name] = [None if v is None else str(v) for v in columns[name]]
    return pa.Table.from_pydict(columns, schema=DELETED_SCHEMA)
