"""The backup catalog: everything one registry held at one moment, as one deterministic document.

A backup snapshot is one catalog per registry plus the snapshot's manifest (``backup/store.py``).
Catalogs are stored in the one blob store (``store/blobs.py``, under ``storage.prefixes.archive``,
the archive's catalogs beside them), gzip-compressed JSON, named by their sha256: a registry
that did not change since the last backup gives the byte-identical catalog, which is therefore
already stored and costs no upload. Hence the rules of :func:`encode`: keys sorted, lists in a
fixed order, no times of the backup run inside (``taken_at`` is in the snapshot manifest), gzip
with mtime 0.

Document (``schema_version`` 1)::

    {
      "kind": "backup-catalog", "schema_version": 1,
      "registry": "<config name>", "registry_kind": "ecr" | "oci" | "ocilayout",
      "registry_settings": {...},         # ECR: registry_policy, replication_configuration,
                                          # scanning_configuration, pull_through_cache_rules
      "repositories": [                   # sorted by name
        {"name": "team/app",
         "settings": {...},               # RepositorySettings.as_dict() (ECR; {} elsewhere)
         "tags": {"1.2.3": "sha256:..."}, # every tag -> the digest it points at
         "manifests": [                   # every manifest, index children and referrers too,
           {"digest": "sha256:...",       # sorted by digest
            "media_type": "...", "size": 1234,
            "children": ["sha256:..."],   # an index's entries
            "subject": "sha256:..." | null,
            "config": "sha256:..." | null,
            "layers": ["sha256:..."]}]}],
      "objects": {                        # where every manifest and blob's bytes are, by digest
        "sha256:...": {"pack": "<key>", "offset": 512, "size": 1234},   # manifests, configs
        "sha256:...": {"key": "<blobs/sha256/hex key>", "size": 1234}   # layers (full mode, or
      },                                  # stored earlier by a full backup or the archive)
      "blob_sizes": {"sha256:...": 1234}  # every config and layer digest the manifests name
    }

A layer with no entry in ``objects`` was not in the store when the catalog was written (a
metadata backup, before the first full one): a restore takes it from the target or fails
naming it.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from typing import Any

KIND = "backup-catalog"
SCHEMA_VERSION = 1
REGISTRY_KINDS = ("ecr", "oci", "ocilayout")


class CatalogError(ValueError):
    """A catalog that cannot be read: the message names the catalog (``where``) and the problem."""


@dataclass
class ManifestEntry:
    digest: str
    media_type: str
    size: int
    children: list[str] = field(default_factory=list)
    subject: str | None = None
    config: str | None = None
    layers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "media_type": self.media_type,
            "size": self.size,
            "children": list(self.children),
            "subject": self.subject,
            "config": self.config,
            "layers": list(self.layers),
        }

    def blobs(self) -> list[str]:
        """Config then layers: the blobs a restore must place before this manifest."""
        return ([self.config] if self.config else []) + list(self.layers)


@dataclass
class RepositoryEntry:
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    manifests: list[ManifestEntry] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "settings": self.settings,
            "tags": dict(sorted(self.tags.items())),
            "manifests": [m.as_dict() for m in sorted(self.manifests, key=lambda m: m.digest)],
        }

    def manifest_order(self) -> list[ManifestEntry]:
        """The order a restore writes manifests in: children before the indexes that list them,
        subjects before their referrers (a registry may refuse a dangling reference), else by
        digest. Entries naming a digest outside the repository do not wait for it."""
        by_digest = {m.digest: m for m in self.manifests}
        done: set[str] = set()
        out: list[ManifestEntry] = []

        def visit(m: ManifestEntry, path: set[str]) -> None:
            if m.digest in done or m.digest in path:
                return
            path.add(m.digest)
            for dep in sorted(set(m.children) | ({m.subject} if m.subject else set())):
                if dep in by_digest:
                    visit(by_digest[dep], path)
            path.discard(m.digest)
            done.add(m.digest)
            out.append(m)

        for m in sorted(self.manifests, key=lambda m: m.digest):
            visit(m, set())
        return out


@dataclass
class Catalog:
    registry: str
    registry_kind: str
    registry_settings: dict[str, Any] = field(default_factory=dict)
    repositories: list[RepositoryEntry] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    blob_sizes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "schema_version": SCHEMA_VERSION,
            "registry": self.registry,
            "registry_kind": self.registry_kind,
            "registry_settings": self.registry_settings,
            "repositories": [r.as_dict() for r in sorted(self.repositories, key=lambda r: r.name)],
            "objects": dict(sorted(self.objects.items())),
            "blob_sizes": dict(sorted(self.blob_sizes.items())),
        }

    def repository(self, name: str) -> RepositoryEntry | None:
        return next((r for r in self.repositories if r.name == name), None)

    def counts(self) -> dict[str, int]:
        manifests = {m.digest for r in self.repositories for m in r.manifests}
        return {
            "repositories": len(self.repositories),
            "tags": sum(len(r.tags) for r in self.repositories),
            "manifests": len(manifests),
            "blobs": len(self.blob_sizes),
            "bytes": sum(self.blob_sizes.values()) + sum(self._manifest_sizes().values()),
        }

    def _manifest_sizes(self) -> dict[str, int]:
        return {m.digest: m.size for r in self.repositories for m in r.manifests}

    def missing_objects(self) -> list[str]:
        """Digests (manifests and blobs) the catalog names but has no stored location for."""
        wanted = set(self._manifest_sizes()) | set(self.blob_sizes)
        return sorted(wanted - set(self.objects))


def encode(catalog: Catalog) -> bytes:
    """The catalog's bytes: canonical JSON, gzip with mtime 0 (equal catalogs, equal bytes)."""
    text = json.dumps(catalog.as_dict(), sort_keys=True, separators=(",", ":"))
    return gzip.compress(text.encode(), compresslevel=6, mtime=0)


def decode(data: bytes, where: str) -> Catalog:
    """A catalog from its stored bytes; CatalogError naming ``where`` and the problem."""
    try:
        doc = json.loads(gzip.decompress(data))
    except (OSError, EOFError, ValueError) as exc:
        raise CatalogError(f"{where}: not a gzip-compressed JSON catalog ({exc})") from None
    return from_dict(doc, where)


def from_dict(doc: Any, where: str) -> Catalog:
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise CatalogError(
            f"{where}: not a backup catalog (kind {doc.get('kind') if isinstance(doc, dict) else None!r})"
        )
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise CatalogError(f"{where}: schema_version {version!r}; this code reads 1 to {SCHEMA_VERSION}")
    if doc.get("registry_kind") not in REGISTRY_KINDS:
        raise CatalogError(
            f"{where}: registry_kind {doc.get('registry_kind')!r} is not one of {REGISTRY_KINDS}"
        )
    try:
        repos = [
            RepositoryEntry(
                name=r["name"],
                settings=dict(r.get("settings") or {}),
                tags={str(t): str(d) for t, d in (r.get("tags") or {}).items()},
                manifests=[
                    ManifestEntry(
                        digest=m["digest"],
                        media_type=m["media_type"],
                        size=int(m["size"]),
                        children=list(m.get("children") or []),
                        subject=m.get("subject"),
                        config=m.get("config"),
                        layers=list(m.get("layers") or []),
                    )
                    for m in r.get("manifests") or []
                ],
            )
            for r in doc.get("repositories") or []
        ]
        return Catalog(
            registry=str(doc["registry"]),
            registry_kind=doc["registry_kind"],
            registry_settings=dict(doc.get("registry_settings") or {}),
            repositories=repos,
            objects={str(k): dict(v) for k, v in (doc.get("objects") or {}).items()},
            blob_sizes={str(k): int(v) for k, v in (doc.get("blob_sizes") or {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"{where}: malformed catalog ({type(exc).__name__}: {exc})") from None
