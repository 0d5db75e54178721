"""An image whose config blob the registry cannot serve is not archived, so it is not deleted;
the images beside it in the same pack are archived and deleted (the real distribution registry,
which serves config blobs, so the archive holds them)."""

from __future__ import annotations

from include.registry_ops.retention.executor import Limits, execute
from tests.retention_exec.helpers import (
    oldest_images,
    plan_for,
    present,
    run_ctx,
    seed,
    small_fleet,
    unique,
    visible,
)

NO_CAPS = Limits(max_deletions_per_run=10_000, max_fraction=1.0)


def test_an_image_whose_config_cannot_be_read_is_kept_and_the_others_go(oci_reg, ret_s3):
    assert oci_reg.capabilities.blob_reads_cheap  # configs are archived here: the rule applies
    repo = seed(oci_reg, small_fleet(unique(), repositories=1))[0]
    specs = visible(oci_reg, repo)
    chosen = [m for m in oldest_images(specs, 6) if m.kind == "image" and m.blobs][:4]
    assert len(chosen) == 4
    victim = chosen[0]
    config = victim.blobs[0].digest
    oci_reg.delete_blob(repo.name, config)  # the registry now answers 404 for it
    broken = {m.digest for m in specs if m.blobs and m.blobs[0].digest == config}
    expire = {m.digest for m in chosen}
    run = run_ctx(ret_s3)

    [result] = execute(plan_for(oci_reg.name, repo, specs, expire), run, lambda _: oci_reg, limits=NO_CAPS)

    failed_here = expire & broken
    assert victim.digest in failed_here
    assert result["status"] == "failed" and result["failed"] == len(failed_here), result
    assert result["deleted"] == len(expire - broken) > 0
    for d in expire:
        assert present(oci_reg, repo.name, d) == (d in broken), d
    catalogs = [run.store.read_catalog(k) for k in run.store.catalog_keys(oci_reg.name, repo.name)]
    archived = {e["digest"] for doc in catalogs for e in doc["images"]}
    assert archived == expire - broken  # the unreadable image has no catalog entry
    assert config in result["message"] and "not archived, so not deleted" in result["message"]
