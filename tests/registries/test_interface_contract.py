"""One contract, three adapters: ECR on moto, the distribution registry, an OCI layout directory.

Each test runs the same calls on every adapter through ``Registry`` only; where kinds differ the
test asks ``capabilities`` (never the adapter's class), which also checks that what an adapter
claims is what it does.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from include.registry_ops.registries.base import (
    Descriptor,
    Invalid,
    ManifestHead,
    NotFound,
    Page,
    RepositorySettings,
    Unsupported,
    digest_of,
)
from tests.registries.images import SBOM, image, index, push, referrer, unique


def _repo(registry, prefix: str = "contract") -> str:
    repository = unique(f"{prefix}/{registry.kind}")
    registry.create_repository(repository)
    return repository


def _corrupt(registry, request, repository: str, digest: str, data: bytes) -> None:
    """Damage the stored bytes (same length) where each kind keeps them."""
    bad = bytes([data[0] ^ 0xFF]) + data[1:]
    if registry.kind == "ecr":
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ecr.models import ecr_backends

        ecr_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].repositories[repository].layer_blobs[digest] = bad
    elif registry.kind == "oci":
        root = request.getfixturevalue("registry_server").root
        hexd = digest.split(":")[1]
        path = root / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
        path.write_bytes(bad)
    else:
        (Path(registry.root) / repository / "blobs/sha256" / digest.split(":")[1]).write_bytes(bad)


# -- blobs ---------------------------------------------------------------------------------------
def test_blob_put_head_and_streamed_get_from_bytes_files_and_chunks(registry):
    repository = _repo(registry)
    payloads = [b"first blob " * 300, b"second blob " * 500, b"third blob " * 700]
    sources = [payloads[0], io.BytesIO(payloads[1]), iter([payloads[2][:100], payloads[2][100:]])]
    for data, source in zip(payloads, sources, strict=True):
        digest = digest_of(data)
        assert registry.head_blob(repository, digest) is None
        assert registry.put_blob(repository, source, digest, len(data)) == digest
        assert registry.head_blob(repository, digest) == len(data)
        with registry.open_blob(repository, digest) as stream:
            assert b"".join(iter(lambda: stream.read(1000), b"")) == data
        assert registry.get_blob(repository, digest) == data
        assert registry.blob_exists(repository, digest)


def test_put_blob_refuses_content_that_does_not_match_and_stores_nothing(registry):
    repository = _repo(registry)
    data = b"the real content " * 100
    wrong = digest_of(b"something else")
    sent = registry.requests.total
    with pytest.raises(Invalid) as err:
        registry.put_blob(repository, data, wrong, len(data))
    assert registry.requests.total == sent  # refused before a single request
    assert f"registry {registry.name}/{repository}" in str(err.value) and wrong in str(err.value)
    assert registry.head_blob(repository, wrong) is None
    assert registry.head_blob(repository, digest_of(data)) is None
    with pytest.raises(Invalid):  # right digest, wrong announced size
        registry.put_blob(repository, data, digest_of(data), len(data) + 1)
    assert registry.head_blob(repository, digest_of(data)) is None


def test_reading_a_damaged_blob_raises_invalid(registry, request):
    repository = _repo(registry)
    data = b"bytes that will be damaged at rest " * 40
    digest = registry.put_blob(repository, data, digest_of(data))
    _corrupt(registry, request, repository, digest, data)
    with pytest.raises(Invalid) as err, registry.open_blob(repository, digest) as stream:
        stream.read()
    assert "does not match its digest" in str(err.value)


def test_missing_blob_is_not_found(registry):
    repository = _repo(registry)
    missing = digest_of(b"never stored anywhere")
    assert registry.head_blob(repository, missing) is None
    with pytest.raises(NotFound):
        registry.open_blob(repository, missing)
    with pytest.raises(Invalid):  # not a digest: refused before any path or URL is built
        registry.head_blob(repository, "sha256:../../etc")


def test_mount_blob_where_capable(registry):
    source, target = _repo(registry, "mount-src"), _repo(registry, "mount-dst")
    data = b"shared layer " * 200
    digest = registry.put_blob(source, data, digest_of(data))
    mounted = registry.mount_blob(target, digest, source)
    assert mounted is registry.capabilities.mounts_blobs
    if mounted:
        assert registry.head_blob(target, digest) == len(data)
        assert registry.get_blob(target, digest) == data
    else:
        assert registry.head_blob(target, digest) is None
    assert registry.mount_blob(target, digest_of(b"nowhere"), source) is False


def test_delete_blob_where_capable(registry):
    repository = _repo(registry)
    data = b"short-lived blob " * 50
    digest = registry.put_blob(repository, data, digest_of(data))
    if not registry.capabilities.deletes_blobs:
        with pytest.raises(Unsupported):
            registry.delete_blob(repository, digest)
        assert registry.head_blob(repository, digest) == len(data)
        return
    registry.delete_blob(repository, digest)
    assert registry.head_blob(repository, digest) is None
    with pytest.raises(NotFound):
        registry.delete_blob(repository, digest)


# -- manifests -----------------------------------------------------------------------------------
def test_manifest_put_get_head_by_tag_and_digest(registry):
    repository = _repo(registry)
    img = image("manifest-round-trip")
    m = push(registry, repository, img, "v1")
    for reference in ("v1", m.digest):
        got = registry.get_manifest(repository, reference)
        assert got.raw == m.raw and got.digest == m.digest and got.media_type == m.media_type
        head = registry.head_manifest(repository, reference)
        assert isinstance(head, ManifestHead)
        assert head.digest == m.digest and head == m.digest  # also the digest string
        assert head.media_type == m.media_type
        assert head.size in (len(m.raw), None)
    assert registry.head_manifest(repository, "no-such-tag") is None
    with pytest.raises(NotFound):
        registry.get_manifest(repository, "no-such-tag")
    with pytest.raises(NotFound):
        registry.get_manifest(repository, digest_of(b"no such manifest"))


def test_index_and_children(registry):
    repository = _repo(registry)
    idx = index("contract-index")
    m = push(registry, repository, idx, "multi")
    got = registry.get_manifest(repository, "multi")
    assert got.digest == m.digest and got.media_type == m.media_type
    for child in idx.children:
        assert registry.get_manifest(repository, child.manifest.digest).raw == child.manifest.raw
    records = {r["digest"]: r for r in registry.list_images(repository)}
    assert records[m.digest]["kind"] == "index"
    assert records[m.digest]["child_digests"] == [c.manifest.digest for c in idx.children]
    for child in idx.children:
        assert records[child.manifest.digest]["parent_digests"] == [m.digest]


def test_delete_manifest_by_digest_only(registry):
    repository = _repo(registry)
    m = push(registry, repository, image("delete-manifest"), "gone", "also-gone")
    with pytest.raises(Invalid):
        registry.delete_manifest(repository, "gone")  # a tag is not a digest
    registry.delete_manifest(repository, m.digest)
    assert registry.head_manifest(repository, m.digest) is None
    assert registry.head_manifest(repository, "gone") is None
    assert "gone" not in registry.list_tags(repository)
    with pytest.raises(NotFound):
        registry.delete_manifest(repository, m.digest)


def test_untagged_manifests_are_listed_where_the_kind_can(registry):
    repository = _repo(registry)
    tagged = push(registry, repository, image("listed-tagged"), "v1")
    untagged = push(registry, repository, image("listed-untagged"))
    listed = {r["digest"]: r for r in registry.list_images(repository)}
    assert listed[tagged.digest]["tags"] == ["v1"]
    assert (untagged.digest in listed) is registry.capabilities.lists_untagged_manifests
    if untagged.digest in listed:
        assert listed[untagged.digest]["tags"] == []


# -- tags ------------------------------------------------------------------------------------------
def test_list_tags_pages_with_limit_and_last(registry):
    repository = _repo(registry)
    img = image("paging")
    tags = ["a1", "a2", "b1", "b2", "c1"]
    push(registry, repository, img, *reversed(tags))
    assert registry.list_tags(repository) == tags
    assert registry.list_tags(repository, Page(limit=2)) == ["a1", "a2"]
    assert registry.list_tags(repository, Page(limit=2, last="a2")) == ["b1", "b2"]
    assert registry.list_tags(repository, Page(last="b2")) == ["c1"]
    assert registry.list_tags(repository, Page(limit=10, last="c1")) == []
    with pytest.raises(ValueError):
        Page(limit=0)


def test_delete_tag_removes_that_tag_only(registry):
    repository = _repo(registry)
    keep = push(registry, repository, image("keep-me"), "stays")
    m = push(registry, repository, image("untag-me"), "t1", "t2")
    registry.delete_tag(repository, "t1")
    assert registry.list_tags(repository) == ["stays", "t2"]
    assert registry.head_manifest(repository, "t2") == m.digest
    assert registry.head_manifest(repository, "stays") == keep.digest
    assert registry.get_manifest(repository, m.digest).raw == m.raw

    registry.delete_tag(repository, "t2")  # the last tag of the image
    assert registry.list_tags(repository) == ["stays"]
    still_there = registry.head_manifest(repository, m.digest) is not None
    assert still_there is registry.capabilities.untag_keeps_manifest
    with pytest.raises(NotFound):
        registry.delete_tag(repository, "t2")
    with pytest.raises(Invalid):
        registry.delete_tag(repository, m.digest)


# -- referrers -------------------------------------------------------------------------------------
def test_referrers_by_subject_and_by_cosign_tag(registry):
    repository = _repo(registry)
    subject = push(registry, repository, image("referred-to"), "app")
    sbom = referrer(subject, "sbom-1")
    signature = referrer(subject, "sig-1", artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json")
    push(registry, repository, sbom)  # untagged: found only through its subject
    cosign_tag = f"sha256-{subject.digest.split(':')[1]}.sig"
    push(registry, repository, signature, cosign_tag)

    found = registry.list_referrers(repository, subject.digest)
    digests = [d.digest for d in found]
    assert signature.manifest.digest in digests  # every kind: through the cosign-style tag
    subject_only = sbom.manifest.digest in digests
    if registry.kind == "ecr":
        # moto does not record subjectManifestDigest for put_image (AWS does; seeded images
        # carry it, see test_ecr_blobs.py), so only the tag finds referrers on moto
        assert not subject_only
    else:
        assert subject_only is bool(registry.capabilities.referrers_api)
    by_digest = {d.digest: d for d in found}
    sig = by_digest[signature.manifest.digest]
    assert isinstance(sig, Descriptor)
    assert sig.artifact_type == "application/vnd.dev.cosign.artifact.sig.v1+json"
    assert sig.size == len(signature.manifest.raw) and sig.media_type == signature.manifest.media_type
    only_sboms = registry.list_referrers(repository, subject.digest, artifact_type=SBOM)
    assert [d.digest for d in only_sboms] == ([sbom.manifest.digest] if subject_only else [])
    assert registry.list_referrers(repository, digest_of(b"no subject")) == []


# -- repositories ----------------------------------------------------------------------------------
def test_create_list_and_describe_repositories(registry):
    repository = unique(f"contract/{registry.kind}/repo")
    created = registry.create_repository(repository)
    # the distribution API has nothing to create: repositories appear with their first push
    assert created is {"ecr": True, "oci": False, "ocilayout": True}[registry.kind]
    assert registry.create_repository(repository) is False  # exists now (or never needed creating)
    push(registry, repository, image("listed-repo"), "v1")
    assert repository in registry.list_repositories()
    settings = registry.describe_repository(repository)
    assert isinstance(settings, RepositorySettings)
    if registry.capabilities.repository_settings:
        assert settings.tag_mutability == "MUTABLE" and settings.created_at is not None


def test_apply_settings_or_say_which_were_not_applied(registry):
    repository = _repo(registry)
    push(registry, repository, image("settings"), "v1")
    wanted = RepositorySettings(
        scan_on_push=True,
        tag_mutability="IMMUTABLE_WITH_EXCLUSION",
        tag_mutability_exclusions=("latest", "dev-*"),
        lifecycle_policy=json.dumps(
            {
                "rules": [
                    {
                        "rulePriority": 1,
                        "selection": {
                            "tagStatus": "untagged",
                            "countType": "imageCountMoreThan",
                            "countNumber": 5,
                        },
                        "action": {"type": "expire"},
                    }
                ]
            }
        ),
        resource_tags={"team": "platform"},
    )
    skipped = registry.apply_repository_settings(repository, wanted)
    if not registry.capabilities.repository_settings:
        assert skipped == sorted(wanted.given())
        return
    assert skipped == []
    got = registry.describe_repository(repository)
    assert got.scan_on_push is True
    assert got.tag_mutability == "IMMUTABLE_WITH_EXCLUSION"
    assert got.tag_mutability_exclusions == ("latest", "dev-*")
    assert json.loads(got.lifecycle_policy) == json.loads(wanted.lifecycle_policy)
    assert got.resource_tags == {"team": "platform"}


def test_missing_repository_is_not_found(registry):
    repository = unique(f"contract/{registry.kind}/absent")
    with pytest.raises(NotFound):
        registry.get_manifest(repository, "latest")
    assert registry.head_manifest(repository, "latest") is None
    if registry.kind != "oci":  # the distribution API keeps no settings and cannot tell
        with pytest.raises(NotFound):
            registry.describe_repository(repository)
