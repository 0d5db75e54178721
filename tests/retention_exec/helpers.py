"""Shared helpers for the retention executor tests: small fleets, plans built directly in the
planner's contract shape, run contexts, and registry probes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
import pandas as pd
from botocore.config import Config

from devstack.fleet import ManifestSpec, RepoSpec, make_fleet
from devstack.seed import seed_ecr, seed_oci
from include.registry_ops.clients import RETRIES
from include.registry_ops.registries.base import Registry
from include.registry_ops.registries.ecr import EcrRegistry
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.retention.archive import ArchiveStore
from include.registry_ops.retention.executor import RunContext
from tests.conftest import OCI_PASSWORD, OCI_USER

BUCKET = "ret-exec-test"
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def unique(prefix: str = "ret-exec") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:8]}/"


def small_fleet(prefix: str, repositories: int = 2, images: int = 24, seed: int = 21) -> list[RepoSpec]:
    """Repository 0 holds signed single-arch images, repository 1 multi-arch indexes."""
    return make_fleet(
        seed=seed, repositories=repositories, images=images, layer_scale=0.0005, prefix=prefix, now=NOW
    )


def visible(registry: Registry, repo: RepoSpec) -> list[ManifestSpec]:
    """What the registry's API can list: OCI sees tagged manifests and children of tagged indexes."""
    if isinstance(registry, EcrRegistry):
        return list(repo.manifests)
    by = {m.digest: m for m in repo.manifests}
    out = {m.digest: m for m in repo.manifests if m.tags}
    for m in list(out.values()):
        out.update({c: by[c] for c in m.children})
    return list(out.values())


def plan_for(
    registry: str,
    repo: RepoSpec,
    specs: list[ManifestSpec],
    expire: set[str],
    *,
    untag: dict[str, list[str]] | None = None,
    dry_run: bool = False,
    policy: str = "test-policy",
) -> pd.DataFrame:
    """A plan in the planner's contract shape: one row per image, chosen actions."""
    untag = untag or {}
    rows = []
    for m in specs:
        action = "expire" if m.digest in expire else "untag" if m.digest in untag else "keep"
        rows.append(
            {
                "registry": registry,
                "repository": repo.name,
                "digest": m.digest,
                "tags": list(m.tags),
                "kind": m.kind,
                "media_type": m.media_type,
                "size_bytes": m.size,
                "pushed_at": pd.Timestamp(m.pushed_at),
                "action": action,
                "rule_priority": 1 if action != "keep" else None,
                "reason": f"rule 1 (test): {action}",
                "untag_tags": list(untag.get(m.digest, [])),
                "dry_run": dry_run,
                "policy": policy,
            }
        )
    frame = pd.DataFrame(rows)
    frame["rule_priority"] = frame["rule_priority"].astype("Int64")
    return frame


def oldest_images(specs: list[ManifestSpec], n: int) -> list[ManifestSpec]:
    """The n oldest top-level images (no referrers, no index children) with their children."""
    children = {c for m in specs for c in m.children}
    top = sorted(
        (m for m in specs if m.kind != "referrer" and m.digest not in children), key=lambda m: m.pushed_at
    )
    return top[:n]


def with_children(specs: list[ManifestSpec], chosen: list[ManifestSpec]) -> set[str]:
    return {m.digest for m in chosen} | {c for m in chosen for c in m.children}


def run_ctx(s3: Any, run_id: str | None = None, *, dry_run: bool = False, **kw: Any) -> RunContext:
    return RunContext(
        s3=s3,
        bucket=BUCKET,
        store=ArchiveStore(s3, BUCKET, "archive/"),
        run_id=run_id or f"test-{uuid.uuid4().hex[:8]}",
        now=NOW,
        dry_run=dry_run,
        **kw,
    )


def present(registry: Registry, repository: str, digest: str) -> bool:
    if not isinstance(registry, EcrRegistry):
        return registry.head_manifest(repository, digest) == digest
    ids = [d["imageDigest"] for d in registry.describe(repository)]
    return digest in ids


def tags_now(registry: Registry, repository: str) -> dict[str, set[str]]:
    from include.registry_ops.retention.executor import current_tags

    return current_tags(registry, repository)[0]


def ecr_registry(endpoint: str) -> EcrRegistry:
    client = boto3.client(
        "ecr", endpoint_url=endpoint, region_name="us-east-1", config=Config(retries=dict(RETRIES))
    )
    return EcrRegistry("ecr-local", client)


def oci_registry(url: str) -> OciRegistry:
    return OciRegistry("oci-local", url, OCI_USER, OCI_PASSWORD, backoff=0.01)


def push(registry: Registry, fleet: list[RepoSpec]) -> list[RepoSpec]:
    """Push as a client does, through the interface only (any kind): the repository where the
    kind needs it first, every blob (ECR: the layer upload API), then the manifests and tags."""
    from include.registry_ops.registries.base import Manifest

    for repo in fleet:
        if registry.capabilities.explicit_repositories:
            registry.create_repository(repo.name)
        for spec in repo.manifests:  # children come before their index in the fleet
            for blob in spec.blobs:
                if registry.head_blob(repo.name, blob.digest) is None:
                    registry.put_blob(repo.name, blob.data, blob.digest, len(blob.data))
            manifest = Manifest(spec.digest, spec.media_type, spec.raw)
            registry.put_manifest(repo.name, manifest)
            for tag in spec.tags:
                registry.put_manifest(repo.name, manifest, tag)
    return fleet


def seed(registry: Registry, fleet: list[RepoSpec]) -> list[RepoSpec]:
    if isinstance(registry, EcrRegistry):
        # layers held as a push leaves them: restores check the registry holds what archives lack
        seed_ecr(registry.client, fleet, layers=True)
    else:
        assert isinstance(registry, OciRegistry)
        seed_oci(registry, fleet)
    return fleet
