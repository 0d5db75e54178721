"""ECR blobs through the layer API on moto (uploads: moto; downloads: the moto_layers shim),
repository settings, and referrers from the listing's subjects."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
import requests

from devstack.fleet import ManifestSpec, RepoSpec
from devstack.seed import seed_ecr
from include.registry_ops.registries.base import (
    OCI_MANIFEST,
    Invalid,
    NotFound,
    RepositorySettings,
    Unsupported,
    digest_of,
)
from include.registry_ops.registries.ecr import MIN_PART
from tests.registries.conftest import ecr_adapter
from tests.registries.images import copy_image, image, index, push, referrer, unique


def test_multi_part_upload_and_streamed_download_are_bit_exact(moto_server):
    reg = ecr_adapter(moto_server.endpoint, part_size=MIN_PART)
    repository = unique("ecr-blobs/parts")
    reg.create_repository(repository)
    data = os.urandom(2 * MIN_PART + 12345)
    digest = digest_of(data)
    reg.requests.counts.clear()
    assert reg.put_blob(repository, iter([data[:1000], data[1000:]]), digest, len(data)) == digest
    assert reg.requests.counts["InitiateLayerUpload"] == 1
    assert reg.requests.counts["UploadLayerPart"] == 3  # 5 MiB, 5 MiB, the rest
    assert reg.requests.counts["CompleteLayerUpload"] == 1
    assert reg.head_blob(repository, digest) == len(data)
    with reg.open_blob(repository, digest) as stream:
        assert stream.read() == data
    assert reg.requests.counts["GetDownloadUrlForLayer"] == 1


def test_nothing_is_uploaded_when_the_content_does_not_match(moto_server):
    reg = ecr_adapter(moto_server.endpoint)
    repository = unique("ecr-blobs/refused")
    reg.create_repository(repository)
    data = b"layer bytes " * 1000
    reg.requests.counts.clear()
    with pytest.raises(Invalid) as err:
        reg.put_blob(repository, data, digest_of(b"other bytes"))
    assert "nothing was stored" in err.value.problem
    assert "InitiateLayerUpload" not in reg.requests.counts
    assert reg.head_blob(repository, digest_of(data)) is None


def test_part_size_below_ecr_minimum_is_refused(moto_server):
    with pytest.raises(ValueError, match="at least"):
        ecr_adapter(moto_server.endpoint, part_size=MIN_PART - 1)


def test_download_of_a_layer_the_repository_does_not_hold(moto_server, seeded):
    """A layer never uploaded to the repository (seed_ecr holds the fleet's own layers)."""
    reg = ecr_adapter(moto_server.endpoint)
    layer = digest_of(b"a layer never pushed to " + seeded[0].name.encode())
    assert reg.head_blob(seeded[0].name, layer) is None
    with pytest.raises(NotFound) as err:
        reg.open_blob(seeded[0].name, layer)
    assert "LayersNotFoundException" in err.value.problem
    with pytest.raises(NotFound) as err:
        reg.open_blob("no/such-repo", layer)
    assert "RepositoryNotFoundException" in err.value.problem


def test_shim_url_serves_the_uploaded_bytes_and_nothing_else(moto_server):
    reg = ecr_adapter(moto_server.endpoint)
    repository = unique("ecr-blobs/url")
    reg.create_repository(repository)
    data = b"served by the layer server " * 10
    digest = reg.put_blob(repository, data, digest_of(data))
    url = reg.client.get_download_url_for_layer(repositoryName=repository, layerDigest=digest)["downloadUrl"]
    assert url.startswith("http://127.0.0.1:")
    assert requests.get(url, timeout=5).content == data
    other = url.replace(digest.split(":")[1], "0" * 64)
    assert other != url and requests.get(other, timeout=5).status_code == 404


def test_copy_an_image_from_the_distribution_registry_into_ecr_and_back_out(moto_server, registry_server):
    """Blobs and manifests through the interface only, distribution -> ECR -> layout-free check."""
    from tests.registries.conftest import oci_adapter

    oci, ecr = oci_adapter(registry_server.url), ecr_adapter(moto_server.endpoint)
    src, dst = unique("ecr-blobs/src"), unique("ecr-blobs/dst")
    idx = index("ecr-copy")
    push(oci, src, idx, "multi")
    ecr.create_repository(dst)
    m = copy_image(oci, src, ecr, dst, "multi")
    assert ecr.head_manifest(dst, "multi") == m.digest
    for child in idx.children:
        for digest, data in child.blobs.items():
            assert ecr.get_blob(dst, digest) == data


def test_repository_settings_round_trip(moto_server):
    reg = ecr_adapter(moto_server.endpoint)
    repository = unique("ecr-settings/repo")
    lifecycle = json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 50},
                    "action": {"type": "expire"},
                }
            ]
        }
    )
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "pull",
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                    "Action": ["ecr:BatchGetImage"],
                }
            ],
        }
    )
    created = RepositorySettings(
        scan_on_push=True,
        tag_mutability="IMMUTABLE",
        encryption_type="AES256",
        lifecycle_policy=lifecycle,
        repository_policy=policy,
        resource_tags={"team": "core", "cost": "ci"},
    )
    assert reg.create_repository(repository, created) is True
    assert reg.create_repository(repository, RepositorySettings(tag_mutability="MUTABLE")) is False
    got = reg.describe_repository(repository)
    assert got.scan_on_push is True and got.tag_mutability == "IMMUTABLE"
    assert got.encryption_type == "AES256"
    assert json.loads(got.lifecycle_policy) == json.loads(lifecycle)
    assert json.loads(got.repository_policy) == json.loads(policy)
    assert got.resource_tags == {"team": "core", "cost": "ci"}
    assert got.created_at is not None and got.created_at.tzinfo is not None
    assert abs((datetime.now(UTC) - got.created_at).total_seconds()) < 600

    # the backup form survives JSON
    assert RepositorySettings.from_dict(json.loads(json.dumps(got.as_dict()))) == got

    changed = RepositorySettings(
        scan_on_push=False,
        tag_mutability="MUTABLE_WITH_EXCLUSION",
        tag_mutability_exclusions=("release-*",),
        lifecycle_policy="",  # removes it
        repository_policy="",
        resource_tags={"team": "data"},  # 'cost' goes
    )
    assert reg.apply_repository_settings(repository, changed) == []
    now = reg.describe_repository(repository)
    assert now.scan_on_push is False
    assert now.tag_mutability == "MUTABLE_WITH_EXCLUSION" and now.tag_mutability_exclusions == ("release-*",)
    assert now.lifecycle_policy is None and now.repository_policy is None
    assert now.resource_tags == {"team": "data"}
    assert now.created_at == got.created_at

    untouched = reg.apply_repository_settings(repository, RepositorySettings())
    assert untouched == [] and reg.describe_repository(repository) == now


def test_encryption_cannot_change_after_creation(moto_server):
    reg = ecr_adapter(moto_server.endpoint)
    repository = unique("ecr-settings/kms")
    reg.create_repository(repository)
    with pytest.raises(Invalid) as err:
        reg.apply_repository_settings(
            repository, RepositorySettings(encryption_type="KMS", scan_on_push=True)
        )
    assert "fixed when an ECR repository is created" in err.value.problem
    assert reg.describe_repository(repository).scan_on_push is False  # nothing was applied


def test_no_blob_delete_and_no_mount_on_ecr(moto_server):
    reg = ecr_adapter(moto_server.endpoint)
    repository = unique("ecr-blobs/no-delete")
    reg.create_repository(repository)
    data = b"kept layer"
    digest = reg.put_blob(repository, data, digest_of(data))
    with pytest.raises(Unsupported):
        reg.delete_blob(repository, digest)
    assert reg.mount_blob(unique("ecr-blobs/other"), digest, repository) is False


def test_untagged_referrers_found_by_subject(moto_server, ecr):
    """What AWS records for a pushed referrer (subjectManifestDigest) seeded as moto cannot."""
    repository = unique("ecr-referrers/repo")
    subject_img = image("ecr-subject")
    sbom = referrer(subject_img.manifest, "ecr-sbom")
    when = datetime(2026, 5, 1, tzinfo=UTC)
    subject = ManifestSpec(
        subject_img.manifest.digest, OCI_MANIFEST, subject_img.manifest.raw, ["v1"], when, None, "image"
    )
    ref = ManifestSpec(
        sbom.manifest.digest,
        OCI_MANIFEST,
        sbom.manifest.raw,
        [],
        when,
        None,
        "referrer",
        subject=subject.digest,
        artifact_type="application/spdx+json",
    )
    seed_ecr(ecr, [RepoSpec(repository, [subject, ref])])
    reg = ecr_adapter(moto_server.endpoint)
    found = reg.list_referrers(repository, subject.digest)
    assert [d.digest for d in found] == [sbom.manifest.digest]
    assert found[0].artifact_type == "application/spdx+json" and found[0].size == len(sbom.manifest.raw)
    assert reg.list_referrers(repository, subject.digest, artifact_type="application/other") == []


def test_ecr_computed_digest_is_checked_after_the_upload(moto_server):
    """CompleteLayerUpload answering another digest (bytes changed in transit) is refused."""
    from botocore.awsrequest import AWSResponse

    reg = ecr_adapter(moto_server.endpoint)
    repository = unique("ecr-blobs/transit")
    reg.create_repository(repository)

    class _Raw:
        def stream(self, **_):
            body = {"registryId": "123456789012", "uploadId": "u", "layerDigest": digest_of(b"changed")}
            yield json.dumps(body).encode()

    def answer(request, **_):
        return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.1"}, _Raw())

    reg.client.meta.events.register("before-send.ecr.CompleteLayerUpload", answer)
    data = b"sent bytes " * 20
    with pytest.raises(Invalid) as err:
        reg.put_blob(repository, data, digest_of(data))
    assert digest_of(b"changed") in err.value.problem


def test_manifest_head_records_no_pull(moto_server):
    """HEAD uses DescribeImages: BatchGetImage would count as a pull and move lastRecordedPullTime."""
    reg = ecr_adapter(moto_server.endpoint)
    repository = unique("ecr-blobs/head")
    reg.create_repository(repository)
    m = push(reg, repository, image("head-no-pull"), "v1")
    reg.requests.counts.clear()
    head = reg.head_manifest(repository, "v1")
    assert head == m.digest and head.media_type == m.media_type and head.size is None
    assert reg.head_manifest(repository, m.digest) == m.digest
    assert reg.head_manifest(repository, "v2") is None
    assert reg.requests.counts["DescribeImages"] == 3 and "BatchGetImage" not in reg.requests.counts
