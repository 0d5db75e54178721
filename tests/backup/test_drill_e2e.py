"""The DR drill end to end on the local stack: a fleet seeded into moto ECR (layers held) and the
distribution registry, a full backup of both (``run_backup``), and drills into the second
distribution registry (``oci-dr``) through the functions, the command line and the DAG
(``dag.test()``), including drills that fail on purpose."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import yaml

from devstack.fleet import make_fleet
from devstack.seed import seed_ecr, seed_oci
from include.registry_ops import cli, storage
from include.registry_ops.backup import drill, drill_report
from include.registry_ops.backup.drill import DrillError
from include.registry_ops.backup.run import run_backup
from include.registry_ops.backup.store import SnapshotStore
from include.registry_ops.clients import build_registry
from include.registry_ops.config import load_config
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.store import objects
from tests.conftest import OCI_PASSWORD, OCI_USER
from tests.registries.images import image, push

FLEET_NOW = datetime(2026, 11, 27, tzinfo=UTC)
# the snapshot: two hours ago, to the hour. The DAG judges the snapshot's age against the real
# clock, so a fixed date here made its RPO (26 h) fail from 26 h after that date on.
TAKEN = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
SCRATCH = f"dr-drill-{uuid.uuid4().hex[:8]}/"  # the session's second registry is shared


@pytest.fixture(scope="module")
def env(moto_server, registry_server, dr_registry_server, smtp_server, s3, tmp_path_factory):
    """A fleet of its own in ECR and the registry, a config naming oci-dr the drill target, and
    one full backup of both (the snapshot every drill here restores)."""
    prefix = f"drill-{uuid.uuid4().hex[:8]}/"
    fleet = make_fleet(seed=41, repositories=3, images=24, layer_scale=0.0005, prefix=prefix, now=FLEET_NOW)
    seed_ecr(boto3.client("ecr", endpoint_url=moto_server.endpoint, region_name="us-east-1"), fleet)
    seed_oci(OciRegistry("seed", registry_server.url, OCI_USER, OCI_PASSWORD), fleet)
    bucket = f"drill-e2e-{uuid.uuid4().hex[:8]}"
    path = tmp_path_factory.mktemp("drill") / "registry-ops.yaml"
    layouts = path.parent / "layouts"
    layouts.mkdir()
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default", "include": [prefix + "*"]},
                    {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [prefix + "*"]},
                    {"name": "oci-dr", "kind": "oci", "conn_id": "oci_dr"},
                    {"name": "dr-layout", "kind": "ocilayout", "path": str(layouts)},
                ],
                "storage": {"conn_id": "aws_default", "bucket": bucket},
                "notifications": {"recipients": ["dr@example.com"]},
                "backup": {"registries": ["ecr-local", "oci-local"]},
                "dr": {"target": "oci-dr", "scratch_prefix": SCRATCH},
            }
        )
    )
    storage.ensure_bucket(s3, bucket)
    config = load_config(path)
    regs = {n: build_registry(config.registry(n)) for n in ("ecr-local", "oci-local")}
    backup = run_backup(config, s3, regs, TAKEN, mode="full")
    assert backup["failures"] == {} and backup["latest"], backup
    store = SnapshotStore.from_config(config, s3)
    manifest = store.resolve("latest")
    catalogs = {n: store.read_catalog(manifest, n) for n in regs}
    target = OciRegistry("oci-dr", dr_registry_server.url, OCI_USER, OCI_PASSWORD)
    return {"path": path, "config": config, "s3": s3, "bucket": bucket, "catalogs": catalogs,
            "target": target, "snapshot": manifest["snapshot"], "prefix": prefix}  # fmt: skip


def expected_digests(catalogs) -> tuple[int, int]:
    """(manifests + blobs, blobs) the drill must check: per repository, as the target holds them."""
    blobs = sum(
        len({d for m in r.manifests for d in m.blobs()}) for c in catalogs.values() for r in c.repositories
    )
    manifests = sum(len(r.manifests) for c in catalogs.values() for r in c.repositories)
    return manifests + blobs, blobs


def scratch_left(target) -> list[str]:
    return drill.occupied(target, SCRATCH)


@pytest.fixture
def corrupt_layer(env):
    """Overwrite one layer's object in the backup store with other bytes (the store is
    write-once for the application; the test puts directly), put the original back after."""
    s3, bucket = env["s3"], env["bucket"]
    catalog = env["catalogs"]["oci-local"]
    repo = catalog.repositories[0]
    image_entry = next(m for m in repo.manifests if m.layers)
    layer = image_entry.layers[0]
    key = catalog.objects[layer]["key"]
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=b"x" * len(original))
    yield layer
    s3.put_object(Bucket=bucket, Key=key, Body=original)


def test_a_drill_restores_proves_measures_reports_and_cleans_up(env, smtp_server):
    target, s3 = env["target"], env["s3"]
    keep = f"keep/{uuid.uuid4().hex[:8]}"
    kept = image(keep)
    push(target, keep, kept, "prod")  # a repository of someone else's in the target
    mails = len(smtp_server.messages)
    summary = drill.run_drill(env["config"], s3, now=TAKEN + timedelta(hours=1))
    digests, blobs = expected_digests(env["catalogs"])
    assert summary["passed"], summary["problems"]
    assert summary["digests_checked"] == summary["digests_equal"] == digests
    assert summary["blobs_checked"] == blobs > 0
    assert summary["failures"] == [] and summary["failures_total"] == 0
    assert summary["rpo_s"] == 3600.0 and summary["rpo_met"] and summary["rto_met"]
    assert 0 < summary["rto_s"] < 300
    assert (summary["target"], summary["snapshot"]) == ("oci-dr", env["snapshot"])
    every = sorted(
        drill.scratch_name(SCRATCH, n, r.name) for n, c in env["catalogs"].items() for r in c.repositories
    )
    assert sorted(summary["cleanup"]["removed"]) == every and summary["cleanup"]["failed"] == {}
    assert scratch_left(target) == []
    assert target.head_manifest(keep, "prod") == kept.manifest.digest  # outside the prefix: untouched
    for digest, data in kept.blobs.items():
        assert target.get_blob(keep, digest) == data
    key = summary["report"]["json"].split(f"s3://{env['bucket']}/", 1)[1]
    report = json.loads(s3.get_object(Bucket=env["bucket"], Key=key)["Body"].read())
    assert report["passed"] and report["digests_equal"] == digests
    assert len(smtp_server.messages) == mails + 1
    assert "DR drill PASSED" in smtp_server.messages[-1]["Subject"]
    v = report["verification"]
    print(f"\nDRILL FIGURES: RTO {summary['rto_s']} s for {report['sample']['repositories']} repositories; "
          f"{digests} digests verified in {v['seconds']} s ({v['digests_per_second']} digests/s), "
          f"{v['bytes_checked']} bytes read back")  # fmt: skip


@pytest.mark.parametrize("target", ["dr-layout", "ecr-local"])
def test_a_drill_into_a_layout_directory_or_ecr_under_the_prefix(env, target):
    """The other kinds of scratch target: an OCI image layout directory, and ECR repositories
    under the scratch prefix of a registry that is itself backed up (its own repositories stay)."""
    reg = build_registry(env["config"].registry(target))
    before = [r for r in reg.list_repositories() if not r.startswith(SCRATCH)]
    summary = drill.run_drill(env["config"], env["s3"], sample=2, target=target, now=TAKEN, notify=False)
    assert summary["passed"], summary["problems"]
    assert summary["digests_checked"] == summary["digests_equal"] > 0 and summary["blobs_checked"] > 0
    assert len(summary["cleanup"]["removed"]) == 2 and summary["cleanup"]["failed"] == {}
    assert reg.list_repositories() == before  # scratch repositories gone, nothing else touched


def test_a_sample_is_the_same_for_the_same_snapshot(env):
    config, s3 = env["config"], env["s3"]
    one = drill.prepare(config, s3, "latest", 2)
    two = drill.prepare(config, s3, env["snapshot"], "2")
    assert one.selections == two.selections and len(one.selections) == 2
    assert one.seed == env["snapshot"] and one.repositories_in_snapshot == 6
    assert all(s.target_repository == f"{SCRATCH}{s.registry}/{s.repository}" for s in one.selections)


def test_a_snapshot_older_than_the_objective_fails_the_drill_on_the_command_line(env, capsys):
    rpo = env["config"].dr.rpo_seconds
    late = TAKEN + timedelta(seconds=rpo + 60)
    code = cli.main(
        [
            "drill",
            "run",
            "--config",
            str(env["path"]),
            "--sample",
            "1",
            "--now",
            late.isoformat(),
            "--no-email",
        ]
    )
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert code == 1
    assert not summary["passed"] and not summary["rpo_met"] and summary["rto_met"]
    assert summary["rpo_s"] == rpo + 60
    assert summary["digests_checked"] == summary["digests_equal"] > 0  # everything came back
    assert summary["problems"] == [f"RPO (snapshot age) {rpo + 60} s exceeds the objective {rpo} s"]
    assert f"RPO (snapshot age) {rpo + 60} s exceeds the objective {rpo} s" in out.err
    assert len(summary["cleanup"]["removed"]) == 1 and scratch_left(env["target"]) == []


def test_a_corrupted_blob_in_the_store_fails_the_drill_naming_the_digest(env, corrupt_layer):
    summary = drill.run_drill(env["config"], env["s3"], now=TAKEN + timedelta(hours=1), notify=False)
    assert not summary["passed"]
    named = {(f["kind"], f["digest"]) for f in summary["failures"]}
    assert ("blob", corrupt_layer) in named
    assert summary["digests_equal"] < summary["digests_checked"]
    assert any(corrupt_layer in f["problem"] for f in summary["failures"] if f["kind"] == "restore")
    assert scratch_left(env["target"]) == [] and summary["cleanup"]["failed"] == {}


def test_the_cleanup_runs_when_the_drill_crashes(env, monkeypatch):
    def crash(*_, **__):
        raise RuntimeError("injected: the worker died during verification")

    monkeypatch.setattr(drill, "verify", crash)
    with pytest.raises(RuntimeError, match="injected"):
        drill.run_drill(env["config"], env["s3"], sample=3, now=TAKEN, notify=False)
    assert scratch_left(env["target"]) == []


def test_an_occupied_scratch_prefix_is_refused_and_left_to_drill_clean(env, capsys):
    target = env["target"]
    leftover = f"{SCRATCH}earlier/{uuid.uuid4().hex[:8]}"
    push(target, leftover, image(leftover), "v1")
    keep = f"keep/{uuid.uuid4().hex[:8]}"
    push(target, keep, image(keep), "prod")
    with pytest.raises(
        DrillError, match=rf"already holds 1 repositories under the scratch prefix.*{leftover}"
    ):
        drill.prepare(env["config"], env["s3"])
    code = cli.main(["drill", "run", "--config", str(env["path"]), "--no-email"])
    assert code == 2 and "registry-ops drill clean --target oci-dr" in capsys.readouterr().err
    assert target.head_manifest(leftover, "v1") is not None  # refused, not cleaned
    assert cli.main(["drill", "clean", "--config", str(env["path"])]) == 0
    assert leftover in json.loads(capsys.readouterr().out)["removed"]  # and the emptied names again
    assert scratch_left(target) == []
    assert target.head_manifest(keep, "prod") is not None  # outside the prefix: never touched


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--snapshot", "20200101T000000Z"], "backup snapshot '20200101T000000Z' does not exist"),
        (["--target", "nowhere"], "unknown registry 'nowhere'"),
        (["--sample", "0"], "sample '0': give 'all' or a number"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(env, capsys, args, message):
    before = objects.list_keys(env["s3"], env["bucket"], "reports/")
    assert cli.main(["drill", "run", "--config", str(env["path"]), *args]) == 2
    assert message in capsys.readouterr().err
    assert objects.list_keys(env["s3"], env["bucket"], "reports/") == before
    assert scratch_left(env["target"]) == []


# -- the DAG ---------------------------------------------------------------------------------------
def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


@pytest.fixture
def drill_dag(airflow_db, env, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(env["path"]))
    return DagBag(dag_folder="dags").dags["registry_dr_drill"]  # fresh: no conf left by other runs


def test_the_dag_runs_quarterly_and_takes_the_three_params():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder="dags").dags["registry_dr_drill"]
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 6 1 1,4,7,10 *", "UTC")
    assert {k: dag.params[k] for k in dag.params} == {"snapshot": "latest", "sample": None, "target": None}
    assert drill.parse_sample(dag.params["sample"], default=4) == 4  # null: dr.sample


def test_the_dag_drills_and_tears_down(env, drill_dag):
    from airflow.sdk import DagRunState

    run = drill_dag.test(run_conf={"sample": "all"})
    assert run.state == DagRunState.SUCCESS, _states(run)
    assert _states(run) == {
        "prepare": "success",
        "drill": "success",
        "verdict": "success",
        "cleanup": "success",
    }
    pointer = json.loads(
        env["s3"].get_object(Bucket=env["bucket"], Key="reports/dr-drill/latest.json")["Body"].read()
    )
    assert pointer["passed"] is True and pointer["snapshot"] == env["snapshot"]
    assert scratch_left(env["target"]) == []


def test_the_teardown_cleans_up_after_a_drill_task_that_crashed(env, drill_dag, monkeypatch):
    from airflow.sdk import DagRunState

    def crash(*_, **__):
        raise RuntimeError("injected: the worker died during verification")

    monkeypatch.setattr(drill, "verify", crash)
    monkeypatch.setattr(drill_dag.get_task("drill"), "retries", 0)
    run = drill_dag.test(run_conf={"sample": 2})
    assert run.state == DagRunState.FAILED
    assert _states(run) == {"prepare": "success", "drill": "failed", "verdict": "upstream_failed",
                            "cleanup": "success"}  # fmt: skip
    assert scratch_left(env["target"]) == []


def test_a_cleanup_that_leaves_something_fails_the_run(env, drill_dag, monkeypatch):
    from airflow.sdk import DagRunState

    from include.registry_ops.registries.base import Unavailable

    def refuse(target, name, *_):
        raise Unavailable(target.name, "injected: the registry went away", name)

    monkeypatch.setattr(drill, "remove_repository", refuse)
    monkeypatch.setattr(drill_dag.get_task("cleanup"), "retries", 0)
    run = drill_dag.test(run_conf={"sample": 1})
    assert run.state == DagRunState.FAILED
    assert _states(run) == {
        "prepare": "success",
        "drill": "success",
        "verdict": "success",
        "cleanup": "failed",
    }
    monkeypatch.undo()
    assert drill.clean_prefix(env["config"])["failed"] == {}  # what it left
    assert scratch_left(env["target"]) == []


def test_the_dag_fails_naming_the_corrupted_digest_and_still_cleans_up(env, drill_dag, corrupt_layer, capfd):
    from airflow.sdk import DagRunState

    run = drill_dag.test()
    logs = capfd.readouterr()
    assert run.state == DagRunState.FAILED, _states(run)
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["drill"].state == "success" and tis["cleanup"].state == "success"
    assert tis["verdict"].state == "failed" and tis["verdict"].try_number == 1  # no retry
    out = logs.out + logs.err
    assert "AirflowFailException: DR drill of snapshot" in out
    assert f"{corrupt_layer} (blob of oci-local/" in out
    assert scratch_left(env["target"]) == []
    pointer = json.loads(
        env["s3"].get_object(Bucket=env["bucket"], Key="reports/dr-drill/latest.json")["Body"].read()
    )
    report = json.loads(env["s3"].get_object(Bucket=env["bucket"], Key=pointer["report_json"])["Body"].read())
    assert report["passed"] is False and corrupt_layer in report["digests_missing"]
    assert drill_report.failure_message(drill_report.summary(report)) in out
