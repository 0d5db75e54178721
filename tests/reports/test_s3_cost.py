"""The archive's and backups' cost by storage class (``reports/s3_cost.py``), on moto S3 objects
put with their storage class."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from include.registry_ops.config import parse_config
from include.registry_ops.reports import tables
from include.registry_ops.reports.s3_cost import s3_storage
from include.registry_ops.reports.settings import GIB, S3_PRICES
from include.registry_ops.storage import BucketMissing

KB = 1024


def config(bucket: str, **prefixes):
    return parse_config(
        {
            "registries": [{"name": "ecr-a", "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"bucket": bucket, "prefixes": prefixes},
        }
    )


def put(s3, bucket: str, key: str, size: int, storage_class: str | None = None) -> None:
    extra = {"StorageClass": storage_class} if storage_class else {}
    s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size, **extra)


@pytest.fixture
def bucket(s3):
    name = f"rep-s3cost-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


def test_bytes_objects_and_cost_per_area_and_storage_class(s3, bucket):
    put(s3, bucket, "archive/blobs/sha256/a", 3 * KB)  # STANDARD by default
    put(s3, bucket, "archive/blobs/sha256/b", 5 * KB, "STANDARD")
    put(s3, bucket, "archive/packs/sha256/c.tar", 7 * KB, "STANDARD_IA")
    put(s3, bucket, "archive/packs/sha256/d.tar", 11 * KB, "GLACIER")
    put(s3, bucket, "archive/packs/sha256/e.tar", 13 * KB, "GLACIER")
    put(s3, bucket, "backup/dt=2026-11-22/070000Z/manifest.json", 2 * KB)
    put(s3, bucket, "backup/latest.json", 1 * KB, "STANDARD_IA")
    put(s3, bucket, "inventory/dt=2026-11-22/070000Z/inventory.parquet", 99 * KB)  # neither area
    frame = s3_storage(config(bucket), s3, dict(S3_PRICES))
    assert tuple(frame.columns) == tables.S3_STORAGE
    got = {(r.area, r.storage_class): (r.objects, r.bytes, r.usd_month) for r in frame.itertuples()}
    assert got == {
        ("archive", "GLACIER"): (2, 24 * KB, pytest.approx(24 * KB / GIB * 0.0036)),
        ("archive", "STANDARD"): (2, 8 * KB, pytest.approx(8 * KB / GIB * 0.023)),
        ("archive", "STANDARD_IA"): (1, 7 * KB, pytest.approx(7 * KB / GIB * 0.0125)),
        ("backup", "STANDARD"): (1, 2 * KB, pytest.approx(2 * KB / GIB * 0.023)),
        ("backup", "STANDARD_IA"): (1, 1 * KB, pytest.approx(1 * KB / GIB * 0.0125)),
    }
    assert frame.attrs["notes"] == []


def test_a_class_without_a_price_is_priced_as_standard_and_noted(s3, bucket):
    put(s3, bucket, "archive/blobs/sha256/a", 4 * KB, "GLACIER_IR")
    prices = {"STANDARD": 0.05}
    frame = s3_storage(config(bucket), s3, prices)
    [row] = frame.to_dict("records")
    assert row["storage_class"] == "GLACIER_IR" and row["usd_month"] == pytest.approx(4 * KB / GIB * 0.05)
    [note] = frame.attrs["notes"]
    assert "GLACIER_IR" in note and "STANDARD" in note and "1 object" in note
    with pytest.raises(ValueError, match=r"GLACIER.*not a price"):
        s3_storage(config(bucket), s3, {"GLACIER": -1.0})


def test_nested_prefixes_count_once_and_an_empty_bucket_has_no_rows(s3, bucket):
    assert s3_storage(config(bucket), s3, dict(S3_PRICES)).empty
    put(s3, bucket, "store/blobs/a", 3 * KB)
    put(s3, bucket, "store/backup/manifest.json", 5 * KB)
    frame = s3_storage(config(bucket, archive="store/", backup="store/backup/"), s3, dict(S3_PRICES))
    assert frame[["area", "bytes"]].values.tolist() == [["archive", 3 * KB], ["backup", 5 * KB]]
    with pytest.raises(BucketMissing, match="does not exist"):
        s3_storage(config(f"rep-missing-{uuid.uuid4().hex[:8]}"), s3, dict(S3_PRICES))


def test_pages_of_objects_are_all_counted(s3, bucket):
    with ThreadPoolExecutor(8) as pool:  # ListObjectsV2 returns at most 1,000 keys a page
        list(pool.map(lambda n: put(s3, bucket, f"backup/o{n:04d}", 1), range(1005)))
    [row] = s3_storage(config(bucket), s3, dict(S3_PRICES)).to_dict("records")
    assert row["objects"] == 1005 and row["bytes"] == 1005
