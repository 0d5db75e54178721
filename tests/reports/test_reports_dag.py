"""registry_reports end to end with ``dag.test()``: a fleet of its own seeded into moto ECR and the
distribution registry, listed and published by the real inventory code, CloudTrail files and
registry notifications generated from the documented samples (``devstack/events.py``) plus
broken files, then the DAG: the stakeholders' email arrives at the SMTP sink and is read back
as MIME; a broken table blocks it and alerts ops instead."""

from __future__ import annotations

import csv
import gzip
import io
import json
import uuid
from datetime import UTC, date, datetime, timedelta

import boto3
import pandas as pd
import pytest
import yaml

from devstack.events import S3Target, day_range, write_events
from devstack.fleet import make_fleet
from devstack.seed import seed_ecr, seed_oci
from include.registry_ops import schema, storage
from include.registry_ops.clients import build_registry
from include.registry_ops.config import load_config
from include.registry_ops.inventory import publish_snapshot, run_inventory
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.reports import jobs
from include.registry_ops.store import objects
from include.registry_ops.store.clients import s3_client
from tests.audit.test_audit_history_support import parts
from tests.conftest import OCI_PASSWORD, OCI_USER

NOW = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # a Monday: the weekly run
WINDOW = (date(2026, 11, 16), date(2026, 11, 23))  # the 7 days before, the 23rd excluded
CLOUDTRAIL = "AWSLogs/123456789012/CloudTrail/"
NOTIFICATIONS = "registry-events/"
GIB = 2**30
CUT = "123456789012_CloudTrail_us-east-1_20261118T0900Z_cut.json.gz"  # a truncated delivery


@pytest.fixture(scope="module")
def reports_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder="dags/registry_reports.py")
    assert bag.import_errors == {}
    return bag.dags["registry_reports"]


@pytest.fixture(scope="module")
def env(moto_server, registry_server, smtp_server, s3, tmp_path_factory):
    prefix = f"rep-{uuid.uuid4().hex[:6]}/"
    fleet = make_fleet(seed=61, repositories=3, images=30, layer_scale=0.0005, prefix=prefix, now=NOW)
    seed_ecr(boto3.client("ecr", endpoint_url=moto_server.endpoint, region_name="us-east-1"), fleet)
    seed_oci(OciRegistry("seed", registry_server.url, OCI_USER, OCI_PASSWORD), fleet)
    bucket = f"reports-{uuid.uuid4().hex[:8]}"
    path = tmp_path_factory.mktemp("reports") / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default", "include": [prefix + "*"]},
                    {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [prefix + "*"]},
                ],
                "storage": {"conn_id": "aws_default", "bucket": bucket},
                "notifications": {
                    "sender": "registry-ops@example.com",
                    "recipients": ["platform@example.com"],
                    "stakeholder_recipients": ["cto@example.com", "finance@example.com"],
                    "ops_recipients": ["oncall@example.com"],
                },
                "reports": {
                    "events": {
                        "cloudtrail": [{"prefix": CLOUDTRAIL}],
                        "notifications": [{"prefix": NOTIFICATIONS, "registry": "oci-local"}],
                    },
                    "teams": {"payments": [f"{prefix}api*"], "platform": ["oci-local/*"]},
                    "price_per_gb_month": 250.0,  # the test images are tiny: dollars, not fractions of a cent
                },
            }
        )
    )
    storage.ensure_bucket(s3, bucket)
    config = load_config(path)
    listing = run_inventory(config, build_registry, NOW - timedelta(hours=1))
    publish_snapshot(
        s3,
        bucket,
        "inventory/",
        listing.table,
        listing.errors,
        NOW - timedelta(hours=1),
        ["ecr-local", "oci-local"],
    )
    inventory = schema.table_to_frame(listing.table, "the listing")
    # one image pulled on the 12th only (before the window, inside never_pulled_days): it must
    # not be listed as never pulled; the other images get the generated traffic
    idle = inventory[
        (inventory["registry"] == "ecr-local")
        & (inventory["kind"] == "image")
        & (inventory["parent_digests"].map(len) == 0)
        & (inventory["pushed_at"] < NOW - timedelta(days=60))
        & ~(inventory["last_pulled_at"] >= NOW - timedelta(days=60))  # none, or long ago
    ].head(1)
    assert len(idle) == 1, "the seeded fleet has no old, unpulled ECR image to plant"
    # the five days before the window too: read by the first run, outside this report
    truth = write_events(
        S3Target(s3, bucket),
        inventory.drop(index=idle.index),  # the same digest in oci-local keeps its traffic
        days=day_range(date(2026, 11, 11), 12),
        cloudtrail_prefix=CLOUDTRAIL,
        notifications_prefix=NOTIFICATIONS,
        records_per_file=40,
        events_per_envelope=25,
        seed=5,
    )
    planted = write_events(
        S3Target(s3, bucket),
        idle,
        days=[date(2026, 11, 12)],
        cloudtrail_prefix=CLOUDTRAIL,
        notifications_prefix=NOTIFICATIONS,
        idle_fraction=0.0,
        per_image_per_day=20.0,  # Poisson: at 3 a day it went unpulled 5 % of the time
        failure_rate=0.0,
        seed=9,
    )
    assert planted["events"] > 0
    broken = {
        f"{CLOUDTRAIL}us-east-1/2026/11/18/{CUT}": gzip.compress(b'{"Records": [{"eventSource": "ecr')[:-6],
        f"{NOTIFICATIONS}2026-11-19-garbage.json": b"this is not JSON",
    }
    for key, body in broken.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return {"path": path, "config": config, "s3": s3, "bucket": bucket, "inventory": inventory,
            "truth": truth, "broken": broken, "prefix": prefix,
            "pulled_before_window": ("ecr-local", idle["digest"].iloc[0])}  # fmt: skip


def _states(dr) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dr.get_task_instances()}


def _csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def _stored_bytes(inventory) -> dict[tuple[str, str], int]:
    """Hand-computed: distinct image and referrer digests per repository, summed."""
    seen, out = set(), {}
    for row in inventory.itertuples():
        key = (row.registry, row.repository, row.digest)
        if row.kind in ("image", "referrer") and key not in seen:
            seen.add(key)
            out[(row.registry, row.repository)] = out.get((row.registry, row.repository), 0) + int(
                row.size_bytes
            )
    return out


def test_the_dag_runs_weekly_and_monthly(reports_dag):
    from airflow.sdk import MultipleCronTriggerTimetable

    assert isinstance(reports_dag.timetable, MultipleCronTriggerTimetable)
    assert {t.task_id for t in reports_dag.tasks} == {"ingest", "build", "validate", "send", "publish"}
    assert reports_dag.params["window"] == "auto"
    assert jobs.window("auto", NOW) == ("weekly", *WINDOW)
    assert jobs.window("auto", datetime(2026, 12, 1, 7, 30, tzinfo=UTC)) == (
        "monthly",
        date(2026, 11, 1),
        date(2026, 12, 1),
    )
    assert jobs.window("2026-11-01..2026-11-03", NOW) == ("manual", date(2026, 11, 1), date(2026, 11, 4))
    with pytest.raises(ValueError, match="the last day is before the first"):
        jobs.window("2026-11-03..2026-11-01", NOW)


def test_the_weekly_report_reaches_the_stakeholders(airflow_db, env, reports_dag, smtp_server, monkeypatch):
    from airflow.sdk import DagRunState

    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(env["path"]))
    before = len(smtp_server.messages)
    dr = reports_dag.test(run_after=NOW, logical_date=NOW, run_conf={"window": "week"})
    assert dr.state == DagRunState.SUCCESS, _states(dr)
    (msg,) = smtp_server.messages[before:]
    assert sorted(a.strip() for a in msg["To"].split(",")) == ["cto@example.com", "finance@example.com"]
    subject = str(msg["Subject"])
    assert "2026-11-16..2026-11-22" in subject and "weekly" in subject, subject

    got = parts(msg)
    html = got["html"]
    cids = [p["Content-ID"].strip("<>") for p in msg.walk() if p.get_content_type() == "image/png"]
    assert len(cids) >= 2 and all(f"cid:{c}" in html for c in cids)
    for p in msg.walk():
        if p.get_content_type() == "image/png":
            assert p.get_payload(decode=True).startswith(b"\x89PNG\r\n\x1a\n")
    assert "<script" not in html.lower() and "<style" not in html.lower()

    # cost: the CSV per repository equals the hand-computed sums over distinct digests
    by_repo = {
        (r["registry"], r["repository"]): r for r in _csv(got["attachments"]["cost_by_repository.csv"])
    }
    expected = _stored_bytes(env["inventory"])
    assert {k: int(v["stored_bytes"]) for k, v in by_repo.items()} == expected
    total = sum(expected.values()) / GIB * 250.0
    assert abs(sum(float(v["usd_month"]) for v in by_repo.values()) - total) < 0.01
    assert {v["team"] for k, v in by_repo.items() if k[0] == "oci-local"} == {"platform"}
    assert f"${total:,.2f}" in subject

    # pulls: the CSV per repository and day equals the generator's own truth for the window
    truth = env["truth"]["by_repository_day"]
    truth = truth[(truth["day"] >= WINDOW[0]) & (truth["day"] < WINDOW[1])]
    rows = _csv(got["attachments"]["pulls_by_repository_day.csv"])
    assert sum(int(r["pulls"]) for r in rows) == int(truth["pulls"].sum()) > 0
    assert sum(int(r["failed"]) for r in rows) == int(truth["failed"].sum()) > 0
    assert {r["day"] for r in rows} <= {str(WINDOW[0] + timedelta(days=i)) for i in range(7)}
    rate = 1 - truth["failed"].sum() / truth["pulls"].sum()
    assert f"{rate * 100:.1f}" in subject

    # never pulled in 30 days: not an image last pulled 11 days ago, before the window
    never = {(r["registry"], r["digest"]) for r in _csv(got["attachments"]["never_pulled.csv"])}
    assert never and env["pulled_before_window"] not in never

    # the broken files are named in the data-quality section, not dropped, and did not stop the run
    for key in env["broken"]:
        assert key.rsplit("/", 1)[-1] in html, key

    # stored beside the report: HTML, charts, tables, GX results and data docs; latest moved
    config, s3, bucket = env["config"], env["s3"], env["bucket"]
    pointer, manifest = jobs.layout(config, "weekly").latest(s3)
    prefix = pointer["prefix"]
    keys = {o["Key"][len(prefix) :] for o in objects.list_keys(s3, bucket, prefix)}
    assert {"report.json", "email/report.html", "validation/results.json", "email/sent.json"} <= keys
    assert any(k.startswith("validation/docs/") and k.endswith("index.html") for k in keys)
    assert any(k.endswith(".png") for k in keys) and "tables/cost.parquet" in keys
    assert manifest["email"]["message_id"] == msg["Message-ID"]


def test_a_broken_table_blocks_the_email_and_alerts_ops(
    airflow_db, env, reports_dag, smtp_server, monkeypatch
):
    from airflow.sdk import DagRunState

    from include.registry_ops.reports import cost

    real = cost.cost_tables

    def broken(*args, **kwargs):
        out = real(*args, **kwargs)
        frame = out["cost"]
        dup = frame.iloc[[0]].copy()
        frame = frame.copy()
        frame.loc[frame.index[1], "size_bytes"] = -5
        out["cost"] = pd.concat([frame, dup], ignore_index=True)  # a duplicated key, a negative size
        return out

    monkeypatch.setattr(cost, "cost_tables", broken)
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(env["path"]))
    config = env["config"]
    latest_before = jobs.layout(config, "weekly").read_pointer(env["s3"])
    before = len(smtp_server.messages)
    dr = reports_dag.test(run_after=NOW + timedelta(hours=1), logical_date=NOW + timedelta(hours=1))
    assert dr.state == DagRunState.FAILED
    states = _states(dr)
    assert states["validate"] == "failed" and states["send"] != "success" and states["publish"] != "success"
    (alert,) = smtp_server.messages[before:]
    assert alert["To"] == "oncall@example.com" and "NOT SENT" in str(alert["Subject"])
    text = parts(alert)["text"]
    assert "ExpectCompoundColumnsToBeUnique" in text or "unique" in text.lower()
    assert "size_bytes" in text and "-5" in text
    assert jobs.layout(config, "weekly").read_pointer(env["s3"]) == latest_before


def test_a_retry_after_the_email_does_not_send_it_again(env, smtp_server):
    config = env["config"]
    pointer, _ = jobs.layout(config, "weekly").latest(s3_client(config))
    built = {"label": "again", "prefix": pointer["prefix"]}
    before = len(smtp_server.messages)
    out = jobs.send_step(config, built, {"success": True})
    assert len(smtp_server.messages) == before and out["message_id"]


def test_report_send_from_the_command_line(env, smtp_server, capsys):
    """``report send``: the same steps outside Airflow; a manual window never becomes a baseline."""
    from include.registry_ops import cli

    config, s3 = env["config"], env["s3"]
    latest_before = jobs.layout(config, "weekly").read_pointer(s3)
    before = len(smtp_server.messages)
    argv = ["report", "send", "--config", str(env["path"]), "--window", "2026-11-18..2026-11-20"]
    code = cli.main([*argv, "--now", "2026-11-23T08:00:00Z"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    (msg,) = smtp_server.messages[before:]
    assert "2026-11-18..2026-11-20 (manual)" in str(msg["Subject"])
    days = {r["day"] for r in _csv(parts(msg)["attachments"]["pulls_by_repository_day.csv"])}
    assert days == {"2026-11-18", "2026-11-19", "2026-11-20"}
    assert out["published"]["latest"] is False
    assert jobs.layout(config, "weekly").read_pointer(s3) == latest_before

    code = cli.main([*argv[:-2], "--window", "last week"])
    assert code == 2 and "report window 'last week'" in capsys.readouterr().err
