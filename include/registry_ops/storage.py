"""S3 object I/O for snapshots and manifests, over a plain boto3 S3 client.

Buckets are never created on the way: a misspelt ``storage.bucket`` would otherwise receive
snapshots and archives nobody finds. Only ``registry-ops init`` and the local devstack call
:func:`ensure_bucket`; every job checks with :func:`require_bucket`.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

_MISSING = {"404", "NoSuchBucket", "NotFound"}
_DENIED = {"403", "AccessDenied", "Forbidden"}


class BucketMissing(ValueError):
    """The configured bucket does not exist (the message names it, the config key and the fix)."""


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


def put_json(s3: Any, bucket: str, key: str, obj: Any) -> None:
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json")


def get_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def bucket_exists(s3: Any, bucket: str) -> bool | None:
    """True, False (HeadBucket: 404), or None when access is denied (the bucket exists, since S3
    answers 404 for a missing bucket whoever asks, but this identity may not list it)."""
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
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


def delete_keys(s3: Any, bucket: str, keys: list[str]) -> None:
    for i in range(0, len(keys), 1000):
        s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
        )
