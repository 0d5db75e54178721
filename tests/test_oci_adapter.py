"""OCI adapter against the real CNCF distribution registry (basic auth, deletes enabled)."""

from __future__ import annotations

import json
import logging

import pytest

from include.registry_ops.registries.base import Manifest, RegistryError, digest_of
from include.registry_ops.registries.oci import OciRegistry
from tests.conftest import OCI_PASSWORD, OCI_USER
from tests.fleet_expect import visible_oci


@pytest.fixture
def oci(registry_server):
    return OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD, page_size=2)


def test_catalog_and_tags_follow_link_pages(seeded, oci):
    repos = oci.list_repositories()
    assert sorted(r.name for r in seeded) == [r for r in repos if r.startswith("fleet/")]
    assert oci.requests.counts["catalog"] >= len(repos) // 2 > 1
    repo = seeded[0]
    tags = oci.list_tags(repo.name)
    assert tags == sorted(t for m in repo.manifests for t in m.tags)
    # distribution 2.8 (Debian's) answers the whole tag list in one page whatever n is; the
    # same Link-following code path serves both lists, and the catalog above proves it pages.
    assert oci.requests.counts["tags_list"] >= 1


def test_list_images_matches_what_the_api_can_reach(seeded, oci):
    for repo in seeded:
        records = {r["digest"]: r for r in oci.list_images(repo.name)}
        expected = visible_oci(repo)
        assert set(records) == set(expected), repo.name
        for digest, spec in expected.items():
            rec = records[digest]
            assert rec["tags"] == spec.tags
            assert rec["kind"] == spec.kind
            assert rec["media_type"] == spec.media_type
            if spec.kind == "index":
                assert rec["child_digests"] == spec.children
                assert rec["created_at"] == spec.pushed_at  # its children's build time
                assert rec["size_bytes"] == max(expected[c].size for c in spec.children)
            else:
                assert rec["size_bytes"] == spec.size
                assert rec["layer_digests"] == [b.digest for b in spec.blobs[1:]]
            if spec.kind == "referrer":
                assert rec["subject_digest"] == spec.subject
            if spec.kind == "image":
                assert rec["platform"] == spec.platform
                assert rec["created_at"] == spec.pushed_at  # config 'created' is the build time
            assert rec["pushed_at"] is None  # distribution records no push time


def test_one_manifest_request_per_tag_and_child(seeded, registry_server):
    oci = OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD)
    repo = next(r for r in seeded if any(m.kind == "index" for m in r.manifests))
    visible = visible_oci(repo)
    oci.list_images(repo.name)
    tags = sum(len(m.tags) for m in visible.values())
    untagged_children = sum(1 for m in visible.values() if not m.tags)
    assert oci.requests.counts["manifest_get"] == tags + untagged_children


def test_multi_arch_index_links_children(seeded, oci):
    repo = next(r for r in seeded if any(m.kind == "index" for m in r.manifests))
    records = {r["digest"]: r for r in oci.list_images(repo.name)}
    indexes = [r for r in records.values() if r["kind"] == "index"]
    assert indexes
    for idx in indexes:
        platforms = sorted(records[c]["platform"] for c in idx["child_digests"])
        assert platforms == ["linux/amd64", "linux/arm64"]
        for c in idx["child_digests"]:
            assert idx["digest"] in records[c]["parent_digests"]


def test_referrers_found_by_cosign_tags(seeded, oci):
    repo = next(r for r in seeded if any(m.kind == "referrer" for m in r.manifests))
    records = oci.list_images(repo.name)
    refs = [r for r in records if r["kind"] == "referrer"]
    assert refs
    digests = {r["digest"] for r in records}
    for ref in refs:
        assert ref["subject_digest"] in digests
        assert ref["tags"][0].startswith("sha256-")
    assert any(r["artifact_type"] == "application/vnd.in-toto+json" for r in refs)


def test_put_get_delete_round_trip(seeded, oci):
    spec = next(m for m in seeded[0].manifests if m.kind == "image" and m.tags)
    for blob in spec.blobs:
        oci.upload_blob("scratch/oci-delete", blob.data)
    manifest = Manifest(spec.digest, spec.media_type, spec.raw)
    assert oci.put_manifest("scratch/oci-delete", manifest, "v1") == spec.digest
    got = oci.get_manifest("scratch/oci-delete", "v1")
    assert got.raw == spec.raw and digest_of(got.raw) == spec.digest
    assert oci.head_manifest("scratch/oci-delete", "v1") == spec.digest

    result = oci.delete_images("scratch/oci-delete", [spec.digest])
    assert result.deleted == [spec.digest] and not result.failures
    assert oci.head_manifest("scratch/oci-delete", spec.digest) is None
    again = oci.delete_images("scratch/oci-delete", [spec.digest])
    assert again.deleted == [] and "not found" in again.failures[spec.digest]


def test_blob_round_trip_is_bit_exact(oci):
    data = json.dumps({"hello": "registry"}).encode()
    digest = oci.upload_blob("scratch/blobs", data)
    assert digest == digest_of(data)
    assert oci.get_blob("scratch/blobs", digest) == data
    assert oci.upload_blob("scratch/blobs", data) == digest  # second time: exists, skipped


def test_wrong_password_is_named_and_secret_never_leaks(registry_server, caplog):
    caplog.set_level(logging.DEBUG)
    bad = OciRegistry("oci-local", registry_server.url, OCI_USER, "wrong-password-xyz", retries=0)
    with pytest.raises(RegistryError) as err:
        bad.list_repositories()
    assert "oci-local" in str(err.value) and "401" in str(err.value)
    good = OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD)
    good.list_repositories()
    assert "wrong-password-xyz" not in str(err.value) + caplog.text
    assert OCI_PASSWORD not in caplog.text


def test_dead_endpoint_is_a_clear_error():
    dead = OciRegistry("oci-dead", "http://127.0.0.1:9", retries=1, backoff=0.01, timeout=1)
    with pytest.raises(RegistryError) as err:
        dead.list_repositories()
    assert "registry oci-dead" in str(err.value) and "cannot reach http://127.0.0.1:9" in str(err.value)


def test_unknown_repository_lists_nothing(registry_server):
    oci = OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD)
    assert oci.list_images("no/such-repo") == []


def test_credentials_in_the_url_are_used_and_never_quoted_in_errors(seeded, registry_server):
    """``https://user:pass@host`` works (the credentials sign the requests) and the password
    never reaches an error message (those land in logs, S3 reports and emails)."""
    from urllib.parse import quote as q

    scheme, _, rest = registry_server.url.partition("://")
    with_creds = f"{scheme}://{q(OCI_USER)}:{q(OCI_PASSWORD)}@{rest}"
    oci = OciRegistry("oci-local", with_creds)
    assert oci.url == registry_server.url
    assert oci.list_repositories()  # authenticated with the URL's credentials
    dead = OciRegistry("oci-dead", f"http://{OCI_USER}:{OCI_PASSWORD}@127.0.0.1:9/", retries=0)
    with pytest.raises(Exception) as caught:
        dead.list_repositories()
    assert "127.0.0.1:9" in str(caught.value) and OCI_PASSWORD not in str(caught.value)
