"""The failure notice end to end: DAGs built with ``dag_support.dag_defaults`` run with
``dag.test()`` against moto (the once-per-run marker) and the session's SMTP sink (each notice
parsed as the MIME that arrived).

The test DAGs live in a temporary DAG bundle (``dag.test()`` needs them serialized); the real
``registry_inventory`` shows the wiring on a DAG of ours."""

from __future__ import annotations

import email
import json
import os
import socket
import textwrap
from email import policy
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from include.registry_ops import storage
from tests.conftest import BUCKET

PLANTED = "hunter2-Zk81q"  # a password written into the error text
CONN_PASSWORD = "conn-pass-Qx93v"  # a connection's password the task read and put in its error
TOKEN = "tok_9f3e1c2b7a"
BASE_URL = "http://airflow.example.test:8080/"

DAG_FILE = """
from datetime import timedelta

import pendulum
from airflow.sdk import BaseHook, dag, task

from include.registry_ops.dag_support import dag_defaults


def _boom(where):
    conn = BaseHook.get_connection("notice_secret")
    raise RuntimeError(
        f"{where}: push to https://ops:{conn.password}@registry.example.test failed; "
        f"the registry refused {conn.password} for ops\\n"
        f"password={PLANTED} token: {TOKEN} {{{{ ti.task_id }}}}\\nsecond line\\nthird line"
    )


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["test"],
     **dag_defaults(owner="test", retry_delay=timedelta(0)))
def notice_retry():
    @task
    def flaky():
        _boom("flaky")

    flaky()


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["test"],
     **dag_defaults(owner="test", retry_delay=timedelta(0), retries=0))
def notice_two():
    @task
    def first():
        _boom("first")

    @task
    def second():
        _boom("second")

    first()
    second()


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["test"],
     **dag_defaults(owner="test", retry_delay=timedelta(0), retries=0, quiet=("verdict",)))
def notice_quiet():
    @task
    def verdict():
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("gate failed: 2 new findings (already emailed)")

    verdict()


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["test"],
     **dag_defaults(owner="test", retry_delay=timedelta(0), retries=0, quiet=("verdict",)))
def notice_quiet_error():
    @task
    def verdict():
        raise OSError("S3 unreachable before the verdict")

    verdict()


notice_retry()
notice_two()
notice_quiet()
notice_quiet_error()
"""


@pytest.fixture(scope="module")
def notice_env(airflow_db, moto_server, smtp_server, tmp_path_factory):
    """A config whose ops get the notices, the test DAG bundle and a secret connection."""
    root = tmp_path_factory.mktemp("notice")
    (root / "dags").mkdir()
    body = DAG_FILE.replace("{PLANTED}", PLANTED).replace("{TOKEN}", TOKEN)
    (root / "dags" / "notice_dags.py").write_text(textwrap.dedent(body))
    config = root / "registry-ops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "registries": [{"name": "oci-local", "kind": "oci", "conn_id": "oci_local"}],
                "storage": {"bucket": BUCKET},
                "notifications": {
                    "recipients": ["team@example.com"],
                    "ops_recipients": ["oncall@example.com"],
                },
            }
        )
    )
    import boto3

    storage.ensure_bucket(boto3.client("s3", endpoint_url=moto_server.endpoint), BUCKET)
    return {"root": root, "config": config}


@pytest.fixture
def env(notice_env, monkeypatch):
    from airflow.configuration import conf

    bundles = [
        {
            "name": "notice-tests",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(notice_env["root"] / "dags")},
        },
        *json.loads(conf.get("dag_processor", "dag_bundle_config_list")),
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(notice_env["config"]))
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOTICE_SECRET",
        json.dumps({"conn_type": "generic", "login": "ops", "password": CONN_PASSWORD}),
    )
    return notice_env


def _dag(env, dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(env["root"] / "dags")).dags[dag_id]


def _received(smtp_server, before: int) -> list[email.message.EmailMessage]:
    """The messages since ``before`` as they arrived on the wire, parsed by the modern parser."""
    return [
        email.message_from_bytes(
            (smtp_server.maildir / f"{i + 1:04d}.eml").read_bytes(), policy=policy.default
        )
        for i in range(before, len(smtp_server.messages))
    ]


def _html(msg: email.message.EmailMessage) -> str:
    return next(p for p in msg.walk() if p.get_content_type() == "text/html").get_content()


def _logs() -> str:
    home = Path(os.environ["AIRFLOW_HOME"])
    return "\n".join(p.read_text(errors="replace") for p in home.rglob("*.log") if p.is_file())


def _output(capfd, caplog) -> str:
    """Everything logged: stdout/stderr, log records and task log files."""
    out, err = capfd.readouterr()
    return "\n".join([out, err, caplog.text, _logs()])


def _marker(s3, dag_id: str, run_id: str) -> str:
    return f"reports/alerts/failed-runs/{dag_id}/{quote(run_id, safe='')}/0.json"


def test_a_failed_run_sends_one_notice_after_the_last_try(env, smtp_server, s3, capfd, caplog):
    from airflow.sdk import DagRunState

    before = len(smtp_server.messages)
    dr = _dag(env, "notice_retry").test()
    (ti,) = dr.get_task_instances()
    assert dr.state == DagRunState.FAILED and ti.state == "failed" and ti.try_number == 3  # 2 retries ran
    (msg,) = _received(smtp_server, before)  # one notice: the retries sent none
    assert msg["To"] == "oncall@example.com" and msg["From"] == "registry-ops@example.com"
    assert msg["Subject"] == "[registry-ops] FAILED notice_retry: task flaky"
    body = _html(msg)
    assert dr.run_id in body and "Try</th><td>3" in body
    assert "RuntimeError: flaky: push to https://***@registry.example.test failed" in body
    assert "second line" in body and "Last frames:" in body and "in _boom" in body
    assert "{{ ti.task_id }}" in body  # the error text is not rendered as a template
    log_url = f"{BASE_URL}dags/notice_retry/runs/{quote(dr.run_id)}/tasks/flaky?try_number=3"
    assert f'href="{log_url}"' in body
    for secret in (PLANTED, CONN_PASSWORD, TOKEN):
        assert secret not in msg.as_string()
    assert s3.get_object(Bucket=BUCKET, Key=_marker(s3, "notice_retry", dr.run_id))["ContentLength"] > 0
    assert "the registry refused *** for ops" in body  # Airflow's masker knew the connection's password
    ours = [ln for ln in _output(capfd, caplog).splitlines() if "notice" in ln]
    assert any("sent to oncall@example.com" in ln for ln in ours)
    assert not [ln for ln in ours if any(s in ln for s in (PLANTED, CONN_PASSWORD, TOKEN))]


def test_two_failing_tasks_of_one_run_send_one_notice(env, smtp_server):
    from airflow.sdk import DagRunState

    before = len(smtp_server.messages)
    dr = _dag(env, "notice_two").test()
    assert dr.state == DagRunState.FAILED
    assert sorted(ti.state for ti in dr.get_task_instances()) == ["failed", "failed"]
    (msg,) = _received(smtp_server, before)
    assert msg["Subject"] in {f"[registry-ops] FAILED notice_two: task {t}" for t in ("first", "second")}
    assert dr.run_id in _html(msg)

    # the next run is a new run: it gets its own notice
    dr2 = _dag(env, "notice_two").test()
    assert dr2.run_id != dr.run_id
    (msg2,) = _received(smtp_server, before + 1)
    assert dr2.run_id in _html(msg2)


def test_a_gate_verdict_is_not_notified_again_but_its_other_errors_are(env, smtp_server):
    before = len(smtp_server.messages)
    dr = _dag(env, "notice_quiet").test()
    assert dr.get_task_instances()[0].state == "failed"
    assert _received(smtp_server, before) == []
    dr = _dag(env, "notice_quiet_error").test()
    (msg,) = _received(smtp_server, before)
    assert "OSError: S3 unreachable before the verdict" in _html(msg)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failing_smtp_keeps_the_task_failure_and_no_secret_is_logged(
    env, smtp_server, s3, monkeypatch, capfd, caplog
):
    from airflow.sdk import DagRunState

    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": _closed_port(),
                "login": "ops",
                "password": "smtp-Secret-77k",
                "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "x@example.com"},
            }
        ),
    )
    before = len(smtp_server.messages)
    dr = _dag(env, "notice_two").test()
    assert dr.state == DagRunState.FAILED
    assert [ti.state for ti in dr.get_task_instances()] == ["failed", "failed"]  # still the task's failure
    assert _received(smtp_server, before) == []
    logs = _output(capfd, caplog)
    assert "RuntimeError: first: push to" in logs  # the task's own error is in its log
    lines = [ln for ln in logs.splitlines() if "failure notice not sent" in ln]
    assert lines and all("SMTP connection 'smtp_default': ConnectionRefusedError" in ln for ln in lines)
    # the first send failed and gave the run's marker back: the second task tried too
    assert {t for t in ("task first", "task second") if any(t in ln for ln in lines)} == {
        "task first",
        "task second",
    }
    assert "smtp-Secret-77k" not in logs
    # the marker went away with the failed send: a later failure of this run may notify
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=BUCKET, Key=_marker(s3, "notice_two", dr.run_id))


def test_a_dag_of_ours_notifies_even_when_its_bucket_is_missing(env, smtp_server, tmp_path, monkeypatch):
    """registry_inventory fails at once on a misspelt bucket: the marker cannot be written
    there, so the notice goes out anyway (a duplicate beats silence)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    doc = yaml.safe_load(env["config"].read_text())
    doc["storage"]["bucket"] = "registry-ops-misspelt"
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(path))
    before = len(smtp_server.messages)
    dr = DagBag(dag_folder="dags").dags["registry_inventory"].test()
    assert dr.state == DagRunState.FAILED
    (msg,) = _received(smtp_server, before)
    assert msg["Subject"] == "[registry-ops] FAILED registry_inventory: task registries"
    assert "registry-ops-misspelt" in _html(msg) and dr.run_id in _html(msg)


def test_the_excerpt_masks_and_trims_without_airflow_context():
    from include.registry_ops.notify.failure import error_excerpt, mask

    try:
        raise ValueError("x" * 500 + "\n" + "\n".join(f"line {i}" for i in range(2, 10)))
    except ValueError as exc:
        text = error_excerpt(exc)
    first = text.splitlines()[0]
    assert first.startswith("ValueError: xxx") and len(first) == 300 and first.endswith("…")
    assert "line 5" in text and "line 6" not in text and "[…]" in text
    assert mask("Authorization: Bearer abcdefghijklmnop", ["nothing"]) == "Authorization: Bearer ***"
    assert mask('{"client_secret": "s3cr3t-value"}') == '{"client_secret": "***"}'
    assert mask("use s3cr3t-value here", ["s3cr3t-value"]) == "use *** here"
    assert error_excerpt(None).startswith("(Airflow recorded no exception")
