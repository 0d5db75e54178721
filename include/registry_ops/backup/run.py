"""One backup run: plan it, back up each registry, publish the snapshot (``registry_backup``'s
three steps, and ``registry-ops backup run`` in one process).

1. :func:`plan_backup`: the snapshot's id (when it is taken), its mode (``full`` when the last
   full snapshot is ``backup.full_every_days`` old, or there is none; else ``metadata``) and, per
   registry, the newest snapshot holding its catalog (what this run may reuse).
2. :func:`backup_registry`: read the registry (``collect.py``; manifests the previous catalog
   holds are not read again), pack the manifests and config blobs read this run, one
   deterministic pack per repository (split past :data:`PACK_MEMBERS`), store layers in full
   mode, write the catalog. Every object written is read back. What is already stored is found
   by listing the store once (blobs, packs, catalogs), never sent again: an unchanged
   registry gives the byte-identical catalog and costs no PUT at all.
3. :func:`publish_snapshot`: gather the catalogs (read back, checked against their sha256), list
   every object the snapshot needs with its sha256, confirm each is in the store (a listing),
   write the manifest and, only when nothing failed and nothing is missing, move ``latest``.

A run that dies midway leaves no manifest and does not move ``latest``; the rerun builds the
same packs from the same previous snapshot, finds them listed and only reads them back.

A failure (a registry, a repository, an image, a layer in full mode) does not stop the others.
The snapshot is still published (its manifest lists the failures and ``complete: false``) so
what did work is kept and reused, but ``latest`` stays on the last complete snapshot and the run
ends with exit 1 / a failed task naming each failure.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from ..registries.base import Registry, RegistryError
from ..registries.streams import spool
from ..store import objects
from ..store.blobs import Blob, hex_of
from .catalog import Catalog, ManifestEntry
from .collect import RepositoryRead, Small, collect_repository
from .store import KIND, SCHEMA_VERSION, BackupError, SnapshotStore, snapshot_id

log = logging.getLogger(__name__)

MODES = ("auto", "metadata", "full")
PACK_MEMBERS = 2000
PREVIOUS_READS = 10  # snapshot manifests read at most to find each registry's newest catalog
SHOWN = 5


class BackupIncomplete(RuntimeError):
    """The snapshot was published with failures and is not ``latest`` (the message names them)."""


class PutCounter:
    """S3 PutObject requests sent through one client while counting (every attempt counts)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, **_: Any) -> None:
        with self._lock:
            self.count += 1


@contextlib.contextmanager
def count_puts(s3: Any) -> Iterator[PutCounter]:
    """Count the PutObject requests ``s3`` sends inside the block (a botocore event hook)."""
    counter = PutCounter()
    uid = f"registry-ops-backup-puts-{id(counter)}"
    s3.meta.events.register("before-send.s3.PutObject", counter, unique_id=uid)
    try:
        yield counter
    finally:
        s3.meta.events.unregister("before-send.s3.PutObject", unique_id=uid)


# -- 1. plan -------------------------------------------------------------------------------------
def backup_set(config: Any) -> list[str]:
    """The registries backups cover: ``backup.registries``, default every configured one."""
    return list(config.backup.registries or [r.name for r in config.registries])


def choose_mode(mode: str, pointer: dict[str, Any] | None, now: datetime, every_days: int) -> str:
    """``metadata`` or ``full``: ``auto`` is full when the last full snapshot that became latest
    is at least ``every_days`` old, or there is none (0: always)."""
    if mode not in MODES:
        raise ValueError(f"backup mode {mode!r} is not one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    last = (pointer or {}).get("last_full_at")
    if every_days == 0 or not last:
        return "full"
    return "full" if now - datetime.fromisoformat(last) >= timedelta(days=every_days) else "metadata"


def previous_catalogs(store: SnapshotStore, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per registry, its entry in the newest snapshot that holds its catalog (complete or not:
    what a snapshot with failures did store is sound and reusable), with ``snapshot``."""
    found: dict[str, dict[str, Any]] = {}
    for snap in store.list_snapshots()[:PREVIOUS_READS]:
        if set(names) <= set(found):
            break
        try:
            manifest = store.layout.read_manifest(store.s3, snap["key"])
        except ValueError as exc:  # damaged: the next one may do
            log.warning("backup: snapshot %s unreadable, not reused: %s", snap["snapshot"], exc)
            continue
        for name, entry in (manifest.get("registries") or {}).items():
            if name in names and name not in found and isinstance(entry.get("catalog"), dict):
                found[name] = {**entry, "snapshot": entry.get("snapshot") or manifest["snapshot"]}
    return found


def plan_backup(
    config: Any,
    s3: Any,
    now: datetime,
    mode: str = "auto",
    only: list[str] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """The run's plan (JSON-ready: it is the DAG's XCom): snapshot id, ``taken_at``, mode, the
    registries to back up (``only``, default the backup set) and what each may reuse."""
    names = backup_set(config)
    chosen = list(only) if only else names
    for name in chosen:
        config.registry(name)  # ConfigError naming it when it is not configured
    store = SnapshotStore.from_config(config, s3)
    objects.require_bucket(s3, store.bucket, config.source)
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    pointer = store.layout.read_pointer(s3)
    return {
        "snapshot": snapshot_id(now),
        "taken_at": now.replace(microsecond=0).isoformat(),
        "mode": choose_mode(mode, pointer, now, config.backup.full_every_days),
        "registries": chosen,
        "carried": sorted(set(names) - set(chosen)),
        "previous": previous_catalogs(store, names),
        "last_full_at": (pointer or {}).get("last_full_at"),
        "run_id": run_id,
    }


# -- 2. one registry -----------------------------------------------------------------------------
class _Located:
    """Where the bytes of each digest are stored: the previous catalog's locations that the
    listing confirms, blobs found under their digest, and what this run writes."""

    def __init__(self, store: SnapshotStore, present: dict[str, Any], previous: Catalog | None) -> None:
        self.store, self.present = store, present
        self.where: dict[str, dict[str, Any]] = {}
        for digest, loc in (previous.objects if previous else {}).items():
            if loc.get("pack", loc.get("key")) in present:
                self.where[digest] = dict(loc)
        self._lock = threading.Lock()

    def get(self, digest: str) -> dict[str, Any] | None:
        loc = self.where.get(digest)
        if loc is not None:
            return loc
        try:
            key = self.store.blobs.blob_key(digest)
        except BackupError:
            return None
        if key in self.present:
            return {"key": key, "size": self.present[key].size}
        return None

    def has(self, digest: str) -> bool:
        return self.get(digest) is not None

    def add(self, locations: dict[str, dict[str, Any]]) -> None:
        with self._lock:
            self.where.update(locations)


def _previous_catalog(store: SnapshotStore, plan: dict[str, Any], name: str) -> Catalog | None:
    prev = plan["previous"].get(name)
    if not prev:
        return None
    try:
        return store.read_catalog({"snapshot": prev["snapshot"], "registries": {name: prev}}, name)
    except (BackupError, ValueError) as exc:
        log.warning("backup: %s: the previous catalog cannot be reused (all is read again): %s", name, exc)
        return None


def _problem_text(problems: dict[str, str]) -> str:
    first = "; ".join(f"{d}: {why}" for d, why in sorted(problems.items())[:SHOWN])
    more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
    return f"{len(problems)} image(s) left out: {first}{more}"


def _collect_all(
    registry: Registry,
    repositories: list[str],
    previous: Catalog | None,
    located: _Located,
    workers: int,
    failures: dict[str, str],
) -> dict[str, RepositoryRead]:
    known: dict[str, ManifestEntry] = {}
    for repo in previous.repositories if previous else []:
        known.update((m.digest, m) for m in repo.manifests)
    sizes = dict(previous.blob_sizes) if previous else {}
    fetched: dict[str, bytes] = {}  # configs read this run, shared: each is downloaded once

    def one(repo: str) -> tuple[str, RepositoryRead | str]:
        try:
            return repo, collect_repository(registry, repo, known, sizes, located.has, fetched)
        except RegistryError as exc:
            return repo, exc.problem
        except Exception as exc:  # one repository's surprise must not stop the others
            log.exception("backup: %s/%s failed", registry.name, repo)
            return repo, f"{type(exc).__name__}: {exc}"

    reads: dict[str, RepositoryRead] = {}
    with ThreadPoolExecutor(max(1, min(workers, len(repositories) or 1))) as pool:
        for repo, got in pool.map(one, repositories):
            if isinstance(got, str):
                failures[f"{registry.name}/{repo}"] = got
                continue
            reads[repo] = got
            if got.problems:
                failures[f"{registry.name}/{repo}"] = _problem_text(got.problems)
    return reads


def _write_packs(
    store: SnapshotStore,
    reads: dict[str, RepositoryRead],
    located: _Located,
    workers: int,
) -> tuple[int, int, int]:
    """Pack what was read (``collect`` reads only what is not stored): each digest in the first
    repository (by name) that read it, one deterministic pack per repository (split past
    PACK_MEMBERS). Returns (packs written, bytes written, PUT count)."""
    owned: dict[str, dict[str, Small]] = {}
    taken: set[str] = set()
    for repo in sorted(reads):
        for digest, small in sorted(reads[repo].small.items()):
            if digest not in taken:
                taken.add(digest)
                owned.setdefault(repo, {})[digest] = small
    batches = [
        [Blob(s.digest, s.media_type, s.data) for s in chunk]
        for repo in sorted(owned)
        for chunk in _chunks([owned[repo][d] for d in sorted(owned[repo])], PACK_MEMBERS)
    ]

    def one(blobs: list[Blob]) -> tuple[int, bool]:
        _, members, put = store.put_pack(blobs, located.present)
        located.add(members)
        return sum(m["size"] for m in members.values()), put

    written = sent = puts = 0
    with ThreadPoolExecutor(max(1, min(workers, len(batches) or 1))) as pool:
        for size, put in pool.map(one, batches):
            written += 1
            sent += size if put else 0
            puts += int(put)
    return written, sent, puts


def _chunks(items: list[Small], size: int) -> Iterator[list[Small]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _store_layers(
    store: SnapshotStore,
    registry: Registry,
    reads: dict[str, RepositoryRead],
    located: _Located,
    workers: int,
    failures: dict[str, str],
) -> tuple[int, int]:
    """Full mode: every layer not stored yet, fetched from the first repository naming it, stored
    once and read back. A layer that fails is named with the repository (the images need it)."""
    holder: dict[str, str] = {}
    for repo in sorted(reads):
        for m in reads[repo].entry.manifests:
            for layer in m.layers:
                holder.setdefault(layer, repo)
    wanted = sorted(d for d in holder if not located.has(d))

    def fetch(repo: str, digest: str) -> IO[bytes]:
        stream = registry.open_blob(repo, digest)
        with stream:
            spooled = spool(stream, digest, None, lambda p, cls: registry.error(p, repo, cls))
        return spooled.file

    def one(digest: str) -> tuple[str, int | str]:
        repo = holder[digest]
        try:
            key, size = store.put_blob(digest, lambda: fetch(repo, digest))
        except (RegistryError, BackupError) as exc:
            return digest, str(exc)
        except Exception as exc:  # a transport error of one layer: the images needing it fail
            return digest, f"{type(exc).__name__}: {exc}"
        located.add({digest: {"key": key, "size": size}})
        return digest, size

    stored = sent = 0
    bad: dict[str, dict[str, str]] = {}
    with ThreadPoolExecutor(max(1, min(workers, len(wanted) or 1))) as pool:
        for digest, got in pool.map(one, wanted):
            if isinstance(got, int):
                stored, sent = stored + 1, sent + got
            else:
                bad.setdefault(holder[digest], {})[digest] = got
    for repo, problems in bad.items():
        first = "; ".join(f"layer {d}: {why}" for d, why in sorted(problems.items())[:SHOWN])
        failures[f"{registry.name}/{repo} (layers)"] = f"{len(problems)} layer(s) not stored: {first}"
    return stored, sent


def backup_registry(config: Any, s3: Any, registry: Registry, plan: dict[str, Any]) -> dict[str, Any]:
    """Back up one registry into its catalog (see the module docstring); returns the part the
    publish step gathers: the catalog's reference, counts, failures, PUTs and bytes sent.

    A failure of the whole registry (its repository listing) raises; one of a repository or an
    image is in ``failures`` and the rest is backed up."""
    name = registry.name
    reg_config = config.registry(name)
    store = SnapshotStore.from_config(config, s3)
    workers = config.backup.workers
    failures: dict[str, str] = {}
    with count_puts(s3) as puts:
        present = store.list_stored()
        previous = _previous_catalog(store, plan, name)
        located = _Located(store, present, previous)
        repositories = [r for r in registry.list_repositories() if reg_config.wants(r)]
        try:
            settings = registry.describe_registry_settings()
        except RegistryError as exc:
            failures[f"{name} (registry settings)"] = exc.problem
            settings = {}
        reads = _collect_all(registry, repositories, previous, located, workers, failures)
        packs, pack_bytes, pack_puts = _write_packs(store, reads, located, workers)
        layers = layer_bytes = 0
        if plan["mode"] == "full":
            layers, layer_bytes = _store_layers(store, registry, reads, located, workers, failures)
        catalog = Catalog(name, registry.kind, settings, [reads[r].entry for r in sorted(reads)])
        for read in reads.values():
            catalog.blob_sizes.update(read.blob_sizes)
        wanted = {m.digest for r in catalog.repositories for m in r.manifests} | set(catalog.blob_sizes)
        catalog.objects = {d: loc for d in sorted(wanted) if (loc := located.get(d)) is not None}
        ref, catalog_put = store.write_catalog(catalog, present)
    counts = catalog.counts()
    return {
        "registry": name,
        "registry_kind": registry.kind,
        "catalog": ref,
        **counts,
        "layers_missing": len(catalog.missing_objects()),
        "manifests_read": sum(r.read for r in reads.values()),
        "packs_written": pack_puts,
        "layers_stored": layers,
        "uploaded_objects": pack_puts + layers + int(catalog_put),
        "uploaded_bytes": pack_bytes + layer_bytes + (ref["size"] if catalog_put else 0),
        "puts": puts.count,
        "failures": failures,
        "packs_verified": packs,
    }


def failed_part(name: str, exc: BaseException) -> dict[str, Any]:
    """The part of a registry whose backup raised: no catalog, the failure named."""
    problem = exc.problem if isinstance(exc, RegistryError) else f"{type(exc).__name__}: {exc}"
    return {"registry": name, "catalog": None, "puts": 0, "failures": {name: problem}}


# -- 3. publish ----------------------------------------------------------------------------------
def snapshot_objects(ref: dict[str, Any], catalog: Catalog) -> dict[str, str]:
    """``key -> sha256`` of every object a registry's catalog needs: itself, its packs, its blobs."""
    out = {ref["key"]: ref["sha256"]}
    for digest, loc in catalog.objects.items():
        if "pack" in loc:
            out[loc["pack"]] = loc["pack"].rsplit("/", 1)[-1].removesuffix(".tar")
        elif "key" in loc:
            out[loc["key"]] = hex_of(digest)
    return out


def publish_snapshot(
    config: Any, s3: Any, plan: dict[str, Any], parts: list[dict[str, Any]]
) -> dict[str, Any]:
    """Gather the registries' parts into the snapshot's manifest (registries not in this run are
    carried from their previous snapshot), confirm every object it needs is stored, write the
    manifest and, when complete, the ``latest`` pointer. Returns the run's summary."""
    store = SnapshotStore.from_config(config, s3)
    failures: dict[str, str] = {}
    registries: dict[str, dict[str, Any]] = {}
    needed: dict[str, str] = {}
    by_name = {p["registry"]: p for p in parts}
    with count_puts(s3) as puts:
        for name in plan["registries"]:
            part = by_name.get(name)
            if part is None:
                failures[name] = "no result from its backup step"
                continue
            failures.update(part.get("failures") or {})
            if part.get("catalog"):
                entry = {k: v for k, v in part.items() if k not in ("failures", "puts", "registry")}
                registries[name] = {**entry, "snapshot": plan["snapshot"], "taken_at": plan["taken_at"]}
        for name in plan.get("carried") or []:
            prev = plan["previous"].get(name)
            if prev:
                registries[name] = {**prev, "carried": True}
        for name, entry in sorted(registries.items()):
            try:
                catalog = store.read_catalog({"snapshot": plan["snapshot"], "registries": registries}, name)
            except BackupError as exc:
                failures[f"{name} (catalog)"] = str(exc)
                continue
            needed.update(snapshot_objects(entry["catalog"], catalog))
        present = store.list_stored()
        absent = sorted(k for k in needed if k not in present)
        if absent:
            shown = ", ".join(store.url(k) for k in absent[:SHOWN])
            failures["store"] = f"{len(absent)} object(s) the snapshot needs are missing: {shown}"
        complete = not failures
        manifest = {
            "snapshot": plan["snapshot"],
            "taken_at": plan["taken_at"],
            "mode": plan["mode"],
            "run_id": plan.get("run_id"),
            "registries": registries,
            "objects": dict(sorted(needed.items())),
            "failures": failures,
            "complete": complete,
            "store": {"bucket": store.bucket, "prefix": store.blobs.prefix},
        }
        key = store.manifest_key(plan["snapshot"])
        last_full = plan["taken_at"] if plan["mode"] == "full" else plan.get("last_full_at")
        write_snapshot(store, key, manifest, complete, last_full)
    summary = summarize(manifest, parts, puts.count, key, complete)
    log.info(
        "backup: snapshot %s (%s) %s: %d repositories, %d manifests, %d blobs, %d bytes, %d S3 PUTs%s",
        summary["snapshot"],
        summary["mode"],
        "is latest" if complete else "published WITHOUT becoming latest",
        summary["repositories"],
        summary["manifests"],
        summary["blobs"],
        summary["bytes"],
        summary["puts"],
        f"; failures: {summary['failures']}" if summary["failures"] else "",
    )
    return summary


def write_snapshot(
    store: SnapshotStore, key: str, manifest: dict[str, Any], latest: bool, last_full_at: str | None
) -> None:
    """The manifest, then (``latest``) the pointer naming it: both with the store's server-side
    encryption (``RunLayout.publish`` writes without it), in that order, so the pointer never
    names a manifest that is not there."""
    stamped = {**manifest, "kind": KIND, "schema_version": SCHEMA_VERSION}
    objects.put_json(store.s3, store.bucket, key, stamped, store.sse)
    if latest:
        pointer = {
            "manifest": key,
            "kind": KIND,
            "schema_version": SCHEMA_VERSION,
            "snapshot": manifest["snapshot"],
            "taken_at": manifest["taken_at"],
            "mode": manifest["mode"],
            "last_full_at": last_full_at,
            "catalogs": {n: e["catalog"]["key"] for n, e in sorted(manifest["registries"].items())},
        }
        objects.put_json(store.s3, store.bucket, store.layout.latest_key, pointer, store.sse)


def summarize(
    manifest: dict[str, Any], parts: list[dict[str, Any]], publish_puts: int, key: str, latest: bool
) -> dict[str, Any]:
    regs = manifest["registries"]
    return {
        "snapshot": manifest["snapshot"],
        "taken_at": manifest["taken_at"],
        "mode": manifest["mode"],
        "latest": latest,
        "manifest": key,
        "registries": sorted(regs),
        "repositories": sum(e.get("repositories", 0) for e in regs.values()),
        "manifests": sum(e.get("manifests", 0) for e in regs.values()),
        "blobs": sum(e.get("blobs", 0) for e in regs.values()),
        "bytes": sum(e.get("bytes", 0) for e in regs.values()),
        "objects": len(manifest["objects"]),
        "uploaded_objects": sum(p.get("uploaded_objects", 0) for p in parts),
        "uploaded_bytes": sum(p.get("uploaded_bytes", 0) for p in parts),
        "manifests_read": sum(p.get("manifests_read", 0) for p in parts),
        "puts": publish_puts + sum(p.get("puts", 0) for p in parts),
        "failures": manifest["failures"],
    }


def raise_if_incomplete(summary: dict[str, Any]) -> None:
    """BackupIncomplete naming every failure when the snapshot did not become latest."""
    if summary["latest"]:
        return
    failures = "; ".join(f"{k}: {v}" for k, v in sorted(summary["failures"].items()))
    raise BackupIncomplete(
        f"backup snapshot {summary['snapshot']} was published without becoming latest: {failures}"
    )


# -- all three, in one process -------------------------------------------------------------------
def run_backup(
    config: Any,
    s3: Any,
    registries: dict[str, Registry],
    now: datetime,
    mode: str = "auto",
    run_id: str | None = None,
) -> dict[str, Any]:
    """Back up ``registries`` (name -> adapter, names as configured) into one snapshot taken at
    ``now``; the summary (snapshot, mode, manifests, blobs, bytes, puts, failures, latest...).
    Registries of the backup set not given are carried from their previous snapshot."""
    plan = plan_backup(config, s3, now, mode, sorted(registries), run_id)
    parts = []
    for name in plan["registries"]:
        try:
            parts.append(backup_registry(config, s3, registries[name], plan))
        except Exception as exc:  # one registry's failure must not stop the others
            log.warning("backup: registry %s failed: %s", name, exc)
            parts.append(failed_part(name, exc))
    return publish_snapshot(config, s3, plan, parts)
