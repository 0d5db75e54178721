"""S3 object I/O over a plain boto3 S3 client: JSON, Parquet, bytes, write-once puts, listings,
and the bucket checks. Every layout in this package (runs, blobs) reads and writes through here,
so what counts as "missing" or "already there" is decided in one place.

Buckets are never created on the way: a misspelt ``storage.bucket`` would otherwise receive
snapshots and archives nobody finds. Only ``registry-ops init`` and the local devstack call
:func:`ensure_bucket`; every job checks with :func:`require_bucket`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
GET_WORKERS = 10  # botocore's default connection pool per client; more threads would only queue
_BUCKET_MISSING = {"404", "NoSuchBucket", "NotFound"}
_DENIED = {"403", "AccessDenied", "Forbidden"}
_OBJECT_MISSING = {"NoSuchKey", "404", "NotFound"}
_PRECONDITION = {"PreconditionFailed", "ConditionalRequestConflict"}


class BucketMissing(ValueError):
    """The configured bucket does not exist (the message names it, the config key and the fix)."""


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_missing(exc: ClientError) -> bool:
    """The object (GET: ``NoSuchKey``; HEAD: a bare 404) does not exist."""
    return error_code(exc) in _OBJECT_MISSING or http_status(exc) == 404


def is_precondition_failed(exc: ClientError) -> bool:
    """A conditional write lost: ``If-None-Match: *`` met an existing key, or ``If-Match`` a new ETag."""
    return http_status(exc) == 412 or error_code(exc) in _PRECONDITION


def url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


# -- bytes -----------------------------------------------------------------------------------------
def get_bytes(s3: Any, bucket: str, key: str, byte_range: str | None = None) -> bytes | None:
    """An object's bytes (or a ``bytes=a-b`` range of them); None when it does not exist."""
    kwargs = {"Range": byte_range} if byte_range else {}
    try:
        return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def get_many(
    s3: Any, bucket: str, keys: Iterable[str], workers: int | None = None
) -> dict[str, bytes | None]:
    """Each key's bytes (None when it does not exist), ``workers`` GETs at a time (default
    :data:`GET_WORKERS`): hundreds of small objects one after the other take seconds."""
    keys = list(dict.fromkeys(keys))
    if len(keys) <= 1:
        return {k: get_bytes(s3, bucket, k) for k in keys}
    with ThreadPoolExecutor(min(workers or GET_WORKERS, len(keys)), thread_name_prefix="s3-get") as pool:
        return dict(zip(keys, pool.map(lambda k: get_bytes(s3, bucket, k), keys), strict=True))


def stream(s3: Any, bucket: str, key: str, chunk: int = READ_CHUNK) -> Iterator[bytes] | None:
    """An object's bytes in chunks (never whole in memory); None when it does not exist."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise
    return iter(lambda: body.read(chunk), b"")


def exists(s3: Any, bucket: str, key: str) -> bool:
    """Whether the object exists (HEAD)."""
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_missing(exc):
            return False
        raise
    return True


def sse_params(kms_key_id: str | None) -> dict[str, str]:
    """``put_object`` arguments for server-side encryption: SSE-KMS with the key when one is
    given, else SSE-S3 (AES256). Writers that pass none keep the bucket's default."""
    if kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
    return {"ServerSideEncryption": "AES256"}


def put_once(
    s3: Any,
    bucket: str,
    key: str,
    body: bytes | IO[bytes],
    content_type: str,
    sse: dict[str, str] | None = None,
) -> bool:
    """Write unless the key exists (``If-None-Match: *``); False when it did (412), and then the
    object is left as it was: the caller reads it back to see whether it is the one it meant.
    ``sse``: :func:`sse_params` (None: the bucket's default encryption)."""
    try:
        s3.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*", **(sse or {})
        )
    except ClientError as exc:
        if is_precondition_failed(exc):
            return False
        raise
    return True


# -- tables and JSON -------------------------------------------------------------------------------
def put_table(s3: Any, bucket: str, key: str, table: pa.Table) -> int:
    """Write a table as zstd Parquet; returns the object size."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/vnd.apache.parquet")
    return len(data)


def get_table(s3: Any, bucket: str, key: str) -> pa.Table:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return pq.read_table(io.BytesIO(body))


def put_json(s3: Any, bucket: str, key: str, obj: Any, sse: dict[str, str] | None = None) -> None:
    """Write (or overwrite) an object as indented JSON; ``sse``: :func:`sse_params`."""
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json", **(sse or {}))


def get_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def get_json_or_none(s3: Any, bucket: str, key: str) -> Any | None:
    """The object's JSON, or None when there is no such object (never written yet)."""
    data = get_bytes(s3, bucket, key)
    return None if data is None else json.loads(data)


# -- listings --------------------------------------------------------------------------------------
def list_keys(s3: Any, bucket: str, prefix: str, start_after: str | None = None) -> list[dict[str, Any]]:
    """Every object under a prefix (Key, ETag, LastModified, Size), all pages; with
    ``start_after``, only keys after it (S3 lists in key order: dated keys skip their past)."""
    out: list[dict[str, Any]] = []
    extra = {"StartAfter": start_after} if start_after else {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, **extra):
        out.extend(page.get("Contents", []))
    return out


def folders(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The "folders" directly under ``prefix`` (ListObjectsV2 with a delimiter: one request per
    1,000 folders, however many objects each holds)."""
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        out.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
    return out


def delete_keys(s3: Any, bucket: str, keys: list[str]) -> list[dict[str, Any]]:
    """Delete the keys, 1,000 per request; returns the per-key errors S3 reported (logged)."""
    errors: list[dict[str, Any]] = []
    for i in range(0, len(keys), 1000):
        resp = s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
        )
        for err in resp.get("Errors", []):
            log.warning("S3: could not delete %s: %s", url(bucket, err.get("Key", "?")), err.get("Message"))
            errors.append(err)
    return errors


# -- buckets ---------------------------------------------------------------------------------------
def bucket_exists(s3: Any, bucket: str) -> bool | None:
    """True, False (HeadBucket: 404), or None when access is denied (the bucket exists, since S3
    answers 404 for a missing bucket whoever asks, but this identity may not list it)."""
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _BUCKET_MISSING:
            return False
        if code in _DENIED:
            return None
        raise
    return True


def require_bucket(s3: Any, bucket: str, source: str) -> None:
    """BucketMissing unless the bucket exists; ``source`` is the config file that names it.

    Access denied on HeadBucket is not "missing": a role may write objects without
    ``s3:ListBucket``, so the work goes on and S3 answers for each request."""
    found = bucket_exists(s3, bucket)
    if found is False:
        raise BucketMissing(
            f"S3 bucket {bucket!r} does not exist (storage.bucket in {source}): check the name, "
            f"or create it once with `registry-ops init --config {source}`"
        )
    if found is None:
        log.warning("S3 bucket %s: HeadBucket access denied; going on (storage.bucket in %s)", bucket, source)


def ensure_bucket(s3: Any, bucket: str) -> bool:
    """Create the bucket if it is missing (idempotent); True when it was created.

    For ``registry-ops init`` and the local devstack only; jobs use :func:`require_bucket`."""
    if bucket_exists(s3, bucket) is not False:
        return False
    region = s3.meta.region_name
    extra = (
        {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    )
    try:
        s3.create_bucket(Bucket=bucket, **extra)
    except s3.exceptions.BucketAlreadyOwnedByYou:  # created meanwhile by another init
        return False
    return True
