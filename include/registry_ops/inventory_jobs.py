"""Inventory steps as the DAG maps them: each resolves its clients from connections, does one
step and returns small JSON (S3 keys and counts), never the data itself (claim-check).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from . import inventory, inventory_cache, schema
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


def repository_batches(config: Config, registry: str, full: bool = False) -> dict[str, Any]:
    """Batches of one registry's repositories, or the registry's error (the others go on).

    Each batch carries how it lists (``inventory_cache.listing_mode``), decided once here so
    every batch of a registry lists the same way."""
    reg = config.registry(registry)
    try:
        repos = inventory.list_repositories(build_registry(reg), reg)
    except (RegistryError, ValueError) as exc:
        log.error("inventory: registry %s: %s", registry, exc)
        return {"registry": registry, "batches": [], "error": str(exc)}
    mode = inventory_cache.listing_mode(config, s3_client(config), registry, datetime.now(UTC), full)
    log.info("inventory: registry %s: %d repositories, listing: %s", registry, len(repos), mode["why"])
    batches = inventory.plan_batches(registry, repos, config.inventory.batch_size)
    return {"registry": registry, "batches": [{**b, "listing": mode} for b in batches], "error": None}


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
    s3, bucket = s3_client(config), config.storage.bucket
    registry = build_registry(config.registry(batch["registry"]))
    mode = batch.get("listing") or {"cache": None, "full_at": None}
    known = inventory_cache.attach(registry, s3, bucket, mode, batch["repositories"])
    listing = inventory.list_batch(registry, batch["repositories"], listed_at)
    key = part_key(config, run_id, batch)
    objects.put_table(s3, bucket, key, listing.table)
    cache: dict[str, str] | None = None
    if known is not None:
        cache = {"manifests": key.replace(".parquet", ".manifests.parquet")}
        cache["configs"] = key.replace(".parquet", ".configs.parquet")
        manifests, configs = inventory_cache.seen_tables(registry.name, known)
        objects.put_table(s3, bucket, cache["manifests"], manifests)
        objects.put_table(s3, bucket, cache["configs"], configs)
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
    if known is not None:
        log.info("inventory: %s batch %d: cache %s", batch["registry"], batch["batch"], dict(known.stats))
    return {
        "key": key,
        "rows": listing.table.num_rows,
        "errors": listing.errors,
        "listed_at": listed_at.isoformat(),
        "registry": batch["registry"],
        "cache": cache,
        # the cache chain's last full listing: this one, when it listed in full
        "full_at": (mode["full_at"] or listed_at.isoformat()) if known is not None else None,
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
    extra = _publish_cache(
        s3, bucket, inventory.snapshot_layout(bucket, prefix).run_prefix(snapshot_at), parts
    )
    manifest = inventory.publish_snapshot(
        s3,
        bucket,
        prefix,
        _stamped(inventory.combine(tables), snapshot_at),
        errors,
        snapshot_at,
        [r["registry"] for r in registries],
        extra,
    )
    cache_parts = [k for p in parts if p.get("cache") for k in p["cache"].values()]
    objects.delete_keys(s3, bucket, [p["key"] for p in parts] + cache_parts)
    log.info("inventory: snapshot s3://%s/%s: %d images", bucket, manifest["key"], manifest["images"])
    return manifest


def _publish_cache(s3: Any, bucket: str, run: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's cache objects (merged from the parts), and the manifest fields naming them.

    A registry with a failed repository gets no ``full_listing_at``: its next run lists in full,
    so nothing the failure left out is trusted from a cache."""
    cached = [p for p in parts if p.get("cache")]
    if not cached:
        return {}
    keys = {"manifests": run + inventory_cache.MANIFESTS_NAME, "configs": run + inventory_cache.CONFIGS_NAME}
    for what, schema_ in (
        ("manifests", inventory_cache.MANIFESTS_SCHEMA),
        ("configs", inventory_cache.CONFIGS_SCHEMA),
    ):
        tables = [objects.get_table(s3, bucket, p["cache"][what]) for p in cached]
        objects.put_table(s3, bucket, keys[what], inventory_cache.merge(tables, schema_))
    failed = {p["registry"] for p in parts if p["errors"]}
    full_at: dict[str, str] = {}
    for p in cached:
        if p["registry"] not in failed:
            full_at[p["registry"]] = min(full_at.get(p["registry"], p["full_at"]), p["full_at"])
    return {"cache": keys, "full_listing_at": full_at}


def raise_if_incomplete(manifest: dict[str, Any]) -> None:
    """Fail loudly (after publishing) when anything could not be listed."""
    if manifest["errors"]:
        lines = [f"{e['registry']}/{e['repository']}: {e['error']}" for e in manifest["errors"]]
        raise InventoryIncomplete(
            f"inventory incomplete, {len(lines)} failure(s); snapshot {manifest['key']} holds the rest:\n  "
            + "\n  ".join(lines)
        )
