"""ECR adapter against the real moto server (paging like AWS through the test shim)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from devstack.fleet import make_fleet
from devstack.seed import seed_ecr
from include.registry_ops.registries.base import Manifest, RegistryError
from include.registry_ops.registries.ecr import EcrRegistry
from tests.fleet_expect import all_ecr


def test_lists_repositories_over_several_pages(seeded, ecr):
    reg = EcrRegistry("ecr", ecr, page_size=2)
    repos = reg.list_repositories()
    names = [r.name for r in seeded]
    assert set(names) <= set(repos)
    assert reg.requests.counts["DescribeRepositories"] >= 3  # 6+ repositories at 2 per page


def test_list_images_matches_the_seeded_fleet(seeded, ecr):
    reg = EcrRegistry("ecr", ecr)
    for repo in seeded:
        records = {r["digest"]: r for r in reg.list_images(repo.name)}
        expected = all_ecr(repo)
        assert set(records) == set(expected), repo.name
        for digest, spec in expected.items():
            rec = records[digest]
            assert rec["tags"] == sorted(spec.tags)
            assert rec["kind"] == spec.kind
            assert rec["pushed_at"] == spec.pushed_at
            assert rec["last_pulled_at"] == spec.last_pulled_at
            if spec.kind == "index":
                assert rec["child_digests"] == spec.children
            if spec.kind == "referrer":
                assert rec["subject_digest"] == spec.subject
            else:
                assert rec["size_bytes"] > 0
        for idx in (s for s in expected.values() if s.kind == "index"):
            for child in idx.children:
                assert records[child]["parent_digests"] == [idx.digest]
                assert records[child]["platform"] in {"linux/amd64", "linux/arm64"}


def test_describe_images_pages_by_1000(moto_server, ecr):
    """1,050 images need exactly two describe_images calls (AWS's least)."""
    now = datetime(2026, 11, 27, tzinfo=UTC)
    big = make_fleet(seed=3, repositories=1, images=1050, layer_scale=0.0001, prefix="paging/", now=now)
    seed_ecr(ecr, big)
    reg = EcrRegistry("ecr", ecr)
    records = reg.list_images(big[0].name)
    assert len(records) == len(big[0].manifests) >= 1050
    indexes = sum(1 for m in big[0].manifests if m.media_type.endswith("index.v1+json"))
    assert reg.requests.counts["DescribeImages"] == 2
    assert reg.requests.counts.get("BatchGetImage", 0) == -(-indexes // 100)


def test_get_put_and_delete_by_digest(seeded, ecr):
    reg = EcrRegistry("ecr", ecr)
    source = seeded[0]
    spec = next(m for m in source.manifests if m.kind == "image" and m.tags)
    manifest = reg.get_manifest(source.name, spec.digest)
    assert manifest.raw == spec.raw and manifest.digest == spec.digest

    ecr.create_repository(repositoryName="scratch/ecr-delete")
    reg.put_manifest("scratch/ecr-delete", manifest, "v1")
    by_tag = reg.get_manifest("scratch/ecr-delete", "v1")
    assert by_tag.digest == spec.digest

    missing = "sha256:" + "0" * 64
    result = reg.delete_images("scratch/ecr-delete", [spec.digest, missing])
    assert result.deleted == [spec.digest]
    assert missing in result.failures and "ImageNotFound" in result.failures[missing]
    assert reg.list_images("scratch/ecr-delete") == []


def test_delete_batches_of_100(moto_server, ecr):
    ecr.create_repository(repositoryName="scratch/ecr-batch")
    reg = EcrRegistry("ecr", ecr)
    digests = []
    for i in range(150):
        body = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{i:064x}",
                "size": 100,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{i + 1000:064x}",
                    "size": 1000,
                }
            ],
        }
        raw = json.dumps(body).encode()
        from include.registry_ops.registries.base import digest_of

        digests.append(
            reg.put_manifest("scratch/ecr-batch", Manifest(digest_of(raw), body["mediaType"], raw), f"t{i}")
        )
    reg.requests.counts.clear()
    result = reg.delete_images("scratch/ecr-batch", digests)
    assert sorted(result.deleted) == sorted(digests) and not result.failures
    assert reg.requests.counts["BatchDeleteImage"] == 2


def test_unknown_repository_is_named(seeded, ecr):
    reg = EcrRegistry("ecr-local", ecr)
    with pytest.raises(RegistryError) as err:
        reg.list_images("no/such-repo")
    assert "ecr-local/no/such-repo" in str(err.value)
    assert "RepositoryNotFoundException" in str(err.value)


def test_dead_endpoint_is_a_clear_error():
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "ecr",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(RegistryError) as err:
        EcrRegistry("ecr-dead", client).list_repositories()
    assert "registry ecr-dead" in str(err.value) and "describe_repositories" in str(err.value)


def test_age_is_realistic(seeded, ecr):
    """Seeded push times spread over about 400 days, not 'now'."""
    reg = EcrRegistry("ecr", ecr)
    times = [r["pushed_at"] for repo in seeded for r in reg.list_images(repo.name)]
    assert max(times) - min(times) > timedelta(days=300)
