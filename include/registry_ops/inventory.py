"""Fleet inventory: list every image of every registry into one table (see ``schema``).

The work is split so Airflow can map it: registries -> repository names -> batches of
repositories -> one partial table per batch -> one dated snapshot. Errors are kept per
repository: a failing repository is left out whole (never half-listed, which would mislead
count-based retention), named in the snapshot's manifest, and the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from . import schema, storage
from .config import Config, RegistryConfig
from .registries.base import Registry, RegistryError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LATEST_NAME = "latest.json"


@dataclass
class Listing:
    """Result of listing some repositories: rows plus per-repository errors."""

    table: pa.Table
    errors: list[dict[str, str]] = field(default_factory=list)
    repositories: int = 0


def list_repositories(registry: Registry, reg: RegistryConfig) -> list[str]:
    """Repository names of a registry after the config's include/exclude globs."""
    return [r for r in registry.list_repositories() if reg.wants(r)]


def plan_batches(registry: str, repositories: list[str], batch_size: int) -> list[dict[str, Any]]:
    """Split one registry's repositories into mapped-task batches."""
    return [
        {"registry": registry, "batch": i // batch_size, "repositories": repositories[i : i + batch_size]}
        for i in range(0, len(repositories), batch_size)
    ]


def list_batch(registry: Registry, repositories: Iterable[str], snapshot_at: datetime) -> Listing:
    """Inventory rows for some repositories of one registry; failures recorded, not raised."""
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    count = 0
    for repo in repositories:
        count += 1
        try:
            records = registry.list_images(repo)
        except RegistryError as exc:
            log.error("inventory: %s", exc)
            errors.append({"registry": registry.name, "repository": repo, "error": exc.problem})
            continue
        for r in records:
            r["registry"] = registry.name
            r["snapshot_at"] = snapshot_at
        rows.extend(records)
    return Listing(schema.to_table(rows), errors, count)


def run_inventory(
    config: Config, build: Callable[[RegistryConfig], Registry], snapshot_at: datetime | None = None
) -> Listing:
    """The whole inventory in one process (the command line's path)."""
    snapshot_at = snapshot_at or datetime.now(UTC)
    tables, errors, count = [], [], 0
    for reg in config.registries:
        try:
            registry = build(reg)
            repos = list_repositories(registry, reg)
        except (RegistryError, ValueError) as exc:
            errors.append({"registry": reg.name, "repository": "*", "error": str(exc)})
            continue
        part = list_batch(registry, repos, snapshot_at)
        tables.append(part.table)
        errors.extend(part.errors)
        count += part.repositories
    return Listing(combine(tables), errors, count)


def combine(tables: list[pa.Table]) -> pa.Table:
    """Concatenate partial tables, sorted by key for stable, diffable snapshots."""
    if not tables:
        return schema.empty_table()
    table = pa.concat_tables(tables)
    return table.sort_by([(k, "ascending") for k in schema.KEY])


def snapshot_keys(prefix: str, snapshot_at: datetime) -> tuple[str, str]:
    """(parquet key, manifest key) of the dated snapshot: ``<prefix>dt=YYYY-MM-DD/HHMMSSZ/``."""
    base = f"{prefix}dt={snapshot_at:%Y-%m-%d}/{snapshot_at:%H%M%SZ}/"
    return base + "inventory.parquet", base + MANIFEST_NAME


def summarize(table: pa.Table) -> dict[str, Any]:
    """Counts per registry for logs, the Asset extra and the demo summary."""
    frame = table.select(["registry", "repository", "digest", "kind", "size_bytes"]).to_pandas()
    out: dict[str, Any] = {"images": len(frame), "registries": {}}
    for name, group in frame.groupby("registry"):
        out["registries"][name] = {
            "repositories": int(group["repository"].nunique()),
            "images": len(group),
            "indexes": int((group["kind"] == "index").sum()),
            "referrers": int((group["kind"] == "referrer").sum()),
            "bytes": int(group["size_bytes"].fillna(0).sum()),
        }
    return out


def publish_snapshot(
    s3: Any,
    bucket: str,
    prefix: str,
    table: pa.Table,
    errors: list[dict[str, str]],
    snapshot_at: datetime,
    expected_registries: list[str],
) -> dict[str, Any]:
    """Write the dated snapshot, its manifest and ``latest.json``; returns the manifest."""
    key, manifest_key = snapshot_keys(prefix, snapshot_at)
    size = storage.put_table(s3, bucket, key, table)
    failed = sorted({e["registry"] for e in errors if e["repository"] == "*"})
    manifest = {
        "key": key,
        "bucket": bucket,
        "snapshot_at": snapshot_at.isoformat(),
        "bytes": size,
        "schema": list(schema.COLUMNS),
        "complete": not errors,
        "registries_expected": sorted(expected_registries),
        "registries_failed": failed,
        "errors": errors,
        **summarize(table),
    }
    storage.put_json(s3, bucket, manifest_key, manifest)
    storage.put_json(s3, bucket, prefix + LATEST_NAME, {"key": key, "manifest": manifest_key})
    return manifest


def latest_snapshot(s3: Any, bucket: str, prefix: str) -> pa.Table:
    """The newest published snapshot (for later DAGs and the CLI)."""
    pointer = storage.get_json(s3, bucket, prefix + LATEST_NAME)
    uri = f"s3://{bucket}/{pointer['key']}"
    return schema.validate_table(storage.get_table(s3, bucket, pointer["key"]), uri)
