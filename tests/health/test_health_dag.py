"""registry_health end to end with dag.test(): the session's distribution registry and moto's
ECR are probed, the run's rows land in S3 as one Parquet object, a finished day left behind is
compacted, and no credential reaches the rows or the logs."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from include.registry_ops.config import load_config
from include.registry_ops.health import dataset
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.store import objects
from tests.conftest import BUCKET, OCI_PASSWORD, OCI_USER
from tests.registries.images import image, push, unique


@pytest.fixture(scope="module")
def health_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder="dags/registry_health.py")  # this DAG only: others may be mid-change
    assert bag.import_errors == {}
    return bag.dags["registry_health"]


def test_the_dag_runs_every_five_minutes_one_at_a_time(health_dag):
    timetable = health_dag.timetable
    assert (timetable.expression, str(timetable.timezone)) == ("*/5 * * * *", "UTC")
    assert health_dag.catchup is False and health_dag.max_active_runs == 1
    assert "registry-ops" in health_dag.tags
    assert {t.task_id for t in health_dag.tasks} == {"probe", "append", "slo", "compact"}
    assert health_dag.get_task("append").upstream_task_ids == {"probe"}
    assert health_dag.get_task("slo").upstream_task_ids == {"append"}
    assert health_dag.get_task("compact").upstream_task_ids == set()


def test_dag_end_to_end(
    airflow_db,
    config_file,
    registry_server,
    moto_server,
    s3,
    health_dag,
    tmp_path,
    monkeypatch,
    capfd,
    caplog,
):
    from airflow.sdk import DagRunState

    repo = unique("health")
    canary = push(OciRegistry("seed", registry_server.url, OCI_USER, OCI_PASSWORD), repo, image(repo), "v1")
    prefix = f"health-{uuid.uuid4().hex[:8]}/"
    path = tmp_path / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default", "region": "us-east-1"},
                    {"name": "oci-local", "kind": "oci", "conn_id": "oci_local"},
                ],
                "storage": {
                    "conn_id": "aws_default",
                    "bucket": BUCKET,
                    "prefixes": {"health": prefix, "inventory": f"inv-{uuid.uuid4().hex[:8]}/"},
                },
                "notifications": {"recipients": ["ops@example.com"]},
                "health": {
                    "timeout_seconds": 5,
                    "canaries": {"oci-local": {"repository": repo, "digest": canary.digest}},
                },
            }
        )
    )
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(path))
    config = load_config(path)
    # a run of a finished day that a missed compaction left behind
    old = datetime.now(UTC) - timedelta(days=3)
    old_rows = [
        {
            "at": old,
            "run_id": "scheduled__old",
            "registry": "oci-local",
            "kind": "oci",
            "api_ok": True,
            "api_ms": 3.0,
            "canary_repository": None,
            "canary_digest": None,
            "canary_ok": None,
            "canary_ms": None,
            "good": True,
            "error": None,
        }
    ]
    dataset.append(s3, config, old_rows, "scheduled__old", old)

    start = datetime.now(UTC)
    dr = health_dag.test()
    sys.stdout.flush()
    logs = capfd.readouterr()
    text = caplog.text + logs.out + logs.err
    assert dr.state == DagRunState.SUCCESS, text[-3000:]

    keys = [o["Key"] for o in objects.list_keys(s3, BUCKET, dataset.root(config))]
    small = [k for k in keys if "compacted-" not in k]
    assert len(small) == 1 and small[0].endswith(f"-{dataset.clean_run_id(dr.run_id)}.parquet")
    assert any(f"dt={old:%Y-%m-%d}/compacted-" in k for k in keys)

    table = dataset.read(s3, config, start - timedelta(seconds=1), datetime.now(UTC) + timedelta(seconds=1))
    rows = {r["registry"]: r for r in table.to_pylist()}
    assert set(rows) == {"ecr-local", "oci-local"}
    assert all(r["run_id"] == dr.run_id for r in rows.values())
    assert rows["oci-local"]["good"] and rows["oci-local"]["canary_ok"] is True
    assert rows["oci-local"]["canary_digest"] == canary.digest
    assert rows["ecr-local"]["api_ok"] and rows["ecr-local"]["canary_ok"] is None  # no canary known
    assert dataset.read(s3, config, old - timedelta(seconds=1), old + timedelta(seconds=1)).num_rows == 1
    # the slo task evaluated what was stored, this run's rows included, for the Registry page
    latest = objects.get_json(s3, BUCKET, prefix + "slo/latest.json")
    assert latest["evaluated_at"] >= start.isoformat()
    assert "oci-local" in json.dumps(latest) and "availability" in json.dumps(latest)
    assert OCI_PASSWORD not in text
    stored = b"".join(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys)
    assert OCI_PASSWORD.encode() not in stored
