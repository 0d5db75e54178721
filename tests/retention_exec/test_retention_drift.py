"""Drift wired: `registry-ops retention drift` (a subprocess, as a user runs it) and the retention
DAG's `drift` task (dag.test), on moto ECR repositories with native lifecycle policies put by hand.

moto's validator rejects the archive fields AWS accepts (see tests/retention/test_drift.py), so
the native policies use the older subset."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import boto3
import pytest
import yaml
from botocore.config import Config as BotoConfig

from include.registry_ops import schema
from include.registry_ops.config import load_config
from include.registry_ops.inventory import publish_snapshot
from include.registry_ops.retention import audit
from include.registry_ops.retention.drift import fleet_drift
from include.registry_ops.retention.jobs import load_policy_set
from include.registry_ops.store import objects
from tests.retention_exec.helpers import NOW, unique

CLI = [sys.executable, "-m", "include.registry_ops.cli"]
AGE = {
    "rulePriority": 1,
    "description": "old prod images",
    "selection": {
        "tagStatus": "tagged",
        "tagPrefixList": ["prod"],
        "countType": "sinceImagePushed",
        "countUnit": "days",
        "countNumber": 14,
    },
    "action": {"type": "expire"},
}
UNTAGGED = {
    "rulePriority": 2,
    "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 10},
    "action": {"type": "expire"},
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def put(ecr, repo: str, rules: list | None) -> None:
    ecr.create_repository(repositoryName=repo)
    if rules is not None:
        ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=json.dumps({"rules": rules}))


@pytest.fixture(scope="module")
def drift_env(moto_server, registry_server, s3, ecr, tmp_path_factory):
    """Repositories in every state, a policy file declaring their rules, a config and a snapshot."""
    prefix = unique("ret-drift")
    differs = json.loads(json.dumps([AGE, UNTAGGED]))
    differs[1]["selection"]["countNumber"] = 3  # a hand edit in the console
    put(ecr, prefix + "in-sync", [UNTAGGED, AGE])
    put(ecr, prefix + "differs", differs)
    put(ecr, prefix + "missing", None)
    put(ecr, prefix + "unmanaged", [UNTAGGED])
    put(ecr, prefix + "regex", None)  # its declared rule uses tagRegexList: no native policy possible
    put(ecr, unique("ret-drift-outside") + "app", [UNTAGGED])  # not in the registry's include
    work = tmp_path_factory.mktemp("retention-drift")
    regex_rule = {
        "rulePriority": 1,
        "selection": {
            "tagStatus": "tagged",
            "tagRegexList": [r"^pr-\d+$"],
            "countType": "imageCountMoreThan",
            "countNumber": 3,
        },
        "action": {"type": "expire"},
    }
    policies = {
        "policies": [
            {"name": "regex", "repositories": [prefix + "regex"], "rules": [regex_rule]},
            {
                "name": "fleet",
                "repositories": [prefix + "*"],
                "exclude_repositories": [prefix + "unmanaged"],
                "rules": [AGE, UNTAGGED],
            },
        ]
    }
    (work / "policies.yaml").write_text(yaml.safe_dump(policies))
    bucket = "ret-drift-" + prefix.split("/")[1]
    objects.ensure_bucket(s3, bucket)
    path = work / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default", "include": [prefix + "*"]},
                    {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [prefix + "*"]},
                ],
                "storage": {"conn_id": "aws_default", "bucket": bucket},
                "retention": {"policy_file": "policies.yaml", "in_use_discovery": []},
            }
        )
    )
    publish_snapshot(s3, bucket, "inventory/", schema.empty_table(), [], NOW, ["ecr-local", "oci-local"])
    return {"config": path, "prefix": prefix, "bucket": bucket, "ecr": ecr}


STATUSES = {
    "in-sync": "in_sync",
    "differs": "differs",
    "missing": "missing",
    "unmanaged": "unmanaged",
    "regex": "missing",
}


def test_the_command_reports_each_repository_and_exits_1_on_drift(drift_env):
    proc = run("retention", "drift", "--config", str(drift_env["config"]))
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    prefix = drift_env["prefix"]
    status = {r["repository"].removeprefix(prefix): r["status"] for r in report["repositories"]}
    assert status == STATUSES  # the repository outside the registry's include is not checked
    # the regex policy cannot be attached natively: its `missing` is healthy and does not count
    assert report["drifted"] == [f"ecr-local/{prefix}differs", f"ecr-local/{prefix}missing"]
    differs = next(r for r in report["repositories"] if r["status"] == "differs")
    assert differs["differences"] == ["rule 2: countNumber: declared 10, native 3"]
    assert f"drift: ecr-local/{prefix}differs" in proc.stderr

    table = run("retention", "drift", "--config", str(drift_env["config"]), "--format", "table")
    assert table.returncode == 1
    assert "missing (not expressible)" in table.stdout
    assert "rule 2: countNumber: declared 10, native 3" in table.stdout
    assert "5 repositories: 1 differs, 1 in_sync, 2 missing, 1 unmanaged; drifted: 2" in table.stdout


def test_repaired_policies_exit_0(drift_env, tmp_path):
    """Once the declared rules are attached, nothing drifts: the exit code follows the statuses."""
    prefix = drift_env["prefix"]
    cfg = yaml.safe_load(drift_env["config"].read_text())
    cfg["registries"][0]["include"] = [prefix + "in-sync", prefix + "unmanaged", prefix + "regex"]
    cfg["retention"]["policy_file"] = str(drift_env["config"].parent / "policies.yaml")
    path = tmp_path / "in-sync.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run("retention", "drift", "--config", str(path), "--registry", "ecr-local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["drifted"] == []


def test_bad_input_exits_2_naming_it(drift_env):
    proc = run("retention", "drift", "--config", str(drift_env["config"]), "--registry", "oci-local")
    assert proc.returncode == 2
    assert "registry 'oci-local' is of kind 'oci': drift compares ECR lifecycle policies" in proc.stderr
    proc = run("retention", "drift", "--config", str(drift_env["config"]), "--policy", "/nonexistent.yaml")
    assert proc.returncode == 2 and "/nonexistent.yaml: cannot read policy file" in proc.stderr


def test_an_unreachable_registry_is_named_and_the_others_still_checked(drift_env, moto_server):
    """A registry whose API cannot be reached: an error naming it; the healthy one is reported."""
    cfg = yaml.safe_load(drift_env["config"].read_text())
    cfg["registries"].append({"name": "ecr-down", "kind": "ecr", "conn_id": "aws_default"})
    path = drift_env["config"].parent / "with-down.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = load_config(path)
    down = boto3.client(
        "ecr",
        endpoint_url="http://127.0.0.1:9",  # the discard port: nothing listens
        region_name="us-east-1",
        config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=2),
    )
    report = fleet_drift(
        config,
        load_policy_set(config),
        ecr_for=lambda reg: down if reg.name == "ecr-down" else drift_env["ecr"],
    )
    assert len(report["errors"]) == 1 and report["errors"][0].startswith("ecr-down: drift not checked: ")
    assert len(report["repositories"]) == len(STATUSES) and len(report["drifted"]) == 2


def test_the_drift_step_writes_its_report_and_warns(drift_env, s3, caplog):
    """The DAG task's function: drift.json beside the run's summary, a WARNING per drifted one."""
    from include.registry_ops.retention.drift import read_drift, record_drift

    config = load_config(drift_env["config"])
    assert read_drift(config, "drift-step") is None  # not run yet: the summary says null
    with caplog.at_level(logging.WARNING):
        out = record_drift(config, "drift-step")
    prefix = drift_env["prefix"]
    assert out["key"] == "retention/runs/drift-step/drift.json"
    assert (
        read_drift(config, "drift-step")["drifted"]
        == out["drifted"]
        == [
            f"ecr-local/{prefix}differs",
            f"ecr-local/{prefix}missing",
        ]
    )
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        f"retention: drift: ecr-local/{prefix}differs: differs rule 2: countNumber: declared 10, native 3"
        in warned
    )
    assert f"retention: drift: ecr-local/{prefix}missing: missing " in warned


def test_the_dag_task_reports_drift_and_the_run_still_succeeds(airflow_db, drift_env, s3, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.sdk import DagRunState
    from airflow.utils.session import create_session
    from sqlalchemy import select

    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(drift_env["config"]))
    retention = DagBag(dag_folder="dags").dags["registry_retention"]
    # beside apply, never before it: drift cannot hold back or stop a deletion
    assert retention.get_task("drift").downstream_task_ids == {"summarize"}
    assert "drift" not in retention.get_task("apply").upstream_task_ids
    dr = retention.test()
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == DagRunState.SUCCESS, states
    assert states["drift"] == "success" and states["check"] == "success"

    key = f"retention/runs/{audit.safe_run_id(dr.run_id)}/drift.json"
    report = objects.get_json(s3, drift_env["bucket"], key)
    prefix = drift_env["prefix"]
    assert report["drifted"] == [f"ecr-local/{prefix}differs", f"ecr-local/{prefix}missing"]

    with create_session() as session:
        extras = session.scalars(
            select(AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "registry_retention_summary")
        ).all()
    [mine] = [e for e in extras if e.get("run_id") == dr.run_id]
    assert mine["drifted"] == 2
