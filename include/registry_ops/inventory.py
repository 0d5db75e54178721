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

from . import schema
from .config import Config, RegistryConfig
from .registries.base import Registry, RegistryError
from .store import objects
from .store.runs import LATEST_NAME as LATEST_NAME  # the devstack reads the pointer by this name
from .store.runs import RunLayout

log = logging.getLogger(__name__)
SNAPSHOT_KIND = "registry-ops/inventory-snapshot"
SNAPSHOT_SCHEMA_VERSION = 1  # the manifest and pointer fields below; bump when they change meaning
SNAPSHOT_NAME = "inventory.parquet"


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
    config: Config,
    build: Callable[[RegistryConfig], Registry],
    snapshot_at: datetime | None = None,
    prepare: Callable[[Registry, list[str]], None] | None = None,
) -> Listing:
    """The whole inventory in one process (the command line's path). ``prepare(registry,
    repositories)`` runs before each registry is listed (the CLI's ``--incremental`` gives the
    adapter its cache there)."""
    snapshot_at = snapshot_at or datetime.now(UTC)
    tables, errors, count = [], [], 0
    for reg in config.registries:
        try:
            registry = build(reg)
            repos = list_repositories(registry, reg)
        except (RegistryError, ValueError) as exc:
            errors.append({"registry": reg.name, "repository": "*", "error": str(exc)})
            continue
        if prepare is not None:
            prepare(registry, repos)
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


def snapshot_layout(bucket: str, prefix: str) -> RunLayout:
    """The inventory's runs: ``<prefix>dt=YYYY-MM-DD/HHMMSSZ/``, ``<prefix>latest.json``."""
    return RunLayout(bucket, prefix, SNAPSHOT_KIND, SNAPSHOT_SCHEMA_VERSION)


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
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the dated snapshot, then its manifest, then ``latest.json``; returns the manifest.
    ``extra``: more manifest fields (the listing cache's keys, ``inventory_cache``)."""
    layout = snapshot_layout(bucket, prefix)
    run = layout.run_prefix(snapshot_at)
    key = run + SNAPSHOT_NAME
    size = objects.put_table(s3, bucket, key, table)
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
        **(extra or {}),
    }
    return layout.publish(s3, run, manifest, named={"key": key})


def latest_snapshot(s3: Any, bucket: str, prefix: str) -> pa.Table:
    """The newest published snapshot's rows, validated (for later DAGs and the CLI)."""
    from .snapshots import read_latest  # it reads this module's layout

    where, _ = read_latest(s3, bucket, prefix)
    return schema.validate_table(objects.get_table(s3, bucket, where.key), where.uri)
