"""Pushed images as inventory rows, so a push-triggered scan needs no inventory run.

A pushed image is in no snapshot yet. Each pushed repository is listed through the registry
interface exactly as the inventory lists it (``Registry.list_images``: an index resolved to its
platform children, tags, referrers; on ECR no manifest read beyond the indexes', since a
``BatchGetImage`` counts as a pull), and the rows of the pushed digests are kept with their
children (what is scanned) and the indexes listing them (whose tags make a child protected).
A pushed digest the listing does not show (pushed by digest, untagged, on a kind that lists
only tagged manifests) is read by digest. One registry or repository failing is a problem
named in the result; the others go on, and the next inventory-triggered run covers it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from .. import schema
from ..config import Config, ConfigError, RegistryConfig
from ..registries.base import INDEX_TYPES, NotFound, Registry, RegistryError, link_graph, platform_of
from ..registries.records import manifest_record

log = logging.getLogger(__name__)


@dataclass
class Resolved:
    """Rows of the pushed images, the digests pushed or under a pushed index, and problems."""

    table: pa.Table
    digests: set[str] = field(default_factory=set)
    problems: list[dict[str, str]] = field(default_factory=list)


def from_extras(extras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The images of every ``registry_pushed_images`` event: its extra's ``images`` (recorded
    through the REST API), or its ``payload``'s (an AssetWatcher's trigger event)."""
    out: list[dict[str, Any]] = []
    for n, extra in enumerate(extras):
        if extra.get("from_trigger") and isinstance(extra.get("payload"), dict):
            extra = extra["payload"]
        images = extra.get("images")
        if not isinstance(images, list):
            raise ValueError(f"pushed-images event {n}: extra has no 'images' list: {extra}")
        for image in images:
            if not isinstance(image, dict) or not all(
                image.get(k) for k in ("registry", "repository", "digest")
            ):
                raise ValueError(
                    f"pushed-images event {n}: an image lacks registry/repository/digest: {image}"
                )
            out.append(image)
    return out


def _unlisted(registry: Registry, repository: str, digests: set[str]) -> list[dict[str, Any]]:
    """Records of digests read one by one (and the children of any index among them)."""
    records: dict[str, dict[str, Any]] = {}
    children: dict[str, list[str]] = {}
    platforms: dict[str, str] = {}
    pending = sorted(digests)
    while pending:
        digest = pending.pop()
        if digest in records:
            continue
        try:
            m = registry.get_manifest(repository, digest)
        except NotFound:
            continue  # deleted since the push: nothing to scan
        if m.media_type in INDEX_TYPES:
            entries = m.body.get("manifests", [])
            children[digest] = [e["digest"] for e in entries]
            for e in entries:
                if p := platform_of(e.get("platform")):
                    platforms[e["digest"]] = p
                pending.append(e["digest"])
        records[digest] = manifest_record(registry.kind, repository, m, [], platforms.get(digest), {})
    out = list(records.values())
    for r in out:  # a child read before its index got no platform from the index entry
        r["platform"] = r["platform"] or (platforms.get(r["digest"]) if r["kind"] == "image" else None)
    link_graph(out, children)
    return out


def _closure(records: list[dict[str, Any]], pushed: set[str]) -> tuple[list[dict[str, Any]], set[str]]:
    """The records to keep: pushed digests, their descendants, and indexes listing any of them."""
    by_digest = {r["digest"]: r for r in records}
    wanted: set[str] = set()
    pending = [d for d in pushed if d in by_digest]
    while pending:
        digest = pending.pop()
        if digest not in wanted:
            wanted.add(digest)
            pending += [c for c in by_digest[digest].get("child_digests") or [] if c in by_digest]
    parents = {p for d in wanted for p in by_digest[d].get("parent_digests") or [] if p in by_digest}
    return [r for r in records if r["digest"] in wanted | parents], wanted


def _repository(
    registry: Registry, repository: str, pushed: set[str]
) -> tuple[list[dict[str, Any]], set[str], set[str]]:
    records = registry.list_images(repository)
    listed = {r["digest"] for r in records}
    missing = pushed - listed
    if missing and not registry.capabilities.lists_untagged_manifests:
        extra = _unlisted(registry, repository, missing)
        records += [r for r in extra if r["digest"] not in listed]
        link_graph(records, {r["digest"]: r["child_digests"] for r in records if r["child_digests"]})
    kept, wanted = _closure(records, pushed)
    return kept, wanted, pushed - {r["digest"] for r in records}


def resolve(
    config: Config,
    images: list[dict[str, Any]],
    snapshot_at: datetime,
    build: Callable[[RegistryConfig], Registry],
) -> Resolved:
    """Inventory rows (``schema``) for the pushed images, listed as the inventory lists them."""
    by_repo: dict[tuple[str, str], set[str]] = defaultdict(set)
    for image in images:
        by_repo[(image["registry"], image["repository"])].add(image["digest"])
    rows: list[dict[str, Any]] = []
    digests: set[str] = set()
    problems: list[dict[str, str]] = []
    registries: dict[str, Registry] = {}
    for (name, repository), pushed in sorted(by_repo.items()):
        try:
            reg = config.registry(name)
            if not reg.wants(repository):
                log.info(
                    "scan on push: %s/%s is outside the registry's include/exclude: not scanned",
                    name,
                    repository,
                )
                continue
            registry = registries.get(name) or registries.setdefault(name, build(reg))
            kept, wanted, gone = _repository(registry, repository, pushed)
        except (ConfigError, ValueError, RegistryError) as exc:
            log.error("scan on push: %s/%s: %s", name, repository, exc)
            problems.append({"registry": name, "repository": repository, "error": str(exc)})
            continue
        for digest in sorted(gone):
            log.warning(
                "scan on push: %s/%s@%s: not in the registry (deleted since?)", name, repository, digest
            )
            problems.append({"registry": name, "repository": repository, "error": f"{digest}: not found"})
        for r in kept:
            r.update(registry=name, snapshot_at=snapshot_at)
        rows += kept
        digests |= wanted
    return Resolved(schema.to_table(rows), digests, problems)


def merge(inventory: pa.Table | None, pushed: pa.Table) -> pa.Table:
    """The snapshot's rows with the pushed rows in place of any it had for the same key (a
    retagged image's tags are the registry's now)."""
    if inventory is None or inventory.num_rows == 0:
        return pushed
    keys = {tuple(k.values()) for k in pushed.select(list(schema.KEY)).to_pylist()}
    old = inventory.select(list(schema.KEY)).to_pylist()
    keep = pa.array([tuple(k.values()) not in keys for k in old])
    return pa.concat_tables([inventory.filter(keep), pushed.cast(inventory.schema)])
