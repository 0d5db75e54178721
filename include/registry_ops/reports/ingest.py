"""Incremental ingestion of pull-event files into a day-partitioned Parquet dataset.

Sources: ``reports.events`` (default: ``retention.pulls``' sources). CloudTrail sources are read
in CloudTrail's own layout, ``<prefix><region>/YYYY/MM/DD/*``; notification sources are every
object under their prefix (one envelope each, JSON or gzip).

Under ``<storage.prefixes.reports>events/``:

- ``day=YYYY-MM-DD/part-<h>.parquet``: ``events.EVENTS_SCHEMA`` rows of that UTC day; ``h`` is
  the SHA-256 of the part's sorted event ids, so a part is written once (``If-None-Match``)
  and a rerun writes the same name. Before writing, the ids already stored for that day are
  dropped: an event is stored once even when CloudTrail delivers it twice in files read by
  two runs, or when a run crashed after its parts and before its state.
- ``problems/day=YYYY-MM-DD/<h>.json``: the problems of the files of that day (a CloudTrail
  file's day folder; an envelope's LastModified day), so a report over a window shows them.
- ``_state.json``: what was read, small and bounded. Per CloudTrail source ``from_day`` (the
  first day folder still listed) and the keys read in day folders since; day folders before it
  are never listed again. Each run lists ``from_day`` .. today and moves ``from_day`` to
  ``today - late_days`` (CloudTrail may deliver a file into a day folder late; a file landing
  more than ``late_days`` late is missed). Per notification source ``since`` and the keys read
  with a LastModified since; each run lists the prefix and reads objects modified since
  ``since`` that are not in ``read`` (or whose ETag changed). The state is written after the
  parts and problems (conditionally: a concurrent run makes this one fail, not overwrite).

A file that cannot be fetched is a problem and stays unread (the next run tries again: the
state does not move past it); a file that is read but bad is a problem and counts as read.
The first run reads ``max(never_pulled_days, window_days, 31)`` days back.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from ..config import Config, ConfigError
from ..registries.ecr_errors import aws_problem
from ..store import objects
from ..store.clients import s3_for
from .events import EVENTS_SCHEMA, Attribution, Raw, dedupe, empty_frame, events_table, read_raw, to_frame
from .model import Problem

log = logging.getLogger(__name__)

LATE_DAYS = 2
READERS = 16
BATCH = 256  # files parsed together (memory: one batch's records at a time)
STATE_VERSION = 1
_DAY_FOLDER = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/[^/]+$")
_SKIPPED_FOLDERS = ("CloudTrail-Digest", "CloudTrail-Insight")  # other files of a trail's bucket


@dataclass(frozen=True)
class Source:
    """One configured place holding event files."""

    kind: str  # "cloudtrail" | "notifications"
    bucket: str
    prefix: str
    conn_id: str | None
    registries: tuple[str, ...] | None
    where: str  # the config key, for messages

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.url}"


def sources(config: Config) -> list[Source]:
    """``reports.events``' sources, else ``retention.pulls``'; registries named by a source must
    exist and be of its kind (ConfigError naming the key)."""
    configured = config.reports.events
    section = "reports.events" if configured is not None else "retention.pulls"
    settings = configured if configured is not None else config.retention.pulls
    out = []
    for kind, items, reg_kind in (
        ("cloudtrail", settings.cloudtrail, "ecr"),
        ("notifications", settings.notifications, "oci"),
    ):
        for n, src in enumerate(items):
            where = f"{section}.{kind}[{n}]"
            single = getattr(src, "registry", None)
            names = (single,) if single else tuple(getattr(src, "registries", None) or ()) or None
            for name in names or ():
                reg = config.registry(name)
                if reg.kind != reg_kind:
                    raise ConfigError(
                        f"{config.source}: {where}: registry {name!r} is of kind {reg.kind!r}; "
                        f"these events can only belong to registries of kind {reg_kind!r}"
                    )
            bucket = src.bucket or config.storage.bucket
            out.append(Source(kind, bucket, src.prefix, src.conn_id, names, where))
    return out


def backfill_days(config: Config) -> int:
    """How far back the first run reads: enough for the monthly report and never-pulled."""
    settings = config.reports
    return max(settings.never_pulled_days, settings.window_days, 31)


def _base(config: Config) -> str:
    return f"{config.storage.prefixes.reports}events/"


# -- listing ---------------------------------------------------------------------------------------
@dataclass
class _File:
    source: Source
    key: str
    etag: str
    modified: datetime
    day: date  # where its problems are filed

    @property
    def name(self) -> str:
        return objects.url(self.source.bucket, self.key)


def _client(config: Config, s3: Any, src: Source) -> Any:
    return s3 if src.conn_id in (None, config.storage.conn_id) else s3_for(src.conn_id or "")


def _pages(s3: Any, bucket: str, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
    kwargs = {"Bucket": bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
    yield from s3.get_paginator("list_objects_v2").paginate(**kwargs)


def _wanted(key: str) -> bool:
    return not key.endswith("/") and not any(f"/{f}/" in f"/{key}" for f in _SKIPPED_FOLDERS)


def _file_of(src: Source, obj: dict[str, Any], day: date) -> _File:
    return _File(src, obj["Key"], str(obj.get("ETag", "")).strip('"'), obj["LastModified"], day)


def _list_cloudtrail(s3: Any, src: Source, first: date, last: date) -> list[_File]:
    """The files of the day folders ``first`` .. ``last`` of every region folder."""
    regions = [
        p["Prefix"]
        for page in _pages(s3, src.bucket, src.prefix, "/")
        for p in page.get("CommonPrefixes", [])
    ]
    days = [first + timedelta(days=d) for d in range((last - first).days + 1)]
    folders = [(f"{region}{day:%Y/%m/%d}/", day) for region in regions for day in days]

    def listing(folder: tuple[str, date]) -> list[_File]:
        return [
            _file_of(src, o, folder[1])
            for page in _pages(s3, src.bucket, folder[0])
            for o in page.get("Contents", [])
            if _wanted(o["Key"])
        ]

    with ThreadPoolExecutor(READERS) as pool:
        return [f for files in pool.map(listing, folders) for f in files]


def _list_notifications(s3: Any, src: Source) -> list[_File]:
    return [
        _file_of(src, o, o["LastModified"].astimezone(UTC).date())
        for page in _pages(s3, src.bucket, src.prefix)
        for o in page.get("Contents", [])
        if _wanted(o["Key"])
    ]


# -- state -----------------------------------------------------------------------------------------
def _state_key(config: Config) -> str:
    return f"{_base(config)}_state.json"


def _load_state(s3: Any, bucket: str, key: str) -> tuple[dict[str, Any], str | None]:
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if objects.is_missing(exc):
            return {"version": STATE_VERSION, "sources": {}}, None
        raise
    body = obj["Body"].read()
    try:
        state = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"{objects.url(bucket, key)}: not the ingest state (not JSON: {exc})") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(f"{objects.url(bucket, key)}: not version {STATE_VERSION} of the ingest state")
    return state, str(obj.get("ETag", "")).strip('"')


def _save_state(s3: Any, bucket: str, key: str, state: dict[str, Any], etag: str | None) -> None:
    body = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
    condition = {"IfMatch": f'"{etag}"'} if etag else {"IfNoneMatch": "*"}
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition)
    except ClientError as exc:
        if objects.is_precondition_failed(exc):
            raise RuntimeError(
                f"{objects.url(bucket, key)} changed while this ingest ran (another run?): its state "
                "was not written; run again (the events already stored are not stored twice)"
            ) from None
        raise


@dataclass
class _Plan:
    """One source's files to read this run, and its next state (applied after a clean read)."""

    source: Source
    todo: list[_File]
    skipped: int
    state: dict[str, Any]
    keep: Callable[[set[str]], dict[str, Any]]  # failed keys -> the state to store


def _relative(src: Source, key: str) -> str:
    return key[len(src.prefix) :] if key.startswith(src.prefix) else key


def _plan_cloudtrail(s3: Any, src: Source, old: dict[str, Any], today: date, start: date, late: int) -> _Plan:
    from_day = date.fromisoformat(old["from_day"]) if old.get("from_day") else start
    read: dict[str, str] = dict(old.get("read") or {})
    files = _list_cloudtrail(s3, src, from_day, today) if from_day <= today else []
    todo = [f for f in files if read.get(_relative(src, f.key)) != f.etag]

    def keep(failed: set[str]) -> dict[str, Any]:
        days = [f.day for f in todo if f.key in failed]
        moved = max(from_day, today - timedelta(days=late))
        moved = min([moved, *days])
        done = {**read, **{_relative(src, f.key): f.etag for f in todo if f.key not in failed}}
        return {
            "from_day": moved.isoformat(),
            "read": {k: e for k, e in done.items() if _key_day(k) >= moved},
        }

    return _Plan(src, todo, len(files) - len(todo), old, keep)


def _key_day(key: str) -> date:
    found = _DAY_FOLDER.search(key)
    if not found:
        return date.min
    try:
        return date(*map(int, found.groups()))
    except ValueError:
        return date.min


def _plan_notifications(s3: Any, src: Source, old: dict[str, Any], start: datetime, late: int) -> _Plan:
    since = datetime.fromisoformat(old["since"]) if old.get("since") else start
    read: dict[str, str] = dict(old.get("read") or {})
    files = [f for f in _list_notifications(s3, src) if f.modified >= since]
    todo = [f for f in files if read.get(_relative(src, f.key)) != f.etag]

    def keep(failed: set[str]) -> dict[str, Any]:
        latest = max((f.modified for f in files), default=since)
        moved = max(since, latest - timedelta(days=late))
        moved = min([moved, *(f.modified for f in todo if f.key in failed)])
        done = {**read, **{_relative(src, f.key): f.etag for f in todo if f.key not in failed}}
        recent = {_relative(src, f.key) for f in files if f.modified >= moved}
        return {"since": moved.isoformat(), "read": {k: e for k, e in done.items() if k in recent}}

    return _Plan(src, todo, len(files) - len(todo), old, keep)


# -- reading ---------------------------------------------------------------------------------------
def _fetch(s3: Any, bucket: str, key: str, name: str) -> Raw:
    """The parsed file, or a Raw holding the problem (``fetched`` False when it could not be read)."""
    try:
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        return Raw(name, problems=[Problem(name, f"cannot read: {aws_problem(exc)}")], fetched=False)
    return read_raw(data, name)


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _parsed(pool: ThreadPoolExecutor, jobs: list[Callable[[], Raw]], size: int) -> Iterator[list[Raw]]:
    """The jobs' results in order, ``size`` at a time, the next batch already running while the
    caller works on this one (at most two batches in memory)."""
    pending: list[Any] = [pool.submit(job) for job in jobs[:size]]
    for start in range(0, len(jobs), size):
        ahead = [pool.submit(job) for job in jobs[start + size : start + 2 * size]]
        yield [f.result() for f in pending]
        pending = ahead


def _read_events(
    config: Config, s3: Any, plans: list[_Plan], attribution: Attribution
) -> tuple[pa.Table, list[tuple[_File | None, Problem]], set[str]]:
    """Every new file read and turned into events, ``BATCH`` files at a time (only two batches'
    parsed records are in memory): the events (unique ids), each file's problems, and the keys
    that could not be fetched."""
    todo = [(plan, f) for plan in plans for f in plan.todo]
    only = {p.source: attribution.only(p.source.registries, _reg_kind(p.source)) for p in plans}
    tables, problems, failed = [], [], set()

    def job(f: _File) -> Callable[[], Raw]:
        return lambda: _fetch(_client(config, s3, f.source), f.source.bucket, f.key, f.name)

    with ThreadPoolExecutor(READERS) as pool:
        parsed = _parsed(pool, [job(f) for _, f in todo], BATCH)
        for batch, raws in zip(_batches(todo, BATCH), parsed, strict=True):
            failed |= {f.key for (_, f), raw in zip(batch, raws, strict=True) if not raw.fetched}
            by_file = {f.name: f for _, f in batch}
            for plan in plans:
                mine = [raw for (p, _), raw in zip(batch, raws, strict=True) if p is plan]
                if not mine:
                    continue
                table, found = events_table(mine, only[plan.source])
                tables.append(table)
                problems += [(by_file.get(p.source), p) for p in found]
    table = dedupe(pa.concat_tables(tables)) if tables else EVENTS_SCHEMA.empty_table()
    return table, problems, failed


def _stored_ids(s3: Any, bucket: str, base: str, day: date) -> pa.Array:
    """The event ids the parts of a day already hold."""
    keys = [o["Key"] for o in objects.list_keys(s3, bucket, f"{base}day={day.isoformat()}/")]
    ids = [
        pq.read_table(io.BytesIO(objects.get_bytes(s3, bucket, key) or b""), columns=["event_id"])["event_id"]
        for key in keys
    ]
    return pa.chunked_array([c for i in ids for c in i.chunks], pa.string()).combine_chunks()


def part_name(table: pa.Table) -> str:
    """``part-<SHA-256 of the sorted event ids, 32 hex>.parquet``: the same events, the same name."""
    ids = table["event_id"].combine_chunks()
    ids = ids.take(pc.sort_indices(ids))
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(ids)], pa.int32()), ids), "\n")
    return f"part-{hashlib.sha256(joined[0].as_buffer()).hexdigest()[:32]}.parquet"


def _write_parts(s3: Any, bucket: str, base: str, table: pa.Table) -> tuple[int, list[str]]:
    """New events (not yet stored for their day) as one part per day; (events, days). The
    table is sorted once by day and time; each day's part is a slice of it (no copy per day)."""
    table = table.take(
        pc.sort_indices(table, [("day", "ascending"), ("event_time", "ascending"), ("event_id", "ascending")])
    )
    counts = pc.value_counts(table["day"]).to_pylist()  # in order of first appearance: by day
    days = [c["values"] for c in counts]
    starts = np.concatenate([[0], np.cumsum([c["counts"] for c in counts])]).tolist()

    def one(n: int) -> int:
        day, rows = days[n], table.slice(starts[n], starts[n + 1] - starts[n])
        stored = _stored_ids(s3, bucket, base, day)
        if len(stored):
            rows = rows.filter(pc.invert(pc.is_in(rows["event_id"], value_set=stored)))
        if not rows.num_rows:
            return 0
        buf = io.BytesIO()
        pq.write_table(rows, buf, compression="zstd")
        key = f"{base}day={day.isoformat()}/{part_name(rows)}"
        if not objects.put_once(s3, bucket, key, buf.getvalue(), "application/vnd.apache.parquet"):
            return 0  # another run stored these very events meanwhile
        return rows.num_rows

    with ThreadPoolExecutor(min(4, max(1, len(days)))) as pool:
        written = list(pool.map(one, range(len(days))))
    return sum(written), [d.isoformat() for d, n in zip(days, written, strict=True) if n]


def _write_problems(s3: Any, bucket: str, base: str, by_day: dict[date, list[Problem]]) -> None:
    for day, problems in sorted(by_day.items()):
        rows = sorted((p.as_dict() for p in problems), key=lambda d: (d["source"], d["problem"]))
        body = json.dumps(rows, sort_keys=True, indent=1).encode()
        key = f"{base}problems/day={day.isoformat()}/{hashlib.sha256(body).hexdigest()[:32]}.json"
        objects.put_once(s3, bucket, key, body, "application/json")


def ingest(config: Config, s3: Any, *, now: datetime, late_days: int = LATE_DAYS) -> dict[str, Any]:
    """Read the event files that arrived since the last run into the dataset (see the module
    docstring). Returns ``files_read``, ``files_skipped`` (listed, already read), ``events``
    (new events stored), ``problems`` (``Problem.as_dict()``) and ``days`` (days given events)."""
    now = now.astimezone(UTC)
    today = now.date()
    bucket, base = config.storage.bucket, _base(config)
    state_key = _state_key(config)
    state, etag = _load_state(s3, bucket, state_key)
    attribution = Attribution.from_config(config)
    start = today - timedelta(days=backfill_days(config))
    problems: list[Problem] = []
    problem_days: dict[date, list[Problem]] = {}
    plans: list[_Plan] = []
    for src in sources(config):
        old = (state.get("sources") or {}).get(src.id) or {}
        client = _client(config, s3, src)
        try:
            if src.kind == "cloudtrail":
                plan = _plan_cloudtrail(client, src, old, today, start, late_days)
            else:
                start_time = datetime.combine(start, datetime.min.time(), UTC)
                plan = _plan_notifications(client, src, old, start_time, late_days)
        except (ClientError, BotoCoreError) as exc:
            problem = Problem(src.url, f"{src.where}: cannot list: {aws_problem(exc)}")
            problems.append(problem)
            problem_days.setdefault(today, []).append(problem)
            continue
        plans.append(plan)

    table, file_problems, failed = _read_events(config, s3, plans, attribution)
    for f, problem in file_problems:
        problems.append(problem)
        problem_days.setdefault(f.day if f else today, []).append(problem)
    events, days = _write_parts(s3, bucket, base, table)
    _write_problems(s3, bucket, base, problem_days)

    next_state = {
        "version": STATE_VERSION,
        "updated_at": now.isoformat(),
        "sources": dict(state.get("sources") or {}),
    }
    for plan in plans:
        next_state["sources"][plan.source.id] = plan.keep(failed)
    _save_state(s3, bucket, state_key, next_state, etag)
    out = {
        "files_read": sum(len(p.todo) for p in plans) - len(failed),
        "files_skipped": sum(p.skipped for p in plans),
        "events": events,
        "problems": [p.as_dict() for p in problems],
        "days": days,
    }
    log.info(
        "reports: ingest: %d file(s) read, %d skipped, %d new event(s) over %d day(s), %d problem(s)",
        out["files_read"],
        out["files_skipped"],
        events,
        len(days),
        len(problems),
    )
    return out


def _reg_kind(src: Source) -> str:
    return "ecr" if src.kind == "cloudtrail" else "oci"


# -- reading the dataset ---------------------------------------------------------------------------
def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=d) for d in range((end - start).days)]


def read_events(config: Config, s3: Any, start: date, end: date) -> pd.DataFrame:
    """The stored events of the days ``start`` <= day < ``end`` (``tables.EVENTS``, one row per
    ``event_id``, by time), reading only those day partitions."""
    bucket, base = config.storage.bucket, _base(config)

    def day_parts(day: date) -> list[pa.Table]:
        keys = [o["Key"] for o in objects.list_keys(s3, bucket, f"{base}day={day.isoformat()}/")]
        return [pq.read_table(io.BytesIO(objects.get_bytes(s3, bucket, k) or b"")) for k in keys]

    with ThreadPoolExecutor(READERS) as pool:
        parts = [t for found in pool.map(day_parts, _days(start, end)) for t in found]
    if not parts:
        return empty_frame()
    table = dedupe(pa.concat_tables([t.cast(EVENTS_SCHEMA) for t in parts]))
    table = table.sort_by([("event_time", "ascending"), ("event_id", "ascending")])
    return to_frame(table)


def read_problems(config: Config, s3: Any, start: date, end: date) -> list[Problem]:
    """The problems filed under the days ``start`` <= day < ``end`` (each once)."""
    bucket, base = config.storage.bucket, _base(config)

    def day_problems(day: date) -> list[dict[str, Any]]:
        keys = [o["Key"] for o in objects.list_keys(s3, bucket, f"{base}problems/day={day.isoformat()}/")]
        return [row for k in sorted(keys) for row in objects.get_json(s3, bucket, k)]

    with ThreadPoolExecutor(READERS) as pool:
        rows = [r for found in pool.map(day_problems, _days(start, end)) for r in found]
    seen: set[tuple[str, str, int]] = set()
    out = []
    for row in rows:
        key = (row["source"], row["problem"], int(row.get("count", 1)))
        if key not in seen:
            seen.add(key)
            out.append(Problem(*key))
    return out


# -- paths (the command line) ----------------------------------------------------------------------
def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and _wanted(p.relative_to(path).as_posix())
    )


def _split_s3(url: str) -> tuple[str, str]:
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{url}: not an s3://bucket/prefix URL")
    return bucket, prefix


def read_paths(
    paths: Iterable[str], attribution: Attribution, s3_for_url: Callable[[str], Any] | None
) -> tuple[pd.DataFrame, list[Problem]]:
    """Every event file under each path (a local file or directory, or ``s3://bucket/prefix``),
    either kind, deduplicated by event id. A path that does not exist or cannot be listed is a
    ValueError naming it; a path holding no file, and every bad file, is a Problem."""
    jobs: list[Callable[[], Raw]] = []
    problems: list[Problem] = []
    for path in paths:
        if path.startswith("s3://"):
            if s3_for_url is None:
                raise ValueError(f"{path}: no S3 client to read it with")
            bucket, prefix = _split_s3(path)
            s3 = s3_for_url(path)
            try:
                keys = [o["Key"] for page in _pages(s3, bucket, prefix) for o in page.get("Contents", [])]
            except (ClientError, BotoCoreError) as exc:
                raise ValueError(f"{path}: cannot list: {aws_problem(exc)}") from None
            keys = [k for k in keys if _wanted(k)]
            jobs += [lambda s3=s3, b=bucket, k=k: _fetch(s3, b, k, objects.url(b, k)) for k in keys]
            found = len(keys)
        else:
            local = Path(os.path.expanduser(path))
            if not local.exists():
                raise ValueError(f"{path}: no such file or directory")
            files = _local_files(local)
            jobs += [lambda p=p: read_raw(p.read_bytes(), str(p)) for p in files]
            found = len(files)
        if not found:
            problems.append(Problem(path, "no event file found there"))
    tables = [EVENTS_SCHEMA.empty_table()]
    with ThreadPoolExecutor(READERS) as pool:
        for raws in _parsed(pool, jobs, BATCH):
            table, found = events_table(raws, attribution)
            tables.append(table)
            problems += found
    table = dedupe(pa.concat_tables(tables))
    table = table.sort_by([("event_time", "ascending"), ("event_id", "ascending")])
    return to_frame(table), problems
