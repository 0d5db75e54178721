"""``registry-ops backup`` as a user runs it (in-process ``cli.main``: JSON on stdout, exit codes)
and the ``registry_backup`` DAG end to end with ``dag.test()``, on moto, the distribution
registry and an OCI layout."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from include.registry_ops.backup.store import SnapshotStore
from include.registry_ops.config import load_config
from tests.backup.test_backup_support import (
    adapters,
    bk_bucket,  # noqa: F401 - fixture
    fleet_of,
    keys_under,
    seed_all,
    unique,
)
from tests.cli_in_process import run_json
from tests.conftest import OCI_PASSWORD
from tests.dag_test import without_deadline


@pytest.fixture
def env(moto_server, registry_server, s3, bk_bucket, tmp_path):  # noqa: F811
    """A fleet in the three registries and a config file naming them and a bucket of its own."""
    prefix = unique()
    layout = tmp_path / "layout"
    regs = adapters(moto_server, registry_server, layout)
    seed_all(regs, fleet_of(prefix, images=10))
    path = tmp_path / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default", "include": [prefix + "*"]},
                    {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [prefix + "*"]},
                    {"name": "layout", "kind": "ocilayout", "path": str(layout), "include": [prefix + "*"]},
                ],
                "storage": {"conn_id": "aws_default", "bucket": bk_bucket},
            }
        )
    )
    return {"config": str(path), "layout": layout, "prefix": prefix, "bucket": bk_bucket, "s3": s3}


def _break(env) -> str:
    broken = env["layout"] / env["prefix"] / "broken"
    broken.mkdir(parents=True)
    (broken / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (broken / "index.json").write_text("{not json")
    return f"layout/{env['prefix']}broken"


def test_backup_commands(env, capfd):
    cfg = env["config"]
    code, first, err = run_json(capfd, ["backup", "run", "--config", cfg])
    assert code == 0, err
    assert first["latest"] and first["mode"] == "full" and first["manifests"] > 0
    assert OCI_PASSWORD not in json.dumps(first) + err
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    code, second, _ = run_json(capfd, ["backup", "run", "--config", cfg, "--now", tomorrow])
    assert code == 0 and second["puts"] == 2 and second["mode"] == "metadata"

    code, listing, _ = run_json(capfd, ["backup", "list", "--config", cfg])
    assert code == 0 and [s["snapshot"] for s in listing] == [second["snapshot"], first["snapshot"]]
    assert listing[0]["latest"] and not listing[1]["latest"] and listing[0]["complete"]

    code, verified, _ = run_json(capfd, ["backup", "verify", "--config", cfg])
    assert code == 0 and verified["ok"] and verified["snapshot"] == second["snapshot"]

    before = keys_under(env["s3"], env["bucket"])
    code, out, err = run_json(capfd, ["backup", "verify", "20200101T000000Z", "--config", cfg])
    assert code == 2 and out is None
    assert "'20200101T000000Z' does not exist" in err and second["snapshot"] in err
    code, _, err = run_json(capfd, ["backup", "run", "--registry", "nope", "--config", cfg])
    assert code == 2 and "unknown registry 'nope'" in err
    code, plan, _ = run_json(capfd, ["backup", "run", "--dry-run", "--config", cfg])
    assert code == 0 and plan["dry_run"] and set(plan["previous"]) == {"ecr-local", "oci-local", "layout"}
    code, pruned, _ = run_json(capfd, ["backup", "prune", "--dry-run", "--config", cfg])
    assert code == 0 and pruned["dry_run"] and pruned["deleted_objects"] == 0
    assert keys_under(env["s3"], env["bucket"]).keys() == before.keys()  # nothing written

    store = SnapshotStore.from_config(load_config(cfg), env["s3"])
    catalog = store.read_catalog(store.resolve("latest"), "oci-local")
    pack = next(loc["pack"] for loc in catalog.objects.values() if "pack" in loc)
    env["s3"].put_object(Bucket=env["bucket"], Key=pack, Body=b"not the pack")
    code, damaged, err = run_json(capfd, ["backup", "verify", "--config", cfg])
    assert code == 1 and not damaged["ok"] and pack in err
    assert damaged["damaged"][0]["key"] == pack and damaged["damaged"][0]["images"]

    failing = _break(env)
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    code, summary, err = run_json(capfd, ["backup", "run", "--config", cfg, "--now", later])
    assert code == 1 and not summary["latest"] and list(summary["failures"]) == [failing]
    assert f"error: {failing}:" in err


@pytest.fixture(scope="module")
def backup_dag():
    from airflow.dag_processing.dagbag import DagBag

    return without_deadline(DagBag(dag_folder="dags").dags["registry_backup"])


def test_the_dag_backs_up_every_registry_then_fails_naming_a_broken_repository(
    airflow_db, env, backup_dag, monkeypatch, caplog
):
    from airflow.sdk import DagRunState

    monkeypatch.setenv("REGISTRY_OPS_CONFIG", env["config"])
    store = SnapshotStore.from_config(load_config(env["config"]), env["s3"])
    dr = backup_dag.test()
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
    assert dr.state == DagRunState.SUCCESS, states
    assert sorted(i for t, i in states if t == "back_up") == [0, 1, 2]
    manifest = store.resolve("latest")
    assert set(manifest["registries"]) == {"ecr-local", "oci-local", "layout"} and manifest["complete"]
    first = manifest["snapshot"]
    # what ops read in the publish task's log (module loggers reach the task log)
    assert any(m.startswith(f"backup: snapshot {first} (full) is latest:") for m in caplog.messages)

    failing = _break(env)
    dr = backup_dag.test()
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == DagRunState.FAILED
    assert states["publish"] == "success" and states["check"] == "failed" and states["prune"] == "success"
    assert store.resolve("latest")["snapshot"] == first
    newest = store.list_snapshots()[0]
    assert not newest["latest"]
    assert failing in store.resolve(newest["snapshot"])["failures"]


def test_the_dag_publishes_after_a_registry_step_failed_and_fails_naming_it(
    airflow_db, env, backup_dag, monkeypatch, tmp_path
):
    from airflow.sdk import DagRunState

    doc = yaml.safe_load(Path(env["config"]).read_text())
    doc["registries"][2]["path"] = str(tmp_path / "not-mounted")  # the layout cannot be listed
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(path))
    monkeypatch.setattr(backup_dag.get_task("back_up"), "retries", 0)  # no retry wait in the test
    dr = backup_dag.test()
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
    assert dr.state == DagRunState.FAILED
    assert states[("back_up", 2)] == "failed" and states[("back_up", 0)] == "success"
    assert states[("publish", -1)] == "success" and states[("check", -1)] == "failed"
    store = SnapshotStore.from_config(load_config(path), env["s3"])
    assert store.layout.read_pointer(env["s3"]) is None
    published = store.resolve(store.list_snapshots()[0]["snapshot"])
    assert published["failures"] == {"layout": "no result from its backup step"}
    assert set(published["registries"]) == {"ecr-local", "oci-local"}
