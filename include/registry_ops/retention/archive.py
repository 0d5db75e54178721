"""Archive before delete: expired images go to S3, content-addressed, and are read back and
checked against their digests before anything is deleted.

Layout under the archive prefix ``P`` (``storage.prefixes.archive``)::

    P packs/sha256/<hex>.tar     manifests (an index's children too) and config blobs of up to
                                 ``retention.archive_batch`` images of one repository: a plain tar
                                 whose members are ``blobs/sha256/<hex>``, named by its own sha256
    P blobs/sha256/<hex>         layers (``archive_layers``): one object per blob, stored once for
                                 the whole fleet however many images share it
    P images/<registry>/<repository>/<UTC stamp>-<hex16>.json
                                 the catalog of one pack: per image its tags, media type, push time,
                                 size, rule, reason, archive time and where its archived blobs are
    P index/...                  the digest index (digest -> catalogs): a delta per catalog,
                                 compacted shards and a pointer; see ``archive_index.py``

Why packs rather than one object per manifest: every object costs a write and a read-back, so
one per manifest is at least two S3 requests per image (moto answers ~250 requests/s here, so
50,000 images would take minutes; on AWS it is also ~$0.01 per 1,000 images) while a pack costs
four requests per thousand images. Layers are the bytes that matter and the ones images share,
so they alone get an object each, stored once. ``tar -x`` on a pack gives back every manifest
as ``blobs/sha256/<hex>``, no tool of ours needed.

Write-once and idempotent: every object is written with ``If-None-Match: *``. Pack and blob names
are their sha256 and packs are deterministic (members sorted, no times in the headers), so a
retry or a rerun after a crash finds the identical bytes already there (412) and only verifies
them. Verified: each object is read back in full; a pack must hash to its name and every member
to its digest, a blob to its digest, a catalog to the bytes written. The catalog is written last:
an image counts as archived only once its catalog entry has been read back.

Packs, blobs, write-once puts and verification are the generic blob store's
(``store/blobs.py``); :class:`ArchiveStore` is the archive's kind of catalog over it (backup
snapshots are the next kind, over the same blobs).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import pandas as pd
import requests

from ..registries.base import INDEX_TYPES, ImageRead, Manifest, Registry, RegistryError
from ..store.blobs import Blob, BlobError, BlobStore
from ..store.blobs import hex_of as hex_of  # restore imports it from here
from ..store.blobs import sha256_hex as _sha256

log = logging.getLogger(__name__)

CATALOG_KIND = "registry-ops/retention-archive-catalog"
READ_CHUNK = 1 << 20
SPOOL_IN_MEMORY = 8 << 20  # blobs up to 8 MiB stay in memory while fetched; larger ones spill to disk


class ArchiveError(BlobError):
    """An archive object is missing, unreadable or does not match its digest."""


class ArchiveMissing(ArchiveError):
    """An archive object that should exist does not."""


def _spool(chunks_: Iterable[bytes], digest: str, what: str) -> IO[bytes]:
    """Copy a stream to a spooled temp file, checking it hashes to ``digest``; rewound."""
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - returned to the caller
    h = hashlib.sha256()
    for chunk in chunks_:
        h.update(chunk)
        out.write(chunk)
    if "sha256:" + h.hexdigest() != digest:
        out.close()
        raise ArchiveError(f"{what} {digest}: content hashes to sha256:{h.hexdigest()}")
    out.seek(0)
    return out


def catalog_problem(doc: Any) -> str | None:
    """What makes a parsed object not a catalog this code can restore from (None: it is one)."""
    if not isinstance(doc, dict):
        return "is not a JSON object"
    if doc.get("kind") != CATALOG_KIND:
        return f"is not a catalog: kind is {doc.get('kind')!r}, not {CATALOG_KIND!r}"
    for name in ("registry", "repository", "run_id", "archived_at", "pack"):
        if not isinstance(doc.get(name), str):
            return f"field {name!r} is missing or not a string"
    if not isinstance(doc.get("images"), list):
        return "field 'images' is missing or not a list"
    for i, entry in enumerate(doc["images"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            return f"images[{i}]: not an object with a digest"
        if not isinstance(entry.get("tags"), list) or not isinstance(entry.get("restorable"), str):
            return f"images[{i}] ({entry['digest']}): 'tags' or 'restorable' is missing"
        refs = entry.get("children"), entry.get("blobs")
        if not isinstance(entry.get("manifest"), dict) or not all(isinstance(r, list) for r in refs):
            return f"images[{i}] ({entry['digest']}): 'manifest', 'children' or 'blobs' is missing"
        for ref in [entry["manifest"], *entry["children"], *entry["blobs"]]:
            if not isinstance(ref, dict) or not isinstance(ref.get("digest"), str):
                return f"images[{i}] ({entry['digest']}): a blob reference has no digest"
            if not ({"offset", "size"} <= set(ref) or "key" in ref):
                return f"images[{i}] ({entry['digest']}): {ref['digest']} has neither a pack place nor a key"
    return None


@dataclass
class Search:
    """What :meth:`ArchiveStore.search` found: entries, and the catalogs it could not read."""

    hits: list[dict[str, Any]]
    damaged: dict[str, str]  # catalog key -> problem (missing ones included)
    via_index: bool  # looked up in the digest index rather than by reading every catalog


class ArchiveStore(BlobStore):
    """The archive in one S3 bucket under one prefix (see the module docstring for the layout):
    the archive's catalogs and their digest index over the blob store's packs and blobs."""

    error = ArchiveError
    name = "archive"

    # -- keys ---------------------------------------------------------------------------------
    def catalog_prefix(self, registry: str | None = None, repository: str | None = None) -> str:
        prefix = f"{self.prefix}images/"
        if registry:
            prefix += f"{registry}/"
            if repository:
                prefix += f"{repository}/"
        return prefix

    def place_of(self, catalog_key: str) -> tuple[str, str]:
        """(registry, repository) of a catalog key: ``images/<registry>/<repository>/<name>``."""
        registry, _, rest = catalog_key[len(self.catalog_prefix()) :].partition("/")
        return registry, rest.rpartition("/")[0]

    def in_scope(self, catalog_key: str, registry: str | None, repository: str | None) -> bool:
        reg, repo = self.place_of(catalog_key)
        return (registry is None or reg == registry) and (repository is None or repo == repository)

    # -- catalogs -----------------------------------------------------------------------------
    def write_catalog(self, doc: dict[str, Any], archived_at: datetime) -> str:
        """Write a catalog (the commit point of an archive) and read it back.

        Its digest-index delta is written first, so no catalog ever exists without an index
        entry (a delta whose catalog never got written names a catalog lookups find missing).
        """
        data = json.dumps(doc, separators=(",", ":"), default=str).encode()
        sha = _sha256(data)
        key = (
            self.catalog_prefix(doc["registry"], doc["repository"])
            + f"{archived_at:%Y%m%dT%H%M%S%fZ}-{sha[:16]}.json"
        )
        self.index.write_delta(key, [e["digest"] for e in doc["images"]])
        self.put_verified(key, data, "application/json", "catalog")
        return key

    def catalog_keys(self, registry: str | None = None, repository: str | None = None) -> list[str]:
        """Catalog keys, newest first; with a repository, only that repository's (not nested ones)."""
        prefix = self.catalog_prefix(registry, repository)
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json"))
        if repository:
            keys = [k for k in keys if "/" not in k[len(prefix) :]]
        return sorted(keys, key=lambda k: k.rsplit("/", 1)[1], reverse=True)

    def read_catalog(self, key: str) -> dict[str, Any]:
        """A catalog with each entry completed (shared fields, ``catalog``, ``note``, pack keys);
        ArchiveError naming the object when it is missing, not JSON or not a catalog."""
        data = self._get(key)
        if data is None:
            raise ArchiveMissing(f"catalog {self.url(key)} is missing")
        try:
            doc = json.loads(data)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ArchiveError(f"catalog {self.url(key)} is not JSON ({exc})") from None
        problem = catalog_problem(doc)
        if problem:
            raise ArchiveError(f"catalog {self.url(key)} {problem}")
        shared = {k: doc[k] for k in ("registry", "repository", "run_id", "archived_at")}
        for entry in doc["images"]:
            entry.update(shared, catalog=key, note=restore_note(doc, entry))
            for ref in [entry["manifest"], *entry["children"], *entry["blobs"]]:
                if "offset" in ref:
                    ref["pack"] = doc["pack"]
        return doc

    def read_catalogs(self, keys: list[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """The catalogs that read well, and per damaged one its problem (each logged as a WARNING:
        one bad object must not hide the rest of the archive)."""

        def one(key: str) -> tuple[str, dict[str, Any] | str]:
            try:
                return key, self.read_catalog(key)
            except ArchiveError as exc:
                return key, str(exc)

        docs: list[dict[str, Any]] = []
        damaged: dict[str, str] = {}
        with ThreadPoolExecutor(self.workers) as pool:
            for key, got in pool.map(one, keys):
                if isinstance(got, dict):
                    docs.append(got)
                else:
                    log.warning("archive: skipping a damaged catalog: %s", got)
                    damaged[key] = got
        return docs, damaged

    # -- the digest index (archive_index.py) --------------------------------------------------
    @functools.cached_property
    def index(self) -> Any:
        from .archive_index import DigestIndex

        return DigestIndex(self)

    def compact_index(self) -> dict[str, Any]:
        """Merge the pending index deltas (run once at the end of a retention run); builds the
        index from the catalogs the first time. Safe to run concurrently."""
        return self.index.compact()

    def reindex(self) -> dict[str, Any]:
        """Rebuild the digest index from every catalog (``registry-ops archive reindex``)."""
        return self.index.rebuild()

    def search(
        self,
        registry: str | None,
        repository: str | None,
        digest: str | None = None,
        tag: str | None = None,
    ) -> Search:
        """Entries matching a digest or a tag, newest archive first, and the catalogs that could
        not be read. By digest alone it asks the digest index (a constant number of requests);
        when the index cannot answer, and by tag, it reads the catalogs in scope."""
        keys: list[str] | None = None
        if digest and not tag:
            from .archive_index import IndexUnusable

            try:
                keys = [k for k in self.index.lookup(digest) if self.in_scope(k, registry, repository)]
            except IndexUnusable as exc:
                log.warning(
                    "archive: %s; scanning every catalog instead (`registry-ops archive reindex` "
                    "rebuilds the index)",
                    exc,
                )
        via_index = keys is not None
        if keys is None:
            keys = self.catalog_keys(registry, repository)
        docs, damaged = self.read_catalogs(keys)
        hits = [
            e
            for doc in docs
            for e in doc["images"]
            if (repository is None or e["repository"] == repository)
            and (digest is None or e["digest"] == digest)
            and (tag is None or tag in e["tags"])
        ]
        return Search(sorted(hits, key=lambda e: e["archived_at"], reverse=True), damaged, via_index)

    def find(
        self,
        registry: str | None,
        repository: str | None,
        digest: str | None = None,
        tag: str | None = None,
    ) -> list[dict[str, Any]]:
        """Archived image entries matching a digest or a tag, newest archive first (damaged
        catalogs are skipped with a warning; :meth:`search` also says which)."""
        return self.search(registry, repository, digest, tag).hits


# -- reading blobs out of registries ----------------------------------------------------------
def _fetch_blob(registry: Registry, repository: str, digest: str) -> IO[bytes]:
    """A blob streamed out of the registry (``Registry.open_blob``: GET on the distribution API,
    ``GetDownloadUrlForLayer`` and the pre-signed URL on ECR, a file in a layout) into a spooled
    file, checked against its digest while it is read: S3 needs a body it can rewind."""
    with registry.open_blob(repository, digest) as stream:
        return _spool(
            iter(lambda: stream.read(READ_CHUNK), b""), digest, f"registry {registry.name}/{repository} blob"
        )


# -- archiving a batch of images --------------------------------------------------------------
@dataclass
class ArchiveResult:
    """What one call to :func:`archive_images` achieved, per digest."""

    catalog: str | None = None
    pack: str | None = None
    archived: dict[str, str] = field(default_factory=dict)  # digest -> catalog key
    gone: set[str] = field(default_factory=set)
    failures: dict[str, str] = field(default_factory=dict)


def _ref(digest: str, media_type: str, members: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Where a blob is in the pack (the pack key is the catalog's; :meth:`read_catalog` adds it)."""
    offset, size = members[digest]
    return {"digest": digest, "media_type": media_type, "offset": offset, "size": size}


@functools.lru_cache(maxsize=8192)
def _body(manifest: Manifest) -> dict[str, Any]:
    """A manifest's parsed JSON, once per manifest (it is asked for several times per image)."""
    return manifest.body


def _children(manifest: Manifest) -> list[str]:
    if manifest.media_type not in INDEX_TYPES:
        return []
    return [e["digest"] for e in _body(manifest).get("manifests", [])]


def _blob_descriptors(manifest: Manifest) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    if manifest.media_type in INDEX_TYPES:
        return None, []
    body = _body(manifest)
    return body.get("config"), list(body.get("layers") or [])


def _needs(digest: str, manifests: dict[str, Manifest]) -> set[str]:
    """Every manifest an image's archive holds: itself and, for an index, its children (nested)."""
    out, todo = set(), [digest]
    while todo:
        d = todo.pop()
        if d in out:
            continue
        out.add(d)
        if d in manifests:
            todo.extend(_children(manifests[d]))
    return out


def archive_images(
    store: ArchiveStore,
    registry: Registry,
    repository: str,
    images: list[dict[str, Any]],
    *,
    archive_layers: bool,
    run_id: str,
    now: datetime,
    prefetched: ImageRead | None = None,
) -> ArchiveResult:
    """Archive some images of one repository into one pack and one catalog, verified (``now``:
    the archive time recorded in the catalog).

    ``images`` are plan rows (digest, tags, kind, media_type, size_bytes, pushed_at, policy,
    rule_priority, reason); ``prefetched``: a ``Registry.read_images`` that already read them.
    Config blobs are archived where the registry serves blobs cheaply
    (``capabilities.blob_reads_cheap``: the distribution API, a layout) and, with
    ``archive_layers``, everywhere (ECR too, through its layer download) together with the
    layers. An image whose manifests or blobs cannot be read or verified is reported in
    ``failures`` and left out.
    """
    result = ArchiveResult()
    wanted = [i["digest"] for i in images]
    if prefetched is not None and all(
        d in prefetched.found or d in prefetched.gone or d in prefetched.failures for d in wanted
    ):  # the caller's look already read them: no second read
        manifests = {d: prefetched.found[d] for d in wanted if d in prefetched.found}
        gone = {d for d in wanted if d in prefetched.gone}
        failures = {d: prefetched.failures[d] for d in wanted if d in prefetched.failures}
    else:
        read = registry.read_images(repository, wanted) if wanted else ImageRead()
        manifests, gone, failures = read.found, read.gone, read.failures
    result.gone, result.failures = gone, failures
    missing = {c for m in manifests.values() for c in _children(m)} - set(manifests)
    child_problems: dict[str, str] = {}
    while missing:  # an index's children (nested indexes too) belong in its archive
        more = registry.read_images(repository, sorted(missing))
        manifests.update(more.found)
        child_problems.update({d: "not in the registry any more" for d in more.gone})
        child_problems.update(more.failures)
        missing = (
            {c for m in more.found.values() for c in _children(m)} - set(manifests) - set(child_problems)
        )

    want_configs = archive_layers or registry.capabilities.blob_reads_cheap
    configs: dict[str, Blob] = {}
    layer_keys: dict[str, str] = {}
    blob_problems: dict[str, str] = {}
    config_wanted = (
        {
            cfg["digest"]: cfg.get("mediaType", "")
            for m in manifests.values()
            for cfg in [_blob_descriptors(m)[0]]
            if cfg
        }
        if want_configs
        else {}
    )
    layers_wanted = sorted(
        {x["digest"] for m in manifests.values() for x in _blob_descriptors(m)[1]}
        if archive_layers
        else set()
    )

    def fetch_config(item: tuple[str, str]) -> tuple[str, Blob | str]:
        digest, media = item
        try:
            with _fetch_blob(registry, repository, digest) as f:
                return digest, Blob(digest, media, f.read())
        except (RegistryError, ArchiveError, requests.RequestException) as exc:
            return digest, str(exc)

    def store_layer(digest: str) -> tuple[str, str | None, str | None]:
        try:
            return digest, store.ensure_blob(digest, lambda: _fetch_blob(registry, repository, digest)), None
        except (RegistryError, ArchiveError, requests.RequestException) as exc:
            return digest, None, str(exc)

    with ThreadPoolExecutor(max(1, registry.concurrency)) as pool:
        for digest, got in pool.map(fetch_config, sorted(config_wanted.items())):
            if isinstance(got, Blob):
                configs[digest] = got
            else:
                blob_problems[digest] = got
        for digest, key, problem in pool.map(store_layer, layers_wanted):
            if key:
                layer_keys[digest] = key
            else:
                blob_problems[digest] = problem or "?"

    ok: list[dict[str, Any]] = []
    for image in images:
        digest = image["digest"]
        if digest not in manifests:
            continue
        parts = _needs(digest, manifests)
        bad = sorted(p for p in parts if p in child_problems)
        bad_blobs: list[str] = []
        if blob_problems:  # only then can an image's blob be bad
            blobs_of = [_blob_descriptors(manifests[p]) for p in parts if p in manifests]
            blob_digests = {c["digest"] for c, _ in blobs_of if c and want_configs}
            blob_digests |= {x["digest"] for _, ls in blobs_of for x in ls} if archive_layers else set()
            bad_blobs = sorted(b for b in blob_digests if b in blob_problems)
        if bad:
            result.failures[digest] = f"child manifest {bad[0]}: {child_problems[bad[0]]}"
        elif bad_blobs:
            result.failures[digest] = f"blob {bad_blobs[0]}: {blob_problems[bad_blobs[0]]}"
        else:
            ok.append(image)
    if not ok:
        return result

    parts = sorted({d for i in ok for d in _needs(i["digest"], manifests)})
    pack_blobs = [Blob(d, manifests[d].media_type, manifests[d].raw) for d in parts]
    pack_blobs += [
        configs[c["digest"]]
        for d in (parts if configs else [])
        for c in [_blob_descriptors(manifests[d])[0]]
        if c and c["digest"] in configs
    ]
    pack, members = store.write_pack(pack_blobs)
    entries = [_entry(i, manifests, configs, layer_keys, members) for i in ok]
    doc = {
        "kind": CATALOG_KIND,
        "version": 1,
        "registry": registry.name,
        "registry_kind": registry.kind,
        "repository": repository,
        "archive_layers": archive_layers,
        "run_id": run_id,
        "archived_at": now.isoformat(),
        "pack": pack,
        "images": entries,
    }
    catalog = store.write_catalog(doc, now)
    result.catalog, result.pack = catalog, pack
    result.archived = {i["digest"]: catalog for i in ok}
    return result


def _entry(
    image: dict[str, Any],
    manifests: dict[str, Manifest],
    configs: dict[str, Blob],
    layer_keys: dict[str, str],
    members: dict[str, tuple[int, int]],
) -> dict[str, Any]:
    """One image's catalog entry: its metadata and where its archived blobs are.

    Fields the whole catalog shares (registry, repository, run, archive time) live once at its
    top. Blobs the archive does not hold are not listed: the manifests say what an image needs.
    """
    digest = image["digest"]
    manifest = manifests[digest]
    children = sorted(_needs(digest, manifests) - {digest})
    blobs: dict[str, dict[str, Any]] = {}
    complete = True
    for part in [digest, *children]:
        config, layers = _blob_descriptors(manifests[part])
        for desc, role in ([(config, "config")] if config else []) + [(x, "layer") for x in layers]:
            d = desc["digest"]
            if d in configs:
                blobs.setdefault(d, {**_ref(d, desc.get("mediaType", ""), members), "role": role})
            elif d in layer_keys:
                blobs.setdefault(d, {"digest": d, "role": role, "key": layer_keys[d]})
            else:
                complete = False
    return {
        "digest": digest,
        "tags": list(image.get("tags") or []),
        "kind": image.get("kind"),
        "media_type": manifest.media_type,
        "pushed_at": _iso(image.get("pushed_at")),
        "size_bytes": _int_or_none(image.get("size_bytes")),
        "policy": image.get("policy"),
        "rule_priority": _int_or_none(image.get("rule_priority")),
        "reason": image.get("reason"),
        "manifest": _ref(digest, manifest.media_type, members),
        "children": [_ref(c, manifests[c].media_type, members) for c in children],
        "blobs": list(blobs.values()),
        "restorable": "full" if complete else "manifest",
    }


def needed_blobs(manifests: Iterable[Manifest]) -> list[str]:
    """Config and layer digests the manifests reference, in order, each once."""
    out: dict[str, None] = {}
    for m in manifests:
        config, layers = _blob_descriptors(m)
        for desc in ([config] if config else []) + layers:
            out.setdefault(desc["digest"], None)
    return list(out)


def restore_note(doc: dict[str, Any], entry: dict[str, Any]) -> str | None:
    """Why an entry restores only while the registry still holds its blobs (None when it is full)."""
    if entry["restorable"] == "full":
        return None
    if doc.get("archive_layers"):
        return "some blobs could not be archived"
    return (
        "layers not archived (archive_layers is off): the image restores while a registry still holds "
        "its blobs (the one it was archived from, until garbage collection)"
    )


def _iso(value: Any) -> str | None:
    if value is None or value != value:  # None, NaT
        return None
    return value.isoformat() if isinstance(value, datetime) else pd.Timestamp(value).isoformat()


def _int_or_none(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)
