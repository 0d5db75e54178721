"""Seed the local stack with a fleet from ``fleet.make_fleet`` (test and demo only).

ECR (moto): repositories are created through the real API, but images are built directly in
moto's in-process backend. This is deliberate and test-only: moto stamps every ``put_image``
with "now" and derives digests from layer digests, so realistic push times (spread over 400
days), pull times, untagged images, true manifest digests, sizes (config + layers) and
referrer subjects can only be set there. The server must therefore run in this process
(``ThreadedMotoServer``, see ``services.py``). With ``layers`` (the default) each image's config
and layers are also held by its repository as ``CompleteLayerUpload`` records them (moto's
``Repository.layers``, and the bytes ``moto_layers`` serves through ``GetDownloadUrlForLayer``),
so seeded images can be archived with their layers and restored by copying blobs, as pushed
ones can.

OCI (distribution): everything goes through the registry API, exactly as a client pushes:
blobs (monolithic upload), then manifests by digest, then one PUT per tag.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from devstack.fleet import ManifestSpec, RepoSpec
from include.registry_ops.registries.base import Manifest
from include.registry_ops.registries.oci import OciRegistry


def _seeded_image_class() -> type:
    from moto.ecr.models import Image

    class SeededImage(Image):
        """moto Image with the size, times and referrer fields a real ECR reports."""

        def __init__(self, spec: ManifestSpec, repository: str, account_id: str, size: int) -> None:
            super().__init__(
                account_id,
                spec.tags[0] if spec.tags else None,
                spec.raw.decode(),
                repository,
                spec.media_type,
                spec.digest,
            )
            self.image_tags = list(spec.tags)
            self.image_tag = spec.tags[-1] if spec.tags else None
            self.image_pushed_at = int(spec.pushed_at.timestamp())
            self._size = size
            if spec.last_pulled_at:
                self.last_recorded_pull_time = int(spec.last_pulled_at.timestamp())
            if spec.subject:
                self.subject_manifest_digest = spec.subject
            if spec.artifact_type:
                self.artifact_media_type = spec.artifact_type

        def get_image_size_in_bytes(self) -> int | None:
            return self._size

    return SeededImage


def seed_ecr(
    ecr_client: Any, fleet: list[RepoSpec], region: str = "us-east-1", *, layers: bool = True
) -> int:
    """Create the repositories via the API and their images in moto's backend; returns images.

    ``layers``: also hold each image's blobs in its repository (see the module docstring); off,
    a seeded image's layers answer ``LayersNotFoundException`` like a layer never pushed."""
    from moto.ecr.models import ecr_backends

    seeded = _seeded_image_class()
    from moto.core import DEFAULT_ACCOUNT_ID

    backend = ecr_backends[DEFAULT_ACCOUNT_ID][region]
    count = 0
    for repo in fleet:
        with contextlib.suppress(ecr_client.exceptions.RepositoryAlreadyExistsException):
            ecr_client.create_repository(repositoryName=repo.name)
        held = backend.repositories[repo.name]
        images = held.images
        present = {i.image_digest for i in images}
        sizes = {s.digest: s.size for s in repo.manifests}
        for spec in repo.manifests:
            if spec.digest in present:
                continue
            # ECR's rule: an index's size is its largest child's
            size = max(sizes[c] for c in spec.children) if spec.children else spec.size
            images.append(seeded(spec, repo.name, DEFAULT_ACCOUNT_ID, size))
            count += 1
        if layers:
            hold_blobs(held, repo)
    return count


def hold_blobs(held: Any, repo: RepoSpec) -> None:
    """Record every blob of the repository's images in moto's ``Repository`` as an upload would:
    ``layers`` (digest -> size, what ``BatchCheckLayerAvailability`` answers from) and
    ``layer_blobs`` (digest -> bytes, what the ``moto_layers`` shim serves). The bytes are the
    fleet's own objects, shared, not copied."""
    if not hasattr(held, "layer_blobs"):
        held.layer_blobs = {}
    sizes, blobs = held.layers, held.layer_blobs
    for spec in repo.manifests:
        for blob in spec.blobs:
            sizes[blob.digest] = blob.size
            blobs[blob.digest] = blob.data


def seed_oci(registry: OciRegistry, fleet: list[RepoSpec], concurrency: int = 8) -> int:
    """Push the fleet through the distribution API; returns manifests pushed."""

    holder: dict[str, str] = {}  # blob digest -> a repository that has it (cross-repo mount)
    lock = threading.Lock()

    def push_repo(repo: RepoSpec) -> int:
        uploaded: set[str] = set()
        for spec in repo.manifests:  # children come before their index in the fleet
            for blob in spec.blobs:
                if blob.digest not in uploaded:
                    with lock:
                        source = holder.get(blob.digest)
                    registry.upload_blob(repo.name, blob.data, mount_from=source)
                    uploaded.add(blob.digest)
                    with lock:
                        holder.setdefault(blob.digest, repo.name)
            manifest = Manifest(spec.digest, spec.media_type, spec.raw)
            registry.put_manifest(repo.name, manifest)
            for tag in spec.tags:
                registry.put_manifest(repo.name, manifest, tag)
        return len(repo.manifests)

    with ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(push_repo, fleet))
