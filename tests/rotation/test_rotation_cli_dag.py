"""``registry-ops rotate`` and the ``registry_credential_rotation`` DAG end to end on moto and a
registry of the test's own: exit codes and JSON, and no secret access key or password, old or
new, anywhere in what they print, log (at DEBUG, botocore included), email or write as task logs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from tests.cli_in_process import run_json

from .conftest import Aws, Reg, make_config


def logged_since(caplog, start: int) -> str:
    """The log records since ``start``: the command's own, not the test's later reads."""
    return "\n".join(caplog.handler.format(r) for r in caplog.records[start:])


def secrets_of(aws: Aws, secret_id: str, field: str) -> list[str]:
    """Every value ``field`` has had in any version of the secret."""
    values = []
    for version in aws.sm.list_secret_version_ids(SecretId=secret_id, IncludeDeprecated=True)["Versions"]:
        doc = json.loads(
            aws.sm.get_secret_value(SecretId=secret_id, VersionId=version["VersionId"])["SecretString"]
        )
        values.append(doc[field])
    return values


def assert_absent(secrets: list[str], *texts: str) -> None:
    assert secrets and all(len(s) >= 20 for s in secrets)
    for text in texts:
        for secret in secrets:
            assert secret not in text, "a secret was printed or logged"


def test_cli_rotates_keys_and_never_prints_a_secret(aws, tmp_path, capfd, caplog):
    account = aws.service_account()
    config = make_config([account], directory=tmp_path).source
    with caplog.at_level(logging.DEBUG):
        code, planned, err_dry = run_json(capfd, ["-vv", "rotate", "keys", "--config", config, "--dry-run"])
        logs_dry = logged_since(caplog, 0)
        assert code == 0 and planned["accounts"][0]["status"] == "planned" and planned["summary"]["dry_run"]
        assert len(secrets_of(aws, account.secret_id, "SecretAccessKey")) == 1  # nothing written
        start = len(caplog.records)
        code, result, err = run_json(capfd, ["-vv", "rotate", "keys", "--config", config])
        logs = logged_since(caplog, start)
    assert code == 0, err
    (record,) = result["accounts"]
    assert (
        record["status"] == "rotated"
        and record["current_key"] == aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    )
    assert f"rotate {account.user}: promote: proven" in err + logs  # the logs are searched
    secrets = secrets_of(aws, account.secret_id, "SecretAccessKey")
    assert len(secrets) == 2
    assert_absent(secrets, json.dumps(planned), json.dumps(result), err_dry, err, logs_dry, logs)


def test_cli_rotates_htpasswd_and_never_prints_a_password(aws, reg, tmp_path, capfd, caplog):
    config = make_config(directory=tmp_path, htpasswd=[reg.entry()]).source
    with caplog.at_level(logging.DEBUG):  # --force: moto dates every secret version "now"
        code, result, err = run_json(capfd, ["-vv", "rotate", "htpasswd", "--config", config, "--force"])
        logs = logged_since(caplog, 0)
    assert code == 0, err
    assert result["accounts"][0]["status"] == "rotated"
    passwords = secrets_of(aws, reg.secret_id, "password")
    assert len(passwords) == 2 and reg.status(aws.labelled(reg.secret_id, "AWSCURRENT")["password"]) == 200
    assert_absent(passwords, json.dumps(result), err, logs)


def test_cli_exit_codes(aws, tmp_path, capfd):
    good, broken = aws.service_account(), aws.service_account()
    aws.sm.put_secret_value(SecretId=broken.secret_id, SecretString='{"AccessKeyId": 1}')
    config = make_config([good, broken], directory=tmp_path).source
    code, result, err = run_json(capfd, ["rotate", "keys", "--config", config])
    assert code == 1 and result["summary"]["errors"] == 1
    statuses = {a["user"]: a["status"] for a in result["accounts"]}
    assert statuses == {good.user: "rotated", broken.user: "error"}
    assert f"error: rotate {broken.user}:" not in err  # the failure is in the JSON...
    assert "field 'AccessKeyId' is missing or not a string" in json.dumps(result)

    code, _, err = run_json(capfd, ["rotate", "keys", "--config", config, "--user", "nobody"])
    assert code == 2 and "--user: 'nobody' is not in rotation.service_accounts" in err

    doc = yaml.safe_load(Path(config).read_text())
    doc["rotation"]["grace_days"] = -1
    Path(config).write_text(yaml.safe_dump(doc))
    code, _, err = run_json(capfd, ["rotate", "keys", "--config", config])
    assert code == 2 and "rotation.grace_days" in err and config in err


# -- the DAG ---------------------------------------------------------------------------------------
def rotation_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder="dags").dags["registry_credential_rotation"]


def test_dag_is_monthly_with_its_params():
    dag = rotation_dag()
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 4 1 * *", "UTC")
    assert {k: dag.params[k] for k in dag.params} == {"dry_run": False, "force": False}
    assert dag.max_consecutive_failed_dag_runs == 0 and dag.max_active_runs == 1
    assert {"security", "rotation"} <= set(dag.tags)


def _dag_config(tmp_path: Path, accounts, reg: Reg, **extra: Any) -> str:
    config = make_config(accounts, directory=tmp_path, htpasswd=[reg.entry()], **extra)
    doc = yaml.safe_load(Path(config.source).read_text())
    doc["notifications"] = {
        "recipients": ["ops@example.com"],
        "security_recipients": ["security@example.com"],
    }
    Path(config.source).write_text(yaml.safe_dump(doc))
    return config.source


def _task_logs() -> str:
    home = Path(os.environ["AIRFLOW_HOME"])
    return "\n".join(p.read_text(errors="replace") for p in home.rglob("*.log") if p.is_file())


def test_dag_rotates_emails_and_never_logs_a_secret(
    airflow_db, aws, reg, smtp_server, tmp_path, monkeypatch, capfd, caplog
):
    from airflow.sdk import DagRunState

    account = aws.service_account()
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", _dag_config(tmp_path, [account], reg))
    sent_before = len(smtp_server.messages)
    with caplog.at_level(logging.DEBUG):
        run = rotation_dag().test(run_conf={"force": True})  # moto dates secret versions "now"
        logged = logged_since(caplog, 0)
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.SUCCESS, states
    assert states[("rotate_key", 0)] == states[("rotate_htpasswd", 0)] == states[("report", -1)] == "success"
    assert aws.works(account)
    passwords = secrets_of(aws, reg.secret_id, "password")
    assert reg.status(aws.labelled(reg.secret_id, "AWSCURRENT")["password"]) == 200

    (mail,) = smtp_server.messages[sent_before:]
    assert mail["To"] == "security@example.com"
    assert mail["Subject"] == "registry-ops credential rotation: 2 rotated"
    body = mail.as_string()
    assert account.user in body and aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"] in body
    out, err = capfd.readouterr()
    logs = _task_logs()
    where = {"out": out, "err": err, "caplog": logged, "files": logs}
    found = {k for k, v in where.items() if f"rotate keys {account.user}: rotated" in v}
    assert found, "task logs not captured"
    keys = secrets_of(aws, account.secret_id, "SecretAccessKey")
    assert_absent(keys + passwords, body, out, err, logged, logs)


def test_dag_fails_naming_the_account_that_failed_and_rotates_the_others(
    airflow_db, aws, reg, smtp_server, tmp_path, monkeypatch
):
    from airflow.sdk import DagRunState

    good, broken = aws.service_account(), aws.service_account()
    aws.sm.delete_secret(SecretId=broken.secret_id, ForceDeleteWithoutRecovery=True)
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", _dag_config(tmp_path, [good, broken], reg))
    dag = rotation_dag()
    for task_id in ("rotate_key", "rotate_htpasswd", "report"):
        monkeypatch.setattr(dag.get_task(task_id), "retries", 0)
    sent_before = len(smtp_server.messages)
    run = dag.test(run_conf={"force": True})
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.FAILED
    assert states[("rotate_key", 0)] == "success" and states[("rotate_key", 1)] == "failed"
    assert states[("report", -1)] == "failed"
    assert aws.works(good)
    # the security report, and (the run failed) one failure notice to ops
    (mail,) = [m for m in smtp_server.messages[sent_before:] if m["To"] == "security@example.com"]
    assert f"[keys] {broken.user}: error" in mail.as_string()
    # (its once-per-run marker cannot be written with this test's rotated-away S3 key, so every
    # failed task sends one: a duplicate beats silence)
    notices = [m for m in smtp_server.messages[sent_before:] if m["To"] != "security@example.com"]
    assert notices and all("FAILED registry_credential_rotation" in m["Subject"] for m in notices)


def test_dag_dry_run_changes_nothing_and_sends_nothing(
    airflow_db, aws, reg, smtp_server, tmp_path, monkeypatch
):
    from airflow.sdk import DagRunState

    account = aws.service_account()
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", _dag_config(tmp_path, [account], reg))
    before, file_before = aws.snapshot(account), reg.path.read_bytes()
    sent_before = len(smtp_server.messages)
    run = rotation_dag().test(run_conf={"dry_run": True, "force": True})
    assert run.state == DagRunState.SUCCESS
    assert aws.snapshot(account) == before and reg.path.read_bytes() == file_before
    assert smtp_server.messages[sent_before:] == []
