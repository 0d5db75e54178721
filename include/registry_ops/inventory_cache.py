"""The previous snapshot as the OCI listing's cache (incremental inventory).

Each snapshot of a registry that lists through manifests (kind ``oci``) also keeps, in its run
folder, the manifests (``manifests.parquet``: registry, digest, media type, the exact bytes) and
the image-config fields the records use (``configs.parquet``) that the listing saw. The next run
gives them to the adapter (``registries.known.KnownContent``) with the digest each tag had:

- a tag is asked with one HEAD; only a digest no repository of the registry had costs a GET;
- a manifest or config known by digest is never fetched again;
- cached manifest bytes are hashed again before use, so a damaged cache costs requests, never
  wrong rows.

The records are built by the same code from the same bytes, so an incremental listing equals a
full one (``tests/test_inventory_incremental.py`` checks it row by row). A full listing still
runs when asked (``--full``, the DAG's ``full_listing`` param), when there is no cache, and
every ``inventory.full_every_days`` (default 7) since the last full one, in case the cache went
wrong in a way hashing cannot see (a config field).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .config import Config
from .registries.base import Manifest, Registry
from .registries.known import CONFIG_FIELDS, KnownContent
from .snapshots import SnapshotError, SnapshotMissing, read_latest
from .store import objects

log = logging.getLogger(__name__)

MANIFESTS_NAME = "manifests.parquet"
CONFIGS_NAME = "configs.parquet"
CACHED_KINDS = frozenset({"oci"})

MANIFESTS_SCHEMA = pa.schema(
    [
        ("registry", pa.string()),
        ("digest", pa.string()),
        ("media_type", pa.string()),
        ("manifest", pa.binary()),
    ]
)
CONFIGS_SCHEMA = pa.schema(
    [("registry", pa.string()), ("digest", pa.string()), *((f, pa.string()) for f in CONFIG_FIELDS)]
)


def listing_mode(config: Config, s3: Any, registry: str, now: datetime, full: bool = False) -> dict[str, Any]:
    """How a registry is listed this run: ``{"cache": keys or None, "full_at": ..., "why": ...}``."""
    if config.registry(registry).kind not in CACHED_KINDS:
        return _full("not cached (kind)")
    if full:
        return _full("full listing asked for")
    try:
        where, manifest = read_latest(s3, config.storage.bucket, config.storage.prefixes.inventory)
    except (SnapshotMissing, SnapshotError):
        return _full("no previous snapshot")
    cache = manifest.get("cache")
    full_at = (manifest.get("full_listing_at") or {}).get(registry)
    if not cache or not full_at:
        return _full("the previous snapshot has no cache of it")
    if now - datetime.fromisoformat(full_at) >= timedelta(days=config.inventory.full_every_days):
        return _full(f"last full listing {full_at}")
    return {"cache": {"inventory": where.key, **cache}, "full_at": full_at, "why": "incremental"}


def _full(why: str) -> dict[str, Any]:
    return {"cache": None, "full_at": None, "why": why}


def load_known(
    s3: Any, bucket: str, cache: dict[str, str], registry: str, repositories: list[str]
) -> KnownContent:
    """The cache of one registry: all its manifests and configs (a digest may be in any of its
    repositories) and the tags of the batch's repositories."""
    manifests = _of(objects.get_table(s3, bucket, cache["manifests"]), registry)
    configs = _of(objects.get_table(s3, bucket, cache["configs"]), registry)
    rows = _of(
        objects.get_table(s3, bucket, cache["inventory"]).select(
            ["registry", "repository", "digest", "tags"]
        ),
        registry,
    )
    rows = rows.filter(pc.is_in(rows["repository"], pa.array(repositories, pa.string())))
    tags = {
        (repo, tag): digest
        for repo, digest, names in zip(
            *(rows[c].to_pylist() for c in ("repository", "digest", "tags")), strict=True
        )
        for tag in names or ()
    }
    return known_from(manifests, configs, tags)


def known_from(manifests: pa.Table, configs: pa.Table, tags: dict[tuple[str, str], str]) -> KnownContent:
    """The adapter's cache from the stored tables (manifest bytes are verified on the way)."""
    return KnownContent.verified(
        list(zip(*(manifests[c].to_pylist() for c in ("digest", "media_type", "manifest")), strict=True)),
        {r["digest"]: {f: r[f] for f in CONFIG_FIELDS if r[f] is not None} for r in configs.to_pylist()},
        tags,
    )


def _of(table: pa.Table, registry: str) -> pa.Table:
    return table.filter(pc.equal(table["registry"], registry))


def attach(
    registry: Registry, s3: Any, bucket: str, mode: dict[str, Any], repositories: list[str]
) -> KnownContent | None:
    """Give the adapter its cache for ``repositories`` as ``mode`` says (an empty one lists in
    full and collects the next cache); None for kinds that list without one."""
    if registry.kind not in CACHED_KINDS:
        return None
    cache = mode.get("cache")
    known = load_known(s3, bucket, cache, registry.name, repositories) if cache else KnownContent()
    registry.known = known  # type: ignore[attr-defined]  # OciRegistry's
    return known


def seen_tables(registry: str, known: KnownContent) -> tuple[pa.Table, pa.Table]:
    """What this listing saw, as the next cache's rows."""
    ms: list[Manifest] = sorted(known.seen_manifests.values(), key=lambda m: m.digest)
    manifests = pa.table(
        {
            "registry": [registry] * len(ms),
            "digest": [m.digest for m in ms],
            "media_type": [m.media_type for m in ms],
            "manifest": [m.raw for m in ms],
        },
        schema=MANIFESTS_SCHEMA,
    )
    digests = sorted(known.seen_configs)
    columns = {f: [_text(known.seen_configs[d].get(f)) for d in digests] for f in CONFIG_FIELDS}
    configs = pa.table(
        {"registry": [registry] * len(digests), "digest": digests, **columns}, schema=CONFIGS_SCHEMA
    )
    return manifests, configs


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def merge(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """Parts of a run into one cache table, one row per (registry, digest)."""
    if not tables:
        return schema.empty_table()
    table = pa.concat_tables(tables).sort_by([("registry", "ascending"), ("digest", "ascending")])
    keys = pc.binary_join_element_wise(table["registry"], table["digest"], "\x00")
    first = pc.not_equal(keys, pa.concat_arrays([pa.array([None], pa.string()), keys.combine_chunks()[:-1]]))
    return table.filter(pc.fill_null(first, True))
