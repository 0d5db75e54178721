"""The Backups and drills section over what the real jobs wrote to moto S3: backups of an OCI
layout directory by ``run_backup`` (full, metadata, then one with a registry that cannot be
reached, which stays incomplete), a DR drill by ``run_drill`` into a second layout directory;
figures checked against the seeded fleet and the S3 listing, the next drill date against the
calendar, broken artefacts named in the section, no secret in its JSON, a warm load's requests
counted."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from include.registry_ops import storage
from include.registry_ops.backup import drill, drill_report
from include.registry_ops.backup.run import run_backup
from include.registry_ops.config import parse_config
from include.registry_ops.page import backups
from include.registry_ops.page.context import Memo, PageContext
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from tests.backup.test_backup_support import expected, fleet_of, keys_under
from tests.retention_exec.helpers import push

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # full
T1 = T0 + timedelta(days=1)  # metadata, the last complete one
T2 = T0 + timedelta(days=2)  # a registry unreachable: incomplete, not latest
DRILLED = T2 + timedelta(hours=1)
NOW = T2 + timedelta(hours=3)
SECRET = "Sup3r-s3cret-backup-pw"  # in the unreachable registry's URL, hence in the manifest's failures
RPO_OBJECTIVE = 26 * 3600


def config_for(bucket: str, root, target, tag: str, reports: str | None = None):
    return parse_config(
        {
            "registries": [
                {"name": "layout", "kind": "ocilayout", "path": str(root)},
                {"name": "oci-bad", "kind": "oci", "conn_id": "oci_bad"},
                {"name": "dr-layout", "kind": "ocilayout", "path": str(target)},
            ],
            "storage": {
                "conn_id": "aws_default",
                "bucket": bucket,
                "prefixes": {"backup": f"backup-{tag}/", "reports": reports or f"reports-{tag}/"},
            },
            "backup": {"registries": ["layout", "oci-bad"]},
            "dr": {"target": "dr-layout", "rto_seconds": 600, "rpo_seconds": RPO_OBJECTIVE},
        },
        "test-config",
    )


@pytest.fixture(scope="module")
def env(moto_server, s3, tmp_path_factory):
    bucket = f"page-bk-{uuid.uuid4().hex[:8]}"
    storage.ensure_bucket(s3, bucket)
    base = tmp_path_factory.mktemp("page-backups")
    root, target = base / "layout", base / "target"
    root.mkdir()
    target.mkdir()
    reg = OciLayoutRegistry("layout", root)
    fleet = fleet_of(f"pg{uuid.uuid4().hex[:6]}/", repositories=2, images=8)
    push(reg, fleet)
    config = config_for(bucket, root, target, "a")
    first = run_backup(config, s3, {"layout": reg}, T0)
    second = run_backup(config, s3, {"layout": reg}, T1)
    assert first["latest"] and second["latest"] and (first["mode"], second["mode"]) == ("full", "metadata")
    bad = OciRegistry("oci-bad", f"http://ops:{SECRET}@127.0.0.1:9", retries=0, backoff=0.01)
    third = run_backup(config, s3, {"layout": reg, "oci-bad": bad}, T2)
    assert not third["latest"] and list(third["failures"]) == ["oci-bad"]
    drilled = drill.run_drill(config, s3, target="dr-layout", now=DRILLED, notify=False)
    assert drilled["passed"], drilled
    return {"config": config, "s3": s3, "bucket": bucket, "reg": reg, "fleet": fleet, "dirs": (root, target)}


def ctx_of(env, config=None, now=NOW, memo=None) -> PageContext:
    return PageContext(config or env["config"], env["s3"], now, memo or Memo())


def figures(section) -> dict:
    return {f.label: f for f in section.figures}


def test_never_run_names_the_backup_dag(env, tmp_path):
    config = config_for(env["bucket"], tmp_path, tmp_path, f"none-{uuid.uuid4().hex[:6]}")
    section = backups.load(ctx_of(env, config))
    assert section.status == "never_run"
    assert "registry_backup has not run yet" in section.message
    assert any("registry_dr_drill has not run yet" in n for n in section.notes)


def test_snapshot_rpo_and_recent_snapshots(env):
    section = backups.load(ctx_of(env))
    assert section.status == "ok" and section.message is None, section.message
    f = figures(section)
    # the newest snapshot is T2's, incomplete: it is shown as the last one, not as the RPO's
    assert f["Last snapshot"].value == T2
    assert (f["Mode"].value, f["Complete"].value, f["Complete"].alert) == ("metadata", "no", True)
    assert f["Registries"].value == ["layout"]  # oci-bad has no catalog in it
    # every object the snapshot needs is in the blob store; nothing else was ever written there
    store_keys = keys_under(env["s3"], env["bucket"], env["config"].storage.prefixes.archive)
    assert f["Objects"].value == len(store_keys) > 0
    # bytes: every distinct manifest and blob of the fleet the layout holds, counted once
    reg, fleet = env["reg"], env["fleet"]
    manifests = {m.digest: len(m.raw) for repo in fleet for m in expected(reg, repo)}
    blobs = {b.digest: len(b.data) for repo in fleet for m in expected(reg, repo) for b in m.blobs}
    assert f["Bytes"].value == sum(manifests.values()) + sum(blobs.values())
    # RPO: the last complete snapshot is T1's, 27 h before NOW; the objective is 26 h
    rpo = f["RPO (age of the last complete snapshot)"]
    assert rpo.value == 27 * 3600 and rpo.alert
    assert f["RPO objective"].value == RPO_OBJECTIVE
    assert f["Last full snapshot"].value == T0
    assert any("incomplete" in n and "oci-bad" in n for n in section.notes)
    (table,) = [t for t in section.tables if t.id == "snapshots"]
    assert [r["taken_at"] for r in table.rows] == [T2, T1, T0]
    assert [r["status"] for r in table.rows] == ["incomplete", "complete", "complete"]
    assert [r["mode"] for r in table.rows] == ["metadata", "metadata", "full"]
    assert [r["failures"] for r in table.rows] == [1, 0, 0]
    assert {r["manifests"] for r in table.rows} == {len(manifests)}


def test_an_rpo_within_the_objective_is_not_an_alert(env):
    section = backups.load(ctx_of(env, now=T1 + timedelta(hours=26)))
    rpo = figures(section)["RPO (age of the last complete snapshot)"]
    assert rpo.value == 26 * 3600 and not rpo.alert


def test_the_last_drill_its_rto_and_digests(env):
    section = backups.load(ctx_of(env))
    f = figures(section)
    reg, fleet = env["reg"], env["fleet"]
    held = [expected(reg, r) for r in fleet]
    per_repo = [len(ms) + len({b.digest for m in ms for b in m.blobs}) for ms in held]
    assert f["Digests checked"].value == sum(per_repo) > 0
    assert f["Digests bit-exact"].value == sum(per_repo) and not f["Digests bit-exact"].alert
    assert (f["Drill result"].value, f["Drill result"].alert) == ("passed", False)
    assert f["RTO objective"].value == 600
    assert 0 < f["RTO measured"].value < 600 and not f["RTO measured"].alert
    assert f["Snapshot drilled"].value == "20261121T020000Z"  # T1: the latest when it ran
    assert f["Last DR drill"].value >= DRILLED
    (repos,) = [t for t in section.tables if t.id == "drill_repositories"]
    assert sorted(r["repository"] for r in repos.rows) == sorted(r.name for r in fleet)
    assert all(r["failures"] == 0 for r in repos.rows)


@pytest.mark.parametrize(
    ("now", "due"),
    [
        (NOW, datetime(2027, 1, 1, 6, 0, tzinfo=UTC)),
        (datetime(2027, 1, 1, 6, 0, tzinfo=UTC), datetime(2027, 4, 1, 6, 0, tzinfo=UTC)),
        (datetime(2027, 6, 30, 23, 59, tzinfo=UTC), datetime(2027, 7, 1, 6, 0, tzinfo=UTC)),
    ],
)
def test_the_next_drill_is_the_dags_next_quarterly_date(env, now, due):
    assert figures(backups.load(ctx_of(env, now=now)))["Next drill"].value == due


def test_the_schedule_is_the_one_the_drill_dag_runs_on():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "registry_dr_drill.py"))
    assert bag.import_errors == {}
    timetable = bag.dags["registry_dr_drill"].timetable
    assert timetable.expression == backups.drill_schedule() and str(timetable.timezone) == "UTC"


def test_a_warm_load_lists_the_backup_prefix_and_reads_the_drill_pointer_only(env):
    memo = Memo()
    sent: list[str] = []

    def count(request, **_):
        sent.append(f"{request.method} {request.url.split('?')[0].rsplit('/', 2)[-1]}")

    ctx = ctx_of(env, memo=memo)
    cold = backups.load(ctx)
    env["s3"].meta.events.register("before-send.s3", count, unique_id="page-bk-count")
    try:
        warm = backups.load(ctx)
    finally:
        env["s3"].meta.events.unregister("before-send.s3", unique_id="page-bk-count")
    assert warm.to_json() == cold.to_json()
    assert sorted(sent) == ["GET latest.json", f"GET {env['bucket']}"], sent  # the pointer, one listing


def test_a_corrupt_manifest_is_named_and_the_rest_renders(env):
    s3, bucket = env["s3"], env["bucket"]
    key = f"{env['config'].storage.prefixes.backup}dt=2026-11-22/020000Z/manifest.json"
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=b"{not json")
    try:
        section = backups.load(ctx_of(env))
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=original)
    assert section.status == "ok"
    assert any(f"s3://{bucket}/{key} is not JSON" in n for n in section.notes), section.notes
    f = figures(section)
    assert f["Last snapshot"].value == T1  # the newest readable one
    assert f["Drill result"].value == "passed"


def test_a_corrupt_drill_report_is_named_and_the_snapshots_render(env):
    s3, bucket = env["s3"], env["bucket"]
    pointer = json.loads(
        s3.get_object(Bucket=bucket, Key=f"{env['config'].storage.prefixes.reports}dr-drill/latest.json")[
            "Body"
        ].read()
    )
    key = pointer["report_json"]
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=b"\x00garbage")
    try:
        section = backups.load(ctx_of(env))
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=original)
    assert section.status == "ok"
    assert section.message.startswith("DR drill: ArtefactError: ")
    assert f"s3://{bucket}/{key}" in section.message
    assert "Drill result" not in figures(section)
    assert figures(section)["Last snapshot"].value == T2


def test_every_part_broken_is_an_error_section_naming_each_object(env):
    s3, bucket, prefixes = env["s3"], env["bucket"], env["config"].storage.prefixes
    pointers = [f"{prefixes.backup}latest.json", f"{prefixes.reports}dr-drill/latest.json"]
    originals = {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in pointers}
    for key in pointers:
        s3.put_object(Bucket=bucket, Key=key, Body=b"[]")
    try:
        section = backups.load(ctx_of(env))
    finally:
        for key, body in originals.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert section.status == "error"
    for key in pointers:
        assert f"s3://{bucket}/{key} is not a JSON object" in section.message, section.message


def test_no_secret_reaches_the_json(env):
    stored = keys_under(env["s3"], env["bucket"], env["config"].storage.prefixes.backup)
    bodies = [env["s3"].get_object(Bucket=env["bucket"], Key=k)["Body"].read() for k in stored]
    # the OCI adapter takes credentials out of a registry URL: no stored object holds them
    assert bodies and not any(SECRET.encode() in b for b in bodies)
    text = json.dumps(backups.load(ctx_of(env)).to_json())
    assert SECRET not in text


def test_a_failed_drill_is_an_alert_and_its_errors_are_shown_without_credentials(env):
    """A drill whose target went away mid-drill (the real restore and verification against a
    registry that cannot be reached, its URL holding a password): the adapter takes the
    credentials out of the URL, so neither the report in S3 nor the page holds them."""
    root, target = env["dirs"]
    config = config_for(env["bucket"], root, target, "a", reports=f"reports-failed-{uuid.uuid4().hex[:6]}/")
    plan = drill.prepare(config, env["s3"], target="dr-layout", sample=1)
    gone = OciRegistry("dr-layout", f"http://ops:{SECRET}@127.0.0.1:9", retries=0, backoff=0.01)
    report = drill.execute(config, env["s3"], plan, DRILLED, target=gone)
    drill_report.write_report(config, env["s3"], report)
    assert not report["passed"] and SECRET not in json.dumps(report)  # the adapter strips it
    section = backups.load(ctx_of(env, config))
    f = figures(section)
    assert (f["Drill result"].value, f["Drill result"].alert) == ("failed", True)
    assert f["Digests bit-exact"].value < f["Digests checked"].value and f["Digests bit-exact"].alert
    (failures,) = [t for t in section.tables if t.id == "drill_failures"]
    assert failures.total == len(report["failures"]) > 0
    assert any("http://127.0.0.1:9" in (r["problem"] or "") for r in failures.rows)
    assert any(n.startswith("Drill problem: ") for n in section.notes)
    assert SECRET not in json.dumps(section.to_json())


def test_a_new_snapshot_and_drill_are_seen_through_a_warm_memo(env):
    root, target = env["dirs"]
    config = config_for(env["bucket"], root, target, f"m{uuid.uuid4().hex[:6]}")
    s3, reg, memo = env["s3"], env["reg"], Memo()
    run_backup(config, s3, {"layout": reg}, T0)
    drill.run_drill(config, s3, target="dr-layout", now=T0 + timedelta(hours=1), notify=False)
    before = figures(backups.load(ctx_of(env, config, memo=memo)))
    assert (before["Last snapshot"].value, before["Snapshot drilled"].value) == (T0, "20261120T020000Z")
    run_backup(config, s3, {"layout": reg}, T1)
    drill.run_drill(config, s3, target="dr-layout", now=T1 + timedelta(hours=1), notify=False)
    after = figures(backups.load(ctx_of(env, config, memo=memo)))
    assert (after["Last snapshot"].value, after["Snapshot drilled"].value) == (T1, "20261121T020000Z")
    assert after["RPO (age of the last complete snapshot)"].value == (NOW - T1).total_seconds()
