"""Backup retention (``registry-ops backup prune``, the DAG's ``prune`` task).

Which snapshots are kept: the newest of each of the last ``backup.keep_daily`` days and of each
of the last ``backup.keep_monthly`` months (UTC; a complete snapshot is preferred over a newer
one with failures on the same day or month), the one ``latest`` names, and any taken within
``prune_grace_hours`` (a run may be publishing it). The others' manifests are deleted.

Which objects go: under the blob store's ``blobs/``, ``packs/`` and ``backup-catalogs/``, only
those that (a) no kept snapshot lists, (b) no retention-archive catalog references (archive and
backups share these objects: an archived image's layer is the backup's too) and (c) are older
than ``prune_grace_hours`` (an archive or a backup run may be writing the catalog that will name
them). Nothing is deleted when something needed to decide cannot be read: a kept snapshot's
manifest, an archive catalog, or when no snapshot is kept at all (a wrong prefix would otherwise
look like a store full of garbage).

Run it after a backup, not beside one: a backup reuses the newest snapshot's objects, which this
always keeps, but a snapshot being published while this lists could lose a reused object.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from ..retention.archive import ArchiveStore
from ..store import objects
from ..store.runs import ManifestError
from .store import SnapshotStore

log = logging.getLogger(__name__)


class PruneRefused(RuntimeError):
    """Objects were not deleted because what references them could not all be read."""


def kept_snapshots(
    snapshots: list[dict[str, Any]], now: datetime, keep_daily: int, keep_monthly: int, grace: timedelta
) -> set[str]:
    """Ids of the snapshots retention keeps (``snapshots``: ``snapshot``, ``taken_at``,
    ``latest``, ``complete``)."""
    kept = {s["snapshot"] for s in snapshots if s.get("latest")}
    kept |= {s["snapshot"] for s in snapshots if now - datetime.fromisoformat(s["taken_at"]) < grace}
    today = now.date()
    days = {today - timedelta(days=i) for i in range(keep_daily)}
    months = set()
    y, m = today.year, today.month
    for _ in range(keep_monthly):
        months.add((y, m))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    best_day: dict[Any, tuple] = {}
    best_month: dict[Any, tuple] = {}
    for s in snapshots:
        at = datetime.fromisoformat(s["taken_at"])
        rank = (bool(s.get("complete")), s["snapshot"])  # complete first, then newest
        if at.date() in days and rank > best_day.get(at.date(), (False, "")):
            best_day[at.date()] = rank
        if (at.year, at.month) in months and rank > best_month.get((at.year, at.month), (False, "")):
            best_month[(at.year, at.month)] = rank
    return kept | {r[1] for r in best_day.values()} | {r[1] for r in best_month.values()}


def archive_references(archive: ArchiveStore) -> set[str]:
    """Every pack and blob key a retention-archive catalog references; PruneRefused when a
    catalog cannot be read (what it references would look unreferenced)."""
    docs, damaged = archive.read_catalogs(archive.catalog_keys())
    if damaged:
        problem = sorted(damaged.items())[0][1]
        raise PruneRefused(
            f"no object deleted: {len(damaged)} archive catalog(s) cannot be read, so what they "
            f"reference is unknown (e.g. {problem}); `registry-ops archive verify` names them"
        )
    refs: set[str] = set()
    for doc in docs:
        refs.add(doc["pack"])
        for entry in doc["images"]:
            for ref in [entry["manifest"], *entry["children"], *entry["blobs"]]:
                refs.add(ref.get("key") or ref.get("pack") or doc["pack"])
    return refs


def prune(config: Any, s3: Any, now: datetime, dry_run: bool = False) -> dict[str, Any]:
    """Apply backup retention (see the module docstring); the summary of what was (or, dry run,
    would be) deleted. PruneRefused when objects cannot safely be decided on (snapshots are then
    not deleted either)."""
    settings = config.backup
    store = SnapshotStore.from_config(config, s3)
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    grace = timedelta(hours=settings.prune_grace_hours)
    snapshots = store.list_snapshots()
    manifests: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        try:
            manifests[snap["snapshot"]] = store.layout.read_manifest(s3, snap["key"])
        except ManifestError as exc:
            raise PruneRefused(
                f"nothing deleted: snapshot {snap['snapshot']} cannot be read ({exc})"
            ) from None
        snap["complete"] = bool(manifests[snap["snapshot"]].get("complete"))
    kept = kept_snapshots(snapshots, now, settings.keep_daily, settings.keep_monthly, grace)
    if not kept:
        raise PruneRefused(
            f"nothing deleted: no snapshot under {store.url(store.layout.root)} (a wrong "
            "storage.prefixes.backup would make every backup object look unreferenced)"
        )
    doomed = [s for s in snapshots if s["snapshot"] not in kept]
    referenced = {k for sid in kept for k in (manifests[sid].get("objects") or {})}
    archive = ArchiveStore(s3, store.bucket, store.blobs.prefix, store.blobs.workers)
    by_archive = archive_references(archive)
    stored = store.list_stored()
    unreferenced = [o for k, o in stored.items() if k not in referenced and k not in by_archive]
    young = [o for o in unreferenced if now - o.last_modified.astimezone(UTC) < grace]
    delete = sorted(o.key for o in unreferenced if now - o.last_modified.astimezone(UTC) >= grace)
    errors: list[dict[str, Any]] = []
    if not dry_run:
        errors += objects.delete_keys(s3, store.bucket, [s["key"] for s in doomed])
        errors += objects.delete_keys(s3, store.bucket, delete)
    sizes = {k: o.size for k, o in stored.items()}
    return {
        "dry_run": dry_run,
        "snapshots": len(snapshots),
        "kept": sorted(kept, reverse=True),
        "deleted_snapshots": [s["snapshot"] for s in doomed],
        "objects": len(stored),
        "referenced_by_snapshots": len(referenced & set(stored)),
        "referenced_by_archive_only": len((by_archive - referenced) & set(stored)),
        "kept_young": len(young),
        "deleted_objects": len(delete),
        "deleted_bytes": sum(sizes[k] for k in delete),
        "errors": [f"{e.get('Key')}: {e.get('Message')}" for e in errors],
    }
