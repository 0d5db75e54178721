"""S3 object I/O: the names the rest of the package imports, owned by :mod:`.store.objects`.

Kept as an import path because scan, commands, the devstack and the tests reach S3 through it;
new code imports ``store.objects`` (or a layout of :mod:`.store`) directly.
"""

from __future__ import annotations

from .store.objects import (
    BucketMissing,
    bucket_exists,
    delete_keys,
    ensure_bucket,
    get_json,
    get_json_or_none,
    get_table,
    put_json,
    put_table,
    require_bucket,
)

__all__ = [
    "BucketMissing",
    "bucket_exists",
    "delete_keys",
    "ensure_bucket",
    "get_json",
    "get_json_or_none",
    "get_table",
    "put_json",
    "put_table",
    "require_bucket",
]
