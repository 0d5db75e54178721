"""The probe rows in S3: one small Parquet object per run, compacted to one object per finished day.

Layout under ``storage.prefixes.health``::

    probes/dt=YYYY-MM-DD/HHMMSSZ-<run id>.parquet      one run's rows (write-once)
    probes/dt=YYYY-MM-DD/compacted-<16 hex>.parquet    a finished day's small objects merged

Safety: a run's object is written with ``If-None-Match`` (a retried ``append`` never replaces
what the first try stored); ``compact`` deletes the small objects only after its compacted
object was read back with the same rows (by ``(run_id, registry)``); ``read`` takes every
compacted and small object of the range and keeps one row per ``(run_id, registry)``, so a
compaction that died between its write and its deletes never counts a probe twice, and its
rerun (same sources, same compacted key) finishes the job. A small object that arrives for a day
already compacted is compacted by the next run into a second compacted object; readers take all.
"""

from __future__ import annotations

import hashlib
import io
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import Config
from ..store import objects
from ..store.runs import clean_run_id
from .schema import PROBE_SCHEMA

log = logging.getLogger(__name__)

PROBES = "probes/"
COMPACTED = "compacted-"
KEY = ("run_id", "registry")
PARQUET = "application/vnd.apache.parquet"


class ProbeDataError(ValueError):
    """Probe rows or a stored probe object this code cannot use (names the row or object)."""


class CompactionError(RuntimeError):
    """A compaction that could not verify what it wrote; the small objects are kept."""


# -- names ------------------------------------------------------------------------------------------
def root(config: Config) -> str:
    return config.storage.prefixes.health + PROBES


def day_prefix(config: Config, day: date) -> str:
    return f"{root(config)}dt={day:%Y-%m-%d}/"


def run_key(config: Config, at: datetime, run_id: str) -> str:
    at = at.astimezone(UTC)
    return f"{day_prefix(config, at.date())}{at:%H%M%S}Z-{clean_run_id(run_id)}.parquet"


def _is_compacted(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith(COMPACTED)


def _day_of(config: Config, key: str) -> date | None:
    part = key[len(root(config)) :].split("/", 1)[0]
    if not part.startswith("dt="):
        return None
    try:
        return date.fromisoformat(part[3:])
    except ValueError:
        return None


# -- tables ------------------------------------------------------------------------------------------
def _time(value: Any, where: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ProbeDataError(f"{where}: at is not an ISO-8601 time: {value!r}") from None
    if not isinstance(value, datetime):
        raise ProbeDataError(f"{where}: at must be a time, got {value!r}")
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (``at`` a datetime or ISO string) as a ``PROBE_SCHEMA`` table; a row missing a column
    or holding a null where none is allowed is refused naming its index, column and registry."""
    clean = []
    for n, row in enumerate(rows):
        where = f"probe row {n} ({row.get('registry', '?')})"
        missing = [f.name for f in PROBE_SCHEMA if f.name not in row]
        if missing:
            raise ProbeDataError(f"{where}: missing column(s) {', '.join(missing)}")
        nulls = [f.name for f in PROBE_SCHEMA if not f.nullable and row[f.name] is None]
        if nulls:
            raise ProbeDataError(f"{where}: null in required column(s) {', '.join(nulls)}")
        clean.append({f.name: row[f.name] for f in PROBE_SCHEMA} | {"at": _time(row["at"], where)})
    try:
        return pa.Table.from_pylist(clean, schema=PROBE_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ProbeDataError(f"probe rows do not fit the probe schema: {exc}") from None


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _read(s3: Any, bucket: str, key: str) -> pa.Table | None:
    """A stored probe object cast to ``PROBE_SCHEMA`` (None when it is gone; one that does not fit
    is named)."""
    data = objects.get_bytes(s3, bucket, key)
    if data is None:
        return None
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ProbeDataError(f"{objects.url(bucket, key)}: not a Parquet object: {exc}") from None
    missing = [n for n in PROBE_SCHEMA.names if n not in table.column_names]
    if missing:
        raise ProbeDataError(f"{objects.url(bucket, key)}: not a probe object, missing {', '.join(missing)}")
    try:
        return table.select(PROBE_SCHEMA.names).cast(PROBE_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise ProbeDataError(f"{objects.url(bucket, key)}: does not fit the probe schema: {exc}") from None


def _must_read(s3: Any, bucket: str, key: str) -> pa.Table:
    table = _read(s3, bucket, key)
    if table is None:
        raise CompactionError(f"{objects.url(bucket, key)} disappeared while being compacted")
    return table


def dedupe(table: pa.Table) -> pa.Table:
    """One row per ``(run_id, registry)`` (the first), sorted by time and registry."""
    keys = table.select(list(KEY)).to_pylist()
    seen: set[tuple[str, str]] = set()
    keep = []
    for k in keys:
        pair = (k["run_id"], k["registry"])
        keep.append(pair not in seen)
        seen.add(pair)
    return table.filter(pa.array(keep, pa.bool_())).sort_by([("at", "ascending"), ("registry", "ascending")])


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables) if tables else PROBE_SCHEMA.empty_table()


# -- append ---------------------------------------------------------------------------------------------
def append(s3: Any, config: Config, rows: list[dict[str, Any]], run_id: str, at: datetime) -> str:
    """Store one run's rows as ``dt=<day>/<HHMMSS>Z-<run id>.parquet`` and return the key. Write
    once: when the key exists (a retry of this run), the stored object stays as it is."""
    if not rows:
        raise ProbeDataError(f"run {run_id}: no probe rows to append")
    table = to_table(rows)
    others = sorted(set(table.column("run_id").to_pylist()) - {run_id})
    if others:
        raise ProbeDataError(f"run {run_id}: rows of another run among its rows: {others[0]!r}")
    bucket = config.storage.bucket
    key = run_key(config, _time(at, f"run {run_id}"), run_id)
    if objects.put_once(s3, bucket, key, _parquet(table), PARQUET):
        log.info("health: %d probe row(s) stored at %s", table.num_rows, objects.url(bucket, key))
    else:
        log.info(
            "health: %s already stored (a retry of run %s): kept as it is", objects.url(bucket, key), run_id
        )
    return key


# -- compaction ----------------------------------------------------------------------------------------
def compacted_key(config: Config, day: date, sources: list[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(sources)).encode()).hexdigest()[:16]
    return f"{day_prefix(config, day)}{COMPACTED}{digest}.parquet"


def _pairs(table: pa.Table) -> set[tuple[str, str]]:
    return {(r["run_id"], r["registry"]) for r in table.select(list(KEY)).to_pylist()}


def compact_day(s3: Any, config: Config, day: date) -> dict[str, Any]:
    """Merge one day's small objects into a compacted object, verify it, then delete them."""
    bucket = config.storage.bucket
    keys = [o["Key"] for o in objects.list_keys(s3, bucket, day_prefix(config, day))]
    sources = sorted(k for k in keys if not _is_compacted(k))
    out: dict[str, Any] = {"day": day.isoformat(), "sources": len(sources), "rows": 0, "key": None}
    if not sources:
        return out | {"status": "nothing to compact"}
    merged = dedupe(_concat([_must_read(s3, bucket, k) for k in sources]))
    key = compacted_key(config, day, sources)
    written = objects.put_once(s3, bucket, key, _parquet(merged), PARQUET)
    back = _must_read(s3, bucket, key)
    if back.num_rows != merged.num_rows or _pairs(back) != _pairs(merged):
        raise CompactionError(
            f"{objects.url(bucket, key)}: read back {back.num_rows} row(s), expected {merged.num_rows} "
            f"from {len(sources)} object(s) of {day}: the small objects are kept"
        )
    errors = objects.delete_keys(s3, bucket, sources)
    if errors:
        raise CompactionError(
            f"{objects.url(bucket, key)} verified, but {len(errors)} of {len(sources)} small object(s) of "
            f"{day} could not be deleted (first: {errors[0].get('Key')}: {errors[0].get('Message')}); "
            "the next compaction deletes them"
        )
    log.info("health: %s: %d object(s), %d row(s) -> %s", day, len(sources), merged.num_rows, key)
    return out | {
        "rows": merged.num_rows,
        "key": key,
        "status": "compacted" if written else "finished (compacted object already written)",
    }


def pending_days(s3: Any, config: Config, before: date) -> list[date]:
    """Days before ``before`` that still have small objects (a missed day is caught up)."""
    days = set()
    for o in objects.list_keys(s3, config.storage.bucket, root(config)):
        day = _day_of(config, o["Key"])
        if day is not None and day < before and not _is_compacted(o["Key"]):
            days.add(day)
    return sorted(days)


def compact(s3: Any, config: Config, day: date | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Compact ``day`` (which must be over, UTC), or every finished day with small objects."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    if day is not None and day >= today:
        raise ValueError(
            f"day {day} is not over yet (today is {today} UTC): only finished days are compacted"
        )
    days = [day] if day is not None else pending_days(s3, config, today)
    results = [compact_day(s3, config, d) for d in days]
    return {"days": results, "compacted": sum(1 for r in results if r["key"])}


# -- read --------------------------------------------------------------------------------------------
def read(s3: Any, config: Config, since: datetime, until: datetime) -> pa.Table:
    """The probe rows with ``since <= at < until``, one per ``(run_id, registry)``, sorted by time."""
    since, until = _time(since, "since"), _time(until, "until")
    bucket = config.storage.bucket
    first, last = (since - timedelta(days=1)).date(), until.date()  # a row's day may be its run's +-1

    def listed(prefix: str) -> list[str]:
        # keys sort by day (dt=YYYY-MM-DD/): the listing starts at the range's first day, so a
        # read of the last hours costs the same after a year of probes as after a day
        after = f"{root(config)}dt={first:%Y-%m-%d}"  # < every key of that day, > every earlier one
        keys = [o["Key"] for o in objects.list_keys(s3, bucket, prefix, start_after=after)]
        return [k for k in keys if (d := _day_of(config, k)) is not None and first <= d <= last]

    tables, done, gone = [], set(), set()

    def take(keys: list[str]) -> None:
        for key in sorted(keys, key=lambda k: (not _is_compacted(k), k)):  # compacted copies first
            done.add(key)
            table = _read(s3, bucket, key)
            if table is None:  # compacted meanwhile: its day's compacted object has the rows
                gone.add(_day_of(config, key))
                continue
            at = table.column("at")
            tables.append(table.filter(pc.and_(pc.greater_equal(at, since), pc.less(at, until))))

    take(listed(root(config)))
    for day in sorted(d for d in gone if d is not None):
        take([k for k in listed(day_prefix(config, day)) if k not in done])
    return dedupe(_concat(tables))
