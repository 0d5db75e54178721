"""The issue's end-to-end case with real probes: a real distribution registry is stopped for
four 5-minute probe runs (20 minutes) of an hour of them; the probes stored through the dataset
lower its availability by exactly those four probes, the page burn-rate alert is emailed once
(not again on the next evaluation while it still burns), and the ECR registry beside it stays
at 100 %. Probe times are given to the probes (``at``), the outage itself is real."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from include.registry_ops import storage
from include.registry_ops.config import parse_config
from include.registry_ops.health import alerts, dataset
from include.registry_ops.health import probe as probes
from include.registry_ops.registries.oci import OciRegistry
from tests.health.test_probe import PASSWORD, USER, Oci
from tests.registries.images import image, push, unique

STEP = timedelta(minutes=5)


@pytest.fixture
def outage_env(tmp_path, moto_server, s3, smtp_server):
    registry = Oci(tmp_path).start()
    os.environ["AIRFLOW_CONN_OCI_OUTAGE"] = registry.server.conn_json()
    repo = unique("outage")
    canary = push(OciRegistry("seed", registry.url, USER, PASSWORD), repo, image(repo), "v1").digest
    bucket, tag = f"outage-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:6]
    storage.ensure_bucket(s3, bucket)
    config = parse_config(
        {
            "registries": [
                {"name": "oci-o", "kind": "oci", "conn_id": "oci_outage"},
                {"name": "ecr-o", "kind": "ecr", "conn_id": "aws_default", "region": "us-east-1"},
            ],
            "storage": {"bucket": bucket, "prefixes": {"health": f"h-{tag}/", "reports": f"r-{tag}/"}},
            "notifications": {"recipients": ["all@example.com"]},
            "health": {"timeout_seconds": 2, "canaries": {"oci-o": {"repository": repo, "digest": canary}}},
            "slo": {"recipients": [f"slo-{tag}@example.com"]},
        },
        "outage-config",
    )
    yield registry, config, s3, smtp_server, tag
    registry.stop()


def _probe_run(config, s3, at: datetime) -> dict:
    run_id = f"scheduled__{at:%Y%m%dT%H%M}"
    rows = probes.probe_all(config, s3, at, run_id)
    dataset.append(s3, config, rows, run_id, at)
    return {r["registry"]: r for r in rows}


def _mine(smtp, before: int, tag: str) -> list:
    return [m for m in smtp.messages[before:] if f"slo-{tag}@example.com" in str(m["To"])]


def test_a_registry_stopped_for_twenty_minutes_pages_once(outage_env):
    registry, config, s3, smtp, tag = outage_env
    before = len(smtp.messages)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    at = start
    for _ in range(12):  # an hour of good probes
        rows = _probe_run(config, s3, at)
        assert rows["oci-o"]["good"], rows["oci-o"]["error"]
        at += STEP
    registry.stop()
    for _ in range(4):  # 20 minutes stopped: four probe runs find it down
        rows = _probe_run(config, s3, at)
        assert not rows["oci-o"]["good"] and rows["ecr-o"]["good"]
        assert "cannot connect" in rows["oci-o"]["error"]
        at += STEP

    now = at  # the evaluation right after the fourth failed probe
    result = alerts.run(config, s3, now)
    result_scopes = alerts.evaluate(config, s3, now)["slos"]["availability"]["scopes"]
    oci = result_scopes["oci-o"]
    assert (oci["good"], oci["total"]) == (12, 16)  # exactly the four probes of the outage
    assert oci["budget_left"] == pytest.approx(1 - (4 / 16) / 0.001)
    assert result_scopes["ecr-o"]["sli"] == 1.0
    assert "availability/oci-o/page" in result["firing"]
    assert [(s["scope"], s["alert"]) for s in result["sent"]] == [("oci-o", "page")]
    (mail,) = _mine(smtp, before, tag)
    assert mail["Subject"].startswith("[PAGE] availability SLO (99.90%) of oci-o")

    # a re-evaluation while it still burns (no newer probe: the last known state): no second email
    again = alerts.run(config, s3, now + timedelta(minutes=2))
    assert "availability/oci-o/page" in again["firing"] and again["sent"] == []

    registry.start()
    # the registry is back and the next probe finds it: the 5-minute window clears, the page
    # episode closes quietly; the ticket (covered by the page so far) still burns, unsent
    rows = _probe_run(config, s3, at)
    assert rows["oci-o"]["good"], rows["oci-o"]["error"]
    later = alerts.run(config, s3, at + timedelta(minutes=1))
    assert "availability/oci-o/page" not in later["firing"] and later["sent"] == []
    assert len(_mine(smtp, before, tag)) == 1


def test_clients_are_built_in_the_calling_thread(outage_env, monkeypatch):
    """Building a client imports Airflow's hooks and reads a connection; first imports racing in
    the probe threads failed with "deadlock detected by _ModuleLock" and marked a healthy
    registry down. Only the network work runs in the pool."""
    import threading

    _, config, s3, _, _ = outage_env
    built_in: list[str] = []
    real = probes.build

    def recording(reg, timeout):
        built_in.append(threading.current_thread().name)
        return real(reg, timeout)

    monkeypatch.setattr(probes, "build", recording)
    rows = probes.probe_all(config, s3, datetime.now(UTC), "threads")
    assert all(r["good"] for r in rows), [r["error"] for r in rows]
    assert built_in == [threading.current_thread().name] * 2
