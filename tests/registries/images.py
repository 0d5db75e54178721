"""Small real images and artifacts for the registry interface tests, built in memory.

Layers are real tar archives and configs real image configs, so skopeo and umoci can read
what the tests write. Every builder takes a seed so each test pushes content of its own.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from dataclasses import dataclass, field

from include.registry_ops.registries.base import OCI_INDEX, OCI_MANIFEST, Manifest, Registry, digest_of

CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
EMPTY = "application/vnd.oci.empty.v1+json"
SBOM = "application/spdx+json"


@dataclass
class Image:
    manifest: Manifest
    blobs: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes (config and layers)
    children: list[Image] = field(default_factory=list)  # for an index


def unique(prefix: str) -> str:
    """A repository name no other test uses (the services live for the whole session)."""
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def tar_layer(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(payload), 0, 0o644
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _desc(media_type: str, data: bytes) -> dict:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


def manifest_of(body: dict) -> Manifest:
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return Manifest(digest_of(raw), body["mediaType"], raw)


def image(seed: str, arch: str = "amd64") -> Image:
    layer = tar_layer(f"app/{seed}.txt", f"payload of {seed} for {arch}\n".encode() * 50)
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "created": "2026-01-02T03:04:05Z",
            "config": {"Labels": {"seed": seed}},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]},
        },
        sort_keys=True,
    ).encode()
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _desc(CONFIG, config),
        "layers": [_desc(LAYER, layer)],
    }
    return Image(manifest_of(body), {digest_of(config): config, digest_of(layer): layer})


def index(seed: str) -> Image:
    kids = [image(f"{seed}-amd64", "amd64"), image(f"{seed}-arm64", "arm64")]
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": k.manifest.media_type,
                "digest": k.manifest.digest,
                "size": len(k.manifest.raw),
                "platform": {"os": "linux", "architecture": arch},
            }
            for k, arch in zip(kids, ("amd64", "arm64"), strict=True)
        ],
    }
    return Image(manifest_of(body), {}, kids)


def referrer(subject: Manifest, seed: str, artifact_type: str = SBOM) -> Image:
    """An OCI 1.1 artifact with ``subject`` and ``artifactType`` (what ``oras attach`` pushes)."""
    empty = b"{}"
    payload = json.dumps({"spdxVersion": "SPDX-2.3", "name": seed}).encode()
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": _desc(EMPTY, empty),
        "layers": [_desc(artifact_type, payload)],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": len(subject.raw)},
    }
    return Image(manifest_of(body), {digest_of(empty): empty, digest_of(payload): payload})


def push(reg: Registry, repository: str, img: Image, *tags: str) -> Manifest:
    """Blobs, children, then the manifest by digest and under each tag, through the interface."""
    for child in img.children:
        push(reg, repository, child)
    for digest, data in img.blobs.items():
        if reg.head_blob(repository, digest) is None:
            reg.put_blob(repository, data, digest, len(data))
    reg.put_manifest(repository, img.manifest)
    for tag in tags:
        reg.put_manifest(repository, img.manifest, tag)
    return img.manifest


def copy_image(src: Registry, src_repo: str, dst: Registry, dst_repo: str, tag: str) -> Manifest:
    """Copy a tagged image or index between any two registries using only the interface."""

    def copy(reference: str) -> Manifest:
        m = src.get_manifest(src_repo, reference)
        body = m.body
        for child in body.get("manifests", []):
            copy(child["digest"])
        blobs = [body["config"], *body.get("layers", [])] if "config" in body else []
        for d in blobs:
            if dst.head_blob(dst_repo, d["digest"]) is None:
                with src.open_blob(src_repo, d["digest"]) as stream:
                    dst.put_blob(dst_repo, stream, d["digest"], d["size"])
        dst.put_manifest(dst_repo, m)
        return m

    m = copy(tag)
    dst.put_manifest(dst_repo, m, tag)
    return m
