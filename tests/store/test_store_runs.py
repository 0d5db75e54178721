"""The run layout (``store/runs.py``) on moto S3: the manifest before the pointer, the pointer
last and never naming a missing object, and what the inventory, the scan and retention write
through it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from include.registry_ops import inventory, schema, snapshots
from include.registry_ops.config import parse_config
from include.registry_ops.retention import audit
from include.registry_ops.retention import jobs as retention_jobs
from include.registry_ops.scan import store as scan_store
from include.registry_ops.store import objects
from include.registry_ops.store.runs import ManifestError, RunLayout, RunMissing, dated

T0 = datetime(2026, 11, 20, 7, 13, 5, tzinfo=UTC)
KIND = "registry-ops/test-run"


def _run(s3, layout: RunLayout, at: datetime, rows: int) -> tuple[str, dict]:
    prefix = layout.run_prefix(at)
    objects.put_json(s3, layout.bucket, prefix + "data.json", {"rows": rows})
    return prefix, layout.publish(s3, prefix, {"rows": rows}, named={"data": prefix + "data.json"})


def test_run_prefix_is_dated_in_utc():
    layout = RunLayout("b", "reports/x/", KIND, runs="runs/")
    assert layout.run_prefix(T0) == "reports/x/runs/dt=2026-11-20/071305Z/"
    two_hours_east = T0.astimezone(timezone(timedelta(hours=2)))  # 09:13 local, 07:13 UTC
    assert layout.run_prefix(two_hours_east) == "reports/x/runs/dt=2026-11-20/071305Z/"
    assert dated(datetime(2026, 1, 2, 3, 4, 5)) == "dt=2026-01-02/030405Z/"  # naive: taken as UTC


def test_a_new_run_in_the_second_of_a_published_run_gets_the_next_free_second(s3, bucket):
    """Two CLI runs in one second: the second must not overwrite the first's published objects;
    a run not yet published (a retry) still finds its own folder."""
    layout = RunLayout(bucket, "caps/", KIND)
    assert layout.new_run_prefix(s3, T0) == layout.run_prefix(T0)
    objects.put_json(s3, bucket, layout.run_prefix(T0) + "data.json", {"rows": 1})  # a try, unpublished
    assert layout.new_run_prefix(s3, T0) == layout.run_prefix(T0)
    first, _ = _run(s3, layout, T0, 1)
    assert layout.new_run_prefix(s3, T0) == layout.run_prefix(T0 + timedelta(seconds=1)) != first
    _run(s3, layout, T0 + timedelta(seconds=1), 2)
    assert layout.new_run_prefix(s3, T0) == "caps/dt=2026-11-20/071307Z/"
    with pytest.raises(ManifestError, match="2 seconds of runs are all published"):
        layout.new_run_prefix(s3, T0, tries=2)


def test_publish_writes_the_manifest_then_the_pointer_last(s3, bucket, calls):
    layout = RunLayout(bucket, "caps/", KIND, version=3)
    prefix, manifest = _run(s3, layout, T0, 7)
    assert calls.keys("PutObject") == [prefix + "data.json", prefix + "manifest.json", "caps/latest.json"]
    assert manifest == {"rows": 7, "kind": KIND, "schema_version": 3}
    pointer, stored = layout.latest(s3)
    assert stored == manifest
    assert pointer == {
        "data": prefix + "data.json",
        "manifest": prefix + "manifest.json",
        "kind": KIND,
        "schema_version": 3,
    }


def test_a_crash_between_the_run_and_the_pointer_leaves_the_previous_latest(s3, bucket, calls):
    layout = RunLayout(bucket, "caps/", KIND)
    first, _ = _run(s3, layout, T0, 1)
    calls.fail_put_on = "latest.json"
    with pytest.raises(ConnectionError, match="injected"):
        _run(s3, layout, T0 + timedelta(hours=1), 2)
    second = layout.run_prefix(T0 + timedelta(hours=1))
    assert objects.exists(s3, bucket, second + "manifest.json")  # the run is complete ...
    pointer, manifest = layout.latest(s3)  # ... but the previous one is still latest
    assert pointer["manifest"] == first + "manifest.json" and manifest["rows"] == 1


def test_the_pointer_never_names_a_missing_object(s3, bucket, calls):
    layout = RunLayout(bucket, "caps/", KIND)
    first, _ = _run(s3, layout, T0, 1)
    later = layout.run_prefix(T0 + timedelta(hours=1))
    calls.ops.clear()
    with pytest.raises(ManifestError) as err:
        layout.publish(s3, later, {"rows": 2}, named={"data": later + "never-written.json"})
    assert f"s3://{bucket}/{later}never-written.json" in str(err.value)
    assert "not moved" in str(err.value)
    assert calls.keys("PutObject") == []  # neither a manifest nor the pointer
    assert layout.read_pointer(s3)["manifest"] == first + "manifest.json"


def test_before_the_first_run_there_is_no_latest(s3, bucket):
    layout = RunLayout(bucket, "fresh/", KIND)
    assert layout.read_pointer(s3) is None and layout.latest(s3) is None
    with pytest.raises(RunMissing, match=f"s3://{bucket}/fresh/x/manifest.json does not exist"):
        layout.read_manifest(s3, "fresh/x/manifest.json")


def test_a_pointer_that_is_not_json_is_named(s3, bucket):
    layout = RunLayout(bucket, "broken/", KIND)
    s3.put_object(Bucket=bucket, Key="broken/latest.json", Body=b"{ truncated")
    with pytest.raises(ManifestError, match=f"s3://{bucket}/broken/latest.json is not JSON"):
        layout.read_pointer(s3)


def test_a_manifest_of_another_kind_is_refused(s3, bucket):
    """Two capabilities pointed at one prefix must not read each other's runs."""
    RunLayout(bucket, "shared/", "registry-ops/scan-run").publish(s3, "shared/r/", {"rows": 1})
    with pytest.raises(ManifestError, match="kind is 'registry-ops/scan-run', not 'registry-ops/test-run'"):
        RunLayout(bucket, "shared/", KIND).latest(s3)


# -- the capabilities' runs -----------------------------------------------------------------------
def _table(at: datetime, images: int):
    return schema.to_table(
        {
            "registry": "ecr-local",
            "registry_kind": "ecr",
            "repository": "shop/cart",
            "digest": f"sha256:{n:064x}",
            "tags": [],
            "kind": "image",
            "size_bytes": 1000,
            "pushed_at": at,
            "parent_digests": [],
            "child_digests": [],
            "snapshot_at": at,
        }
        for n in range(images)
    )


def _config(bucket: str):
    return parse_config(
        {
            "registries": [{"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"conn_id": "aws_default", "bucket": bucket},
        }
    )


def test_inventory_snapshot_keys_and_pointer_stay_as_they_were(s3, bucket):
    manifest = inventory.publish_snapshot(s3, bucket, "inventory/", _table(T0, 2), [], T0, ["ecr-local"])
    base = "inventory/dt=2026-11-20/071305Z/"
    assert manifest["key"] == base + "inventory.parquet"
    assert manifest["kind"] == inventory.SNAPSHOT_KIND and manifest["schema_version"] == 1
    pointer = objects.get_json(s3, bucket, "inventory/latest.json")
    assert pointer["key"] == base + "inventory.parquet" and pointer["manifest"] == base + "manifest.json"
    assert objects.get_json(s3, bucket, base + "manifest.json")["images"] == 2


def test_an_inventory_publish_that_dies_before_the_pointer_keeps_the_previous_snapshot(s3, bucket, calls):
    inventory.publish_snapshot(s3, bucket, "inventory/", _table(T0, 2), [], T0, ["ecr-local"])
    calls.fail_put_on = "latest.json"
    later = T0 + timedelta(hours=1)
    with pytest.raises(ConnectionError):
        inventory.publish_snapshot(s3, bucket, "inventory/", _table(later, 5), [], later, ["ecr-local"])
    chosen = snapshots.load(_config(bucket), s3, [])
    assert chosen.location.snapshot_at == T0 and len(chosen.frame) == 2


def test_scan_and_retention_keys_stay_as_they_were():
    config = parse_config(
        {
            "registries": [{"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"conn_id": "aws_default", "bucket": "bucket-b", "prefixes": {"reports": "rep/"}},
        }
    )
    run_id = "manual__2026-11-28T07:13:00+00:00"
    assert scan_store.run_prefix(config, T0) == "rep/scan/runs/dt=2026-11-20/071305Z/"
    assert scan_store.layout(config).latest_key == "rep/scan/latest.json"
    assert scan_store.parts_prefix(config, run_id) == "rep/scan/_parts/manual__2026-11-28T07_13_00_00_00/"
    runs = config.retention.runs_prefix
    assert retention_jobs._run_key(config, run_id, "summary.json") == (
        f"{runs}manual__2026-11-28T07_13_00_00_00/summary.json"
    )


def test_the_retention_summary_is_published_with_its_pointer(s3, bucket):
    config = _config(bucket)
    summary = {"run_id": "manual__x:1", "now": T0.isoformat(), "dry_run": True, "images_removed": 0}
    key = retention_jobs._publish_summary(config, s3, summary, [{"registry": "r", "status": "done"}])
    assert key == f"{config.retention.runs_prefix}manual__x_1/summary.json"
    pointer, stored = audit.run_layout(bucket, config.retention.runs_prefix).latest(s3)
    assert pointer["manifest"] == key and pointer["run_id"] == "manual__x:1" and pointer["dry_run"] is True
    assert stored["kind"] == audit.RUN_KIND and stored["schema_version"] == 1
    assert stored["results"] == [{"registry": "r", "status": "done"}]
    assert json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["images_removed"] == 0
