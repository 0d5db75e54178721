"""registry_retention and registry_restore end to end with dag.test(): a real inventory snapshot,
the real planner, moto (ECR, S3) and the distribution registry."""

from __future__ import annotations

import json

import pytest
import yaml

from include.registry_ops import storage
from include.registry_ops.clients import build_registry
from include.registry_ops.config import load_config
from include.registry_ops.inventory import publish_snapshot, run_inventory
from include.registry_ops.retention import audit
from tests.retention_exec.helpers import NOW, present, seed, small_fleet, unique

DAG_BUCKET = "ret-exec-dag"


def _keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=DAG_BUCKET, Prefix=prefix)
    return [o["Key"] for p in pages for o in p.get("Contents", [])]


@pytest.fixture(scope="module")
def dag_env(moto_server, registry_server, s3, tmp_path_factory):
    """Config, policy and in-use files, a seeded fleet of our own and its inventory snapshot."""
    from tests.retention_exec.helpers import ecr_registry, oci_registry

    prefix = unique()
    ecr, oci = ecr_registry(moto_server.endpoint), oci_registry(registry_server.url)
    fleet = small_fleet(prefix, repositories=2, images=30, seed=31)
    seed(ecr, fleet)
    seed(oci, fleet)
    workdir = tmp_path_factory.mktemp("retention-dag")
    keep = fleet[0].manifests[0]  # the oldest image: planned to expire unless in use
    (workdir / "in-use.txt").write_text(f"# deployed\n{fleet[0].name}@{keep.digest}\n")
    (workdir / "policies.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "policies": [
                    {
                        "name": "keep-newest-4",
                        "enabled": True,
                        "repositories": [prefix + "*"],
                        "protect_tags": [],
                        "rules": [
                            {
                                "rulePriority": 1,
                                "description": "keep the newest 4",
                                "selection": {
                                    "tagStatus": "any",
                                    "countType": "imageCountMoreThan",
                                    "countNumber": 4,
                                },
                                "action": {"type": "expire"},
                            }
                        ],
                    }
                ],
            }
        )
    )
    config_path = workdir / "registry-ops.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default", "include": [prefix + "*"]},
                    {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [prefix + "*"]},
                ],
                "storage": {"conn_id": "aws_default", "bucket": DAG_BUCKET},
                "retention": {
                    "policy_file": "policies.yaml",
                    "in_use_file": "in-use.txt",
                    "max_deletions_per_run": 1000,
                    "max_fraction_per_repository": 1.0,
                },
            }
        )
    )
    config = load_config(config_path)
    storage.ensure_bucket(s3, DAG_BUCKET)
    listing = run_inventory(config, build_registry, NOW)
    assert not listing.errors and listing.table.num_rows > 0
    manifest = publish_snapshot(
        s3, DAG_BUCKET, "inventory/", listing.table, [], NOW, ["ecr-local", "oci-local"]
    )
    return {"config": config_path, "fleet": fleet, "ecr": ecr, "oci": oci, "keep": keep, "manifest": manifest}


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder="dags")
    return bag.dags["registry_retention"], bag.dags["registry_restore"]


def _summary(s3, dr) -> dict:
    [key] = [
        k
        for k in _keys(s3, "retention/runs/")
        if k.endswith("/summary.json") and audit.safe_run_id(dr.run_id) in k
    ]
    return json.loads(s3.get_object(Bucket=DAG_BUCKET, Key=key)["Body"].read())


def _states(dr) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ti in dr.get_task_instances():
        out.setdefault(ti.task_id, []).append(ti.state)
    return out


def test_dry_run_then_real_run_then_restore(airflow_db, dag_env, dags, s3, monkeypatch):
    from airflow.sdk import DagRunState

    retention, restore = dags
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(dag_env["config"]))
    fleet, ecr, oci = dag_env["fleet"], dag_env["ecr"], dag_env["oci"]

    # 1. the default: a dry run (manual run: plans on inventory/latest.json)
    dr = retention.test()
    assert dr.state == DagRunState.SUCCESS, _states(dr)
    dry = _summary(s3, dr)
    assert dry["dry_run"] is True and dry["images_removed"] == 0 and dry["would_remove_images"] > 0
    assert dry["snapshot"]["key"] == dag_env["manifest"]["key"]
    plan = storage.get_table(s3, DAG_BUCKET, dry["plan_key"]).to_pandas()
    expire = plan[plan["action"] == "expire"]
    assert len(expire) == dry["would_remove_images"]
    by_registry = {"ecr-local": ecr, "oci-local": oci}
    assert all(present(by_registry[r.registry], r.repository, r.digest) for r in expire.itertuples())
    assert _keys(s3, "archive/") == []
    keep = dag_env["keep"]  # listed in retention.in_use_file: the planner kept it
    kept = plan[(plan["digest"] == keep.digest) & (plan["registry"] == "ecr-local")]
    assert kept["action"].tolist() == ["keep"] and "in use" in kept["reason"].iat[0]
    audit_keys = [k for k in _keys(s3, "retention/audit/") if audit.safe_run_id(dr.run_id) in k]
    records = [r for k in audit_keys for r in audit.read_audit(s3, DAG_BUCKET, k)]
    assert len(records) == len(expire) and {r["result"] for r in records} == {"would_delete"}

    # 2. the real run
    dr = retention.test(run_conf={"dry_run": False})
    assert dr.state == DagRunState.SUCCESS, _states(dr)
    assert len(_states(dr)["apply"]) == len({(r.registry, r.repository) for r in expire.itertuples()})
    real = _summary(s3, dr)
    plan = storage.get_table(s3, DAG_BUCKET, real["plan_key"]).to_pandas()
    expire = plan[plan["action"] == "expire"]
    assert real["images_removed"] == len(expire) > 0 and real["repositories_failed"] == []
    assert real["bytes_removed"] == int(expire["size_bytes"].fillna(0).sum())
    assert real["monthly_cost_saved_usd"] == round(real["bytes_removed"] / 2**30 * 0.10, 2)
    for row in plan.itertuples():
        assert present(by_registry[row.registry], row.repository, row.digest) == (row.action != "expire"), row
    catalogs = [k for k in _keys(s3, "archive/images/") if k.endswith(".json")]
    docs = [json.loads(s3.get_object(Bucket=DAG_BUCKET, Key=k)["Body"].read()) for k in catalogs]
    archived = {(doc["registry"], e["digest"]) for doc in docs for e in doc["images"]}
    assert archived == {(r.registry, r.digest) for r in expire.itertuples()}
    _asset_event_extra_matches(real)

    # 3. restore one through the restore DAG
    victim = next(r for r in expire.itertuples() if r.registry == "oci-local" and len(r.tags))
    dr = restore.test(
        run_conf={
            "mode": "restore",
            "registry": "oci-local",
            "repository": victim.repository,
            "tag": victim.tags[0],
        }
    )
    assert dr.state == DagRunState.SUCCESS, _states(dr)
    spec = next(m for repo in fleet for m in repo.manifests if m.digest == victim.digest)
    assert oci.get_manifest(victim.repository, victim.digest).raw == spec.raw
    assert [k for k in _keys(s3, "retention/audit/restore/") if victim.repository in k]


def _asset_event_extra_matches(summary: dict) -> None:
    """The RETENTION Asset got an event whose extra carries the run's totals."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        extras = session.scalars(
            select(AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "registry_retention_summary")
        ).all()
    mine = [e for e in extras if e.get("run_id") == summary["run_id"]]
    assert mine and mine[-1]["images_removed"] == summary["images_removed"]
    assert mine[-1]["monthly_cost_saved_usd"] == summary["monthly_cost_saved_usd"]


def test_restore_dag_refuses_bad_params_without_retrying(airflow_db, dag_env, monkeypatch, capfd):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(dag_env["config"]))
    restore = DagBag(dag_folder="dags").dags["registry_restore"]  # fresh: no conf left by other runs
    dr = restore.test(run_conf={"mode": "restore", "tag": "v1"})  # a tag needs its repository
    assert dr.state == DagRunState.FAILED
    [ti] = dr.get_task_instances()
    assert ti.state == "failed" and ti.try_number == 1
    logs = capfd.readouterr()  # the task runner writes the failure to the task log (stdout here)
    assert "AirflowFailException: restoring by tag needs the repository" in logs.out + logs.err


def test_without_a_target_or_a_policy_file_the_dags_do_nothing_and_succeed(
    airflow_db, dag_env, s3, monkeypatch, tmp_path, caplog
):
    """What `make demo` does: each DAG once from a fresh DagBag, no conf, no retention settings."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    cfg = yaml.safe_load(dag_env["config"].read_text())
    del cfg["retention"]
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(bare))
    bag = DagBag(dag_folder="dags")  # a fresh one: dag.test(run_conf=...) leaves conf on the DAG
    retention, restore = bag.dags["registry_retention"], bag.dags["registry_restore"]
    dr = retention.test()
    assert dr.state == DagRunState.SUCCESS, _states(dr)
    assert _summary(s3, dr)["repositories"] == 0
    dr = restore.test()
    assert dr.state == DagRunState.SUCCESS, _states(dr)
    assert "no digest or tag given; the newest archived images" in caplog.text


def test_a_missing_snapshot_fails_the_run_at_once_without_a_type_error(
    airflow_db, dag_env, s3, monkeypatch, tmp_path, capfd
):
    """No retry can bring a snapshot: `plan` and `summarize` fail on their first try, cleanly."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    empty = f"ret-exec-dag-empty-{unique('x')[2:10]}"
    s3.create_bucket(Bucket=empty)
    cfg = yaml.safe_load(dag_env["config"].read_text())
    cfg["storage"]["bucket"] = empty
    cfg["retention"].update(
        policy_file=str(dag_env["config"].parent / "policies.yaml"),
        in_use_file=str(dag_env["config"].parent / "in-use.txt"),
    )
    path = tmp_path / "empty-bucket.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(path))
    retention = DagBag(dag_folder="dags").dags["registry_retention"]
    dr = retention.test()
    logs = capfd.readouterr()
    assert dr.state == DagRunState.FAILED
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert tis["plan"].state == "failed" and tis["plan"].try_number == 1
    assert tis["summarize"].state == "failed" and tis["summarize"].try_number == 1
    assert tis["check"].state == "upstream_failed"
    out = logs.out + logs.err
    assert f"no inventory snapshot at s3://{empty}/inventory/latest.json" in out
    assert "no plan, so nothing to summarize" in out and "TypeError" not in out
