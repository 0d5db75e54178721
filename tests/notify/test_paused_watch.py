"""registry_watch against Airflow's own REST API (``create_app`` in a ``TestClient`` on the test
metadata DB, signed in through ``POST /auth/token`` of the simple auth manager): the pause is
produced for real, by failed runs whose ``DagRun.update_state`` makes the scheduler's
``_check_last_n_dagruns_failed`` pause the DAG; each pause is reported once."""

from __future__ import annotations

import email
import json
import textwrap
from datetime import UTC, datetime, timedelta
from email import policy

import pytest
import yaml

from include.registry_ops import storage, watch
from include.registry_ops.config import load_config
from tests.conftest import BUCKET

USER, PASSWORD = "watcher", "watch-Pass-5512"  # a viewer: reading is all the watch does
ADMIN, ADMIN_PASSWORD = "boss", "boss-Pass-0091"
DAG_ID = "registry_selftest_pause"  # named like ours: the watch looks at registry_* only

DAG_FILE = f"""
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from include.registry_ops.dag_support import dag_defaults


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["test"],
     **dag_defaults(owner="test", retry_delay=timedelta(0), retries=0, pause_after=2))
def {DAG_ID}():
    @task
    def fails():
        raise RuntimeError("broken on purpose")

    fails()


{DAG_ID}()
"""


@pytest.fixture(scope="module")
def rig(airflow_db, moto_server, smtp_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("watch")
    (root / "dags").mkdir()
    (root / "dags" / f"{DAG_ID}.py").write_text(textwrap.dedent(DAG_FILE))
    (root / "passwords.json").write_text(json.dumps({USER: PASSWORD, ADMIN: ADMIN_PASSWORD}))
    config = root / "registry-ops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "registries": [{"name": "oci-local", "kind": "oci", "conn_id": "oci_local"}],
                "storage": {"bucket": BUCKET, "prefixes": {"reports": "watch-test/"}},
                "notifications": {
                    "recipients": ["team@example.com"],
                    "ops_recipients": ["oncall@example.com"],
                },
            }
        )
    )
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint)
    storage.ensure_bucket(s3, BUCKET)
    return {"root": root, "config": config, "s3": s3}


@pytest.fixture
def api(rig, monkeypatch):
    from airflow.configuration import conf

    bundles = [
        {
            "name": "watch-tests",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(rig["root"] / "dags")},
        },
        *json.loads(conf.get("dag_processor", "dag_bundle_config_list")),
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", f"{USER}:viewer,{ADMIN}:admin")
    monkeypatch.setenv(
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(rig["root"] / "passwords.json")
    )
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(rig["config"]))
    # Airflow's execution API refuses to start without a JWT secret; an earlier test of the same
    # process may have generated one (the auth manager does when it is empty), this one must not
    # depend on that
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "paused-watch-test-secret-" + "s" * 40)
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
    from fastapi.testclient import TestClient

    def forget_keys() -> None:
        """Airflow caches its JWT signer and validator per process, each with the secret it saw
        first: a signer an earlier test made (another secret) would sign tokens this app refuses."""
        for method in (BaseAuthManager._get_token_signer, BaseAuthManager._get_token_validator):
            method.__func__.cache_clear()

    purge_cached_app()
    forget_keys()
    with TestClient(create_app(), base_url="http://testserver") as client:
        yield watch.AirflowApi(client, USER, PASSWORD)
    purge_cached_app()
    forget_keys()


def _fail_runs(rig, n: int) -> None:
    """``n`` runs whose task really fails (``dag.test()``), then the scheduler's own decision
    on the last one: ``dag.test()`` keeps its run object outside the session it updates the
    state in, so its ``_check_last_n_dagruns_failed`` reads the run as still running and never
    pauses. The scheduler loads the run and its serialized DAG in one session and calls
    ``update_state``; that is done here for the last run (its task instance failed)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.sdk import DagRunState
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = DagBag(dag_folder=str(rig["root"] / "dags")).dags[DAG_ID]
    runs = [dag.test() for _ in range(n)]
    assert [r.state for r in runs] == [DagRunState.FAILED] * n
    with create_session() as session:
        query = select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.run_id == runs[-1].run_id)
        last = session.scalars(query).one()
        last.state = DagRunState.RUNNING  # as the scheduler finds it when its last task has failed
        session.flush()
        last.dag = DBDagBag().get_dag_for_run(last, session=session)
        last.update_state(session=session)
        assert last.state == DagRunState.FAILED


def _notices(smtp_server, before: int) -> list[email.message.EmailMessage]:
    msgs = [
        email.message_from_bytes(
            (smtp_server.maildir / f"{i + 1:04d}.eml").read_bytes(), policy=policy.default
        )
        for i in range(before, len(smtp_server.messages))
    ]
    return [m for m in msgs if "PAUSED" in m["Subject"]]  # the runs' failure notices are not ours here


def test_a_scheduler_pause_is_reported_once(rig, api, smtp_server):
    config = load_config(rig["config"])
    before = len(smtp_server.messages)
    _fail_runs(rig, 2)  # the second failed run makes update_state pause the DAG
    assert api.dag(DAG_ID)["is_paused"] is True
    [event] = [e for e in api.pause_events() if e["dag_id"] == DAG_ID]

    first = watch.check(config, rig["s3"], api)
    assert [r["dag_id"] for r in first["reported"]] == [DAG_ID]
    assert first["last_event_id"] == event["event_log_id"]
    (msg,) = _notices(smtp_server, before)
    assert msg["To"] == "oncall@example.com"
    assert msg["Subject"] == f"[registry-ops] PAUSED {DAG_ID}: the scheduler paused it after 2 failed runs"
    body = next(p for p in msg.walk() if p.get_content_type() == "text/html").get_content()
    assert "Still paused</th><td>yes" in body and f"/dags/{DAG_ID}" in body

    again = watch.check(config, rig["s3"], api)  # the next check: nothing new
    assert again["reported"] == [] and len(_notices(smtp_server, before)) == 1

    # unpaused through the API, it fails twice more: a new pause, reported once
    token = watch.AirflowApi(api.http, ADMIN, ADMIN_PASSWORD).token()
    resp = api.http.patch(
        f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status_code == 200, resp.text
    _fail_runs(rig, 2)
    third = watch.check(config, rig["s3"], api)
    assert [r["dag_id"] for r in third["reported"]] == [DAG_ID] and third["last_event_id"] > event[
        "event_log_id"
    ]
    assert len(_notices(smtp_server, before)) == 2
    assert watch.check(config, rig["s3"], api)["reported"] == []


def test_the_first_check_ever_reports_only_recent_pauses(rig, api, smtp_server):
    config = load_config(rig["config"])
    key = f"{config.storage.prefixes.reports}{watch.STATE_KEY}"
    rig["s3"].delete_object(Bucket=BUCKET, Key=key)
    if not [e for e in api.pause_events() if e["dag_id"] == DAG_ID]:
        _fail_runs(rig, 2)
    before = len(smtp_server.messages)
    later = datetime.now(UTC) + watch.FIRST_LOOKBACK + timedelta(hours=1)
    out = watch.check(config, rig["s3"], api, now=later)  # every pause is older than a day by then
    assert out["reported"] == [] and _notices(smtp_server, before) == []
    assert json.loads(rig["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read())["last_event_id"] == max(
        e["event_log_id"] for e in api.pause_events()
    )


def test_a_wrong_password_is_a_clear_error_without_it(api):
    bad = watch.AirflowApi(api.http, USER, "not-the-Password-77")
    with pytest.raises(watch.ApiError) as err:
        bad.pause_events()
    assert "POST /auth/token as 'watcher': HTTP 401" in str(err.value)
    assert "not-the-Password-77" not in str(err.value)


def test_the_connection_gives_the_base_url_and_login(monkeypatch):
    conn = {"conn_type": "http", "host": "api.example.test", "schema": "https", "port": 8443}
    monkeypatch.setenv("AIRFLOW_CONN_AIRFLOW_API", json.dumps({**conn, "login": USER, "password": PASSWORD}))
    api = watch.api_from_connection("airflow_api")
    assert str(api.http.base_url) == "https://api.example.test:8443" and api._login == (USER, PASSWORD)
    monkeypatch.setenv("AIRFLOW_CONN_AIRFLOW_API", json.dumps(conn))
    with pytest.raises(watch.ApiError, match="login and password of an Airflow user are needed"):
        watch.api_from_connection("airflow_api")
