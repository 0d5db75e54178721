"""S3 reads of the backups, audit and reports sections (``backups.py``, ``audit.py``,
``reports.py``): every read names the object when it fails, so a section can show the problem
in its own message and render the rest; and a section made of parts (snapshots and drills, the
weekly and the monthly report) keeps a part that failed from blanking the others.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from ..store import objects
from ..store.runs import ManifestError, RunLayout
from . import _read
from ._read import ArtefactError
from .model import Chart, Figure, Section, Table

log = logging.getLogger(__name__)


class Unreachable(RuntimeError):
    """S3 did not answer for an object (the message names it): not kept by a memo, and not a
    ``ValueError``, so it is never mistaken for a broken artefact."""


def _get(s3: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, None when it does not exist; Unreachable naming it when S3 fails."""
    try:
        return objects.get_bytes(s3, bucket, key)
    except (ClientError, BotoCoreError) as exc:
        raise Unreachable(f"{objects.url(bucket, key)} cannot be read ({exc})") from None


def read_json(s3: Any, bucket: str, key: str, required: bool = True) -> Any:
    """The object's JSON; ArtefactError naming it when it is not JSON or (``required``) missing;
    None when it is missing and not required."""
    where = objects.url(bucket, key)
    data = _get(s3, bucket, key)
    if data is None:
        if required:
            raise ArtefactError(f"{where} does not exist")
        return None
    try:
        return json.loads(data)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ArtefactError(f"{where} is not JSON ({exc})") from None


def read_dict(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    """A required JSON object (ArtefactError naming it otherwise)."""
    doc = read_json(s3, bucket, key)
    if not isinstance(doc, dict):
        raise ArtefactError(f"{objects.url(bucket, key)} is not a JSON object")
    return doc


def read_table(s3: Any, bucket: str, key: str) -> pa.Table:
    """A Parquet object; ArtefactError naming it when it is missing or not Parquet."""
    where = objects.url(bucket, key)
    data = _get(s3, bucket, key)
    if data is None:
        raise ArtefactError(f"{where} does not exist")
    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ArtefactError(f"{where} is not a Parquet table ({exc})") from None


def read_pointer(s3: Any, layout: RunLayout) -> tuple[dict[str, Any], str] | None:
    """The layout's ``latest`` pointer and its version as one memo key (``_read.read_pointer``:
    ETag and LastModified), None before the first published run; a pointer that is not JSON,
    of another kind or a newer schema raises ArtefactError naming it."""
    try:
        found = _read.read_pointer(s3, layout)
    except ManifestError as exc:
        raise ArtefactError(str(exc)) from None
    if found is None:
        return None
    doc, (etag, modified) = found
    return doc, f"{etag}@{modified}"


def list_after(
    s3: Any, bucket: str, prefix: str, after: str | None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Objects under ``prefix`` whose key sorts after ``after`` (every one when None): the runs
    newer than a published one, in one request (run folders sort by time)."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": limit}
    if after:
        kwargs["StartAfter"] = after
    return list(s3.list_objects_v2(**kwargs).get("Contents", []))


def after_run(run_prefix: str) -> str:
    """A ``StartAfter`` past every key of the run folder ``run_prefix`` (``~`` sorts after the
    characters run keys use)."""
    return run_prefix + "~"


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime (naive is UTC); None when absent or unreadable."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def run_time(run_prefix: str) -> datetime | None:
    """The time a dated run folder ``.../dt=YYYY-MM-DD/HHMMSSZ/`` names."""
    marker = run_prefix.rfind("dt=")
    if marker < 0:
        return None
    try:
        return datetime.strptime(run_prefix[marker : marker + 21], "dt=%Y-%m-%d/%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass
class Part:
    """What one part of a section contributes (its error, if it failed, goes to the message)."""

    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    as_of: datetime | None = None
    source: str | None = None
    error: str | None = None  # the part failed: nothing of it is shown, the error is
    problems: list[str] = field(default_factory=list)  # shown in the message; the part renders
    never_run: bool = False
    extra: bool = False  # computed, not read (a schedule): its success does not make the section ok


def attempt(name: str, build: Callable[[], Part]) -> Part:
    """``build()``, or a Part holding the error (named: an S3 object's problem names the object)."""
    try:
        return build()
    except Exception as exc:  # one part's failure is shown in the section; the others render
        log.warning("registry page: %s failed: %s", name, exc)
        return Part(error=f"{name}: {type(exc).__name__}: {exc}")


def assemble(section_id: str, title: str, parts: list[Part], never_run: Section | None) -> Section:
    """One section of ``parts``: ``never_run`` when no part has anything to show, ``error`` when
    every part failed, else ``ok`` with the failed parts' errors as its message."""
    if never_run is not None and all(p.never_run for p in parts):
        return never_run
    errors = [p.error for p in parts if p.error]
    shown = [p for p in parts if not p.error]
    problems = [m for p in shown for m in p.problems]
    times = [p.as_of for p in shown if p.as_of]
    read = [p for p in parts if not p.extra]
    return Section(
        section_id,
        title,
        status="error" if errors and all(p.error or p.never_run for p in read) else "ok",
        message="; ".join(errors + problems) or None,
        as_of=max(times).isoformat() if times else None,
        source=next((p.source for p in shown if p.source), None),
        figures=[f for p in shown for f in p.figures],
        tables=[t for p in shown for t in p.tables],
        charts=[c for p in shown for c in p.charts],
        notes=[n for p in parts for n in p.notes],
    )
