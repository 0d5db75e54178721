"""The size budget reads manifests through ``Registry.read_images``: an over-budget image that
went away since the inventory is named in ``errors`` and the others are still reported."""

from __future__ import annotations

import pandas as pd

from devstack.seed import seed_oci
from include.registry_ops.scan import sizes
from tests.retention_exec.helpers import oci_registry, small_fleet, unique


def test_an_image_gone_since_the_inventory_is_listed_and_the_others_reported(registry_server):
    oci = oci_registry(registry_server.url)
    fleet = small_fleet(unique("scan-sizes"), repositories=1)
    seed_oci(oci, fleet)
    repo = fleet[0]
    kept, gone = [m for m in repo.manifests if m.kind == "image" and m.tags][:2]
    oci.delete_manifest(repo.name, gone.digest)
    images = pd.DataFrame(
        [
            {
                "registry": oci.name,
                "repository": repo.name,
                "digest": m.digest,
                "newest_tag": m.tags[0],
                "platform": "linux/amd64",
                "size_bytes": 10 * sizes.MB,
            }
            for m in (kept, gone)
        ]
    )
    report = sizes.report(images, 1, 2, lambda _: oci)
    by_digest = {r["digest"]: r for r in report["over_budget"]}
    layers = sorted((b for b in kept.blobs[1:]), key=lambda b: b.size, reverse=True)[:2]
    assert [x["digest"] for x in by_digest[kept.digest]["largest_layers"]] == [b.digest for b in layers]
    assert by_digest[gone.digest]["largest_layers"] is None
    assert report["errors"] == [
        {
            "registry": oci.name,
            "repository": repo.name,
            "digest": gone.digest,
            "error": "not in the registry any more",
        }
    ]
