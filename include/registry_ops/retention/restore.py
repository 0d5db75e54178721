"""Put an archived image back, bit for bit: same manifest bytes, same digest, its tags.

Order matters so a pull never sees a half-restored image: blobs first (from the archive where it
holds them, else mounted from the image's old repository, else they must still be in the
registry), then an index's child manifests by digest, then the manifest by digest, then its tags.
A tag that meanwhile points at another image is left alone unless ``move_tags`` (restoring an
old image must not silently roll back ``latest``). The result is read back and compared.

ECR note: ECR takes blobs only through its layer-upload API, which registry-ops does not drive
yet, so an ECR restore relies on the registry still holding the image's layers (ECR keeps them
while any image uses them); the manifest and tags come back from the archive either way.
"""

from __future__ import annotations

import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from ..registries.base import INDEX_TYPES, Manifest, Registry, RegistryError
from ..registries.ecr import EcrRegistry
from ..registries.oci import OciRegistry
from .archive import ArchiveError, ArchiveStore, hex_of, needed_blobs

log = logging.getLogger("airflow.task")


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


def _tag_digest(registry: Registry, repository: str, tag: str) -> str | None:
    """The digest a tag points at now, or None when the tag does not exist."""
    if isinstance(registry, OciRegistry):
        return registry.head_manifest(repository, tag)
    if isinstance(registry, EcrRegistry):
        ids = {"registryId": registry.registry_id} if registry.registry_id else {}
        try:
            resp = registry.client.describe_images(
                repositoryName=repository, imageIds=[{"imageTag": tag}], **ids
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ImageNotFoundException":
                return None
            raise registry.error(f"describe_images {tag}: {exc}", repository) from exc
        details = resp.get("imageDetails") or []
        return details[0]["imageDigest"] if details else None
    raise TypeError(f"no restore support for registry kind {registry.kind!r}")


def _has_manifest(registry: Registry, repository: str, digest: str) -> bool:
    if isinstance(registry, OciRegistry):
        return registry.head_manifest(repository, digest) == digest
    try:
        registry.get_manifest(repository, digest)
    except RegistryError as exc:
        if "ImageNotFound" in exc.problem or "RepositoryNotFound" in exc.problem:
            return False
        raise
    return True


def _ensure_repository(registry: Registry, repository: str) -> None:
    """ECR repositories must exist before a push; OCI registries create them on push."""
    if isinstance(registry, EcrRegistry):
        ids = {"registryId": registry.registry_id} if registry.registry_id else {}
        try:
            registry.client.create_repository(repositoryName=repository, **ids)
            log.info("restore: created ECR repository %s", repository)
        except registry.client.exceptions.RepositoryAlreadyExistsException:
            pass
        except (ClientError, BotoCoreError) as exc:
            raise registry.error(f"create_repository: {exc}", repository) from exc


def _oci_mount(registry: OciRegistry, repository: str, digest: str, source: str) -> bool:
    """Ask the registry to link a blob from another repository (no bytes move)."""
    resp = registry.request(
        "POST",
        f"/v2/{repository}/blobs/uploads/?mount={quote(digest)}&from={quote(source)}",
        "blob_mount",
        repository=repository,
        scope=f"repository:{repository}:pull,push repository:{source}:pull",
        ok=(201, 202),
    )
    if resp.status_code == 202 and resp.headers.get("Location"):  # not mounted: drop the upload session
        with contextlib.suppress(RegistryError):
            registry.request(
                "DELETE",
                resp.headers["Location"],
                "blob_upload_cancel",
                repository=repository,
                scope=f"repository:{repository}:pull,push",
                ok=(204, 404),
            )
    return resp.status_code == 201


def _restore_blobs(
    store: ArchiveStore, registry: Registry, entry: dict[str, Any], target: str, manifests: list[Manifest]
) -> list[str]:
    """Make every blob the manifests reference present in ``target``; returns the digests uploaded."""
    if not isinstance(registry, OciRegistry):
        return []  # ECR: see the module docstring
    archived = {b["digest"]: b for b in entry["blobs"]}
    uploaded, missing = [], []
    for digest in needed_blobs(manifests):
        if registry.blob_exists(target, digest):
            continue
        if target != entry["repository"] and _oci_mount(registry, target, digest, entry["repository"]):
            continue
        blob = archived.get(digest)
        if blob is None:
            missing.append(digest)
            continue
        data = store.read_member(blob) if "pack" in blob else store.read_blob(digest)
        registry.upload_blob(target, data)
        uploaded.append(digest)
    if missing:
        raise RestoreError(
            f"{entry['registry']}/{target}: {len(missing)} blob(s) of {entry['digest']} are neither archived "
            f"(archive_layers was off) nor in the registry any more (garbage-collected?), e.g. {missing[0]}"
        )
    return uploaded


def restore_image(
    store: ArchiveStore,
    registry: Registry,
    entry: dict[str, Any],
    *,
    to_repository: str | None = None,
    move_tags: bool = False,
) -> dict[str, Any]:
    """Restore one archived entry (from :func:`locate`) into its repository or ``to_repository``."""
    target = to_repository or entry["repository"]
    manifest = Manifest(
        entry["digest"], entry["manifest"]["media_type"], store.read_member(entry["manifest"])
    )
    children = [Manifest(c["digest"], c["media_type"], store.read_member(c)) for c in entry["children"]]
    _ensure_repository(registry, target)
    uploaded = _restore_blobs(store, registry, entry, target, [manifest, *children])
    for child in sorted(children, key=lambda c: c.media_type in INDEX_TYPES):  # plain manifests first
        if not _has_manifest(registry, target, child.digest):
            _put(registry, target, child)
    if not _has_manifest(registry, target, manifest.digest):
        _put(registry, target, manifest)
    restored, kept_elsewhere = [], {}
    for tag in entry["tags"]:
        now = _tag_digest(registry, target, tag)
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
