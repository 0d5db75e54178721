"""One interface for every registry kind; adapters live beside it (``ecr.py``, ``oci.py``).

Callers (inventory, retention, restore, the CLI) only use :class:`Registry`, so a new kind
(Harbor's own API, Docker Hub) is one more adapter, not changes across the code base.
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Manifest media types (OCI image spec and Docker v2 schema 2).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT_ALL = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

# cosign stores signatures/attestations/SBOMs under tags derived from the subject digest,
# and the OCI referrers "tag schema" fallback uses the bare form.
REFERRER_TAG = re.compile(r"^sha256-([0-9a-f]{64})(?:\.(sig|att|sbom))?$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class RegistryError(RuntimeError):
    """A registry call failed; the message names the registry, repository and problem."""

    def __init__(self, registry: str, problem: str, repository: str | None = None):
        self.registry, self.repository, self.problem = registry, repository, problem
        where = f"{registry}/{repository}" if repository else registry
        super().__init__(f"registry {where}: {problem}")


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as stored: ``raw`` bytes hash to ``digest``."""

    digest: str
    media_type: str
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.raw)


@dataclass
class DeleteResult:
    deleted: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # digest -> reason


class RequestCounter:
    """Thread-safe count of API requests by operation (benches and tests read it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, operation: str, n: int = 1) -> None:
        with self._lock:
            self.counts[operation] += n

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Registry(abc.ABC):
    """A registry of the fleet, named as in the config file."""

    kind: str

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = RequestCounter()

    @abc.abstractmethod
    def list_repositories(self) -> list[str]:
        """Every repository name, all pages followed."""

    @abc.abstractmethod
    def list_images(self, repository: str) -> list[dict[str, Any]]:
        """Inventory records (see ``schema``) for one repository, without registry/snapshot_at."""

    @abc.abstractmethod
    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest for a tag or digest, bytes as stored."""

    @abc.abstractmethod
    def put_manifest(self, repository: str, manifest: Manifest, tag: str | None = None) -> str:
        """Store a manifest (by digest, or under ``tag``); returns the digest the registry reports."""

    @abc.abstractmethod
    def delete_images(self, repository: str, digests: list[str]) -> DeleteResult:
        """Delete manifests by digest (all their tags go with them)."""

    def error(self, problem: str, repository: str | None = None) -> RegistryError:
        return RegistryError(self.name, problem, repository)


def classify(media_type: str | None, subject: str | None, tags: list[str]) -> str:
    """Inventory ``kind``: index, referrer (subject or cosign-style tag) or image."""
    if media_type in INDEX_TYPES:
        return "index"
    if subject or (tags and all(REFERRER_TAG.match(t) for t in tags)):
        return "referrer"
    return "image"


def referrer_subject(tags: list[str]) -> str | None:
    """The subject digest encoded in cosign-style tags (``sha256-<hex>.sig``), if any."""
    for tag in tags:
        m = REFERRER_TAG.match(tag)
        if m:
            return f"sha256:{m.group(1)}"
    return None


def platform_of(entry: dict[str, Any] | None) -> str | None:
    """``os/arch[/variant]`` from an index entry's ``platform`` or an image config."""
    if not entry:
        return None
    os_, arch = entry.get("os"), entry.get("architecture")
    if not os_ or not arch:
        return None
    variant = entry.get("variant")
    return f"{os_}/{arch}/{variant}" if variant else f"{os_}/{arch}"


def link_graph(records: list[dict[str, Any]], children: dict[str, list[str]]) -> None:
    """Fill child_digests and parent_digests in place from index -> children lists."""
    by_digest = {r["digest"]: r for r in records}
    for r in records:
        r.setdefault("parent_digests", [])
        r.setdefault("child_digests", [])
    for parent, kids in children.items():
        if parent in by_digest:
            by_digest[parent]["child_digests"] = list(kids)
        for kid in kids:
            if kid in by_digest and parent not in by_digest[kid]["parent_digests"]:
                by_digest[kid]["parent_digests"].append(parent)


def index_size(records: list[dict[str, Any]]) -> None:
    """An index's size is its largest child's (ECR's rule), where the registry gave none."""
    by_digest = {r["digest"]: r for r in records}
    for r in records:
        if r.get("kind") == "index" and not r.get("size_bytes"):
            sizes = [by_digest[c].get("size_bytes") or 0 for c in r["child_digests"] if c in by_digest]
            r["size_bytes"] = max(sizes, default=0)


def digest_of(raw: bytes) -> str:
    """The content digest of manifest or blob bytes."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def media_type_of(raw: bytes) -> str:
    """Media type declared in a manifest, else inferred (``manifests`` means an index)."""
    body = json.loads(raw)
    if body.get("mediaType"):
        return body["mediaType"]
    return OCI_INDEX if "manifests" in body else OCI_MANIFEST
