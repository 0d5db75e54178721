"""Size budget: images over ``size_budget_mb`` compressed, each with its largest layers.

Sizes are compressed bytes (config + layers) from the inventory, judged per platform image:
an index is as big as its largest child (ECR's rule), which is reported on its own. The
inventory keeps layer digests but not their sizes, so the manifests of over-budget images are
fetched, and only those, with ``Registry.read_images``: ECR through ``batch_get_image`` (100
digests per call), OCI one GET per manifest. An image gone or unreadable since the inventory is
listed under ``errors``; the others are reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

from ..registries.base import Manifest, Registry, RegistryError

log = logging.getLogger(__name__)
MB = 1024 * 1024


def over_budget(images: pd.DataFrame, budget_mb: int) -> pd.DataFrame:
    """Candidate rows larger than the budget, biggest first."""
    big = images[images["size_bytes"].fillna(0) > budget_mb * MB]
    return big.sort_values(["size_bytes", "registry", "repository"], ascending=[False, True, True])


def _manifests(
    registry: Registry, repository: str, digests: list[str]
) -> tuple[dict[str, Manifest], dict[str, str]]:
    """The manifests read, and per digest that could not be read, why."""
    read = registry.read_images(repository, digests)
    problems = {d: "not in the registry any more" for d in read.gone}
    problems.update(read.failures)
    return read.found, problems


def largest_layers(manifest: Manifest, n: int) -> list[dict[str, Any]]:
    layers = manifest.body.get("layers") or []
    top = sorted(layers, key=lambda x: int(x.get("size", 0)), reverse=True)[:n]
    return [
        {"digest": x["digest"], "size_bytes": int(x.get("size", 0)), "media_type": x.get("mediaType")}
        for x in top
    ]


def report(
    images: pd.DataFrame, budget_mb: int, n_layers: int, build: Callable[[str], Registry]
) -> dict[str, Any]:
    """Over-budget images with their largest layers; manifest errors are listed, not raised."""
    big = over_budget(images, budget_mb)
    layers: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    errors = []
    registries: dict[str, Registry] = {}
    for (reg_name, repo), group in big.groupby(["registry", "repository"], sort=True):
        try:
            if reg_name not in registries:
                registries[reg_name] = build(reg_name)
            found, problems = _manifests(registries[reg_name], repo, sorted(set(group["digest"])))
        except (RegistryError, ValueError) as exc:
            errors.append({"registry": reg_name, "repository": repo, "error": str(exc)})
            continue
        for digest, why in sorted(problems.items()):
            errors.append({"registry": reg_name, "repository": repo, "digest": digest, "error": why})
        for digest, manifest in found.items():
            layers[(reg_name, repo, digest)] = largest_layers(manifest, n_layers)
    requests = sum(r.requests.total for r in registries.values())
    rows = [
        {
            "registry": r.registry,
            "repository": r.repository,
            "digest": r.digest,
            "newest_tag": r.newest_tag,
            "platform": r.platform,
            "size_bytes": int(r.size_bytes),
            "size_mb": round(r.size_bytes / MB, 1),
            "largest_layers": layers.get((r.registry, r.repository, r.digest)),
        }
        for r in big.itertuples(index=False)
    ]
    log.info("scan: %d image(s) over %d MB; %d manifest request(s)", len(rows), budget_mb, requests)
    return {
        "budget_mb": budget_mb,
        "images_checked": len(images),
        "over_budget": rows,
        "manifest_requests": requests,
        "errors": errors,
    }
