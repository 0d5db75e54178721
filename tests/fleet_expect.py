"""What a seeded fleet should look like through each registry's API (shared by tests)."""

from __future__ import annotations

from devstack.fleet import ManifestSpec, RepoSpec


def visible_oci(repo: RepoSpec) -> dict[str, ManifestSpec]:
    """The distribution API reaches tagged manifests and the children of tagged indexes only."""
    by_digest = {m.digest: m for m in repo.manifests}
    out = {m.digest: m for m in repo.manifests if m.tags}
    for m in list(out.values()):
        for child in m.children:
            out[child] = by_digest[child]
    return out


def all_ecr(repo: RepoSpec) -> dict[str, ManifestSpec]:
    return {m.digest: m for m in repo.manifests}
