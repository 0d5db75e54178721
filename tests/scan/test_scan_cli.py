"""`registry-ops scan ...` as a user runs it (subprocesses, real services, real reports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

from include.registry_ops.clients import build_registry
from include.registry_ops.inventory import run_inventory
from include.registry_ops.inventory_files import write_inventory
from tests.conftest import OCI_PASSWORD
from tests.scan.scanfleet import ECR, TRIVY, invocations

CLI = [sys.executable, "-m", "include.registry_ops.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def test_import_report_counts_a_trivy_report():
    proc = run("scan", "import-report", str(TRIVY / "distroless-python27.json.golden"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].split() == ["severity", "entries", "unique"]
    table = {ln.split()[0]: ln.split()[1:] for ln in lines[2:8]}
    # SOURCES.md: entries 0/0/2/2/0 = 4, unique 0/0/1/1/0 = 2
    assert table == {
        "CRITICAL": ["0", "0"],
        "HIGH": ["0", "0"],
        "MEDIUM": ["2", "1"],
        "LOW": ["2", "1"],
        "UNKNOWN": ["0", "0"],
        "total": ["4", "2"],
    }


def test_import_report_counts_ecr_responses_as_json():
    proc = run(
        "scan",
        "import-report",
        str(ECR / "describe-image-scan-findings.enhanced.moto.json"),
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["format"] == "ecr-enhanced" and out["status"] == "COMPLETE"
    assert out["entries"] == {"CRITICAL": 0, "HIGH": 0, "MEDIUM": 1, "LOW": 0, "UNKNOWN": 1}
    assert out["unique"] == out["entries"] and out["total_unique"] == 2
    assert out["source_severities"] == {"MEDIUM": 1, "UNTRIAGED": 1} == out["reported_counts"]
    assert "warning" not in out
    basic = json.loads(
        run(
            "scan",
            "import-report",
            str(ECR / "describe-image-scan-findings.basic.awscli.json"),
            "--format",
            "json",
        ).stdout
    )
    assert basic["format"] == "ecr-basic" and basic["entries"]["MEDIUM"] == 1 and basic["total_entries"] == 1


def test_import_report_refuses_what_it_cannot_read(tmp_path):
    proc = run("scan", "import-report", str(TRIVY / "SOURCES.md"))
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    other = tmp_path / "event.json"
    other.write_text(json.dumps({"Records": []}))
    proc = run("scan", "import-report", str(other))
    assert proc.returncode == 2 and "neither a Trivy JSON report nor an ECR" in proc.stderr


def test_scan_run_outside_airflow(scan_fleet, scan_config, trivy_env, smtp_server, tmp_path):
    path, config = scan_config()
    before = len(smtp_server.messages)
    proc = run("-v", "scan", "run", "--config", str(path), "--live", "--notify")
    assert proc.returncode == 1, proc.stderr  # the gate fails: protected images with critical CVEs
    out = json.loads(proc.stdout)
    assert out["digests"] == 10 and out["scanned"] == 10 and out["scanner_invocations"] == 10
    assert out["gate"]["passed"] is False and out["gate"]["protected_violations"] == 3  # a in 2 repos, arm64
    assert out["notified"]["email"] == ["secops@example.com"]
    assert len(smtp_server.messages) == before + 1
    assert OCI_PASSWORD not in proc.stdout + proc.stderr
    assert len(invocations(trivy_env)) == 7

    inventory = tmp_path / "inventory.parquet"
    write_inventory(run_inventory(config, build_registry, datetime.now(UTC)).table, inventory)
    allow = ["CVE-2019-14697", "CVE-2019-18224"]  # alpine-39's and fluentd's criticals
    path, _ = scan_config(  # same test, same S3 prefixes: the first run's state applies
        allowlist=[
            {"id": i, "reason": "fix scheduled in the base image", "expires": "2099-12-31"} for i in allow
        ],
    )
    proc = run("scan", "run", "--config", str(path), "--inventory", str(inventory))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["scanner_invocations"] == 0 and out["fresh"] == 10  # state from the first run
    assert out["gate"]["passed"] is True and out["gate"]["violations"] == 1  # feature-x, not protected
    assert len(invocations(trivy_env)) == 7
