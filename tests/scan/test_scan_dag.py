"""registry_scan end to end with dag.test(): real registry, moto (ECR, S3), SMTP sink, trivy stand-in."""

from __future__ import annotations

import sys
from datetime import date

import pytest

from include.registry_ops import storage
from include.registry_ops.clients import s3_client
from include.registry_ops.scan import jobs
from tests.conftest import OCI_PASSWORD
from tests.scan.scanfleet import invocations, publish_inventory


@pytest.fixture(scope="module")
def scan_dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder="dags").dags["registry_scan"]


def states(dr) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ti in dr.get_task_instances():
        out.setdefault(ti.task_id, []).append(ti.state)
    return out


def read_logs(capfd, caplog) -> str:
    """What the run logged so far (records and the process's output), and forget it."""
    sys.stdout.flush()
    sys.stderr.flush()
    out = capfd.readouterr()
    text = caplog.text + out.out + out.err
    caplog.clear()
    return text


def table_rows(logs: str, status: str, image: str) -> list[str]:
    """The distinct rows of the gate's log table for one status and image."""
    return sorted({ln for ln in logs.splitlines() if ln.split()[:2] == [status, image]})


def test_scan_dag_end_to_end(
    airflow_db, scan_fleet, scan_config, trivy_env, smtp_server, scan_dag, capfd, caplog
):
    from airflow.sdk import DagRunState

    _, config = scan_config(batch_size=4)
    publish_inventory(config)
    before = len(smtp_server.messages)

    dr = scan_dag.test()
    logs = read_logs(capfd, caplog)
    st = states(dr)
    assert dr.state == DagRunState.FAILED, st
    assert st["gate"] == ["failed"] and st["publish"] == ["success"] and st["check_scans"] == ["success"]
    assert st["scan_batch"] == ["success"] * 3  # 10 digests in batches of 4, mapped
    assert st["size_budget"] == ["success"] and st["tag_conventions"] == ["success"]
    assert len(invocations(trivy_env)) == 7
    assert OCI_PASSWORD not in logs

    (msg,) = smtp_server.messages[before:]
    assert msg["To"] == "secops@example.com" and "3 protected image(s)" in msg["Subject"]
    html = (
        next(p for p in msg.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    )
    assert "scan/oci-app" in html and "scan/oci-mirror" in html and "linux/arm64" in html
    assert "CVE-2019-14697" in html and "CVE-2019-18224" in html

    s3 = s3_client(config)
    pointer = storage.get_json(
        s3, config.storage.bucket, f"{config.storage.prefixes.reports}scan/latest.json"
    )
    manifest = storage.get_json(s3, config.storage.bucket, pointer["manifest"])
    assert manifest["scanner_invocations"] == 10 and manifest["digests"] == 10
    gate = storage.get_json(s3, config.storage.bucket, manifest["run_prefix"] + "gate.json")
    assert gate["protected_violations"] == 3
    for name in ("sizes.json", "tags.json"):
        storage.get_json(s3, config.storage.bucket, manifest["run_prefix"] + name)
    findings = storage.get_table(s3, config.storage.bucket, manifest["findings_key"])
    assert findings.num_rows == manifest["rows"] > 0
    # the log names the images and their CVE ids, then fails in one line
    [row] = table_rows(logs, "new", "oci-local/scan/oci-app")
    assert "1.0.0" in row and "CVE-2019-14697" in row
    assert "AirflowFailException: gate failed: 3 protected image(s)" in logs
    assert "failing: oci-local/scan/" in logs and "During handling of the above exception" not in logs
    protected = [v for v in gate["violations"] if v["protected"]]
    assert {v["status"] for v in protected} == {"new"} and gate["new"] == 3

    # Second run, nothing changed: the known violations fail the run again, nobody is emailed again.
    dr = scan_dag.test()
    logs = read_logs(capfd, caplog)
    assert dr.state == DagRunState.FAILED and states(dr)["gate"] == ["failed"]
    assert len(smtp_server.messages) == before + 1
    assert "gate failed: 3 protected image(s)" in logs
    assert "0 new, 3 unacknowledged, 0 acknowledged" in logs

    # Third run, after ops acknowledged them: the gate passes and still lists them.
    for v in protected:
        jobs.acknowledge(
            config,
            v["registry"],
            v["repository"],
            v["digest"],
            "base image bump in review",
            date.today(),
            "ops",
        )
    dr = scan_dag.test()
    logs = read_logs(capfd, caplog)
    assert dr.state == DagRunState.SUCCESS, states(dr)
    assert len(smtp_server.messages) == before + 1
    [row] = table_rows(logs, "acknowledged", "oci-local/scan/oci-app")
    assert "1.0.0" in row and "CVE-2019-14697" in row
    pointer = storage.get_json(
        s3, config.storage.bucket, f"{config.storage.prefixes.reports}scan/latest.json"
    )
    third = storage.get_json(s3, config.storage.bucket, pointer["manifest"])
    gate = storage.get_json(s3, config.storage.bucket, third["run_prefix"] + "gate.json")
    assert gate["passed"] and gate["acknowledged"] == 3 and gate["protected_violations"] == 3

    # Fourth run, allowlisting the two criticals: nothing is scanned, the gate passes.
    allow = [
        {"id": i, "reason": "fixed in the next base image", "expires": "2099-12-31"}
        for i in ("CVE-2019-14697", "CVE-2019-18224")
    ]
    scan_config(batch_size=4, allowlist=allow)
    dr = scan_dag.test()
    st = states(dr)
    assert dr.state == DagRunState.SUCCESS, st
    assert all(s == "skipped" for s in st.get("scan_batch", ["skipped"]))  # no batch to map
    assert len(invocations(trivy_env)) == 7 and len(smtp_server.messages) == before + 1
    pointer = storage.get_json(
        s3, config.storage.bucket, f"{config.storage.prefixes.reports}scan/latest.json"
    )
    second = storage.get_json(s3, config.storage.bucket, pointer["manifest"])
    assert second["scanner_invocations"] == 0 and second["fresh"] == 10 and second["rows"] == manifest["rows"]

    event = latest_findings_event()
    assert event["key"] == second["findings_key"] and event["scanner_invocations"] == 0
    assert set(event["vulnerabilities_by_severity"]) == {"CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"}


def latest_findings_event() -> dict:
    """Extra of the newest event on the registry_scan_findings Asset (read from the metadata DB)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        event = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "registry_scan_findings")
            .order_by(AssetEvent.timestamp.desc())
        ).first()
        assert event is not None
        return dict(event.extra)


def test_an_inventory_event_names_the_snapshot_to_scan():
    """Asset-triggered runs hand every triggering event to `plan` (which takes the newest)."""
    import importlib.util
    from types import SimpleNamespace

    from airflow.sdk import Asset

    from include.registry_ops.assets import INVENTORY

    spec = importlib.util.spec_from_file_location("registry_scan_dag", "dags/registry_scan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    events = [
        SimpleNamespace(extra={"key": "inventory/dt=2026-11-27/b.parquet", "snapshot_at": "2026-11-27"}),
        SimpleNamespace(extra={"key": "inventory/dt=2026-11-26/a.parquet", "snapshot_at": "2026-11-26"}),
    ]
    context = {"triggering_asset_events": {Asset(**INVENTORY): events}}
    assert module._inventory_key(context) == [e.extra for e in events]
    assert module._inventory_key({"triggering_asset_events": {}}) == []
