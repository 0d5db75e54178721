"""Apply the tagging scheme to one pushed digest through the registry API (no Docker daemon).

A build pipeline pushes once (by digest or a throwaway tag), then calls ``registry-ops tag``:
the manifest is read and put again, byte for byte, under each tag: the version (releases),
the commit, a ``YYYYMMDD-HHMMSS`` timestamp and ``latest``. Because the bytes are identical
every tag resolves to the same digest, on ECR (``put_image``) and OCI registries
(``PUT /v2/<name>/manifests/<tag>``) alike.

``latest`` only moves forward: it is applied for a release (no pre-release part) that is at
least as new as every release already in the repository, so a hotfix of an older line
(``1.4.3`` after ``2.0.0``) does not take ``latest`` away from the newest release.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..registries.base import Registry, RegistryError
from .tagging import COMMIT, LATEST, SEMVER, TIMESTAMP_FORMAT, is_release, is_timestamp, semver_key


def repository_tags(registry: Registry, repository: str) -> list[str]:
    """Every tag in a repository, sorted (ECR: ``ListImages`` pages; OCI: the tags list)."""
    return registry.list_tags(repository)


def plan_tags(
    version: str | None, commit: str, timestamp: str, existing: list[str], latest: bool = True
) -> tuple[list[str], str]:
    """Tags to apply and why ``latest`` is (not) among them. Raises ValueError on a bad tag."""
    if version is not None and not SEMVER.match(version):
        raise ValueError(f"version {version!r} is not semver (MAJOR.MINOR.PATCH[-pre][+build])")
    if not COMMIT.match(commit):
        raise ValueError(f"commit {commit!r} is not 7 to 40 lowercase hex characters")
    if not is_timestamp(timestamp):
        raise ValueError(f"timestamp {timestamp!r} is not YYYYMMDD-HHMMSS")
    tags = [t for t in (version, commit, timestamp) if t]
    if not latest:
        return tags, "not requested"
    if version is None or not is_release(version):
        return tags, "not a release"
    newer = [
        t for t in existing if is_release(t) and t != version and (semver_key(t) or ()) > semver_key(version)
    ]
    if newer:
        newest = max(newer, key=lambda t: semver_key(t) or ())
        return tags, f"kept on {newest}: {version} is older"
    return [*tags, LATEST], "moved"


def apply(
    registry: Registry,
    repository: str,
    source: str,
    commit: str,
    version: str | None = None,
    timestamp: str | None = None,
    latest: bool = True,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Put the manifest of ``source`` (tag or digest) under each scheme tag."""
    timestamp = timestamp or datetime.now(UTC).strftime(TIMESTAMP_FORMAT)
    existing = repository_tags(registry, repository)
    tags, latest_note = plan_tags(version, commit, timestamp, existing, latest)
    manifest = registry.get_manifest(repository, source)
    applied = []
    for tag in tags if not dry_run else []:
        digest = registry.put_manifest(repository, manifest, tag)
        if digest != manifest.digest:
            raise RegistryError(
                registry.name, f"tag {tag} now points at {digest}, not {manifest.digest}", repository
            )
        applied.append(tag)
    return {
        "registry": registry.name,
        "repository": repository,
        "digest": manifest.digest,
        "tags": tags,
        "applied": applied,
        "latest": latest_note,
        "dry_run": dry_run,
    }
