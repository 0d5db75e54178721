"""Buckets are never created on the way: a missing or misspelt ``storage.bucket`` is an error
naming the bucket and the config key (exit 2), even on a dry run; ``registry-ops init`` creates
it, once, on purpose. Runs against the session's moto server."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
import yaml
from botocore.stub import Stubber

from include.registry_ops import inventory_jobs, schema, storage
from include.registry_ops.cli import main
from include.registry_ops.config import load_config
from include.registry_ops.inventory_files import write_inventory
from tests.retention.helpers import image

MISSPELT = "registry-ops-tset"  # the fixtures' bucket is registry-ops-test


def _config(tmp_path, bucket: str):
    path = tmp_path / f"{bucket}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [{"name": "ecr-test", "kind": "ecr", "conn_id": "aws_default"}],
                "storage": {"conn_id": "aws_default", "bucket": bucket},
            }
        )
    )
    return path


def _result(out: str) -> dict:
    """The command's JSON result: the end of stdout (Airflow's loggers may write before it)."""
    return json.loads(out if out.startswith("{") else out[out.rindex("\n{") + 1 :])


def _buckets(s3) -> set[str]:
    return {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_a_misspelt_bucket_stops_a_dry_run_and_creates_nothing(s3, tmp_path, capfd):
    config = _config(tmp_path, MISSPELT)
    inventory = tmp_path / "inventory.parquet"
    write_inventory(schema.to_table([image("a", ["1.0.0"], 400), image("b", [], 400)]), inventory)
    argv = ["retention", "apply", "--inventory", str(inventory), "--config", str(config)]
    assert main(argv) == 2  # a dry run: the default
    out, err = capfd.readouterr()
    assert f"S3 bucket '{MISSPELT}' does not exist (storage.bucket in {config})" in err, err
    assert "registry-ops init" in err and '"run_id"' not in out  # no summary: nothing ran
    assert MISSPELT not in _buckets(s3)


def test_init_creates_the_bucket_once(s3, tmp_path, capfd):
    bucket = "registry-ops-init-test"
    config = _config(tmp_path, bucket)
    assert bucket not in _buckets(s3)
    with pytest.raises(storage.BucketMissing, match=bucket):
        storage.require_bucket(s3, bucket, str(config))
    assert main(["init", "--config", str(config)]) == 0
    assert _result(capfd.readouterr().out) == {"bucket": bucket, "created": True}
    assert bucket in _buckets(s3)
    storage.require_bucket(s3, bucket, str(config))  # now there
    assert main(["init", "--config", str(config)]) == 0
    assert _result(capfd.readouterr().out) == {"bucket": bucket, "created": False}


def test_inventory_and_scan_jobs_require_the_bucket(s3, tmp_path):
    from include.registry_ops.scan import jobs as scan_jobs

    config = load_config(_config(tmp_path, MISSPELT))
    with pytest.raises(storage.BucketMissing, match=rf"'{MISSPELT}' does not exist \(storage.bucket in "):
        inventory_jobs.start(config)
    with pytest.raises(storage.BucketMissing, match=MISSPELT):
        scan_jobs.plan_run(config, datetime.now(UTC), "run-1", inventory=schema.empty_table())
    assert MISSPELT not in _buckets(s3)


def _stubbed(code: str, status: int):
    client = boto3.client("s3", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error("head_bucket", service_error_code=code, http_status_code=status)
    stub.activate()
    return client, stub


def test_access_denied_is_not_reported_missing(caplog):
    """S3 answers HeadBucket 404 for a missing bucket whoever asks; 403 means it exists but this
    identity may not list it (a role can write objects without s3:ListBucket): go on, warn."""
    client, stub = _stubbed("403", 403)
    storage.require_bucket(client, "someone-elses", "cfg.yaml")
    assert "HeadBucket access denied" in caplog.text
    stub.assert_no_pending_responses()
    client, stub = _stubbed("403", 403)
    assert storage.ensure_bucket(client, "someone-elses") is False  # no CreateBucket was stubbed
    client, stub = _stubbed("500", 500)
    with pytest.raises(client.exceptions.ClientError):
        storage.require_bucket(client, "flaky", "cfg.yaml")


def test_the_inventory_dag_fails_at_once_on_a_missing_bucket(airflow_db, moto_server, tmp_path, monkeypatch):
    """No retry can create the bucket: the first task fails without retrying (retries=2)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(_config(tmp_path, MISSPELT)))
    dag = DagBag(dag_folder="dags").dags["registry_inventory"]
    dr = dag.test()
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert dr.state == DagRunState.FAILED
    assert tis["registries"].state == "failed" and tis["registries"].try_number == 1


def test_the_scan_dag_fails_at_once_on_a_missing_bucket(airflow_db, moto_server, tmp_path, monkeypatch):
    """The same for the scan: its `plan` fails on the first try, naming the bucket."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(_config(tmp_path, MISSPELT)))
    dag = DagBag(dag_folder="dags").dags["registry_scan"]
    dr = dag.test()
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert dr.state == DagRunState.FAILED
    assert tis["plan"].state == "failed" and tis["plan"].try_number == 1
