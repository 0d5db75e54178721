"""Trend, week/month over month and growers (``reports/trend.py``) from dated inventory snapshots
published by the real ``inventory.publish_snapshot`` into moto S3."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pyarrow as pa
import pytest

from include.registry_ops import schema
from include.registry_ops.config import parse_config
from include.registry_ops.inventory import SNAPSHOT_NAME, publish_snapshot, snapshot_layout
from include.registry_ops.reports import cost, tables, trend
from include.registry_ops.reports.settings import GIB
from include.registry_ops.store import objects

NOW = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
T1 = NOW - timedelta(days=30, hours=1)  # a month ago
T2 = NOW - timedelta(days=7, hours=1) + timedelta(microseconds=500_000)  # a week ago, to the 1/2 s
T3 = NOW - timedelta(hours=1)  # this morning


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def snapshot(at: datetime, repos: dict[tuple[str, str], list[int]], index: bool = True):
    """Rows of one snapshot: per (registry, repository) images of the given sizes, plus an index
    (which costs nothing) and layer lists the trend never needs."""
    rows = []
    for (registry, repository), sizes in repos.items():
        digests = [digest(f"{registry}/{repository}/{n}/{size}") for n, size in enumerate(sizes)]
        for d, size in zip(digests, sizes, strict=True):
            rows.append(
                {
                    "registry": registry,
                    "registry_kind": "ecr",
                    "repository": repository,
                    "digest": d,
                    "tags": [],
                    "kind": "image",
                    "size_bytes": size,
                    "parent_digests": [],
                    "child_digests": [],
                    "layer_digests": [d],
                    "layer_sizes": [size],
                    "snapshot_at": at,
                }
            )
        if index:
            rows.append(
                {
                    "registry": registry,
                    "registry_kind": "ecr",
                    "repository": repository,
                    "digest": digest(f"{registry}/{repository}/index/{at}"),
                    "tags": ["latest"],
                    "kind": "index",
                    "size_bytes": max(sizes),
                    "parent_digests": [],
                    "child_digests": digests,
                    "snapshot_at": at,
                }
            )
    return schema.to_table(rows)


SNAPSHOTS = {
    T1: {("ecr-a", "shop/cart"): [GIB], ("oci-b", "tools/ci"): [GIB // 2]},
    T2: {("ecr-a", "shop/cart"): [GIB, GIB], ("oci-b", "tools/ci"): [GIB // 2]},
    T3: {
        ("ecr-a", "shop/cart"): [GIB, GIB, GIB],
        ("ecr-a", "shop/new"): [GIB // 4],
        ("oci-b", "tools/ci"): [GIB // 4],
    },
}


@pytest.fixture
def published(s3):
    bucket = f"rep-trend-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for at, repos in SNAPSHOTS.items():
        publish_snapshot(s3, bucket, "inventory/", snapshot(at, repos), [], at, ["ecr-a", "oci-b"])
    # written after NOW (a report rerun for NOW must not see it), and one that never published
    early = NOW + timedelta(days=1)
    publish_snapshot(s3, bucket, "inventory/", snapshot(early, {("ecr-a", "x"): [GIB]}), [], early, [])
    # a newer run that died before its manifest: not published, never read
    dead = NOW - timedelta(minutes=30)
    layout = snapshot_layout(bucket, "inventory/")
    objects.put_table(s3, bucket, layout.run_prefix(dead) + SNAPSHOT_NAME, snapshot(dead, {}))
    return parse_config(
        {
            "registries": [{"name": "ecr-a", "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"bucket": bucket},
        }
    )


def test_the_snapshot_in_force_at_each_time(published, s3):
    after_now = NOW + timedelta(days=3)
    times = [T1 - timedelta(seconds=1), T1, T2 - timedelta(seconds=0.3), T2, NOW, after_now]
    found = trend.read_snapshots(published, s3, now=NOW, at=times)
    assert list(found) == times
    assert found[times[0]] is None  # nothing taken yet
    taken = {t: None if f is None else f["snapshot_at"].iat[0] for t, f in found.items()}
    assert taken[T1] == T1
    # the folder says 06:00:00 but the manifest says 06:00:00.5: at 06:00:00.2 T1 was in force
    assert taken[times[2]] == T1 and taken[T2] == T2
    # not the one taken after now, nor the later one without a manifest
    assert taken[NOW] == T3 and taken[after_now] == T3
    assert found[NOW] is found[after_now]  # read once
    frame = found[T2]
    assert list(frame.columns) == ["registry", "repository", "digest", "kind", "size_bytes", "snapshot_at"]
    assert frame["size_bytes"].dtype == "Int64" and len(frame) == 5  # 3 images, 2 indexes


def test_trend_is_one_row_per_registry_per_snapshot(published, s3):
    frame = trend.trend(published, s3, now=NOW, points=8)
    assert tuple(frame.columns) == tables.TREND
    got = {(r["snapshot_at"], r["registry"]): (r["images"], r["stored_bytes"]) for _, r in frame.iterrows()}
    assert len(frame) == 6  # T1, in force at three of the points, is read and listed once
    assert got == {
        (T1, "ecr-a"): (1, GIB),  # the index adds nothing
        (T1, "oci-b"): (1, GIB // 2),
        (T2, "ecr-a"): (2, 2 * GIB),
        (T2, "oci-b"): (1, GIB // 2),
        (T3, "ecr-a"): (4, 3 * GIB + GIB // 4),
        (T3, "oci-b"): (1, GIB // 4),
    }
    assert frame.loc[frame["snapshot_at"] == T2, "usd_month"].tolist() == pytest.approx([0.2, 0.05])
    # two weeks of points: the one before T2 and the one at NOW; T1 is not in force at either
    short = trend.trend(published, s3, now=NOW, points=2, price_per_gb_month=1.0)
    assert sorted(set(short["snapshot_at"])) == [T2, T3]
    assert short.loc[short["snapshot_at"] == T3, "usd_month"].sum() == pytest.approx(3.5)


def test_week_and_month_over_month(published, s3):
    found = trend.read_snapshots(
        published, s3, now=NOW, at=[NOW, NOW - timedelta(weeks=1), NOW - timedelta(days=30)]
    )
    current, week, month = (cost.cost_tables(f, published.reports)["cost"] for f in found.values())
    got = trend.changes(current, week, month)
    assert got["week_over_week"] == {
        "stored_bytes_before": 2 * GIB + GIB // 2,
        "stored_bytes_now": 3 * GIB + GIB // 2,
        "usd_month_before": 0.25,
        "usd_month_now": 0.35,
        "change": 0.4,
    }
    assert got["month_over_month"]["stored_bytes_before"] == GIB + GIB // 2
    assert got["month_over_month"]["change"] == pytest.approx(3.5 / 1.5 - 1, abs=1e-4)
    assert trend.changes(current, None, month)["week_over_week"] is None


def test_growers_are_the_biggest_growth_first(published, s3):
    found = trend.read_snapshots(published, s3, now=NOW, at=[T2, NOW])
    before, now = (cost.cost_tables(f, published.reports)["cost"] for f in found.values())
    frame = trend.growers(before, now, top=5)
    assert tuple(frame.columns) == tables.GROWERS
    assert frame[["repository", "bytes_before", "bytes_now", "bytes_change"]].values.tolist() == [
        ["shop/cart", 2 * GIB, 3 * GIB, GIB],
        ["shop/new", 0, GIB // 4, GIB // 4],  # new since then: grew from nothing
    ]  # tools/ci shrank: not a grower
    assert frame["usd_month_change"].tolist() == pytest.approx([0.1, 0.025])
    assert frame["team"].tolist() == ["unassigned", "unassigned"]
    assert trend.growers(before, now, top=1)["repository"].tolist() == ["shop/cart"]
    assert trend.growers(None, now, top=5).empty


def test_a_snapshot_that_is_not_an_inventory_is_refused_naming_it(s3):
    bucket = f"rep-trend-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    bad = snapshot(T3, {("ecr-a", "shop/cart"): [GIB]}, index=False)
    bad = bad.set_column(bad.schema.get_field_index("size_bytes"), "size_bytes", pa.array([-5], pa.int64()))
    manifest = publish_snapshot(s3, bucket, "inventory/", bad, [], T3, ["ecr-a"])
    config = parse_config(
        {
            "registries": [{"name": "ecr-a", "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"bucket": bucket},
        }
    )
    with pytest.raises(schema.SchemaError, match=rf"s3://{bucket}/{manifest['key']}.*size_bytes.*negative"):
        trend.read_snapshots(config, s3, now=NOW, at=[NOW])
    with pytest.raises(ValueError, match="no time zone"):
        trend.read_snapshots(config, s3, now=NOW.replace(tzinfo=None), at=[NOW])


def test_the_snapshot_is_found_with_one_listing_and_no_later_manifest_read(published, moto_server):
    """The listing's folder names narrow the choice: at T2 only T2's manifest and table are read."""
    client = boto3.client("s3", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    calls: list[str] = []
    client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    [frame] = trend.read_snapshots(published, client, now=NOW, at=[T2]).values()
    assert frame["snapshot_at"].iat[0] == T2
    assert calls == ["HeadBucket", "ListObjectsV2", "GetObject", "GetObject"]
