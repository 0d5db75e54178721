"""Check a snapshot end to end (``registry-ops backup verify``): every object its manifest lists
is read whole and hashed, so damage is found before a restore needs the object, not during it.

Checked: each registry's catalog (its sha256), each pack (hashes to its name, and every member a
catalog locates in it hashes to its digest), each blob (hashes to its digest). A damaged object
is reported with the images that need it (``<registry>/<repository>@<digest> [tags]``), so a
person knows what a restore would lose; the other objects are still checked.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from ..store import objects
from ..store.blobs import digest_of, sha256_hex
from .catalog import Catalog
from .store import BackupError, SnapshotStore, images_needing

SHOWN = 20


def _check_pack(store: SnapshotStore, key: str, sha: str, members: list[tuple[str, str, dict]]) -> tuple:
    """(problem, bad (registry, digest) pairs, bytes read) of one pack; problem None when sound."""
    data = store.blobs.read_object(key)
    if data is None:
        return f"pack {store.url(key)} is missing", [(r, d) for r, d, _ in members], 0
    bad = [
        (r, d)
        for r, d, loc in members
        if digest_of(data[int(loc["offset"]) : int(loc["offset"]) + int(loc["size"])]) != d
    ]
    problems = []
    if sha256_hex(data) != sha:
        problems.append(f"does not match its checksum (sha256 {sha}; it hashes to {sha256_hex(data)})")
    if bad:
        problems.append(f"{len(bad)} of {len(members)} members do not match their digests (e.g. {bad[0][1]})")
    elif problems:
        problems.append("every member the catalogs locate in it still matches its digest")
    return (f"pack {store.url(key)} " + "; ".join(problems) if problems else None), bad, len(data)


def _check_blob(store: SnapshotStore, key: str, sha: str, members: list[tuple[str, str, dict]]) -> tuple:
    chunks = store.blobs._stream(key)
    users = [(r, d) for r, d, _ in members]
    if chunks is None:
        return f"blob {store.url(key)} is missing", users, 0
    h, size = hashlib.sha256(), 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    if h.hexdigest() != sha:
        return (
            f"blob {store.url(key)} does not match its checksum (it hashes to sha256:{h.hexdigest()})",
            users,
            size,
        )
    return None, [], size


def verify_snapshot(store: SnapshotStore, snapshot: str = "latest") -> dict[str, Any]:
    """Read and hash every object of the snapshot; ``damaged``: each bad object with its problem
    and the images that need it. SnapshotNotFound when there is no such snapshot."""
    manifest = store.resolve(snapshot)
    damaged: list[dict[str, Any]] = []
    catalogs: dict[str, Catalog] = {}
    catalog_keys = set()
    for name, entry in sorted((manifest.get("registries") or {}).items()):
        catalog_keys.add(entry["catalog"]["key"])
        try:
            catalogs[name] = store.read_catalog(manifest, name)
        except BackupError as exc:
            damaged.append(
                {"key": entry["catalog"]["key"], "problem": str(exc), "images": [f"every image of {name}"]}
            )
    members: dict[str, list[tuple[str, str, dict]]] = defaultdict(list)
    for name, catalog in catalogs.items():
        for digest, loc in catalog.objects.items():
            members[loc.get("pack") or loc.get("key")].append((name, digest, loc))
    todo = sorted((k, v) for k, v in (manifest.get("objects") or {}).items() if k not in catalog_keys)

    def one(item: tuple[str, str]) -> tuple[str, tuple]:
        key, sha = item
        check = _check_pack if key.endswith(".tar") and "/packs/" in f"/{key}" else _check_blob
        try:
            return key, check(store, key, sha, members.get(key, []))
        except BackupError as exc:
            return key, (str(exc), [(r, d) for r, d, _ in members.get(key, [])], 0)

    read = 0
    with ThreadPoolExecutor(store.blobs.workers) as pool:
        for key, (problem, bad, size) in pool.map(one, todo):
            read += size
            if problem:
                images = sorted({i for r, d in bad for i in images_needing(catalogs[r], d)})
                damaged.append({"key": key, "problem": problem, "images": images})
    for d in damaged:
        d["images_total"] = len(d["images"])
        d["images"] = d["images"][:SHOWN]
    return {
        "snapshot": manifest["snapshot"],
        "taken_at": manifest["taken_at"],
        "mode": manifest.get("mode"),
        "objects": len(manifest.get("objects") or {}),
        "bytes_read": read,
        "damaged": damaged,
        "ok": not damaged,
    }


QUARANTINE = "quarantine/"


def quarantine(store: SnapshotStore, damaged: list[dict[str, Any]], now: datetime) -> list[dict[str, str]]:
    """Move each damaged object out of the store (``registry-ops backup verify --quarantine``).

    Why: the store is write-once and a backup reuses what is present, so a damaged object would
    be reused by every later snapshot and the next drill would fail the same way. Moved (copied
    under ``<backup prefix>quarantine/<UTC stamp>/<key>``, the copy confirmed, then the original
    deleted), the next backup finds it missing and stores it again from the registry, while a
    person can still look at the bytes. Nothing of value is lost: a restore cannot use bytes
    that do not match their digest. Returns ``{key, moved_to}`` per object moved."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    moved: list[dict[str, str]] = []
    for entry in damaged:
        key = entry["key"]
        if not objects.exists(store.s3, store.bucket, key):
            continue  # missing: nothing to move, the next backup stores it again
        target = f"{store.layout.root}{QUARANTINE}{stamp}/{key}"
        store.s3.copy_object(
            Bucket=store.bucket, Key=target, CopySource={"Bucket": store.bucket, "Key": key}, **store.sse
        )
        if not objects.exists(store.s3, store.bucket, target):
            raise BackupError(f"{store.url(key)} not quarantined: its copy {store.url(target)} is missing")
        errors = objects.delete_keys(store.s3, store.bucket, [key])
        if errors:
            raise BackupError(f"{store.url(key)} copied to {store.url(target)} but not deleted: {errors}")
        moved.append({"key": key, "moved_to": target})
    return moved
