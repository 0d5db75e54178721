"""Archive, delete, restore: the manifest comes back bit for bit under the same digest (and, with
archive_layers on the distribution registry, every blob too), with its tags."""

from __future__ import annotations

import pytest

from include.registry_ops.registries.base import Manifest
from include.registry_ops.retention.executor import Limits, execute
from include.registry_ops.retention.restore import RestoreError, locate, restore_image
from tests.retention_exec.helpers import (
    BUCKET,
    oldest_images,
    plan_for,
    present,
    run_ctx,
    seed,
    small_fleet,
    tags_now,
    unique,
    visible,
    with_children,
)

NO_CAPS = Limits(max_deletions_per_run=10_000, max_fraction=1.0)


def _expire(registry, ret_s3, repo_index: int = 1, n: int = 3, **run_kw):
    fleet = seed(registry, small_fleet(unique()))
    repo = fleet[repo_index]
    specs = visible(registry, repo)
    chosen = oldest_images(specs, n)
    expire = with_children(specs, chosen)
    run = run_ctx(ret_s3, **run_kw)
    [result] = execute(plan_for(registry.name, repo, specs, expire), run, lambda _: registry, limits=NO_CAPS)
    assert result["status"] == "done" and result["deleted"] == len(expire)
    return repo, specs, chosen, run


def _delete_blob_links(oci, repository: str, digests: set[str]) -> None:
    """What garbage collection does to an unreferenced blob: the repository no longer has it."""
    for digest in digests:
        oci.request(
            "DELETE",
            f"/v2/{repository}/blobs/{digest}",
            "blob_delete",
            repository=repository,
            scope=f"repository:{repository}:delete",
            ok=(202, 404),
        )
        assert not oci.blob_exists(repository, digest)


def test_round_trip_is_bit_exact_with_tags(any_reg, ret_s3):
    repo, specs, chosen, run = _expire(any_reg, ret_s3)
    by_tag = next(m for m in chosen if m.tags)
    by_digest = next(m for m in chosen if m is not by_tag)
    for spec, how in ((by_digest, {"digest": by_digest.digest}), (by_tag, {"tag": by_tag.tags[0]})):
        entry = locate(run.store, any_reg.name, repo.name, **how)
        assert entry["digest"] == spec.digest
        result = restore_image(run.store, any_reg, entry)
        got = any_reg.get_manifest(repo.name, spec.digest)
        assert got.raw == spec.raw and got.digest == spec.digest and result["verified"]
        assert sorted(result["tags_restored"]) == sorted(spec.tags)
        for child in spec.children:  # an index brings its children back
            assert any_reg.get_manifest(repo.name, child).raw == next(
                m.raw for m in specs if m.digest == child
            )
        now = tags_now(any_reg, repo.name)
        assert now.get(spec.digest, set()) == set(spec.tags)


def test_restore_into_another_repository(any_reg, ret_s3):
    repo, _specs, chosen, run = _expire(any_reg, ret_s3, repo_index=0)
    spec = next(m for m in chosen if m.tags)
    target = repo.name + "-restored"
    entry = locate(run.store, None, None, digest=spec.digest)  # found without naming where
    result = restore_image(run.store, any_reg, entry, to_repository=target)
    assert result["repository"] == target and result["from_repository"] == repo.name
    assert any_reg.get_manifest(target, spec.digest).raw == spec.raw
    assert not present(any_reg, repo.name, spec.digest)  # the old repository is not touched


def test_a_tag_that_moved_on_is_not_stolen_unless_asked(ecr_reg, ret_s3):
    repo, specs, chosen, run = _expire(ecr_reg, ret_s3, repo_index=0)
    old = next(m for m in chosen if m.tags)
    newest = max(
        (m for m in specs if m.kind == "image" and m.digest not in {c.digest for c in chosen}),
        key=lambda m: m.pushed_at,
    )
    tag = old.tags[0]
    ecr_reg.put_manifest(repo.name, Manifest(newest.digest, newest.media_type, newest.raw), tag)
    entry = locate(run.store, ecr_reg.name, repo.name, digest=old.digest)
    result = restore_image(run.store, ecr_reg, entry)
    assert result["tags_left_on_other_images"] == {tag: newest.digest}
    assert tag not in tags_now(ecr_reg, repo.name)[old.digest]
    result = restore_image(run.store, ecr_reg, entry, move_tags=True)
    assert tag in result["tags_restored"] and tag in tags_now(ecr_reg, repo.name)[old.digest]


def test_archive_layers_restores_every_blob_after_the_registry_lost_them(oci_reg, ret_s3):
    repo, _specs, chosen, run = _expire(oci_reg, ret_s3, repo_index=0, n=2, archive_layers=True)
    spec = chosen[0]
    blobs = {b.digest: b.data for b in spec.blobs}
    layer_keys = [run.store.blob_key(d) for d in blobs if d != spec.blobs[0].digest]
    for key in layer_keys:  # layers are stored once each, content-addressed
        assert ret_s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 0
    _delete_blob_links(oci_reg, repo.name, set(blobs))

    entry = locate(run.store, oci_reg.name, repo.name, digest=spec.digest)
    assert entry["restorable"] == "full"
    result = restore_image(run.store, oci_reg, entry)
    assert set(result["blobs_uploaded"]) == set(blobs)
    assert oci_reg.get_manifest(repo.name, spec.digest).raw == spec.raw
    for digest, data in blobs.items():
        assert oci_reg.get_blob(repo.name, digest) == data


def test_without_archived_layers_a_collected_image_is_refused_cleanly(oci_reg, ret_s3):
    repo, _specs, chosen, run = _expire(oci_reg, ret_s3, repo_index=0, n=2)
    spec = chosen[0]
    layers = {b.digest for b in spec.blobs[1:]}
    _delete_blob_links(oci_reg, repo.name, layers)
    entry = locate(run.store, oci_reg.name, repo.name, digest=spec.digest)
    assert entry["restorable"] == "manifest" and "archive_layers is off" in entry["note"]
    with pytest.raises(RestoreError, match="neither archived"):
        restore_image(run.store, oci_reg, entry)
    assert not present(oci_reg, repo.name, spec.digest)  # no manifest without its blobs


def test_shared_layers_are_stored_once(oci_reg, ret_s3):
    _repo, _specs, chosen, run = _expire(oci_reg, ret_s3, repo_index=0, n=4, archive_layers=True)
    layers = {b.digest for m in chosen for b in m.blobs[1:]}
    per_image = sum(len(m.blobs) - 1 for m in chosen)
    assert len(layers) < per_image  # the images share base layers ...
    for digest in layers:  # ... and each is one object
        assert ret_s3.head_object(Bucket=BUCKET, Key=run.store.blob_key(digest))


def test_unknown_digest_and_ambiguous_requests_are_refused(ret_s3):
    store = run_ctx(ret_s3).store
    with pytest.raises(RestoreError, match="not in the archive"):
        locate(store, "ecr-local", "nope/none", digest="sha256:" + "0" * 64)
    with pytest.raises(RestoreError, match="exactly one"):
        locate(store, "ecr-local", "nope/none")
    with pytest.raises(RestoreError, match="needs the repository"):
        locate(store, "ecr-local", None, tag="v1")
