"""registry_iam_audit end to end with dag.test() on moto (IAM, ECR, STS, S3) and the SMTP sink:
a failing run (a new high finding), a passing one after the finding was acknowledged and a
grant added, and one with a registry that cannot be audited; secrets never in the task logs,
the email or S3."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import pytest

from devstack.services import free_port
from include.registry_ops.audit import history, jobs
from include.registry_ops.config import load_config
from include.registry_ops.store import objects
from include.registry_ops.store.clients import s3_client

from . import test_audit_history_support as support


@pytest.fixture(scope="module")
def audit_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder="dags/registry_iam_audit.py")  # this DAG only: others may be mid-change
    assert bag.import_errors == {}
    return bag.dags["registry_iam_audit"]


def states(dr) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dr.get_task_instances()}


def read_logs(capfd, caplog) -> str:
    sys.stdout.flush()
    sys.stderr.flush()
    out = capfd.readouterr()
    text = caplog.text + out.out + out.err
    caplog.clear()
    return text


def stored(config) -> bytes:
    """Every object the audit wrote (runs, pointer, acknowledgements), concatenated."""
    s3, bucket = s3_client(config), config.storage.bucket
    keys = [o["Key"] for o in objects.list_keys(s3, bucket, history.root(config))]
    assert keys
    return b"".join(s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys)


def test_the_dag_is_weekly_on_monday_at_five_utc(audit_dag):
    timetable = audit_dag.timetable
    assert (timetable.expression, str(timetable.timezone)) == ("0 5 * * 1", "UTC")
    assert audit_dag.max_consecutive_failed_dag_runs == 0 and audit_dag.max_active_runs == 1
    assert {"audit", "security"} <= set(audit_dag.tags)
    assert {t.task_id for t in audit_dag.tasks} == {"audit", "report", "publish", "gate", "check"}
    assert audit_dag.get_task("publish").upstream_task_ids == {"audit", "report"}
    assert audit_dag.get_task("gate").upstream_task_ids == {"audit", "publish"}


def test_dag_end_to_end(
    airflow_db, aws_account, tmp_path, smtp_server, audit_dag, capfd, caplog, monkeypatch
):
    from airflow.sdk import DagRunState

    acct = aws_account
    secrets = support.build(acct)
    support.age_key(acct, "ci", 120)  # stale-access-key: the report names the key id, not its secret
    support.scan_off(acct)
    path = support.write_config(acct, tmp_path, security=["secops@example.com"])
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(path))
    config = load_config(path)
    planted = [secrets["ci_secret"], secrets["audit_secret"], secrets["audit_token"]]

    # 1. a new high finding: everything is stored and reported, then the gate fails the run
    before = len(smtp_server.messages)
    dr = audit_dag.test()
    logs = read_logs(capfd, caplog)
    st = states(dr)
    assert dr.state == DagRunState.FAILED, st
    assert st == {
        "audit": "success",
        "report": "success",
        "publish": "success",
        "gate": "failed",
        "check": "success",
    }
    pointer, manifest = history.layout(config).latest(s3_client(config))
    [failing] = manifest["failing"]
    assert "AirflowFailException: IAM audit" in logs and "During handling of the above exception" not in logs
    fail_line = next(ln for ln in logs.splitlines() if "AirflowFailException: IAM audit" in ln)
    assert f"high scan-on-push-off - prod/api (ecr-audit, new, key {failing})" in fail_line
    (msg,) = smtp_server.messages[before:]
    assert msg["To"] == "secops@example.com" and "gate failed; 4 new finding(s)" in msg["Subject"]
    got = support.parts(msg)
    new_at, change_at = got["html"].index("New findings (4)"), got["html"].index("Change")
    assert new_at < got["html"].index("scan-on-push-off") < got["html"].index("stale-access-key") < change_at
    assert secrets["ci_key_id"] in got["html"][new_at:change_at]  # key ids are named ...
    for text in (logs, support.raw(msg), stored(config).decode("utf-8", "replace")):
        for secret in planted:  # ... secrets never
            assert secret not in text
    findings = objects.get_table(s3_client(config), config.storage.bucket, pointer["findings"])
    assert findings.schema.equals(history.FINDINGS_SCHEMA, check_metadata=False)
    assert sorted(findings.column("id").to_pylist()) == [
        "mutable-tags",
        "scan-on-push-off",
        "stale-access-key",
        "unused-access-key",
    ]

    # 2. acknowledged, and a grant added: the run passes and reports the change
    jobs.acknowledge(config, failing, "scanner migration", datetime.now(UTC).date(), "kim")
    support.grant_reader_web(acct)
    before = len(smtp_server.messages)
    dr = audit_dag.test()
    logs = read_logs(capfd, caplog)
    assert dr.state == DagRunState.SUCCESS, states(dr)
    (msg,) = smtp_server.messages[before:]
    html = support.parts(msg)["html"]
    assert "New findings (0)" in html and "acknowledged by kim until" in html
    gained = html.index("Grants gained")
    assert gained < html.index(acct.arn("role", "reader"), gained) < html.index("prod/web", gained)
    second_pointer, second = history.layout(config).latest(s3_client(config))
    assert second["baseline"]["manifest"] == pointer["manifest"] and second["gate"]["acknowledged"] == 1
    assert second["counts"]["grants_gained"] == 1 and second["counts"]["findings_new"] == 0
    for secret in planted:
        assert secret not in logs and secret not in support.raw(msg)

    # 3. a registry that cannot be audited: the others are reported, latest stays, check fails
    unreachable = {
        "conn_type": "aws",
        "login": "AKIAEXAMPLEDOWN",
        "password": "down-secret-not-shown",
        "extra": {
            "region_name": support.REGION,
            "endpoint_url": f"http://127.0.0.1:{free_port()}",
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_AUDIT_DOWN", json.dumps(unreachable))
    # one attempt (the connection's config_kwargs): botocore's 8 on a refused port add ~40 s
    down = {"name": "ecr-down", "kind": "ecr", "conn_id": "audit_down", "region": support.REGION}
    text = path.read_text().replace("registries:\n", "registries:\n" + _yaml_item(down), 1)
    path.write_text(text)
    dr = audit_dag.test()
    logs = read_logs(capfd, caplog)
    st = states(dr)
    assert dr.state == DagRunState.FAILED and st["check"] == "failed" and st["gate"] == "success", st
    assert "AirflowFailException: 1 registr(y/ies) not audited: ecr-down: sts:GetCallerIdentity" in logs
    assert history.layout(config).read_pointer(s3_client(config)) == second_pointer
    assert "down-secret-not-shown" not in logs


def _yaml_item(entry: dict) -> str:
    import yaml

    return "- " + yaml.safe_dump(entry).replace("\n", "\n  ").rstrip() + "\n"
