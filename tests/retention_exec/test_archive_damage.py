"""A damaged catalog names itself and blocks nothing else: reads say which object and what is
wrong, searches skip it with a warning, restores from healthy catalogs go on, and an image that
only a damaged catalog holds is reported as such rather than as "not in the archive"."""

from __future__ import annotations

import json
import logging

import pytest

from include.registry_ops.retention.archive import ArchiveError, ArchiveMissing
from include.registry_ops.retention.restore import RestoreError, locate, restore_image
from tests.retention_exec.archive_helpers import archive_fleet, new_store, overwrite, s3_client, write_catalog
from tests.retention_exec.helpers import BUCKET


@pytest.fixture
def store(moto_server, ret_s3):
    return new_store(s3_client(moto_server.endpoint))


def _catalog_of(store, digest: str) -> str:
    [key] = [
        k for k in store.catalog_keys() if digest in {e["digest"] for e in store.read_catalog(k)["images"]}
    ]
    return key


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x00\x01 not json", "is not JSON"),
        (b'{"kind": "something-else", "images": []}', "is not a catalog: kind is 'something-else'"),
        (b"[1, 2]", "is not a JSON object"),
    ],
)
def test_reading_a_bad_catalog_names_the_object_and_the_problem(store, data, problem):
    key, _ = write_catalog(store)
    overwrite(store.s3, key, data)
    with pytest.raises(ArchiveError) as err:
        store.read_catalog(key)
    assert f"s3://{BUCKET}/{key}" in str(err.value) and problem in str(err.value)


def test_a_catalog_missing_a_field_or_the_object_itself_is_named(store):
    key, _ = write_catalog(store)
    doc = json.loads(store.read_object(key))
    del doc["pack"]
    overwrite(store.s3, key, json.dumps(doc).encode())
    with pytest.raises(ArchiveError, match=rf"s3://{BUCKET}/{key} field 'pack' is missing"):
        store.read_catalog(key)
    doc["pack"] = "p"
    doc["images"][0]["manifest"] = {"digest": doc["images"][0]["digest"]}
    overwrite(store.s3, key, json.dumps(doc).encode())
    with pytest.raises(ArchiveError, match="has neither a pack place nor a key"):
        store.read_catalog(key)
    store.s3.delete_object(Bucket=BUCKET, Key=key)
    with pytest.raises(ArchiveMissing, match=rf"s3://{BUCKET}/{key} is missing"):
        store.read_catalog(key)


@pytest.mark.parametrize("indexed", [False, True], ids=["scan", "index"])
def test_a_corrupt_catalog_does_not_block_restores_from_the_others(any_reg, store, caplog, indexed):
    repo, chosen, _run = archive_fleet(any_reg, store, n=6, archive_batch=2)
    keys = store.catalog_keys(any_reg.name, repo.name)
    assert len(keys) >= 3
    if indexed:
        store.compact_index()
    bad = keys[-1]  # the oldest: an older damaged catalog does not stop a restore by tag either
    target = next(m for m in chosen if m.tags and _catalog_of(store, m.digest) != bad)
    overwrite(store.s3, bad, b"{ truncated")

    with caplog.at_level(logging.WARNING):
        entry = locate(store, any_reg.name, repo.name, digest=target.digest)
        by_tag = locate(store, any_reg.name, repo.name, tag=target.tags[0])  # a scan of the repository
    assert entry["digest"] == by_tag["digest"] == target.digest
    assert f"s3://{BUCKET}/{bad}" in caplog.text  # skipped with a warning that names it
    everything = store.find(None, None, tag=None)
    healthy = {e["digest"] for k in keys if k != bad for e in store.read_catalog(k)["images"]}
    assert {e["digest"] for e in everything} == healthy  # the rest is all still there
    result = restore_image(store, any_reg, entry)
    assert result["verified"] and any_reg.get_manifest(repo.name, target.digest).raw == target.raw


@pytest.mark.parametrize("indexed", [False, True], ids=["scan", "index"])
def test_an_image_only_a_damaged_catalog_holds_is_reported_as_damaged(store, indexed):
    write_catalog(store)
    key, digests = write_catalog(store)
    if indexed:
        store.compact_index()
    overwrite(store.s3, key, b"\xff\xfe garbage")
    with pytest.raises(ArchiveError) as err:
        locate(store, None, None, digest=digests[0])
    assert f"s3://{BUCKET}/{key}" in str(err.value) and "not JSON" in str(err.value)
    assert "not in the archive" not in str(err.value)
    other = "sha256:" + "0" * 64  # a digest no catalog holds is still just "not in the archive"
    if indexed:
        with pytest.raises(RestoreError, match="not in the archive"):
            locate(store, None, None, digest=other)
    else:  # without an index any damaged catalog might hold it: say so, naming it
        with pytest.raises(ArchiveError, match=f"may hold it: catalog s3://{BUCKET}/{key}"):
            locate(store, None, None, digest=other)


def test_a_newer_damaged_catalog_stops_a_restore_by_tag(store):
    """The newest archive of a tag is what a restore by tag promises; a newer unreadable catalog
    may hold it, so the older readable one is not silently taken."""
    old, digests = write_catalog(store)
    tag = store.read_catalog(old)["images"][0]["tags"][0]
    newer, _ = write_catalog(store)
    assert newer.rsplit("/", 1)[1] > old.rsplit("/", 1)[1]
    overwrite(store.s3, newer, b"not json")
    with pytest.raises(ArchiveError, match=f"newer catalog.*s3://{BUCKET}/{newer}"):
        locate(store, "oci-local", "idx/app", tag=tag)
    assert locate(store, "oci-local", "idx/app", digest=digests[0])["catalog"] == old
