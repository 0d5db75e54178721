"""Check an archive end to end (``registry-ops archive verify``): the restore path trusts these
objects, so damage must be found before a restore needs them, not during it.

Checked: every catalog parses and is a catalog; every pack a catalog references exists, hashes
to its name and holds each referenced member under its digest; every layer blob it references
exists and hashes to its digest; the digest index lists every archived image. Each object is read
once however many catalogs reference it (packs whole, blobs streamed).
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..registries.base import digest_of
from .archive import ArchiveStore, _sha256
from .archive_index import shard_of

Member = tuple[str, int, int]  # digest, offset, size


def _check_pack(store: ArchiveStore, key: str, members: dict[Member, set[str]]) -> dict[str, Any] | None:
    """A damaged-record for a pack (None when sound): missing, not its name's hash, bad members."""
    data = store.read_object(key)
    if data is None:
        every = set().union(*members.values())
        return {"key": key, "problem": f"pack {store.url(key)} is missing", "images": every}
    problems = []
    name = key.rsplit("/", 1)[-1].removesuffix(".tar")
    actual = _sha256(data)
    if actual != name:
        problems.append(f"does not hash to its name (it hashes to sha256:{actual})")
    bad = [m for m in members if m[1] + m[2] > len(data) or digest_of(data[m[1] : m[1] + m[2]]) != m[0]]
    if bad:
        problems.append(
            f"{len(bad)} of {len(members)} referenced members do not match their digests "
            f"(e.g. {bad[0][0]} at offset {bad[0][1]})"
        )
    elif problems:
        problems.append("every referenced member still matches its digest")
    if not problems:
        return None
    images = set().union(*(members[m] for m in bad)) if bad else set()
    return {"key": key, "problem": f"pack {store.url(key)} " + "; ".join(problems), "images": images}


def _index_check(
    store: ArchiveStore, docs: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, set[str]]]:
    """The index's state, its damaged objects and missing entries, and catalog -> digests it lists."""
    index = store.index
    pointer, entries, damaged_objects = index.read_all()
    by_catalog: dict[str, set[str]] = defaultdict(set)
    for digest, catalogs in entries.items():
        for catalog in catalogs:
            by_catalog[catalog].add(digest)
    fallback = "; restores by digest read every catalog until `registry-ops archive reindex`"
    damaged = [{"key": k, "problem": p + fallback, "images": set()} for k, p in damaged_objects.items()]
    state = "ok" if pointer else "missing"
    if damaged_objects:
        state = "damaged"
    if pointer is not None:
        unreadable = {hh for hh, key in pointer.shards.items() if key in damaged_objects}
        missing = {
            e["digest"]
            for doc in docs
            for e in doc["images"]
            if shard_of(e["digest"]) not in unreadable and e["catalog"] not in entries.get(e["digest"], ())
        }
        if missing:
            state = "incomplete"
            damaged.append(
                {
                    "key": index.pointer_key,
                    "problem": f"digest index {index.url(index.pointer_key)}: {len(missing)} archived "
                    "images are not in it, so a restore by digest would not find them; "
                    "`registry-ops archive reindex` rebuilds it from the catalogs",
                    "images": missing,
                }
            )
    summary = {
        "state": state,
        "generation": pointer.generation if pointer else None,
        "digests": len(entries),
        "pending_deltas": len(index.pending_keys()),
    }
    return summary, damaged, by_catalog


def verify_archive(store: ArchiveStore, registry: str | None = None, repository: str | None = None) -> dict:
    """Check the archive (or one registry's, or one repository's part); returns a JSON summary
    whose ``damaged`` lists each unsound object, its problem and the images it affects."""
    started = time.perf_counter()
    keys = [k for k in store.catalog_keys(registry, repository) if store.in_scope(k, registry, repository)]
    docs, bad_catalogs = store.read_catalogs(keys)
    packs: dict[str, dict[Member, set[str]]] = defaultdict(lambda: defaultdict(set))
    blobs: dict[str, tuple[str, set[str]]] = {}
    for doc in docs:
        for e in doc["images"]:
            for ref in [e["manifest"], *e["children"], *e["blobs"]]:
                if "offset" in ref:
                    packs[ref["pack"]][(ref["digest"], int(ref["offset"]), int(ref["size"]))].add(e["digest"])
                else:
                    blobs.setdefault(ref["key"], (ref["digest"], set()))[1].add(e["digest"])
    index, damaged, listed = _index_check(store, docs)
    for key, problem in bad_catalogs.items():
        known = listed.get(key, set())
        note = "" if known else " (which images it held is unknown: the digest index does not list it)"
        damaged.append({"key": key, "problem": problem + note, "images": known})

    def check_blob(key: str) -> dict[str, Any] | None:
        digest, images = blobs[key]
        problem = store.blob_problem(key, digest)
        return {"key": key, "problem": problem, "images": images} if problem else None

    with ThreadPoolExecutor(store.workers) as pool:
        found = list(pool.map(lambda k: _check_pack(store, k, packs[k]), sorted(packs)))
        found += list(pool.map(check_blob, sorted(blobs)))
    damaged += [d for d in found if d]
    return {
        "bucket": store.bucket,
        "prefix": store.prefix,
        "scope": "/".join(p for p in (registry, repository) if p) or "everything",
        "catalogs": len(keys),
        "packs": len(packs),
        "blobs": len(blobs),
        "images": sum(len(doc["images"]) for doc in docs),
        "index": index,
        "damaged": [
            {"key": d["key"], "problem": d["problem"], "images_affected": sorted(d["images"])}
            for d in sorted(damaged, key=lambda d: d["key"])
        ],
        "seconds": round(time.perf_counter() - started, 3),
    }
