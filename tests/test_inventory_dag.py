"""registry_inventory end to end with dag.test() on moto, the registry and S3."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest

from include.registry_ops import schema
from include.registry_ops.inventory import latest_snapshot
from tests.conftest import BUCKET, OCI_PASSWORD
from tests.dag_test import without_deadline
from tests.fleet_expect import all_ecr, visible_oci


@pytest.fixture(scope="module")
def inventory_dag():
    from airflow.dag_processing.dagbag import DagBag

    return without_deadline(DagBag(dag_folder="dags").dags["registry_inventory"])


def test_inventory_run_matches_the_seeded_fleet(airflow_db, seeded, config_file, s3, inventory_dag, capfd):
    from airflow.sdk import DagRunState

    dr = inventory_dag.test()
    logs = capfd.readouterr()
    assert "list_batch" in logs.out + logs.err  # the task logs were captured ...
    assert OCI_PASSWORD not in logs.out + logs.err  # ... and hold no secret
    assert dr.state == DagRunState.SUCCESS, {ti.task_id: ti.state for ti in dr.get_task_instances()}

    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key="inventory/latest.json")["Body"].read())
    assert pointer["key"].startswith("inventory/dt=") and pointer["key"].endswith("/inventory.parquet")
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=pointer["manifest"])["Body"].read())
    assert manifest["complete"] is True and manifest["errors"] == []

    table = latest_snapshot(s3, BUCKET, "inventory/")
    assert table.schema.equals(schema.ARROW_SCHEMA)
    frame = schema.table_to_frame(table)
    schema.validate_frame(frame)
    for registry, expect in (("ecr-local", all_ecr), ("oci-local", visible_oci)):
        got = frame[frame.registry == registry]
        want = {(r.name, d): m for r in seeded for d, m in expect(r).items()}
        assert set(zip(got.repository, got.digest, strict=False)) == set(want), registry
        for row in got.itertuples():
            spec = want[(row.repository, row.digest)]
            assert row.tags == spec.tags
            assert row.kind == spec.kind
    assert manifest["images"] == len(frame)
    assert set(manifest["registries"]) == {"ecr-local", "oci-local"}
    # the OCI listing's cache sits beside the snapshot for the next run (ECR has none)
    run_folder = pointer["key"].rsplit("/", 1)[0] + "/"
    assert manifest["cache"] == {
        "manifests": run_folder + "manifests.parquet",
        "configs": run_folder + "configs.parquet",
    }
    assert set(manifest["full_listing_at"]) == {"oci-local"}
    cached = pq.read_table(
        io.BytesIO(s3.get_object(Bucket=BUCKET, Key=manifest["cache"]["manifests"])["Body"].read())
    )
    assert set(cached["digest"].to_pylist()) == set(frame[frame.registry == "oci-local"].digest)
    # the mapped parts were cleaned up after the snapshot was written
    parts = s3.list_objects_v2(Bucket=BUCKET, Prefix="inventory/_parts/").get("KeyCount", 0)
    assert parts == 0
    # the snapshot is a real Parquet file any tool can read
    body = s3.get_object(Bucket=BUCKET, Key=pointer["key"])["Body"].read()
    assert pq.read_table(io.BytesIO(body)).num_rows == len(frame)


def test_dead_registry_is_named_and_the_others_still_land(
    airflow_db, seeded, config_file, s3, inventory_dag, tmp_path, monkeypatch
):
    import yaml
    from airflow.sdk import DagRunState

    cfg = yaml.safe_load(config_file.read_text())
    cfg["registries"].append(
        {"name": "oci-dead", "kind": "oci", "conn_id": "oci_local", "url": "http://127.0.0.1:9"}
    )
    broken = tmp_path / "with-dead.yaml"
    broken.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(broken))

    dr = inventory_dag.test()
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == DagRunState.FAILED
    assert states["publish"] == "success" and states["check_complete"] == "failed"
    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key="inventory/latest.json")["Body"].read())
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=pointer["manifest"])["Body"].read())
    assert manifest["registries_failed"] == ["oci-dead"]
    assert "cannot reach http://127.0.0.1:9" in manifest["errors"][0]["error"]
    assert set(manifest["registries"]) == {"ecr-local", "oci-local"}


def test_bad_config_fails_the_task_not_the_parse(
    airflow_db, config_file, inventory_dag, tmp_path, monkeypatch
):
    from airflow.sdk import DagRunState

    bad = tmp_path / "bad.yaml"
    bad.write_text("registries:\n  - name: x\n    kind: quay\n    conn_id: c\nstorage: {bucket: b-b}\n")
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(bad))
    dr = inventory_dag.test()
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == DagRunState.FAILED and states["registries"] == "failed"


def test_snapshot_is_named_by_when_the_listing_ran(airflow_db, seeded, config_file, s3, inventory_dag):
    """A run scheduled for 00:00 that lists at 07:13 publishes .../HHMMSSZ of 07:13, not 000000Z."""
    from datetime import UTC, datetime

    from airflow.sdk import DagRunState

    midnight = datetime(2026, 11, 1, tzinfo=UTC)  # the run's logical date, long before the listing
    before = datetime.now(UTC).replace(microsecond=0)
    dr = inventory_dag.test(logical_date=midnight)
    after = datetime.now(UTC)
    assert dr.state == DagRunState.SUCCESS, {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.logical_date == midnight

    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key="inventory/latest.json")["Body"].read())
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=pointer["manifest"])["Body"].read())
    taken = datetime.fromisoformat(manifest["snapshot_at"])
    assert before <= taken <= after
    assert pointer["key"] == f"inventory/dt={taken:%Y-%m-%d}/{taken:%H%M%SZ}/inventory.parquet"
    rows = schema.table_to_frame(latest_snapshot(s3, BUCKET, "inventory/"))
    assert len(rows) == manifest["images"] > 0
    assert set(rows["snapshot_at"]) == {taken}  # every row agrees with the key and the manifest
