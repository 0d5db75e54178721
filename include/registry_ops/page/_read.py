"""S3 reads the section loaders share: a pointer read that also says which version of it was read
(the memo key), many small GETs at once (a year of run summaries one after the other takes
seconds; a pool of GETs takes a fraction), the folders under a prefix, and a redaction of text
copied from errors (a registry error may quote a URL with credentials in it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..store import objects
from ..store.runs import ManifestError, RunLayout

WORKERS = 10  # botocore's default connection pool per client; more threads would only queue
_USERINFO = re.compile(r"(?i)(://)[^/@\s:]+:[^/@\s]+@")
_SECRET_ARG = re.compile(r"(?i)\b(password|passwd|secret|token|access_key|signature)(=|:\s*)\S+")


class ArtefactError(ValueError):
    """An S3 object a section cannot read (the message names it and the problem)."""


def redact(text: Any) -> Any:
    """``text`` with URL credentials and ``password=...``-style values replaced by ``***``."""
    if not isinstance(text, str):
        return text
    return _SECRET_ARG.sub(r"\1\2***", _USERINFO.sub(r"\1***@", text))


def read_pointer(s3: Any, layout: RunLayout) -> tuple[dict[str, Any], tuple[str, str]] | None:
    """The layout's ``latest`` pointer and its version (ETag, LastModified), None before the
    first run. The version, not the content, keys the memo: a rerun with the same run id writes
    the same pointer text over a changed summary, but never with the same LastModified."""
    from botocore.exceptions import ClientError

    key = layout.latest_key
    try:
        resp = s3.get_object(Bucket=layout.bucket, Key=key)
    except ClientError as exc:
        if objects.is_missing(exc):
            return None
        raise
    body = resp["Body"].read()
    try:
        doc = json.loads(body)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ManifestError(f"{layout.url(key)} is not JSON ({exc})") from None
    layout.check(doc, key)
    return doc, (str(resp.get("ETag", "")), str(resp.get("LastModified", "")))


def get_many(s3: Any, bucket: str, keys: Iterable[str]) -> dict[str, bytes | None]:
    """Each key's bytes (None when it does not exist), fetched ``WORKERS`` at a time."""
    keys = list(dict.fromkeys(keys))
    if len(keys) <= 1:
        return {k: objects.get_bytes(s3, bucket, k) for k in keys}
    with ThreadPoolExecutor(min(WORKERS, len(keys)), thread_name_prefix="page-get") as pool:
        return dict(zip(keys, pool.map(lambda k: objects.get_bytes(s3, bucket, k), keys), strict=True))


def json_of(bucket: str, key: str, body: bytes) -> Any:
    """The object's JSON, or ArtefactError naming it."""
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ArtefactError(f"{objects.url(bucket, key)} is not JSON ({exc})") from None


def folders(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The "folders" directly under ``prefix`` (ListObjectsV2 with a delimiter: one request per
    1,000 folders, however many objects each holds)."""
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        out.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
    return out
