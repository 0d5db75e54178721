"""ECR layers both ways: images pushed through ECR's layer upload API are archived with their
layers (``GetDownloadUrlForLayer``, answered on moto by the ``moto_layers`` shim) and come back
through the layer upload API into a new repository, and after their repository was deleted
entirely. Without archived layers, a restore into another repository copies the blobs from the
old one while it still holds them, and refuses, writing nothing, once it is gone."""

from __future__ import annotations

import pytest

from include.registry_ops.registries.base import NotFound
from include.registry_ops.registries.ecr import EcrRegistry
from include.registry_ops.retention.executor import Limits, execute
from include.registry_ops.retention.restore import RestoreError, locate, restore_image
from tests.retention_exec.helpers import (
    oldest_images,
    plan_for,
    present,
    push,
    run_ctx,
    small_fleet,
    tags_now,
    unique,
    with_children,
)

NO_CAPS = Limits(max_deletions_per_run=10_000, max_fraction=1.0)


def _archive(ecr: EcrRegistry, s3, *, archive_layers: bool, n: int = 2):
    """A pushed repository whose n oldest images are expired (archived, verified, deleted)."""
    fleet = small_fleet(unique("ret-ecr-layers"), repositories=1, images=8, seed=61)
    push(ecr, fleet)  # every blob through the layer upload API, as a client pushes
    repo = fleet[0]
    chosen = oldest_images(repo.manifests, n)
    expire = with_children(repo.manifests, chosen)
    run = run_ctx(s3, archive_layers=archive_layers)
    plan = plan_for(ecr.name, repo, repo.manifests, expire)
    [result] = execute(plan, run, lambda _: ecr, limits=NO_CAPS)
    assert result["status"] == "done" and result["deleted"] == len(expire), result
    assert not any(present(ecr, repo.name, d) for d in expire)
    return repo, chosen, run


def _blobs(spec) -> dict[str, bytes]:
    return {b.digest: b.data for b in spec.blobs}


def _check_restored(ecr: EcrRegistry, repository: str, spec, result: dict) -> None:
    got = ecr.get_manifest(repository, spec.digest)
    assert got.raw == spec.raw and got.digest == spec.digest and result["verified"]
    assert tags_now(ecr, repository).get(spec.digest, set()) == set(spec.tags)
    for digest, data in _blobs(spec).items():  # every layer readable, bit for bit
        assert ecr.get_blob(repository, digest) == data


def test_an_image_archived_with_its_layers_comes_back_into_a_new_repository(ecr_reg, ret_s3):
    repo, chosen, run = _archive(ecr_reg, ret_s3, archive_layers=True)
    spec = next(m for m in chosen if m.kind == "image" and m.tags)
    entry = locate(run.store, ecr_reg.name, repo.name, digest=spec.digest)
    assert entry["restorable"] == "full" and entry["note"] is None
    target = repo.name + "-new"
    ecr_reg.requests.counts.clear()
    result = restore_image(run.store, ecr_reg, entry, to_repository=target)
    blobs = _blobs(spec)
    assert sorted(result["blobs_uploaded"]) == sorted(blobs)  # from the archive, none from the old one
    counts = ecr_reg.requests.counts
    assert counts["CreateRepository"] == 1
    assert counts["InitiateLayerUpload"] == counts["CompleteLayerUpload"] == len(blobs)
    assert counts["GetDownloadUrlForLayer"] == 0
    assert counts["BatchCheckLayerAvailability"] == len(blobs)  # the target only: ECR cannot mount
    _check_restored(ecr_reg, target, spec, result)
    assert not present(ecr_reg, repo.name, spec.digest)  # the old repository is not touched


def test_an_image_comes_back_after_its_repository_was_deleted(ecr_reg, ret_s3):
    repo, chosen, run = _archive(ecr_reg, ret_s3, archive_layers=True, n=3)
    ecr_reg.client.delete_repository(repositoryName=repo.name, force=True)  # layers and all
    with pytest.raises(NotFound):
        ecr_reg.describe_repository(repo.name)
    for spec in chosen:  # an index brings its children and their layers back too
        entry = locate(run.store, ecr_reg.name, repo.name, digest=spec.digest)
        result = restore_image(run.store, ecr_reg, entry)
        assert result["repository"] == repo.name
        _check_restored(ecr_reg, repo.name, spec, result)
        for child in spec.children:
            kid = next(m for m in repo.manifests if m.digest == child)
            assert ecr_reg.get_manifest(repo.name, child).raw == kid.raw
            for digest, data in _blobs(kid).items():
                assert ecr_reg.get_blob(repo.name, digest) == data


def test_without_archived_layers_blobs_are_copied_from_the_old_repository_while_it_holds_them(
    ecr_reg, ret_s3
):
    repo, chosen, run = _archive(ecr_reg, ret_s3, archive_layers=False)
    first, second = [m for m in chosen if m.kind == "image"][:2]
    entry = locate(run.store, ecr_reg.name, repo.name, digest=first.digest)
    assert entry["restorable"] == "manifest" and "archive_layers is off" in entry["note"]
    target = repo.name + "-copy"
    ecr_reg.requests.counts.clear()
    result = restore_image(run.store, ecr_reg, entry, to_repository=target)
    assert sorted(result["blobs_uploaded"]) == sorted(_blobs(first))
    assert ecr_reg.requests.counts["GetDownloadUrlForLayer"] == len(_blobs(first))  # read from the old one
    _check_restored(ecr_reg, target, first, result)

    ecr_reg.client.delete_repository(repositoryName=repo.name, force=True)
    entry = locate(run.store, ecr_reg.name, repo.name, digest=second.digest)
    other = repo.name + "-late"
    with pytest.raises(RestoreError, match="neither archived"):
        restore_image(run.store, ecr_reg, entry, to_repository=other)
    assert other not in ecr_reg.list_repositories()  # refused before anything was written


def test_a_restore_into_another_registry_reads_missing_blobs_from_the_source(ecr_reg, ret_s3, tmp_path):
    """The same rule across registries: ECR -> an OCI layout, blobs the archive lacks are read from
    ECR (the registry it was archived from), only through the interface."""
    from include.registry_ops.registries.ocilayout import OciLayoutRegistry

    repo, chosen, run = _archive(ecr_reg, ret_s3, archive_layers=False)
    spec = next(m for m in chosen if m.kind == "image" and m.tags)
    layout = OciLayoutRegistry("layout-local", tmp_path)
    entry = locate(run.store, ecr_reg.name, repo.name, digest=spec.digest)
    result = restore_image(run.store, layout, entry, source=ecr_reg)
    assert result["registry"] == "layout-local" and result["from_registry"] == ecr_reg.name
    assert layout.get_manifest(repo.name, spec.digest).raw == spec.raw
    assert layout.list_tags(repo.name) == sorted(spec.tags)
    for digest, data in _blobs(spec).items():
        assert layout.get_blob(repo.name, digest) == data
    with pytest.raises(RestoreError, match="neither archived"):  # no source given: the blobs are nowhere
        restore_image(run.store, OciLayoutRegistry("layout-2", tmp_path), entry, to_repository="other/x")
    assert not (tmp_path / "other").exists()  # nothing written
