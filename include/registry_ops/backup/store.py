"""Backup snapshots over the one blob store: where they are, how they are read back.

Two layouts, one bucket (``storage.bucket``)::

    <archive prefix>  (storage.prefixes.archive: the retention archive's blob store, shared)
      blobs/sha256/<hex>                   layers (full backups, the archive): one object per blob
      packs/sha256/<hex>.tar               manifests and config blobs, deterministic tars
      backup-catalogs/sha256/<hex>.json.gz one registry's catalog (``catalog.py``), by its sha256
    <backup prefix>   (storage.prefixes.backup: ``store.runs.RunLayout``, kind "backup")
      dt=YYYY-MM-DD/HHMMSSZ/manifest.json  one snapshot: its registries' catalogs, every object it
                                           needs with its sha256, mode, counts, failures
      latest.json                          the newest snapshot that completed and verified

A snapshot is named by when it was taken (``YYYYMMDDTHHMMSSZ``, UTC) and lives at
``dt=<date>/<time>/``. Every object it needs is named by its own sha256 (blobs by their digest,
packs and catalogs by the hash of their bytes), so the manifest's ``objects`` map is
``key -> sha256`` and checking an object is hashing it.

Readers (``restore.py``, ``drill.py``, ``registry-ops backup verify``) go through
:class:`SnapshotStore`: :meth:`~SnapshotStore.resolve` a snapshot, :meth:`~SnapshotStore.read_catalog`
of one registry, then :meth:`~SnapshotStore.manifest_bytes` and :meth:`~SnapshotStore.open_layer`
for its content. Every read is checked against its digest; a missing or corrupt object raises
:class:`BackupError` naming the object and the images that need it.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from ..store import objects
from ..store.blobs import Blob, BlobError, BlobStore, build_pack, digest_of, sha256_hex
from ..store.runs import MANIFEST_NAME, RunLayout, RunMissing
from .catalog import Catalog, CatalogError, decode, encode

KIND = "backup"
SCHEMA_VERSION = 1
CATALOGS = "backup-catalogs/sha256/"
SNAPSHOT_ID = re.compile(r"^(\d{8})T(\d{6})Z$")
_MANIFEST_KEY = re.compile(r"dt=(\d{4})-(\d{2})-(\d{2})/(\d{6})Z/" + re.escape(MANIFEST_NAME) + "$")
NEWEST_SHOWN = 5
USERS_SHOWN = 10


class BackupError(BlobError):
    """A backup object is missing, unreadable or does not match its checksum; the message names
    the object and, where known, the images that need it."""


class SnapshotNotFound(ValueError):
    """A snapshot asked for that does not exist (the message names it and the newest that do)."""


class NotInSnapshot(ValueError):
    """A registry asked for that the snapshot does not hold (the message names those it does)."""


class BackupBlobs(BlobStore):
    """The blob store as backups use it: the same layout and objects, BackupError on damage."""

    error = BackupError
    name = "backup store"


def snapshot_id(taken_at: datetime) -> str:
    """``YYYYMMDDTHHMMSSZ`` of a time (UTC; naive is UTC): a snapshot's name."""
    at = taken_at.astimezone(UTC) if taken_at.tzinfo else taken_at.replace(tzinfo=UTC)
    return f"{at:%Y%m%dT%H%M%SZ}"


def taken_at_of(snapshot: str) -> datetime:
    """The time a snapshot id names; SnapshotNotFound when it is not one."""
    m = SNAPSHOT_ID.match(snapshot)
    if not m:
        raise SnapshotNotFound(
            f"{snapshot!r} is not a snapshot id (YYYYMMDDTHHMMSSZ, e.g. 20261127T020000Z) nor 'latest'"
        )
    try:
        return datetime.strptime(snapshot, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SnapshotNotFound(f"{snapshot!r} is not a snapshot id: no such date or time") from None


@dataclass(frozen=True)
class Stored:
    """An object found by listing the store (presence, size and age without reading it)."""

    key: str
    size: int
    last_modified: datetime


class _HashedStream(io.RawIOBase):
    """A stored blob as a stream, hashed while read: the end raises BackupError on a mismatch."""

    def __init__(self, chunks: Iterator[bytes], digest: str, fail: Any) -> None:
        super().__init__()
        self._chunks, self._digest, self._fail = chunks, digest, fail
        self._hash = hashlib.sha256()
        self._buf = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            if self._done:
                return 0
            chunk = next(self._chunks, None)
            if chunk is None:
                self._done = True
                got = "sha256:" + self._hash.hexdigest()
                if got != self._digest:
                    raise self._fail(got)
                return 0
            self._buf = memoryview(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._hash.update(self._buf[:n])
        self._buf = self._buf[n:]
        return n


class SnapshotStore:
    """Backup snapshots in ``bucket``: their manifests under ``backup_prefix`` (a RunLayout of kind
    "backup"), their catalogs, packs and blobs in :attr:`blobs` (the store under the archive prefix)."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        blob_prefix: str,
        backup_prefix: str,
        *,
        kms_key_id: str | None = None,
        workers: int = 8,
    ) -> None:
        self.s3, self.bucket = s3, bucket
        self.sse = objects.sse_params(kms_key_id)
        self.blobs = BackupBlobs(s3, bucket, blob_prefix, workers, self.sse)
        self.layout = RunLayout(bucket, backup_prefix, KIND, SCHEMA_VERSION)
        self._catalogs: dict[str, Catalog] = {}

    @classmethod
    def from_config(cls, config: Any, s3: Any) -> SnapshotStore:
        """The store of a ``config.Config``: its bucket, archive and backup prefixes, the backup's
        KMS key (SSE-S3 without one) and worker count."""
        prefixes = config.storage.prefixes
        return cls(
            s3,
            config.storage.bucket,
            prefixes.archive,
            prefixes.backup,
            kms_key_id=config.backup.kms_key_id,
            workers=config.backup.workers,
        )

    # -- keys ---------------------------------------------------------------------------------
    def url(self, key: str) -> str:
        return objects.url(self.bucket, key)

    def manifest_key(self, snapshot: str) -> str:
        return self.layout.manifest_key(self.layout.run_prefix(taken_at_of(snapshot)))

    def catalog_key(self, sha: str) -> str:
        return f"{self.blobs.prefix}{CATALOGS}{sha}.json.gz"

    @property
    def stored_prefixes(self) -> tuple[str, ...]:
        """The prefixes under the blob store that backups write to (and prune may delete from)."""
        p = self.blobs.prefix
        return (f"{p}blobs/", f"{p}packs/", f"{p}{CATALOGS}")

    # -- listing ------------------------------------------------------------------------------
    def list_stored(self) -> dict[str, Stored]:
        """Every blob, pack and backup catalog in the store (three listings, 1,000 keys a page):
        how a run confirms the objects it reuses are present without a request per object."""
        out: dict[str, Stored] = {}
        for prefix in self.stored_prefixes:
            for o in objects.list_keys(self.s3, self.bucket, prefix):
                out[o["Key"]] = Stored(o["Key"], int(o.get("Size", 0)), o["LastModified"])
        return out

    def list_snapshots(self) -> list[dict[str, Any]]:
        """Every snapshot whose manifest exists, newest first: ``snapshot``, ``taken_at`` (ISO 8601
        UTC), ``key`` of its manifest, ``latest`` (the pointer names it). One listing and the
        pointer; the manifests themselves are not read (:meth:`resolve` one for its content)."""
        pointer = self.layout.read_pointer(self.s3)
        latest_key = pointer.get("manifest") if pointer else None
        found = []
        for o in objects.list_keys(self.s3, self.bucket, self.layout.root + "dt="):
            m = _MANIFEST_KEY.search(o["Key"])
            if not m or o["Key"] != self.layout.root + m.group(0):
                continue
            sid = f"{m.group(1)}{m.group(2)}{m.group(3)}T{m.group(4)}Z"
            found.append(
                {
                    "snapshot": sid,
                    "taken_at": taken_at_of(sid).isoformat(),
                    "key": o["Key"],
                    "latest": o["Key"] == latest_key,
                }
            )
        return sorted(found, key=lambda s: s["snapshot"], reverse=True)

    # -- snapshots ----------------------------------------------------------------------------
    def resolve(self, snapshot: str) -> dict[str, Any]:
        """The manifest of ``snapshot`` ("latest" or an id); SnapshotNotFound naming the id asked
        for and the newest that exist."""
        if snapshot == "latest":
            found = self.layout.latest(self.s3)
            if found is None:
                raise SnapshotNotFound(
                    f"no backup snapshot is latest yet ({self.url(self.layout.latest_key)} does not "
                    f"exist){self._newest_hint()}"
                )
            return found[1]
        key = self.manifest_key(snapshot)
        try:
            return self.layout.read_manifest(self.s3, key)
        except RunMissing:
            raise SnapshotNotFound(
                f"backup snapshot {snapshot!r} does not exist ({self.url(key)}){self._newest_hint()}"
            ) from None

    def _newest_hint(self) -> str:
        newest = self.list_snapshots()[:NEWEST_SHOWN]
        if not newest:
            return f"; there are no snapshots under {self.url(self.layout.root)}"
        names = ", ".join(s["snapshot"] + (" (latest)" if s["latest"] else "") for s in newest)
        return f"; the newest: {names}"

    def read_catalog(self, manifest: dict[str, Any], registry: str) -> Catalog:
        """One registry's catalog of a snapshot, checked against the sha256 the manifest gives
        (BackupError naming it: every image of the registry needs it); NotInSnapshot when the
        snapshot holds no such registry."""
        entry = (manifest.get("registries") or {}).get(registry)
        if not entry or not isinstance(entry.get("catalog"), dict):
            held = ", ".join(sorted(manifest.get("registries") or {})) or "none"
            raise NotInSnapshot(
                f"snapshot {manifest.get('snapshot')!r} holds no catalog of registry {registry!r} "
                f"(it holds: {held})"
            )
        ref = entry["catalog"]
        key, sha = ref["key"], ref["sha256"]
        cached = self._catalogs.get(sha)
        if cached is not None:
            return cached
        needs = f"every image of registry {registry} in snapshot {manifest.get('snapshot')} needs it"
        data = self.blobs.read_object(key)
        if data is None:
            raise BackupError(f"catalog {self.url(key)} is missing ({needs})")
        if sha256_hex(data) != sha:
            raise BackupError(
                f"catalog {self.url(key)} does not match its sha256 {sha} (it hashes to "
                f"{sha256_hex(data)}; {needs})"
            )
        try:
            catalog = decode(data, self.url(key))
        except CatalogError as exc:
            raise BackupError(f"{exc} ({needs})") from None
        self._catalogs[sha] = catalog
        return catalog

    def write_catalog(self, catalog: Catalog, present: Container[str] = ()) -> tuple[dict[str, Any], bool]:
        """Store a catalog under its sha256 unless ``present`` (keys known to exist) has it, and
        read back what was written. Returns its reference (key, sha256, size) and whether it was
        PUT."""
        data = encode(catalog)
        sha = sha256_hex(data)
        key = self.catalog_key(sha)
        ref = {"key": key, "sha256": sha, "size": len(data)}
        if key in present:
            return ref, False
        self.blobs.put_verified(key, data, "application/gzip", "catalog")
        return ref, True

    # -- writing ------------------------------------------------------------------------------
    def put_pack(self, blobs: list[Blob], present: Container[str] = ()) -> tuple[str, dict[str, Any], bool]:
        """Store the blobs as one deterministic pack and read it back (the pack must hash to its
        name, every member to its digest). A pack ``present`` already holds (landed before a
        crash) is not sent again, only read back. Returns its key, each member's location
        (``{"pack", "offset", "size"}`` by digest) and whether it was PUT."""
        data, members = build_pack(blobs)
        sha = sha256_hex(data)
        key = self.blobs.pack_key(sha)
        put = key not in present
        if put:
            self.blobs.put_once(key, data, "application/x-tar")
        back = self.blobs.read_object(key)
        if back is None or sha256_hex(back) != sha:
            raise BackupError(f"pack {self.url(key)}: read-back does not hash to its name")
        for digest, (offset, size) in members.items():
            if digest_of(back[offset : offset + size]) != digest:
                raise BackupError(f"pack {self.url(key)}: member {digest} does not match")
        return key, {d: {"pack": key, "offset": o, "size": n} for d, (o, n) in members.items()}, put

    def put_blob(self, digest: str, fetch: Callable[[], IO[bytes]]) -> tuple[str, int]:
        """Store one blob (a layer) under its digest from ``fetch`` and read it back whole
        (BackupError unless it hashes to ``digest``). The caller knows it is not stored yet (a
        listing); an object that appeared meanwhile is kept (If-None-Match) and checked.
        Returns its key and the bytes sent."""
        key = self.blobs.blob_key(digest)
        body = fetch()
        try:
            body.seek(0, io.SEEK_END)
            size = body.tell()
            body.seek(0)
            self.blobs.put_once(key, body, "application/octet-stream")
        finally:
            body.close()
        found = self.blobs.verify_blob(key, digest)  # read back whole: BackupError unless it hashes
        if not found:
            raise BackupError(f"blob {self.url(key)}: missing right after it was written")
        return key, size

    # -- content ------------------------------------------------------------------------------
    def manifest_bytes(self, catalog: Catalog, digest: str) -> bytes:
        """A manifest's (or config blob's) bytes out of its pack, checked against ``digest`` (a
        config stored as a blob object is read from there)."""
        loc = catalog.objects.get(digest)
        if not loc or not ("pack" in loc or "key" in loc):
            raise BackupError(
                f"{digest}: the catalog of registry {catalog.registry} has no stored location for it "
                f"(needed by {needed_by(catalog, digest)})"
            )
        if "pack" not in loc:
            with self.open_layer(catalog, digest) as stream:  # its errors name the images
                return stream.read()
        try:
            return self.blobs.read_member({**loc, "digest": digest})
        except BlobError as exc:
            raise BackupError(f"{exc} (needed by {needed_by(catalog, digest)})") from None

    def open_layer(self, catalog: Catalog, digest: str) -> IO[bytes]:
        """A blob as a stream, hashed while read (BackupError at the end when it does not match):
        a layer from ``blobs/``, or a config out of its pack. BackupError when the catalog has no
        stored location for it (a metadata snapshot taken before the layer was stored) or the
        object is missing."""
        loc = catalog.objects.get(digest)
        if loc and "pack" in loc:
            return io.BytesIO(self.manifest_bytes(catalog, digest))
        if not loc or "key" not in loc:
            raise BackupError(
                f"blob {digest}: the catalog of registry {catalog.registry} has no stored location "
                f"for it (not stored by a full backup or the archive when the snapshot was taken; "
                f"needed by {needed_by(catalog, digest)})"
            )
        key = loc["key"]
        chunks = self.blobs._stream(key)
        if chunks is None:
            raise BackupError(f"blob {self.url(key)} is missing (needed by {needed_by(catalog, digest)})")

        def fail(got: str) -> BackupError:
            return BackupError(
                f"blob {self.url(key)} does not hash to {digest} (got {got}; needed by "
                f"{needed_by(catalog, digest)})"
            )

        return io.BufferedReader(_HashedStream(chunks, digest, fail), objects.READ_CHUNK)


_USERS: dict[int, tuple[Catalog, dict[str, set[tuple[str, str]]]]] = {}
_USERS_LOCK = threading.Lock()


def _users(catalog: Catalog) -> dict[str, set[tuple[str, str]]]:
    """digest -> {(repository, manifest digest)} of the manifests that need it, indexes and
    referrers over them included (what a restore of that image would miss). Built once per
    catalog (errors about one catalog come in numbers)."""
    with _USERS_LOCK:
        hit = _USERS.get(id(catalog))
        if hit is not None and hit[0] is catalog:
            return hit[1]
    direct: dict[str, set[tuple[str, str]]] = {}
    parents: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for repo in catalog.repositories:
        for m in repo.manifests:
            me = (repo.name, m.digest)
            for dep in {m.digest, *m.blobs()}:
                direct.setdefault(dep, set()).add(me)
            for up in [*m.children, *([m.subject] if m.subject else [])]:
                parents.setdefault((repo.name, up), set()).add(me)
    out: dict[str, set[tuple[str, str]]] = {}
    for dep, users in direct.items():
        seen, todo = set(), list(users)
        while todo:
            u = todo.pop()
            if u not in seen:
                seen.add(u)
                todo.extend(parents.get(u, ()))
        out[dep] = seen
    with _USERS_LOCK:
        if len(_USERS) >= 16:
            _USERS.clear()
        _USERS[id(catalog)] = (catalog, out)
    return out


def images_needing(catalog: Catalog, digest: str) -> list[str]:
    """``<registry>/<repository>@<digest> [tags]`` of every image that needs ``digest``, tagged
    ones first."""
    users = _users(catalog).get(digest, set())
    tags_of: dict[tuple[str, str], list[str]] = {}
    for repo in catalog.repositories:
        for tag, d in repo.tags.items():
            tags_of.setdefault((repo.name, d), []).append(tag)
    named = [
        (not tags_of.get(u), f"{catalog.registry}/{u[0]}@{u[1]}", sorted(tags_of.get(u, []))) for u in users
    ]
    return [f"{n} [{', '.join(t)}]" if t else n for _, n, t in sorted(named)]


def needed_by(catalog: Catalog, digest: str, limit: int = USERS_SHOWN) -> str:
    """A short list of the images needing ``digest`` for an error message."""
    users = images_needing(catalog, digest)
    if not users:
        return "no image of the catalog"
    more = f" and {len(users) - limit} more" if len(users) > limit else ""
    return "; ".join(users[:limit]) + more
