"""Deadline alerts: the intervals come from ``notifications.deadlines`` (defaults when the config
cannot be read, a bad value is a ConfigError naming the key), and the callback, run the way the
triggerer runs it (Airflow's ``CallbackTrigger`` with the context the scheduler adds), emails
ops through the SMTP sink."""

from __future__ import annotations

import asyncio
import email
import logging
from datetime import timedelta
from email import policy

import pytest
import yaml

from include.registry_ops.config import ConfigError, load_config

BASE = {
    "registries": [{"name": "oci-local", "kind": "oci", "conn_id": "oci_local"}],
    "storage": {"bucket": "deadline-test"},
}
DEADLINE_DAGS = ("registry_inventory", "registry_backup")


def _write(tmp_path, notifications) -> str:
    path = tmp_path / "registry-ops.yaml"
    path.write_text(yaml.safe_dump({**BASE, "notifications": notifications}))
    return str(path)


def _alerts(monkeypatch, config_path: str) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("REGISTRY_OPS_CONFIG", config_path)
    bag = DagBag(dag_folder="dags")
    assert bag.import_errors == {}
    out = {}
    for dag_id, dag in bag.dags.items():
        alerts = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline] if dag.deadline else []
        out[dag_id] = alerts
    return out


def test_the_two_dags_carry_the_configured_deadlines(tmp_path, monkeypatch):
    from airflow.sdk import AsyncCallback, DeadlineReference

    path = _write(tmp_path, {"deadlines": {"registry_inventory": "90m", "registry_backup": "1d2h"}})
    alerts = _alerts(monkeypatch, path)
    assert {d for d, a in alerts.items() if a} == set(DEADLINE_DAGS)  # only these two
    (inventory,) = alerts["registry_inventory"]
    (backup,) = alerts["registry_backup"]
    assert inventory.interval == timedelta(minutes=90) and backup.interval == timedelta(days=1, hours=2)
    for dag_id, alert in (("registry_inventory", inventory), ("registry_backup", backup)):
        assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
        assert isinstance(alert.callback, AsyncCallback)
        assert alert.callback.path == "include.registry_ops.notify.failure.deadline_missed"
        assert alert.callback.kwargs["dag_id"] == dag_id
    assert inventory.callback.kwargs["interval"] == "1h30m" and backup.callback.kwargs["interval"] == "1d2h"


def test_an_unreadable_config_falls_back_to_the_defaults_and_says_why(tmp_path, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING):
        alerts = _alerts(monkeypatch, str(tmp_path / "missing.yaml"))
    assert alerts["registry_inventory"][0].interval == timedelta(hours=2)
    assert alerts["registry_backup"][0].interval == timedelta(hours=6)
    assert "missing.yaml: cannot read config file" in caplog.text and "default 2:00:00" in caplog.text


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2 hours", "'2 hours' is not a duration"),
        ("0m", "more than 0 and at most 7 days"),
        ("8d", "more than 0 and at most 7 days"),
        (7200, "7200 is not a duration"),
    ],
)
def test_a_bad_deadline_names_its_key(tmp_path, value, problem):
    path = _write(tmp_path, {"deadlines": {"registry_backup": value}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}: notifications.deadlines.registry_backup:" in str(err.value) and problem in str(err.value)


def test_an_unknown_dag_in_deadlines_is_refused(tmp_path):
    path = _write(tmp_path, {"deadlines": {"registry_inventroy": "2h"}})
    with pytest.raises(ConfigError, match=r"notifications\.deadlines\.registry_inventroy: Extra inputs"):
        load_config(path)


def _run_trigger(trigger) -> list[dict]:
    async def collect():
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def test_the_callback_run_as_the_triggerer_runs_it_emails_ops(tmp_path, monkeypatch, smtp_server):
    from airflow.triggers.callback import CallbackTrigger

    path = _write(tmp_path, {"recipients": ["team@example.com"], "ops_recipients": ["oncall@example.com"]})
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example.test:8080")
    (alert,) = _alerts(monkeypatch, path)["registry_backup"]
    run_id = "asset_triggered__2026-11-28T03:00:00+00:00"
    context = {  # what Deadline.handle_miss adds: the run as the REST API shows it, and the deadline
        "dag_run": {
            "dag_run_id": run_id,
            "dag_id": "registry_backup",
            "queued_at": "2026-11-28T03:00:05Z",
            "state": "running",
        },
        "deadline": {"id": "0199", "deadline_time": "2026-11-28T09:00:05Z"},
    }
    trigger = CallbackTrigger(alert.callback.path, {**alert.callback.kwargs, "context": context})
    before = len(smtp_server.messages)
    events = _run_trigger(trigger)
    assert [e["state"] for e in events] == ["running", "success"], events
    assert events[1]["body"]["recipients"] == ["oncall@example.com"]
    (raw,) = [
        (smtp_server.maildir / f"{i + 1:04d}.eml").read_bytes()
        for i in range(before, len(smtp_server.messages))
    ]
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["To"] == "oncall@example.com"
    assert (
        msg["Subject"]
        == f"[registry-ops] DEADLINE MISSED registry_backup: run {run_id} not finished within 6h"
    )
    body = next(p for p in msg.walk() if p.get_content_type() == "text/html").get_content()
    assert "6h after the run was queued" in body and "2026-11-28T09:00:05Z" in body and run_id in body
    assert (
        "http://airflow.example.test:8080/dags/registry_backup/runs/asset_triggered__2026-11-28T03%3A00%3A00%2B00%3A00"
        in body
    )


def test_a_callback_that_cannot_send_fails_without_a_secret(tmp_path, monkeypatch, smtp_server):
    import json
    import socket

    from airflow.triggers.callback import CallbackTrigger

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "login": "ops",
        "password": "smtp-Dl-secret-4",
    }
    conn["extra"] = {"disable_tls": True, "disable_ssl": True, "from_email": "x@example.com"}
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEADLINE", json.dumps(conn))
    path = _write(tmp_path, {"recipients": ["ops@example.com"], "smtp_conn_id": "smtp_deadline"})
    (alert,) = _alerts(monkeypatch, path)["registry_inventory"]
    context = {"dag_run": {"dag_run_id": "scheduled__x", "dag_id": "registry_inventory"}, "deadline": {}}
    events = _run_trigger(CallbackTrigger(alert.callback.path, {**alert.callback.kwargs, "context": context}))
    assert events[-1]["state"] == "failed"
    assert "not sent via SMTP connection 'smtp_deadline'" in events[-1]["body"]
    assert "smtp-Dl-secret-4" not in json.dumps(events)
