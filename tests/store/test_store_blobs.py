"""The generic blob store (``store/blobs.py``) on moto S3: write-once (a 412 is "already there",
never an overwrite), corruption found on read-back, packs and ranged member reads, and the
archive as one kind of catalog over the same blobs as any other."""

from __future__ import annotations

import io
import tarfile

import boto3
import pytest
from botocore.stub import Stubber

from include.registry_ops.retention.archive import ArchiveError, ArchiveStore
from include.registry_ops.store import blobs as blob_module
from include.registry_ops.store.blobs import Blob, BlobError, BlobStore, build_pack, digest_of


@pytest.fixture
def store(s3, bucket) -> BlobStore:
    return BlobStore(s3, bucket, "blobs/")


def _blob(text: str) -> Blob:
    data = text.encode()
    return Blob(digest_of(data), "application/octet-stream", data)


def _overwrite(store: BlobStore, key: str, data: bytes) -> None:
    store.s3.put_object(Bucket=store.bucket, Key=key, Body=data)


# -- write-once ----------------------------------------------------------------------------------
def test_put_once_writes_once_and_never_overwrites(store, s3):
    key = store.prefix + "once.json"
    assert store.put_once(key, b"first", "application/json") is True
    assert store.put_once(key, b"second", "application/json") is False  # moto answered 412
    assert store.read_object(key) == b"first"


@pytest.mark.parametrize(
    ("code", "status"), [("PreconditionFailed", 412), ("ConditionalRequestConflict", 409)]
)
def test_a_lost_conditional_write_is_already_there_not_an_error(code, status):
    """S3 answers 412 when the key exists, and 409 while a concurrent conditional write to it is
    in flight: both mean "someone else writes these bytes", and the caller verifies them."""
    client = boto3.client("s3", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error("put_object", service_error_code=code, http_status_code=status)
    with stub:
        assert BlobStore(client, "b", "p/").put_once("p/k", b"x", "text/plain") is False


def test_other_write_errors_are_raised():
    client = boto3.client("s3", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error("put_object", service_error_code="AccessDenied", http_status_code=403)
    with stub, pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
        BlobStore(client, "b", "p/").put_once("p/k", b"x", "text/plain")


def test_put_verified_refuses_other_bytes_already_under_the_key(store, s3):
    key = store.prefix + "catalog.json"
    store.put_verified(key, b"{}", "application/json", "catalog")
    store.put_verified(key, b"{}", "application/json", "catalog")  # a rerun: same bytes, fine
    with pytest.raises(BlobError, match=rf"catalog s3://{store.bucket}/{key}: read-back differs"):
        store.put_verified(key, b'{"other": 1}', "application/json", "catalog")


# -- blobs ---------------------------------------------------------------------------------------
def test_ensure_blob_uploads_once_and_verifies(store, calls):
    blob = _blob("layer bytes " * 1000)
    fetched = []

    def fetch():
        fetched.append(1)
        return io.BytesIO(blob.data)

    key = store.ensure_blob(blob.digest, fetch)
    assert key == f"{store.prefix}blobs/sha256/{blob.digest[7:]}"
    calls.ops.clear()
    assert store.ensure_blob(blob.digest, fetch) == key
    assert fetched == [1]  # the second call neither fetched nor wrote
    assert calls.ops == [("GetObject", key)]
    assert store.read_blob(blob.digest) == blob.data


def test_a_corrupt_blob_is_found_on_read_back_and_never_overwritten(store, s3):
    blob = _blob("the real layer")
    key = store.blob_key(blob.digest)
    _overwrite(store, key, b"rotten bytes")
    with pytest.raises(BlobError, match=rf"s3://{store.bucket}/{key} does not hash to {blob.digest}"):
        store.ensure_blob(blob.digest, lambda: io.BytesIO(blob.data))
    assert store.read_object(key) == b"rotten bytes"  # left for a person to look at
    with pytest.raises(BlobError, match="does not hash to"):
        store.read_blob(blob.digest)
    assert "does not hash to" in store.blob_problem(key, blob.digest)


def test_bytes_that_do_not_match_the_digest_are_caught_after_the_write(store):
    """A fetch that returns other bytes (a registry serving the wrong blob) is written once, read
    back, and refused: the blob is never reported stored."""
    blob = _blob("what the manifest names")
    with pytest.raises(BlobError, match="does not hash to"):
        store.ensure_blob(blob.digest, lambda: io.BytesIO(b"something else"))


def test_a_missing_blob_is_named(store):
    blob = _blob("never stored")
    key = store.blob_key(blob.digest)
    assert store.blob_problem(key, blob.digest) == f"blob s3://{store.bucket}/{key} is missing"
    with pytest.raises(BlobError, match=rf"blob {blob.digest} is not in the blob store"):
        store.read_blob(blob.digest)


@pytest.mark.parametrize("digest", ["sha256:../../etc", "sha512:" + "a" * 128, "sha256:" + "A" * 64, "x"])
def test_a_digest_that_is_not_sha256_hex_names_no_key(store, digest):
    with pytest.raises(BlobError, match="is not a sha256 digest"):
        store.blob_key(digest)


# -- packs ---------------------------------------------------------------------------------------
def test_a_pack_is_a_plain_tar_of_its_members_and_members_read_by_range(store, calls):
    blobs = [_blob(f"manifest {n}") for n in range(5)] + [_blob("")]
    key, members = store.write_pack(blobs)
    data = store.read_object(key)
    assert key == store.pack_key(digest_of(data)[7:])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:  # `tar -x` needs no tool of ours
        names = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert names == {f"blobs/sha256/{b.digest[7:]}": b.data for b in blobs}
    calls.ops.clear()
    for b in blobs:
        offset, size = members[b.digest]
        assert store.read_member({"digest": b.digest, "pack": key, "offset": offset, "size": size}) == b.data
    assert [op for op, _ in calls.ops] == ["GetObject"] * (len(blobs) - 1)  # the empty one: no GET


def test_packs_are_deterministic_so_a_rerun_writes_nothing_new(store, calls):
    blobs = [_blob("a"), _blob("b")]
    first = store.write_pack(blobs)
    assert store.write_pack(list(reversed(blobs))) == first
    assert calls.keys("PutObject") == [first[0], first[0]]  # the second was refused (412), then verified
    assert build_pack(blobs)[0] == store.read_object(first[0])


def test_a_pack_damaged_in_s3_is_refused_on_write_and_on_read(store, s3):
    blobs = [_blob("config"), _blob("manifest")]
    data, members = build_pack(blobs)
    key = store.pack_key(digest_of(data)[7:])
    offset, size = members[blobs[0].digest]
    damaged = bytearray(data)
    damaged[offset] ^= 0xFF
    _overwrite(store, key, bytes(damaged))  # what a rerun meets when the first write went wrong
    with pytest.raises(BlobError, match=rf"pack s3://{store.bucket}/{key}: read-back does not hash to its"):
        store.write_pack(blobs)
    ref = {"digest": blobs[0].digest, "pack": key, "offset": offset, "size": size}
    with pytest.raises(BlobError, match=rf"{blobs[0].digest} in s3://{store.bucket}/{key} does not match"):
        store.read_member(ref)
    s3.delete_object(Bucket=store.bucket, Key=key)
    with pytest.raises(BlobError, match=rf"pack s3://{store.bucket}/{key} is missing"):
        store.read_member(ref)


def test_member_places_are_checked_against_the_stored_pack(store, monkeypatch):
    """The (offset, size) a catalog records for each member is checked on the bytes read back,
    so a fault in the tar writer can never put a wrong place into a catalog."""
    real = blob_module.build_pack

    def off_by_one(items):
        data, members = real(items)
        return data, {d: (offset + 1, size) for d, (offset, size) in members.items()}

    monkeypatch.setattr(blob_module, "build_pack", off_by_one)
    with pytest.raises(BlobError, match=r"member sha256:[0-9a-f]{64} does not match"):
        store.write_pack([_blob("config"), _blob("manifest")])


# -- catalog kinds over the same blobs -----------------------------------------------------------
def test_the_archive_and_another_catalog_kind_share_the_blobs(s3, bucket, calls):
    prefix = "shared/"
    archive, other = ArchiveStore(s3, bucket, prefix), BlobStore(s3, bucket, prefix)
    blob = _blob("a layer both need")
    key = archive.ensure_blob(blob.digest, lambda: io.BytesIO(blob.data))
    calls.ops.clear()
    assert other.ensure_blob(blob.digest, lambda: pytest.fail("fetched again")) == key
    assert [op for op, _ in calls.ops] == ["GetObject"]  # verified, not uploaded twice
    assert archive.write_pack([blob]) == other.write_pack([blob])


def test_the_archive_raises_its_own_error_class(s3, bucket):
    archive = ArchiveStore(s3, bucket, "archive/")
    blob = _blob("gone")
    with pytest.raises(ArchiveError, match=rf"blob {blob.digest} is not in the archive"):
        archive.read_blob(blob.digest)
    assert issubclass(ArchiveError, BlobError)
