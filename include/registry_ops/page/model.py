"""The Registry page's one JSON shape: every section is a ``Section`` of summary figures,
tables and charts whose columns say what kind of value they hold, so the page formats numbers
for people (MB/GB, USD, relative dates) and sorts them by value, in one place (the page's
script), whatever section they come from.

A section never raises to the page: what its loader cannot read becomes ``status="error"`` with
a message naming the S3 object and the problem (``guard``), and a section whose DAG has not
run yet is ``status="never_run"`` naming that DAG. No value on the page is a secret: loaders
read only what the DAGs wrote for people (summaries, findings, snapshots), and ``scrub`` drops
keys that look like credentials from anything copied through as-is.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from .. import redact as _redact

log = logging.getLogger(__name__)

# How the page shows a value: ``bytes`` as KB/MB/GB, ``usd`` with 2 decimals, ``time`` as
# "3 h ago" with the ISO time on hover, ``percent`` from a 0..1 ratio, ``digest`` shortened,
# ``restore`` a button opening the restore form with the cell's dict as its Params.
Kind = Literal[
    "text",
    "count",
    "bytes",
    "usd",
    "time",
    "date",
    "percent",
    "digest",
    "status",
    "seconds",
    "restore",
    "list",
]
Status = Literal["ok", "never_run", "error"]
_SECRET_KEY = re.compile(
    r"(?i)(password|passwd|secret|token|credential|private_key|access_key|authorization)"
)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: Kind = "text"


@dataclass
class Table:
    """Rows are dicts keyed by the columns' keys; ``total`` is how many rows exist when only
    the first ``len(rows)`` are sent (a search endpoint serves the rest)."""

    id: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    total: int | None = None
    note: str | None = None


@dataclass
class Series:
    name: str
    values: list[float | None]


@dataclass
class Chart:
    """A line chart: ``x`` are ISO dates or times, one value per x in every series."""

    id: str
    title: str
    x: list[str]
    series: list[Series]
    kind: Kind = "count"


@dataclass
class Figure:
    label: str
    value: Any
    kind: Kind = "text"
    alert: bool = False  # shown in red: a target missed, a gate failed, an expired entry


@dataclass
class Section:
    id: str
    title: str
    status: Status = "ok"
    message: str | None = None
    as_of: str | None = None  # when the artefact shown was written (ISO, UTC)
    source: str | None = None  # s3:// URL of the object the section was read from
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return jsonable(asdict(self))


def never_run(section_id: str, title: str, dag_id: str, what: str) -> Section:
    """A section whose DAG has not written anything yet, said plainly."""
    return Section(
        section_id,
        title,
        status="never_run",
        message=f"{dag_id} has not run yet: no {what} in S3. Trigger {dag_id} or wait for its schedule.",
    )


def guard(section_id: str, title: str, load: Callable[[], Section]) -> Section:
    """``load()``, or an error section naming what went wrong: a broken artefact must show in
    its own section, never as a blank page or a 500 (the error text names the object)."""
    try:
        return load()
    except Exception as exc:  # any failure is shown in the section, logged once
        message = redact(f"{type(exc).__name__}: {exc}")
        log.warning("registry page: section %s failed: %s", section_id, message)
        return Section(section_id, title, status="error", message=message)


def redact(text: Any) -> Any:
    """Text copied from an error (a registry's, S3's, a restore's) with credentials replaced by
    ``***`` (``redact.py``); other values as they are."""
    if not isinstance(text, str):
        return text
    return _redact.text(text)


def scrub(value: Any) -> Any:
    """``value`` without dict entries whose key names a credential (recursively)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """Plain JSON: times as ISO strings (UTC), NaN/inf as null, numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if hasattr(value, "item") and callable(value.item):  # numpy / pandas scalars
        try:
            return jsonable(value.item())
        except (ValueError, TypeError):
            return str(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    if hasattr(value, "isoformat"):  # pandas Timestamp
        return jsonable(value.to_pydatetime()) if hasattr(value, "to_pydatetime") else value.isoformat()
    return str(value)


def rows_of(records: Iterable[dict[str, Any]], columns: list[Column]) -> list[dict[str, Any]]:
    """Only the columns' keys of each record (nothing else leaves the server)."""
    keys = [c.key for c in columns]
    return [{k: r.get(k) for k in keys} for r in records]
