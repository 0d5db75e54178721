"""What the S3 archive and the backups cost: bytes and objects per storage class.

One paginated ListObjectsV2 per area (it returns each object's ``StorageClass``), in
``storage.bucket``:

- ``archive``: ``storage.prefixes.archive``, the one blob store (``store/blobs.py``) shared by
  the retention archive and the backups' layers, packs and catalogs: its bytes cannot be told
  apart by owner without reading every catalog, so the area is the store;
- ``backup``: ``storage.prefixes.backup``, the backup snapshots' manifests and pointer.

When one prefix lies inside the other, its objects count in its own area only. ``usd_month`` is
bytes / 2^30 x the class's price per GiB-month (``reports.s3_prices``). An object without a
``StorageClass`` (S3 always sends one; some S3-compatible stores do not) is ``STANDARD``, S3's
default. A class without a price is priced as ``STANDARD`` and said so in ``frame.attrs["notes"]``
(sentences for the report's notes). Not counted: per-object overheads of the archive classes
(GLACIER and DEEP_ARCHIVE bill 40 KB more per object), minimum storage durations, requests.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ..config import Config
from ..store import objects
from . import cost, tables
from .settings import S3_PRICES

log = logging.getLogger(__name__)

DEFAULT_CLASS = "STANDARD"


def areas(config: Config) -> dict[str, str]:
    """Area name -> prefix."""
    return {"archive": config.storage.prefixes.archive, "backup": config.storage.prefixes.backup}


def _check(prices: dict[str, float]) -> None:
    for name, price in prices.items():
        if not isinstance(price, int | float) or isinstance(price, bool) or not price >= 0:
            raise ValueError(f"reports.s3_prices: {name}: {price!r} is not a price >= 0 (USD per GiB-month)")


def _totals(s3: Any, bucket: str, prefix: str, inner: list[str]) -> dict[str, list[int]]:
    """Storage class -> [objects, bytes] under ``prefix``, leaving out keys under ``inner``."""
    out: dict[str, list[int]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if any(item["Key"].startswith(p) for p in inner):
                continue
            total = out.setdefault(item.get("StorageClass") or DEFAULT_CLASS, [0, 0])
            total[0] += 1
            total[1] += int(item["Size"])
    return out


def s3_storage(config: Config, s3: Any, prices: dict[str, float]) -> pd.DataFrame:
    """S3_STORAGE: one row per (area, storage class) holding objects, sorted by that key."""
    _check(prices)
    objects.require_bucket(s3, config.storage.bucket, config.source)
    fallback = prices.get(DEFAULT_CLASS, S3_PRICES[DEFAULT_CLASS])
    where = areas(config)
    rows, notes = [], []
    for area, prefix in where.items():
        inner = [p for p in where.values() if p != prefix and p.startswith(prefix)]
        for storage_class, (count, size) in sorted(_totals(s3, config.storage.bucket, prefix, inner).items()):
            price = prices.get(storage_class)
            if price is None:
                price = fallback
                notes.append(
                    f"S3 {area}: storage class {storage_class} has no price in reports.s3_prices; "
                    f"its {count} object(s) are priced as {DEFAULT_CLASS} ({fallback} USD per GiB-month)"
                )
                log.warning("reports: %s", notes[-1])
            rows.append(
                {
                    "area": area,
                    "storage_class": storage_class,
                    "objects": count,
                    "bytes": size,
                    "usd_month": cost.usd(float(size), price),
                }
            )
    frame = tables.empty(tables.S3_STORAGE) if not rows else tables.conform(pd.DataFrame(rows), "s3_storage")
    if rows:
        frame = frame.astype({"objects": "int64", "bytes": "int64", "usd_month": "float64"})
    frame.attrs["notes"] = notes
    return frame
