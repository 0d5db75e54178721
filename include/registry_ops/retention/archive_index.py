"""The archive's digest index (digest -> catalog keys): a restore by digest reads a constant number
of objects however long the archive's history, instead of every catalog.

Layout under the archive prefix ``P``::

    P index/pending/<registry>/<repository>/<catalog name>
        one immutable delta per catalog (its images' digests), written just before the catalog
        (:meth:`ArchiveStore.write_catalog`), so every catalog that exists has its entries in a
        delta or a shard; named after its catalog, so a damaged delta still says which catalog
    P index/shards/<hh>/<generation>-<sha16>.json
        the compacted entries of the digests whose hex starts with ``hh``; immutable
    P index/current.json
        the pointer: its generation, the shard object per ``hh``, the deltas it merged

Why this shape: mapped tasks on several machines write catalogs at once, and none of them writes
a shared object: each writes its own delta (one PUT per pack). Only :meth:`DigestIndex.compact`
(the end of a retention run) replaces the shared pointer, and only conditionally (``If-Match`` on
the ETag it read; ``If-None-Match`` when creating it): concurrent compactions form a chain in
which each pointer holds everything its predecessor held, so a merged entry is never dropped,
and a delta is deleted only by the compaction whose committed pointer merged it.

A lookup costs one LIST of the pending deltas, the pointer, one shard, the deltas not merged yet
(few: compaction runs after every retention run) and then the catalog(s) named. A missing or
damaged index makes :meth:`ArchiveStore.search` scan every catalog instead (with a warning); the
next compaction, or ``registry-ops archive reindex``, rebuilds it from the catalogs.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ..store import objects
from ..store.blobs import hex_of, sha256_hex
from .archive import ArchiveError

if TYPE_CHECKING:
    from .archive import ArchiveStore

log = logging.getLogger(__name__)

INDEX_KIND = "registry-ops/retention-archive-index"
SHARD_KIND = INDEX_KIND + "-shard"
DELTA_KIND = INDEX_KIND + "-delta"
ATTEMPTS = 5  # lookups or compactions that lose a race to a concurrent compaction, then give up


class IndexUnusable(ArchiveError):
    """The index cannot answer (missing or damaged): the caller scans the catalogs instead."""


class IndexDamaged(IndexUnusable):
    """The pointer exists but is not a readable index pointer (``etag``: to replace it safely)."""

    def __init__(self, message: str, etag: str) -> None:
        super().__init__(message)
        self.etag = etag


class _Superseded(Exception):
    """A shard named by the pointer just read is gone: a compaction replaced the pointer since."""


@dataclass(frozen=True)
class Pointer:
    generation: int
    shards: dict[str, str]  # hh -> shard object key
    merged: list[str]  # the delta keys this generation merged
    etag: str


def shard_of(digest: str) -> str:
    return hex_of(digest)[:2].lower()


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _problem(doc: Any, kind: str) -> str | None:
    """What makes ``doc`` not an index object of ``kind`` (None when it is one)."""
    if not isinstance(doc, dict):
        return "is not a JSON object"
    if doc.get("kind") != kind:
        return f"kind is {doc.get('kind')!r}, not {kind!r}"
    fields: dict[str, type] = {
        INDEX_KIND: {"generation": int, "shards": dict, "merged": list},
        SHARD_KIND: {"entries": dict},
        DELTA_KIND: {"catalog": str, "digests": list},
    }[kind]
    for name, typ in fields.items():
        if not isinstance(doc.get(name), typ):
            return f"field {name!r} is missing or not a {typ.__name__}"
    if kind == SHARD_KIND and not all(isinstance(v, list) for v in doc["entries"].values()):
        return "an entry is not a list of catalog keys"
    return None


class DigestIndex:
    """The digest index of one :class:`ArchiveStore` (see the module docstring)."""

    def __init__(self, store: ArchiveStore) -> None:
        self.store = store
        root = f"{store.prefix}index/"
        self.pointer_key = root + "current.json"
        self.pending_prefix = root + "pending/"
        self.shards_prefix = root + "shards/"

    def url(self, key: str) -> str:
        return f"s3://{self.store.bucket}/{key}"

    # -- keys ---------------------------------------------------------------------------------
    def delta_key(self, catalog_key: str) -> str:
        base = self.store.catalog_prefix()
        if not catalog_key.startswith(base):
            raise ValueError(f"{catalog_key!r} is not a catalog key under {base!r}")
        return self.pending_prefix + catalog_key[len(base) :]

    def catalog_of_delta(self, delta_key: str) -> str:
        return self.store.catalog_prefix() + delta_key[len(self.pending_prefix) :]

    def _generation_of(self, shard_key: str) -> int:
        name = shard_key.rsplit("/", 1)[-1]
        try:
            return int(name.split("-", 1)[0])
        except ValueError:
            return 0

    # -- objects ------------------------------------------------------------------------------
    def _read(self, key: str, kind: str) -> dict[str, Any] | None:
        """An index object, None when missing; ArchiveError naming it when damaged."""
        data = self.store.read_object(key)
        return None if data is None else self._parse(key, data, kind)

    def _parse(self, key: str, data: bytes, kind: str) -> dict[str, Any]:
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ArchiveError(f"index object {self.url(key)} is not JSON ({exc})") from None
        problem = _problem(doc, kind)
        if problem:
            raise ArchiveError(f"index object {self.url(key)} {problem}")
        return doc

    def _list(self, prefix: str) -> list[str]:
        found = objects.list_keys(self.store.s3, self.store.bucket, prefix)
        return sorted(o["Key"] for o in found if o["Key"].endswith(".json"))

    def pending_keys(self) -> list[str]:
        return self._list(self.pending_prefix)

    def read_pointer(self) -> Pointer | None:
        """The current pointer, None when there is none; IndexDamaged when it is unreadable."""
        try:
            resp = self.store.s3.get_object(Bucket=self.store.bucket, Key=self.pointer_key)
        except ClientError as exc:
            if objects.is_missing(exc):
                return None
            raise
        data, etag = resp["Body"].read(), resp["ETag"]
        try:
            doc = self._parse(self.pointer_key, data, INDEX_KIND)
        except ArchiveError as exc:
            raise IndexDamaged(str(exc), etag) from None
        return Pointer(doc["generation"], dict(doc["shards"]), list(doc["merged"]), etag)

    def write_delta(self, catalog_key: str, digests: Iterable[str]) -> str:
        """The delta of one catalog (write-once: a rerun finds the identical object)."""
        key = self.delta_key(catalog_key)
        doc = {"kind": DELTA_KIND, "catalog": catalog_key, "digests": sorted(set(digests))}
        self.store.put_once(key, _dumps(doc), "application/json")
        return key

    def _write_shard(self, hh: str, generation: int, entries: dict[str, set[str]], created: list[str]) -> str:
        doc = {
            "kind": SHARD_KIND,
            "shard": hh,
            "generation": generation,
            "entries": {d: sorted(keys) for d, keys in sorted(entries.items())},
        }
        data = _dumps(doc)
        key = f"{self.shards_prefix}{hh}/{generation:010d}-{sha256_hex(data)[:16]}.json"
        if self.store.put_once(key, data, "application/json"):
            created.append(key)
        return key

    def _commit(self, generation: int, shards: dict[str, str], merged: list[str], etag: str | None) -> bool:
        """Replace the pointer only if it is still the one read (``etag``; None: none existed)."""
        doc = {
            "kind": INDEX_KIND,
            "version": 1,
            "generation": generation,
            "written_at": datetime.now(UTC).isoformat(),
            "shards": dict(sorted(shards.items())),
            "merged": merged,
        }
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self.store.s3.put_object(
                Bucket=self.store.bucket,
                Key=self.pointer_key,
                Body=_dumps(doc),
                ContentType="application/json",
                **condition,
            )
        except ClientError as exc:
            # 412: another compaction replaced the pointer; 409: one is replacing it right now;
            # 404 (If-Match on a pointer that is gone): one removed it
            status = objects.http_status(exc)
            lost = objects.is_precondition_failed(exc) or objects.is_missing(exc) or status == 409
            if lost:  # another compaction replaced (or removed) the pointer since it was read
                return False
            raise
        return True

    def _delete(self, keys: list[str]) -> None:
        """Drop merged deltas and replaced shards (one left behind is merged again, harmlessly)."""
        objects.delete_keys(self.store.s3, self.store.bucket, keys)

    # -- lookup -------------------------------------------------------------------------------
    def lookup(self, digest: str) -> list[str]:
        """The catalog keys whose catalogs hold ``digest``; IndexUnusable when the index cannot say.

        Pending deltas are listed before the pointer is read: a delta deleted after the listing
        was merged into a pointer committed before its deletion, so a delta that vanished or a
        shard that vanished means a newer pointer exists, and the lookup starts again.
        """
        hh = shard_of(digest)
        for _ in range(ATTEMPTS):
            pending = self.pending_keys()
            pointer = self.read_pointer()
            if pointer is None:
                raise IndexUnusable(f"the digest index {self.url(self.pointer_key)} does not exist yet")
            try:
                return sorted(self._lookup_once(digest, hh, pointer, pending))
            except _Superseded:
                continue
            except ArchiveError as exc:
                raise IndexUnusable(str(exc)) from None
        raise IndexUnusable(f"{self.url(self.pointer_key)} changed under {ATTEMPTS} lookups in a row")

    def _lookup_once(self, digest: str, hh: str, pointer: Pointer, pending: list[str]) -> set[str]:
        keys: set[str] = set()
        if hh in pointer.shards:
            shard = self._read(pointer.shards[hh], SHARD_KIND)
            if shard is None:
                raise _Superseded
            keys.update(shard["entries"].get(digest, []))
        merged = set(pointer.merged)
        for key in pending:
            if key in merged:
                continue
            try:
                delta = self._read(key, DELTA_KIND)
            except ArchiveError as exc:  # its catalog may hold the digest: let the caller read it
                log.warning("archive index: %s; reading its catalog instead", exc)
                keys.add(self.catalog_of_delta(key))
                continue
            if delta is None:
                raise _Superseded
            if digest in delta["digests"]:
                keys.add(delta["catalog"])
        return keys

    # -- compaction ---------------------------------------------------------------------------
    def compact(self) -> dict[str, Any]:
        """Merge the pending deltas into new shard versions and a new pointer (building the
        index from the catalogs when there is none or it is damaged); returns what it did."""
        return self._run(rebuild=False)

    def rebuild(self) -> dict[str, Any]:
        """Rebuild the whole index from the catalogs (and the pending deltas)."""
        return self._run(rebuild=True)

    def _run(self, rebuild: bool) -> dict[str, Any]:
        created: list[str] = []  # shard objects written for a pointer that then lost a race
        for _ in range(ATTEMPTS):
            try:
                pointer = self.read_pointer()
                etag = pointer.etag if pointer else None
            except IndexDamaged as exc:
                log.warning("archive index: %s; rebuilding it from the catalogs", exc)
                pointer, etag = None, exc.etag
            self._drop_orphans(created, pointer)
            if pointer is None or rebuild:
                result = self._rebuild(pointer, etag, created)
            else:
                result = self._merge(pointer, created)
            if result is not None:
                return result
            log.info("archive index: another compaction replaced %s first; again", self.url(self.pointer_key))
        raise ArchiveError(f"{self.url(self.pointer_key)}: {ATTEMPTS} compactions in a row lost the race")

    def _drop_orphans(self, created: list[str], pointer: Pointer | None) -> None:
        """Shards this call wrote for a pointer that lost: no later pointer can name them unless
        the winner (same generation, identical bytes) did, and then the current pointer does."""
        if created and pointer is not None:
            self._delete([k for k in created if k not in set(pointer.shards.values())])
        created.clear()

    def _read_deltas(self, keys: list[str]) -> tuple[dict[str, tuple[str, list[str]]], dict[str, str]]:
        """Each readable delta's (catalog, digests); a damaged delta is replaced by its catalog's
        digests, and stays pending (returned with the reason) when that catalog cannot be read."""

        def one(key: str) -> tuple[str, tuple[str, list[str]] | None, str | None]:
            try:
                delta = self._read(key, DELTA_KIND)
            except ArchiveError as exc:
                catalog = self.catalog_of_delta(key)
                try:
                    doc = self.store.read_catalog(catalog)
                except ArchiveError as cat_exc:
                    return key, None, f"{exc}; and its catalog: {cat_exc}"
                log.warning("archive index: %s; took its digests from its catalog", exc)
                return key, (catalog, [e["digest"] for e in doc["images"]]), None
            if delta is None:
                return key, None, None  # merged and deleted by another compaction since the listing
            return key, (delta["catalog"], list(delta["digests"])), None

        deltas: dict[str, tuple[str, list[str]]] = {}
        kept: dict[str, str] = {}
        with ThreadPoolExecutor(self.store.workers) as pool:
            for key, got, problem in pool.map(one, keys):
                if got is not None:
                    deltas[key] = got
                elif problem:
                    log.warning("archive index: left pending: %s", problem)
                    kept[key] = problem
        return deltas, kept

    def _merge(self, pointer: Pointer, created: list[str]) -> dict[str, Any] | None:
        deltas, kept = self._read_deltas(self.pending_keys())
        summary = {"rebuilt": False, "generation": pointer.generation, "deltas_merged": 0}
        if not deltas:
            return {**summary, "shards_written": 0, "left_pending": kept}
        by_shard: dict[str, dict[str, set[str]]] = defaultdict(dict)
        for catalog, digests in deltas.values():
            for d in digests:
                by_shard[shard_of(d)].setdefault(d, set()).add(catalog)
        generation = pointer.generation + 1

        def write(hh: str) -> tuple[str, str]:
            entries: dict[str, set[str]] = {}
            if hh in pointer.shards:
                old = self._read(pointer.shards[hh], SHARD_KIND)
                if old is None:
                    raise _Superseded
                entries = {d: set(keys) for d, keys in old["entries"].items()}
            for d, keys in by_shard[hh].items():
                entries.setdefault(d, set()).update(keys)
            return hh, self._write_shard(hh, generation, entries, created)

        try:
            with ThreadPoolExecutor(self.store.workers) as pool:
                written = dict(pool.map(write, sorted(by_shard)))
        except _Superseded:
            return None
        except ArchiveError as exc:
            log.warning("archive index: %s; rebuilding it from the catalogs", exc)
            return self._rebuild(pointer, pointer.etag, created)
        shards = {**pointer.shards, **written}
        if not self._commit(generation, shards, sorted(deltas), pointer.etag):
            return None
        superseded = [pointer.shards[hh] for hh in written if hh in pointer.shards]
        self._delete(sorted(deltas) + superseded)
        log.info(
            "archive index: generation %d merged %d pending deltas into %d shards",
            generation,
            len(deltas),
            len(written),
        )
        return {
            **summary,
            "generation": generation,
            "deltas_merged": len(deltas),
            "shards_written": len(written),
            "left_pending": kept,
        }

    def _rebuild(
        self, pointer: Pointer | None, etag: str | None, created: list[str]
    ) -> dict[str, Any] | None:
        """The index from every catalog plus the pending deltas (listed first: a catalog written
        meanwhile has its delta written before it, so it is either listed here or stays pending)."""
        pending = self.pending_keys()
        old_shards = self._list(self.shards_prefix)
        generation = 1 + max(
            [pointer.generation if pointer else 0, *(self._generation_of(k) for k in old_shards)]
        )
        catalogs = self.store.catalog_keys()
        docs, damaged = self.store.read_catalogs(catalogs)
        entries = self._old_entries(pointer)
        for doc in docs:
            for e in doc["images"]:
                entries[shard_of(e["digest"])].setdefault(e["digest"], set()).add(e["catalog"])
        deltas, kept = self._read_deltas(pending)
        for catalog, digests in deltas.values():
            for d in digests:
                entries[shard_of(d)].setdefault(d, set()).add(catalog)
        with ThreadPoolExecutor(self.store.workers) as pool:
            shards = dict(
                pool.map(
                    lambda hh: (hh, self._write_shard(hh, generation, entries[hh], created)), sorted(entries)
                )
            )
        if not self._commit(generation, shards, sorted(deltas), etag):
            return None
        live = set(shards.values())
        self._delete(sorted(deltas) + [k for k in old_shards if k not in live])
        log.warning(
            "archive index: rebuilt from %d catalogs (%d unreadable) and %d pending deltas: generation %d",
            len(docs),
            len(damaged),
            len(deltas),
            generation,
        )
        return {
            "rebuilt": True,
            "generation": generation,
            "catalogs": len(docs),
            "deltas_merged": len(deltas),
            "shards_written": len(shards),
            "digests": sum(len(v) for v in entries.values()),
            "damaged_catalogs": damaged,
            "left_pending": kept,
        }

    def _old_entries(self, pointer: Pointer | None) -> dict[str, dict[str, set[str]]]:
        """The readable entries of the index being replaced: a rebuild keeps them, because a
        catalog still being written (its delta merged, itself not yet listed) is in no listing."""
        entries: dict[str, dict[str, set[str]]] = defaultdict(dict)
        if pointer is None:
            return entries

        def one(hh: str) -> tuple[str, dict[str, Any] | None]:
            try:
                return hh, self._read(pointer.shards[hh], SHARD_KIND)
            except ArchiveError as exc:
                log.warning("archive index: %s; its entries come from the catalogs alone", exc)
                return hh, None

        with ThreadPoolExecutor(self.store.workers) as pool:
            for hh, doc in pool.map(one, sorted(pointer.shards)):
                for d, keys in (doc or {}).get("entries", {}).items():
                    entries[hh].setdefault(d, set()).update(keys)
        return entries

    # -- everything (verify) ------------------------------------------------------------------
    def read_all(self) -> tuple[Pointer | None, dict[str, set[str]], dict[str, str]]:
        """The pointer, every entry (shards and pending deltas) and the damaged index objects."""
        damaged: dict[str, str] = {}
        entries: dict[str, set[str]] = defaultdict(set)
        try:
            pointer = self.read_pointer()
        except IndexDamaged as exc:
            return None, {}, {self.pointer_key: str(exc)}
        pending = self.pending_keys()
        shard_keys = list(pointer.shards.values()) if pointer else []

        def one(key: str) -> tuple[str, dict[str, Any] | None, str | None]:
            kind = DELTA_KIND if key.startswith(self.pending_prefix) else SHARD_KIND
            try:
                doc = self._read(key, kind)
            except ArchiveError as exc:
                return key, None, str(exc)
            return key, doc, None if doc is not None or kind == DELTA_KIND else "is missing"

        with ThreadPoolExecutor(self.store.workers) as pool:
            for key, doc, problem in pool.map(one, shard_keys + pending):
                if problem:
                    damaged[key] = problem if problem != "is missing" else f"{self.url(key)} is missing"
                elif doc is not None and doc["kind"] == SHARD_KIND:
                    for d, keys in doc["entries"].items():
                        entries[d].update(keys)
                elif doc is not None:
                    for d in doc["digests"]:
                        entries[d].add(doc["catalog"])
        return pointer, dict(entries), damaged
