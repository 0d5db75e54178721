"""Helpers for the archive index and verify tests: archives written through the real executor
(or, where only the index's bookkeeping matters, catalogs written through ``ArchiveStore``
itself), request counters and object corruption on the session's moto S3."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from include.registry_ops.registries.base import OCI_MANIFEST, digest_of
from include.registry_ops.retention.archive import CATALOG_KIND, ArchiveStore, Blob
from include.registry_ops.retention.executor import Limits, execute
from tests.retention_exec.helpers import (
    BUCKET,
    oldest_images,
    plan_for,
    run_ctx,
    seed,
    small_fleet,
    unique,
    visible,
    with_children,
)

NO_CAPS = Limits(max_deletions_per_run=10_000, max_fraction=1.0)


def s3_client(endpoint: str) -> Any:
    """A client of its own, so event hooks and counters stay in one test."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


class Requests:
    """S3 requests a client sends, by operation and by (operation, key)."""

    def __init__(self, client: Any) -> None:
        self.ops: Counter[str] = Counter()
        self.keys: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-parameter-build.s3.*", self._count)

    def _count(self, event_name: str, params: dict[str, Any], **_: Any) -> None:
        op = event_name.rsplit(".", 1)[-1]
        key = params.get("Key") or params.get("Prefix") or ""
        with self._lock:
            self.ops[op] += 1
            self.keys[op, key] += 1

    def reset(self) -> None:
        self.ops.clear()
        self.keys.clear()

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def new_store(client: Any) -> ArchiveStore:
    return ArchiveStore(client, BUCKET, unique("archive-test"))


def archive_fleet(
    registry: Any, store: ArchiveStore, *, n: int = 6, repo_index: int = 0, **run_kw: Any
) -> tuple[Any, list[Any], Any]:
    """Seed a small fleet, expire its n oldest images of one repository through the executor
    into ``store``; returns (repository, the expired images, the run)."""
    fleet = seed(registry, small_fleet(unique()))
    repo = fleet[repo_index]
    specs = visible(registry, repo)
    chosen = oldest_images(specs, n)
    expire = with_children(specs, chosen)
    run = dataclasses.replace(run_ctx(store.s3, **run_kw), store=store)
    [result] = execute(plan_for(registry.name, repo, specs, expire), run, lambda _: registry, limits=NO_CAPS)
    assert result["status"] == "done" and result["deleted"] == len(expire), result
    return repo, chosen, run


def write_catalog(
    store: ArchiveStore, images: int = 3, *, registry: str = "oci-local", repository: str = "idx/app"
) -> tuple[str, list[str]]:
    """One pack of ``images`` OCI manifests and its catalog, written the way archiving writes
    them (``write_pack``, ``write_catalog``); returns the catalog key and the image digests."""
    raws = []
    for _ in range(images):
        config = "sha256:" + uuid.uuid4().hex * 2
        body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"digest": config, "size": 2}}
        raws.append(json.dumps(body).encode())
    pack, members = store.write_pack([Blob(digest_of(r), OCI_MANIFEST, r) for r in raws])
    now = datetime.now(UTC)
    entries = []
    for raw in raws:
        digest = digest_of(raw)
        offset, size = members[digest]
        entries.append(
            {
                "digest": digest,
                "tags": [f"t-{digest[7:15]}"],
                "kind": "image",
                "media_type": OCI_MANIFEST,
                "pushed_at": (now - timedelta(days=90)).isoformat(),
                "size_bytes": len(raw),
                "policy": "test",
                "rule_priority": 1,
                "reason": "test",
                "manifest": {"digest": digest, "media_type": OCI_MANIFEST, "offset": offset, "size": size},
                "children": [],
                "blobs": [],
                "restorable": "manifest",
            }
        )
    doc = {
        "kind": CATALOG_KIND,
        "version": 1,
        "registry": registry,
        "registry_kind": "oci",
        "repository": repository,
        "archive_layers": False,
        "run_id": f"test-{os.getpid()}",
        "archived_at": now.isoformat(),
        "pack": pack,
        "images": entries,
    }
    return store.write_catalog(doc, now), [e["digest"] for e in entries]


def overwrite(s3: Any, key: str, data: bytes) -> None:
    """Damage an object in place, as bit rot or a stray tool would."""
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)


def keys_under(s3: Any, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
