"""Schema versions of run manifests and pointers: what older code wrote (no version) reads as
version 1; what a newer registry-ops wrote is refused, naming the object and the version."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from include.registry_ops import inventory, schema, snapshots
from include.registry_ops.config import parse_config
from include.registry_ops.retention import audit
from include.registry_ops.scan import findings
from include.registry_ops.scan import jobs as scan_jobs
from include.registry_ops.scan import store as scan_store
from include.registry_ops.scan.results import SCANS_SCHEMA
from include.registry_ops.store import objects
from include.registry_ops.store.runs import ManifestError, RunLayout, SchemaVersionError, schema_version

T0 = datetime(2026, 11, 20, 7, 13, 5, tzinfo=UTC)
BASE = "inventory/dt=2026-11-20/071305Z/"


def _config(bucket: str):
    return parse_config(
        {
            "registries": [{"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"conn_id": "aws_default", "bucket": bucket},
        }
    )


def _old_snapshot(s3, bucket: str, manifest_extra: dict | None = None, pointer_extra: dict | None = None):
    """A snapshot as registry-ops wrote it before schema versions: no ``kind``, no version."""
    table = schema.to_table(
        [
            {
                "registry": "ecr-local",
                "registry_kind": "ecr",
                "repository": "shop/cart",
                "digest": "sha256:" + "a" * 64,
                "tags": ["1.0"],
                "kind": "image",
                "size_bytes": 10,
                "pushed_at": T0,
                "parent_digests": [],
                "child_digests": [],
                "snapshot_at": T0,
            }
        ]
    )
    objects.put_table(s3, bucket, BASE + "inventory.parquet", table)
    manifest = {"key": BASE + "inventory.parquet", "snapshot_at": T0.isoformat(), "images": 1}
    objects.put_json(s3, bucket, BASE + "manifest.json", {**manifest, **(manifest_extra or {})})
    pointer = {"key": BASE + "inventory.parquet", "manifest": BASE + "manifest.json"}
    objects.put_json(s3, bucket, "inventory/latest.json", {**pointer, **(pointer_extra or {})})


@pytest.mark.parametrize(
    ("doc", "version"), [({}, 1), ({"schema_version": 1}, 1), ({"schema_version": 3}, 3)]
)
def test_versions_up_to_the_supported_one_read(doc, version):
    assert schema_version(doc, "s3://b/k", 3) == version


@pytest.mark.parametrize("bad", ["2", 0, -1, 1.5, True, None])
def test_a_version_that_is_not_a_positive_integer_is_refused(bad):
    with pytest.raises(SchemaVersionError, match=r"s3://b/k: schema_version .* is not a positive integer"):
        schema_version({"schema_version": bad}, "s3://b/k", 3)


def test_an_old_inventory_snapshot_without_a_version_still_reads(s3, bucket):
    _old_snapshot(s3, bucket)
    chosen = snapshots.load(_config(bucket), s3, [])
    assert chosen.location.key == BASE + "inventory.parquet" and len(chosen.frame) == 1
    assert inventory.latest_snapshot(s3, bucket, "inventory/").num_rows == 1


@pytest.mark.parametrize("where", ["manifest", "pointer"])
def test_a_newer_inventory_snapshot_is_refused_naming_object_and_version(s3, bucket, where):
    newer = {"schema_version": 2}
    _old_snapshot(s3, bucket, **{f"{where}_extra": newer})
    key = BASE + "manifest.json" if where == "manifest" else "inventory/latest.json"
    with pytest.raises(snapshots.SnapshotError) as err:
        snapshots.load(_config(bucket), s3, [])
    message = str(err.value)
    assert f"s3://{bucket}/{key}: schema_version 2 is newer than this registry-ops reads (up to 1)" in message
    assert not isinstance(err.value, snapshots.SnapshotMissing)  # not "run the inventory first"


def test_a_newer_scan_run_is_refused_before_the_scan_plans(s3, bucket):
    config = _config(bucket)
    layout = scan_store.layout(config)
    objects.put_json(s3, bucket, layout.latest_key, {"manifest": "m", "schema_version": 9})
    where = f"s3://{bucket}/reports/scan/latest.json"
    with pytest.raises(scan_jobs.ScanError, match=rf"{where}: schema_version 9 is newer"):
        scan_jobs._previous(s3, config)


def test_an_old_scan_pointer_without_a_version_still_reads(s3, bucket):
    config = _config(bucket)
    objects.put_table(s3, bucket, "reports/scan/runs/x/findings.parquet", findings.empty_table())
    objects.put_table(s3, bucket, "reports/scan/runs/x/scans.parquet", SCANS_SCHEMA.empty_table())
    objects.put_json(
        s3,
        bucket,
        "reports/scan/latest.json",
        {
            "findings": "reports/scan/runs/x/findings.parquet",
            "scans": "reports/scan/runs/x/scans.parquet",
            "manifest": "reports/scan/runs/x/manifest.json",
            "run_at": T0.isoformat(),
        },
    )
    _, _, pointer = scan_jobs._previous(s3, config)
    assert pointer["findings"].endswith("findings.parquet")


def test_a_newer_retention_summary_is_refused(s3, bucket):
    layout = audit.run_layout(bucket, "retention/runs/")
    newer = RunLayout(bucket, "retention/runs/", audit.RUN_KIND, version=2, manifest_name="summary.json")
    newer.publish(s3, "retention/runs/r1/", {"run_id": "r1"})
    with pytest.raises(ManifestError, match=rf"s3://{bucket}/retention/runs/latest.json: schema_version 2"):
        layout.latest(s3)
    objects.put_json(s3, bucket, "retention/runs/latest.json", {"manifest": "retention/runs/r1/summary.json"})
    with pytest.raises(
        SchemaVersionError, match=rf"s3://{bucket}/retention/runs/r1/summary.json: schema_version 2 is newer"
    ):
        layout.latest(s3)
