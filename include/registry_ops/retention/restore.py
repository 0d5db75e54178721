"""Put an archived image back, bit for bit: same manifest bytes, same digest, its tags; into
the registry it was archived from or into another one of any kind (``to_registry``: an OCI
image layout directory, the distribution registry, ECR).

Everything goes through the registry interface, so every kind restores the same way. Order
matters so a pull never sees a half-restored image: the repository first where the kind needs
it (``capabilities.explicit_repositories``: ECR), then every blob the manifests need, then an
index's child manifests by digest, then the manifest by digest, then its tags. A blob already in
the target is left alone; else it is mounted from the image's old repository (same registry,
``capabilities.mounts_blobs``), else put from the archive (``archive_layers``), else copied from
the registry it was archived from while that still holds it. ECR takes blobs through its layer
upload API, so an image archived with its layers comes back into a new repository, or after its
repository was deleted. Where every blob will come from is settled before the first one is
written: a blob found nowhere stops the restore with nothing changed. A tag that meanwhile
points at another image is left alone unless ``move_tags`` (restoring an old image must not
silently roll back ``latest``). The result is read back and compared.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from ..registries.base import INDEX_TYPES, Manifest, Registry, RegistryError
from .archive import ArchiveError, ArchiveStore, hex_of, needed_blobs

log = logging.getLogger(__name__)


class RestoreError(ValueError):
    """Nothing to restore, an ambiguous request, or content the registry cannot take back."""


def locate(
    store: ArchiveStore,
    registry: str | None,
    repository: str | None,
    digest: str | None = None,
    tag: str | None = None,
) -> dict[str, Any]:
    """The archived entry to restore: by digest, or the newest archive of a repository's tag.

    Damaged catalogs do not block a restore from a healthy one; ArchiveError (naming them) when
    the image can only be in a damaged one, or a damaged catalog may hold a newer image of a tag.
    """
    if bool(digest) == bool(tag):
        raise RestoreError("give exactly one of a digest or a tag")
    if tag and not repository:
        raise RestoreError("restoring by tag needs the repository")
    found = store.search(registry, repository, digest=digest, tag=tag)
    hits = found.hits
    what = digest or f"tag {tag!r}"
    where = "/".join(p for p in (registry, repository) if p) or "any registry"
    unreadable = "; ".join(found.damaged.values())
    if not hits and found.via_index and found.damaged:
        raise ArchiveError(f"{what} is archived only in catalogs that cannot be read: {unreadable}")
    if not hits and found.damaged:
        raise ArchiveError(
            f"{what} is not in any readable catalog ({where}), but {len(found.damaged)} catalog(s) "
            f"could not be read and may hold it: {unreadable}"
        )
    if not hits:
        how = " via the digest index" if found.via_index else ""
        raise RestoreError(f"{what} is not in the archive (searched {where}{how})")
    places = sorted({(h["registry"], h["repository"]) for h in hits})
    if len(places) > 1:
        listed = ", ".join(f"{r}/{p}" for r, p in places)
        raise RestoreError(f"{what} is archived from several repositories ({listed}); name one")
    if tag:  # "the newest archive of the tag" must not silently become an older one
        newer = [k for k in found.damaged if k.rsplit("/", 1)[1] > hits[0]["catalog"].rsplit("/", 1)[1]]
        if newer:
            raise ArchiveError(
                f"{what}: the newest readable archive is in {store.url(hits[0]['catalog'])}, but newer "
                f"catalog(s) cannot be read and may hold a newer image with that tag: "
                f"{'; '.join(found.damaged[k] for k in newer)}; restore by digest to take the readable one"
            )
    return hits[0]


def _has_manifest(registry: Registry, repository: str, digest: str) -> bool:
    return registry.head_manifest(repository, digest) is not None


def _in_source(source: Registry, repository: str, digest: str) -> bool:
    """Whether the registry the image was archived from still holds the blob (False when it
    cannot say: gone, unreachable, no longer allowed)."""
    try:
        return source.head_blob(repository, digest) is not None
    except RegistryError as exc:
        log.warning("restore: %s/%s: blob %s: %s", source.name, repository, digest, exc)
        return False


def _plan_blobs(
    registry: Registry,
    entry: dict[str, Any],
    target: str,
    manifests: list[Manifest],
    source: Registry | None,
) -> list[tuple[str, list[str]]]:
    """For each blob the target lacks, the ways to make it present, best first: ``mount`` (from
    the image's old repository), ``archive``, ``source`` (copied from the registry it was
    archived from). Reads only: RestoreError, with nothing written, when a blob has no way.

    ``source`` is the registry the image was archived from (None: not configured any more).
    """
    archived = {b["digest"] for b in entry["blobs"]}
    origin = entry["repository"]
    same = source is registry
    mountable = same and target != origin and registry.capabilities.mounts_blobs
    copyable = source is not None and not (same and target == origin)
    plan: list[tuple[str, list[str]]] = []
    missing = []
    for digest in needed_blobs(manifests):
        if registry.head_blob(target, digest) is not None:
            continue
        held = copyable and (mountable or digest not in archived) and _in_source(source, origin, digest)
        ways = (["mount"] if held and mountable else []) + (["archive"] if digest in archived else [])
        ways += ["source"] if held else []
        if ways:
            plan.append((digest, ways))
        else:
            missing.append(digest)
    if missing:
        raise RestoreError(
            f"{registry.name}/{target}: {len(missing)} blob(s) of {entry['digest']} are neither archived "
            f"(archive_layers was off) nor in the registry any more (garbage-collected?), e.g. {missing[0]}"
        )
    return plan


def _restore_blobs(
    store: ArchiveStore,
    registry: Registry,
    entry: dict[str, Any],
    target: str,
    plan: list[tuple[str, list[str]]],
    source: Registry | None,
) -> list[str]:
    """Make the planned blobs present; returns the digests put (mounted ones move no bytes)."""
    archived = {b["digest"]: b for b in entry["blobs"]}
    origin = entry["repository"]
    uploaded = []
    for digest, ways in plan:
        for way in ways:
            if way == "mount":
                if registry.mount_blob(target, digest, origin):
                    break
            elif way == "archive":
                blob = archived[digest]
                data = store.read_member(blob) if "pack" in blob else store.read_blob(digest)
                registry.put_blob(target, data, digest, len(data))
                uploaded.append(digest)
                break
            elif source is not None:
                with source.open_blob(origin, digest) as stream:  # hashed while read
                    registry.put_blob(target, stream, digest)
                uploaded.append(digest)
                break
    return uploaded


def restore_image(
    store: ArchiveStore,
    registry: Registry,
    entry: dict[str, Any],
    *,
    to_repository: str | None = None,
    move_tags: bool = False,
    source: Registry | None = None,
) -> dict[str, Any]:
    """Restore one archived entry (from :func:`locate`) into ``registry``: its repository, or
    ``to_repository``. ``source``: the registry the entry was archived from when that is not
    ``registry`` (a restore into another registry), for blobs the archive does not hold."""
    target = to_repository or entry["repository"]
    origin = registry if entry["registry"] == registry.name else source
    manifest = Manifest(
        entry["digest"], entry["manifest"]["media_type"], store.read_member(entry["manifest"])
    )
    children = [Manifest(c["digest"], c["media_type"], store.read_member(c)) for c in entry["children"]]
    plan = _plan_blobs(registry, entry, target, [manifest, *children], origin)  # nothing written yet
    if registry.capabilities.explicit_repositories and registry.create_repository(target):
        log.info("restore: created repository %s/%s", registry.name, target)
    uploaded = _restore_blobs(store, registry, entry, target, plan, origin)
    for child in sorted(children, key=lambda c: c.media_type in INDEX_TYPES):  # plain manifests first
        if not _has_manifest(registry, target, child.digest):
            _put(registry, target, child)
    if not _has_manifest(registry, target, manifest.digest):
        _put(registry, target, manifest)
    restored, kept_elsewhere = [], {}
    for tag in entry["tags"]:
        head = registry.head_manifest(target, tag)
        now = head.digest if head is not None else None
        if now == manifest.digest:
            restored.append(tag)
        elif now is None or move_tags:
            _put(registry, target, manifest, tag)
            restored.append(tag)
        else:
            kept_elsewhere[tag] = now
    back = registry.get_manifest(target, manifest.digest)
    if back.raw != manifest.raw or back.digest != manifest.digest:
        raise RestoreError(f"{registry.name}/{target}: {manifest.digest} reads back different bytes")
    for child in children:
        if registry.get_manifest(target, child.digest).raw != child.raw:
            raise RestoreError(f"{registry.name}/{target}: child {child.digest} reads back different bytes")
    return {
        "registry": registry.name,
        "repository": target,
        "from_registry": entry["registry"],
        "from_repository": entry["repository"],
        "digest": manifest.digest,
        "media_type": manifest.media_type,
        "children": [c.digest for c in children],
        "tags_restored": restored,
        "tags_left_on_other_images": kept_elsewhere,
        "blobs_uploaded": uploaded,
        "catalog": entry["catalog"],
        "archived_at": entry["archived_at"],
        "restorable": entry["restorable"],
        "verified": True,
    }


def _put(registry: Registry, repository: str, manifest: Manifest, tag: str | None = None) -> None:
    got = registry.put_manifest(repository, manifest, tag)
    if got != manifest.digest:
        raise RestoreError(f"{registry.name}/{repository}: the registry stored {manifest.digest} as {got}")


def write_restore_audit(s3: Any, bucket: str, audit_prefix: str, result: dict[str, Any]) -> str:
    """One JSON record per restore, next to the retention audit."""
    at = datetime.now(UTC)
    key = (
        f"{audit_prefix}restore/dt={at:%Y-%m-%d}/{result['registry']}/{result['repository']}/"
        f"{hex_of(result['digest'])[:16]}-{at:%H%M%S%f}.json"
    )
    record = {"at": at.isoformat(), "action": "restore", **result}
    log.info("retention audit: %s", json.dumps(record, sort_keys=True, default=str))
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(record, sort_keys=True).encode())
    return key
