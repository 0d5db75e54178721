"""Cost over time: earlier inventory snapshots, week and month over month, top growers.

Snapshots are found with one paginated listing of the inventory's run layout
(``inventory.snapshot_layout``: ``<prefix>dt=YYYY-MM-DD/HHMMSSZ/manifest.json`` beside the
Parquet file): a snapshot counts once its manifest exists (it is written after the data). The
snapshot in force at a time is the newest one taken at or before it, checked against its
manifest's exact ``snapshot_at`` (folder names are cut to the second) and read through the
layout (kind and schema version checked) and ``schema.validate_table``. Only the columns the
schema requires (to tell an inventory from anything else) plus ``size_bytes`` are decoded; the
layer lists and times are never read.
"""

from __future__ import annotations

import io
import logging
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import schema
from ..config import Config
from ..inventory import snapshot_layout
from ..snapshots import SnapshotError, SnapshotMissing
from ..store import objects
from ..store.runs import ManifestError, RunLayout
from . import cost, tables

log = logging.getLogger(__name__)

COLUMNS = ("registry", "repository", "digest", "kind", "size_bytes")
READ = tuple(dict.fromkeys((*schema.REQUIRED, "size_bytes")))
_RUN = r"dt=(\d{4}-\d{2}-\d{2})/(\d{6})Z/"


@dataclass(frozen=True)
class _Published:
    folder_at: datetime  # from the folder name (to the second)
    manifest_key: str


def published(s3: Any, layout: RunLayout) -> list[_Published]:
    """Every snapshot with a manifest, oldest first (one paginated listing)."""
    found = []
    manifest = re.compile(_RUN + re.escape(layout.manifest_name))
    for item in objects.list_keys(s3, layout.bucket, layout.root):
        key = item["Key"]
        match = manifest.fullmatch(key[len(layout.root) :])
        if match:
            at = datetime.strptime(f"{match[1]} {match[2]}", "%Y-%m-%d %H%M%S").replace(tzinfo=UTC)
            found.append(_Published(at, key))
    return sorted(found, key=lambda p: p.folder_at)


def _utc(at: datetime, what: str) -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"{what} {at.isoformat()} has no time zone (give UTC times)")
    return at.astimezone(UTC)


def _manifest_time(manifest: dict[str, Any], where: str) -> datetime:
    try:
        at = datetime.fromisoformat(str(manifest["snapshot_at"]))
    except (KeyError, ValueError):
        value = manifest.get("snapshot_at")
        raise SnapshotError(f"{where}: snapshot_at missing or not ISO-8601: {value!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


class _Reader:
    """Reads snapshots for one call: each manifest and table at most once."""

    def __init__(self, s3: Any, layout: RunLayout) -> None:
        self.s3, self.layout = s3, layout
        self.manifests: dict[str, tuple[datetime, dict[str, Any]]] = {}
        self.frames: dict[str, pd.DataFrame] = {}

    def manifest(self, key: str) -> tuple[datetime, dict[str, Any]]:
        if key not in self.manifests:
            try:
                doc = self.layout.read_manifest(self.s3, key)
            except ManifestError as exc:
                raise SnapshotError(f"inventory snapshot: {exc}") from None
            self.manifests[key] = (_manifest_time(doc, self.layout.url(key)), doc)
        return self.manifests[key]

    def frame(self, manifest_key: str) -> pd.DataFrame:
        if manifest_key not in self.frames:
            at, doc = self.manifest(manifest_key)
            key = doc.get("key")
            if not isinstance(key, str) or not key:
                raise SnapshotError(f"{self.layout.url(manifest_key)} names no snapshot key: {doc}")
            self.frames[manifest_key] = self._read(key, at)
        return self.frames[manifest_key]

    def _read(self, key: str, at: datetime) -> pd.DataFrame:
        uri = self.layout.url(key)
        data = objects.get_bytes(self.s3, self.layout.bucket, key)
        if data is None:
            raise SnapshotMissing(f"{uri}: the snapshot its manifest names does not exist")
        try:
            parquet = pq.ParquetFile(io.BytesIO(data))
            names = [c for c in READ if c in parquet.schema_arrow.names]
            table = parquet.read(columns=names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise schema.SchemaError(f"{uri}: not a Parquet file: {exc}") from None
        frame = (
            schema.validate_table(table, uri)
            .select(list(COLUMNS))
            .to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        )
        frame["snapshot_at"] = pd.Timestamp(at)
        log.info("reports: inventory snapshot %s (taken %s): %d rows", uri, at.isoformat(), len(frame))
        return frame

    def in_force(self, snapshots: list[_Published], at: datetime) -> str | None:
        """The manifest key of the newest snapshot taken at or before ``at``."""
        n = bisect_right([p.folder_at for p in snapshots], at)
        for candidate in reversed(snapshots[:n]):
            taken, _ = self.manifest(candidate.manifest_key)
            if taken <= at:
                return candidate.manifest_key
        return None


def read_snapshots(
    config: Config, s3: Any, *, now: datetime, at: Iterable[datetime]
) -> dict[datetime, pd.DataFrame | None]:
    """The inventory snapshot in force at each time of ``at`` (None when none was taken by then).

    Frames hold ``registry, repository, digest, kind, size_bytes`` (Int64) and ``snapshot_at``
    (the snapshot's time, from its manifest); times after ``now`` read what was in force at
    ``now`` (a report rerun later does not see later snapshots). Two times in force of the same
    snapshot get the same frame object. A snapshot that is not an inventory raises
    ``schema.SchemaError``, one whose manifest names a missing object ``SnapshotMissing``."""
    now = _utc(now, "now")
    objects.require_bucket(s3, config.storage.bucket, config.source)
    layout = snapshot_layout(config.storage.bucket, config.storage.prefixes.inventory)
    snapshots = published(s3, layout)
    reader = _Reader(s3, layout)
    out: dict[datetime, pd.DataFrame | None] = {}
    for when in at:
        key = reader.in_force(snapshots, min(_utc(when, "snapshot time"), now))
        out[when] = None if key is None else reader.frame(key)
    return out


def weekly(now: datetime, points: int) -> list[datetime]:
    """``points`` times a week apart, ending at ``now`` (oldest first)."""
    if points < 1:
        raise ValueError(f"trend points: {points} (give 1 or more)")
    return [now - timedelta(weeks=n) for n in reversed(range(points))]


def trend(
    config: Config, s3: Any, *, now: datetime, points: int = 8, price_per_gb_month: float | None = None
) -> pd.DataFrame:
    """TREND: stored bytes and cost per registry in the snapshots in force at ``points`` weekly
    times ending at ``now``. A snapshot in force at two of the times (the inventory did not run
    for a week) is one row per registry, keyed by its own ``snapshot_at``; times with no
    snapshot yet give no rows."""
    price = cost.price_of(config.reports, price_per_gb_month)
    return trend_of(read_snapshots(config, s3, now=now, at=weekly(now, points)), price)


def trend_of(found: Mapping[datetime, pd.DataFrame | None], price: float) -> pd.DataFrame:
    """TREND of snapshots already read (:func:`read_snapshots`' result for the weekly times):
    the report reads the trend's and the week/month comparison's snapshots in one pass."""
    frames = {id(f): f for f in found.values() if f is not None}
    parts = []
    for frame in frames.values():
        rows = cost.stored(frame)
        if rows.empty:
            continue
        per = rows.groupby("registry", sort=True).agg(
            images=("digest", "size"), stored_bytes=("size_bytes", "sum")
        )
        parts.append(per.reset_index().assign(snapshot_at=rows["snapshot_at"].iat[0]))
    if not parts:
        return tables.empty(tables.TREND)
    out = pd.concat(parts, ignore_index=True).astype({"images": "int64", "stored_bytes": "int64"})
    out["usd_month"] = cost.usd(out["stored_bytes"].astype("float64"), price)
    return tables.conform(out.sort_values(list(tables.TREND_KEY), kind="stable"), "trend")


def _totals(frame: pd.DataFrame) -> tuple[int, float]:
    return int(frame["size_bytes"].sum()), float(frame["usd_month"].sum())


def _change(before: pd.DataFrame | None, now: pd.DataFrame) -> dict[str, Any] | None:
    if before is None:
        return None
    bytes_before, usd_before = _totals(before)
    bytes_now, usd_now = _totals(now)
    return {
        "stored_bytes_before": bytes_before,
        "stored_bytes_now": bytes_now,
        "usd_month_before": round(usd_before, cost.USD_DECIMALS),
        "usd_month_now": round(usd_now, cost.USD_DECIMALS),
        "change": round((bytes_now - bytes_before) / bytes_before, 4) if bytes_before else None,
    }


def changes(
    current: pd.DataFrame, week_ago: pd.DataFrame | None, month_ago: pd.DataFrame | None
) -> dict[str, dict[str, Any] | None]:
    """Week over week and month over month from ``cost`` tables (``cost.cost_tables(...)["cost"]``
    of the current inventory and of the snapshots in force a week and a month ago; None: no
    snapshot then). ``change`` is the fraction stored bytes moved (0.05 = +5 %: the cost's change
    at one price), None when there were no bytes before; USD rounded to 4 decimals."""
    return {"week_over_week": _change(week_ago, current), "month_over_month": _change(month_ago, current)}


def _per_repository(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby(["registry", "repository"], sort=False).agg(
        team=("team", "first"), bytes=("size_bytes", "sum"), usd=("usd_month", "sum")
    )


def growers(before_cost: pd.DataFrame | None, now_cost: pd.DataFrame, top: int) -> pd.DataFrame:
    """GROWERS: the ``top`` repositories whose stored bytes grew most from ``before_cost`` to
    ``now_cost`` (``cost`` tables); only growth (> 0 bytes) is listed, biggest first. A repository
    new since then grew from 0. No earlier table (None): no rows, nothing to compare with."""
    if top < 1:
        raise ValueError(f"growers: top is {top} (give 1 or more)")
    if before_cost is None:
        return tables.empty(tables.GROWERS)
    merged = _per_repository(now_cost).join(_per_repository(before_cost), how="outer", rsuffix="_before")
    merged["team"] = merged["team"].fillna(merged["team_before"])
    for col in ("bytes", "bytes_before", "usd", "usd_before"):
        merged[col] = merged[col].fillna(0)
    out = merged.reset_index().assign(
        bytes_before=lambda f: f["bytes_before"].astype("int64"),
        bytes_now=lambda f: f["bytes"].astype("int64"),
        usd_month_change=lambda f: f["usd"] - f["usd_before"],
    )
    out["bytes_change"] = out["bytes_now"] - out["bytes_before"]
    out = out[out["bytes_change"] > 0].sort_values(
        ["bytes_change", "registry", "repository"], ascending=[False, True, True], kind="stable"
    )
    return tables.conform(out.head(top), "growers")
