"""Inventory steps as the DAG maps them: each resolves its clients from connections, does one
step and returns small JSON (S3 keys and counts), never the data itself (claim-check).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from . import inventory, schema
from .clients import build_registry
from .config import Config
from .registries.base import RegistryError
from .store import objects
from .store.clients import s3_client

log = logging.getLogger(__name__)


class InventoryIncomplete(RuntimeError):
    """Some registries or repositories could not be listed; the message names each."""


def start(config: Config) -> list[str]:
    """Make sure the bucket exists (parts land there first); the registries to list."""
    objects.require_bucket(s3_client(config), config.storage.bucket, config.source)
    return [r.name for r in config.registries]


def repository_batches(config: Config, registry: str) -> dict[str, Any]:
    """Batches of one registry's repositories, or the registry's error (the others go on)."""
    reg = config.registry(registry)
    try:
        repos = inventory.list_repositories(build_registry(reg), reg)
    except (RegistryError, ValueError) as exc:
        log.error("inventory: registry %s: %s", registry, exc)
        return {"registry": registry, "batches": [], "error": str(exc)}
    log.info("inventory: registry %s: %d repositories", registry, len(repos))
    return {
        "registry": registry,
        "batches": inventory.plan_batches(registry, repos, config.inventory.batch_size),
        "error": None,
    }


def part_key(config: Config, run_id: str, batch: dict[str, Any]) -> str:
    """Where one batch's rows wait for ``publish``: ``<inventory>_parts/<run id>/<registry>-<n>.parquet``."""
    layout = inventory.snapshot_layout(config.storage.bucket, config.storage.prefixes.inventory)
    return f"{layout.parts_prefix(run_id)}{batch['registry']}-{batch['batch']:05d}.parquet"


def list_batch_to_s3(config: Config, batch: dict[str, Any], run_id: str) -> dict[str, Any]:
    """List one batch and park its rows in S3; returns the key, counts, errors and when it listed.

    The time is the listing's own (not the run's logical date: a run scheduled for 00:00 may
    list at 07:13), to the second, as snapshot keys are.
    """
    listed_at = datetime.now(UTC).replace(microsecond=0)
    registry = build_registry(config.registry(batch["registry"]))
    listing = inventory.list_batch(registry, batch["repositories"], listed_at)
    key = part_key(config, run_id, batch)
    objects.put_table(s3_client(config), config.storage.bucket, key, listing.table)
    log.info(
        "inventory: %s batch %d: %d repositories, %d images, %d errors, %d requests %s",
        batch["registry"],
        batch["batch"],
        listing.repositories,
        listing.table.num_rows,
        len(listing.errors),
        registry.requests.total,
        dict(registry.requests.counts),
    )
    return {
        "key": key,
        "rows": listing.table.num_rows,
        "errors": listing.errors,
        "listed_at": listed_at.isoformat(),
    }


def listing_time(parts: list[dict[str, Any]]) -> datetime:
    """When the listing ran: the first batch's start (now, when nothing was listed).

    Derived from the parts, so a retried ``publish`` names the same snapshot.
    """
    times = [datetime.fromisoformat(p["listed_at"]) for p in parts]
    return min(times, default=datetime.now(UTC).replace(microsecond=0))


def _stamped(table: pa.Table, snapshot_at: datetime) -> pa.Table:
    """Every row's ``snapshot_at`` set to the snapshot's, so rows, key and manifest agree."""
    field = schema.ARROW_SCHEMA.field("snapshot_at")
    column = pa.array([snapshot_at] * table.num_rows, type=field.type)
    return table.set_column(table.schema.get_field_index(field.name), field, column)


def publish(config: Config, registries: list[dict[str, Any]], parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine the parts into the snapshot named by the listing's time, write its manifest, drop the parts."""
    s3 = s3_client(config)
    bucket, prefix = config.storage.bucket, config.storage.prefixes.inventory
    snapshot_at = listing_time(parts)
    # each part through the schema: validated, and one written by an older version (without a
    # column added since, e.g. layer_sizes during an upgrade) conformed instead of failing the concat
    tables = [
        schema.validate_table(objects.get_table(s3, bucket, p["key"]), objects.url(bucket, p["key"]))
        for p in parts
    ]
    errors = [
        {"registry": r["registry"], "repository": "*", "error": r["error"]} for r in registries if r["error"]
    ]
    errors += [e for p in parts for e in p["errors"]]
    manifest = inventory.publish_snapshot(
        s3,
        bucket,
        prefix,
        _stamped(inventory.combine(tables), snapshot_at),
        errors,
        snapshot_at,
        [r["registry"] for r in registries],
    )
    objects.delete_keys(s3, bucket, [p["key"] for p in parts])
    log.info("inventory: snapshot s3://%s/%s: %d images", bucket, manifest["key"], manifest["images"])
    return manifest


def raise_if_incomplete(manifest: dict[str, Any]) -> None:
    """Fail loudly (after publishing) when anything could not be listed."""
    if manifest["errors"]:
        lines = [f"{e['registry']}/{e['repository']}: {e['error']}" for e in manifest["errors"]]
        raise InventoryIncomplete(
            f"inventory incomplete, {len(lines)} failure(s); snapshot {manifest['key']} holds the rest:\n  "
            + "\n  ".join(lines)
        )
