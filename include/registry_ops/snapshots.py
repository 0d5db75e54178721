"""Which inventory snapshot a scan or retention run plans on: the newest, never a stale one.

Several queued inventory Asset events can trigger one run, in an order Airflow does not
guarantee. Planning on the oldest of them once expired 374 images of a snapshot taken before
the deletions a newer one (3 to expire) already showed. So the run takes the event with the
newest ``snapshot_at`` and refuses it when ``inventory/latest.json`` names a newer one; with no
event it takes ``latest.json``. Both callers (``retention.jobs``, ``scan.jobs``) use this module;
the pointer and manifest are read through the inventory's run layout (``store.runs``), which
refuses a schema version newer than this code reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
from botocore.exceptions import ClientError

from . import schema
from .config import Config
from .inventory import snapshot_layout
from .store import objects
from .store.runs import ManifestError, RunMissing

log = logging.getLogger(__name__)


class SnapshotError(ValueError):
    """The run cannot plan on any snapshot; retrying will not change that."""


class SnapshotMissing(SnapshotError):
    """No inventory snapshot where one should be (none published yet, a fresh bucket)."""


class SnapshotStale(SnapshotError):
    """The chosen snapshot is older than the newest one known."""


@dataclass(frozen=True)
class Location:
    """Where a snapshot is and when its listing ran."""

    bucket: str
    key: str
    snapshot_at: datetime

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def describe(self) -> str:
        return f"{self.uri} (taken {self.snapshot_at.isoformat()})"

    def as_dict(self) -> dict[str, str]:
        return {"bucket": self.bucket, "key": self.key, "snapshot_at": self.snapshot_at.isoformat()}


@dataclass(frozen=True)
class Snapshot:
    """The chosen snapshot and its validated rows."""

    location: Location
    frame: pd.DataFrame


def _time(value: Any, what: str) -> datetime:
    try:
        when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        raise SnapshotError(f"{what}: snapshot_at is not an ISO-8601 time: {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _missing(exc: ClientError) -> bool:
    return objects.is_missing(exc) or objects.error_code(exc) == "NoSuchBucket"


def _no_snapshot(bucket: str, key: str) -> SnapshotMissing:
    return SnapshotMissing(
        f"no inventory snapshot at s3://{bucket}/{key}; run the registry_inventory DAG first "
        "(or plan on a file: `registry-ops inventory --out FILE`, then `--inventory FILE`)"
    )


def newest_event(config: Config, extras: list[dict[str, Any]]) -> Location | None:
    """The triggering event with the newest ``snapshot_at`` (not the last in the list)."""
    found = []
    for n, extra in enumerate(extras):
        if not extra.get("key"):
            continue  # not an inventory snapshot event (e.g. one created by hand without extra)
        if not extra.get("snapshot_at"):
            raise SnapshotError(f"inventory event {n} names {extra['key']} but no snapshot_at: {extra}")
        at = _time(extra["snapshot_at"], f"inventory event {n} ({extra['key']})")
        found.append(Location(extra.get("bucket") or config.storage.bucket, extra["key"], at))
    return max(found, key=lambda loc: loc.snapshot_at, default=None)


def read_latest(s3: Any, bucket: str, prefix: str) -> tuple[Location, dict[str, Any]]:
    """The snapshot ``<prefix>latest.json`` names and its manifest (the one reader of the
    pointer). SnapshotMissing when there is none or it names nothing; a pointer or manifest of an
    unknown (newer) schema version, or another kind, is a SnapshotError naming it."""
    layout = snapshot_layout(bucket, prefix)
    try:
        pointer = layout.read_pointer(s3)
        if pointer is None:
            raise _no_snapshot(bucket, layout.latest_key)
        if not pointer.get("key") or not pointer.get("manifest"):
            where = layout.url(layout.latest_key)
            raise SnapshotMissing(f"{where}: names no snapshot and manifest: {pointer}")
        manifest = layout.read_manifest(s3, pointer["manifest"])
    except RunMissing:
        raise _no_snapshot(bucket, pointer["manifest"]) from None
    except ManifestError as exc:
        raise SnapshotError(f"inventory snapshot: {exc}") from None
    at = _time(manifest.get("snapshot_at"), layout.url(pointer["manifest"]))
    return Location(bucket, pointer["key"], at), manifest


def latest(config: Config, s3: Any) -> Location:
    """The snapshot ``latest.json`` names, with its manifest's ``snapshot_at``.

    A missing bucket raises ``storage.BucketMissing`` (naming it and the config file)."""
    objects.require_bucket(s3, config.storage.bucket, config.source)
    return read_latest(s3, config.storage.bucket, config.storage.prefixes.inventory)[0]


def choose(config: Config, s3: Any, extras: list[dict[str, Any]]) -> Location:
    """The newest triggering event's snapshot, or ``latest.json``'s; refuse a stale one."""
    newest_known = latest(config, s3)
    event = newest_event(config, extras)
    if event is None:
        return newest_known
    if event.snapshot_at < newest_known.snapshot_at:
        raise SnapshotStale(
            f"inventory snapshot {event.describe()}, the newest of {len(extras)} triggering event(s), "
            f"is older than the newest known {newest_known.describe()}: refusing to plan on a stale "
            "snapshot (a run triggered by the newer one plans on it)"
        )
    return event


def load_table(config: Config, s3: Any, extras: list[dict[str, Any]]) -> tuple[Location, pa.Table]:
    """Choose the snapshot (see :func:`choose`) and read its rows as Arrow, validated against the
    schema (for callers that add rows before they need a frame)."""
    where = choose(config, s3, extras)
    try:
        table = objects.get_table(s3, where.bucket, where.key)
    except ClientError as exc:
        if _missing(exc):
            raise _no_snapshot(where.bucket, where.key) from None
        raise
    log.info(
        "inventory: planning on %s, %d rows (%d triggering event(s))",
        where.describe(),
        table.num_rows,
        len(extras),
    )
    return where, schema.validate_table(table, where.uri)


def load(config: Config, s3: Any, extras: list[dict[str, Any]], lists: str = "python") -> Snapshot:
    """Choose the snapshot (see :func:`choose`) and read its rows, validated against the schema;
    ``lists``: as :func:`schema.built_frame` gives the list columns."""
    where, table = load_table(config, s3, extras)
    return Snapshot(where, schema.built_frame(table, lists))
