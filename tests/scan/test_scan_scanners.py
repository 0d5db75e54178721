"""Scanner adapters: ECR scanning on moto (basic and enhanced, one scan per image per day), ECR
paging and waiting through botocore's Stubber (moto ignores paging), and Trivy's error paths."""

from __future__ import annotations

import copy
import json
import time

import boto3
import pytest
from botocore.stub import Stubber

from devstack.fleet import RepoSpec
from devstack.seed import seed_ecr
from include.registry_ops.scan.parsers import count
from include.registry_ops.scan.scanners.base import Target
from include.registry_ops.scan.scanners.ecr import EcrScanner
from include.registry_ops.scan.scanners.factory import build_scanner
from include.registry_ops.scan.scanners.trivy import TrivyScanner
from include.registry_ops.scan.settings import EcrScanConfig, TrivyConfig
from tests.scan.scanfleet import ECR, TRIVY, expect_trivy, image, invocations, seed_ecr_findings

BASIC = ECR / "describe-image-scan-findings.basic.awscli.json"
ENHANCED = ECR / "describe-image-scan-findings.enhanced.moto.json"


def counting(client) -> list[str]:
    calls: list[str] = []
    client.meta.events.register(
        "before-send.ecr.*", lambda event_name, **_: calls.append(event_name.split(".")[-1])
    )
    return calls


def test_ecr_basic_scan_once_a_day_then_reused(moto_server, ecr, scan_config):
    _, config = scan_config()
    spec = image("ecr-direct", ["1.0.0"])
    seed_ecr(ecr, [RepoSpec("scan-direct/ecr-direct", [spec])])
    seed_ecr_findings(moto_server.endpoint, "scan-direct/ecr-direct", spec.digest, BASIC)
    target = Target(spec.digest, "ecr-local", "scan-direct/ecr-direct")

    scanner = build_scanner(config, "ecr-local")
    (first,) = scanner.scan([target])
    assert (first.status, first.source, scanner.started, scanner.reused) == ("ok", "ecr-basic", 1, 0)
    assert [r["vulnerability_id"] for r in first.findings] == ["CVE-2019-5188"]

    scanner = build_scanner(config, "ecr-local")
    start = time.monotonic()
    (second,) = scanner.scan([target])  # same day: LimitExceededException, today's scan is read
    assert time.monotonic() - start < 5  # not retried as throttling (botocore would take ~30 s)
    assert (second.status, scanner.started, scanner.reused) == ("ok", 0, 1)
    assert second.findings == first.findings


def test_ecr_enhanced_scanning_starts_nothing(moto_server, ecr):
    spec = image("ecr-enhanced", ["1.0.0"])
    never = image("ecr-never", ["1.0.0"])
    seed_ecr(ecr, [RepoSpec("scan-direct/ecr-enhanced", [spec, never])])
    seed_ecr_findings(moto_server.endpoint, "scan-direct/ecr-enhanced", spec.digest, ENHANCED)
    ecr.start_image_scan(
        repositoryName="scan-direct/ecr-enhanced", imageId={"imageDigest": spec.digest}
    )  # "Inspector"
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=[])
    try:
        client = boto3.client("ecr", endpoint_url=moto_server.endpoint, region_name="us-east-1")
        calls = counting(client)
        scanner = EcrScanner(client, config=EcrScanConfig(poll_seconds=0))
        ok, missing = scanner.scan(
            [
                Target(spec.digest, "ecr", "scan-direct/ecr-enhanced"),
                Target(never.digest, "ecr", "scan-direct/ecr-enhanced"),
            ]
        )
    finally:
        ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[])
    assert "StartImageScan" not in calls
    assert ok.status == "ok" and ok.source == "ecr-enhanced"
    assert count(ok.findings)["entries"]["UNKNOWN"] == 1  # UNTRIAGED
    assert missing.status == "error" and "ScanNotFoundException" in missing.error


def _page(findings: list[dict], token: str | None) -> dict:
    page = copy.deepcopy(json.loads(ENHANCED.read_text()))
    page["imageScanFindings"]["enhancedFindings"] = findings
    page["imageId"] = {"imageDigest": DIGEST}
    if token:
        page["nextToken"] = token
    return page


DIGEST = "sha256:" + "ab" * 32


def test_ecr_waits_for_the_scan_and_reads_every_page():
    client = boto3.client("ecr", region_name="us-east-1")
    enhanced = json.loads(ENHANCED.read_text())["imageScanFindings"]["enhancedFindings"]
    ask = {"repositoryName": "app", "imageId": {"imageDigest": DIGEST}, "maxResults": 1000}
    with Stubber(client) as stub:
        stub.add_response(
            "get_registry_scanning_configuration", {"scanningConfiguration": {"scanType": "BASIC"}}
        )
        stub.add_response(
            "start_image_scan",
            {"imageScanStatus": {"status": "IN_PROGRESS"}},
            {"repositoryName": "app", "imageId": {"imageDigest": DIGEST}},
        )
        stub.add_response("describe_image_scan_findings", {"imageScanStatus": {"status": "IN_PROGRESS"}}, ask)
        stub.add_response("describe_image_scan_findings", _page(enhanced[:1], "page-2"), ask)
        stub.add_response(
            "describe_image_scan_findings", _page(enhanced[1:], None), {**ask, "nextToken": "page-2"}
        )
        sleeps: list[float] = []
        scanner = EcrScanner(client, config=EcrScanConfig(poll_seconds=7), sleep=sleeps.append)
        (result,) = scanner.scan([Target(DIGEST, "ecr", "app")])
        stub.assert_no_pending_responses()
    assert result.status == "ok" and sleeps == [7]
    assert sorted(r["vulnerability_id"] for r in result.findings) == ["CVE-2024-9681", "CVE-2025-24528"]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [("UNSUPPORTED_IMAGE", "unsupported"), ("FAILED", "error"), ("IN_PROGRESS", "error")],
)
def test_ecr_scan_statuses(status, outcome):
    client = boto3.client("ecr", region_name="us-east-1")
    clock = iter([0.0, 1000.0, 2000.0])
    with Stubber(client) as stub:
        stub.add_response(
            "get_registry_scanning_configuration", {"scanningConfiguration": {"scanType": "BASIC"}}
        )
        stub.add_client_error("start_image_scan", "LimitExceededException", http_status_code=400)
        stub.add_response(
            "describe_image_scan_findings", {"imageScanStatus": {"status": status, "description": "why"}}
        )
        scanner = EcrScanner(
            client, config=EcrScanConfig(wait_seconds=60), sleep=lambda s: None, monotonic=lambda: next(clock)
        )
        (result,) = scanner.scan([Target(DIGEST, "ecr", "app")])
    assert result.status == outcome and scanner.reused == 1
    if status == "IN_PROGRESS":
        assert "still running after 60s" in result.error


def test_trivy_server_mode_token_and_parallel_runs(scan_fleet, trivy_bin, trivy_env, monkeypatch):
    expect_trivy(monkeypatch, server="http://trivy.internal:4954", insecure_hosts=[])  # as built below
    refs = list(scan_fleet.trivy_reports)
    targets = [Target(r.rsplit("@", 1)[1], "oci", r.split("/", 1)[1].rsplit("@", 1)[0]) for r in refs]
    config = TrivyConfig(binary=str(trivy_bin), server="http://trivy.internal:4954", concurrency=4)
    scanner = TrivyScanner(scan_fleet.oci_host, "robot", "pw-7f3a9c", config, server_token="tok-91b2")
    found = scanner.scan(targets)
    assert [r.target for r in found] == targets and {r.status for r in found} == {"ok"}
    calls = invocations(trivy_env)
    assert len(calls) == len(targets) == scanner.invocations
    assert all(c["token"] and "--server" in c["argv"] and "--insecure" not in c["argv"] for c in calls)
    assert not any("tok-91b2" in a or "pw-7f3a9c" in a for c in calls for a in c["argv"])


def test_trivy_failures_are_results_not_exceptions(scan_fleet, trivy_bin, trivy_env, tmp_path, monkeypatch):
    ref = next(iter(scan_fleet.trivy_reports))
    digest = ref.rsplit("@", 1)[1]
    target = Target(digest, "oci", ref.split("/", 1)[1].rsplit("@", 1)[0])
    mapping = tmp_path / "odd-map.json"
    mapping.write_text(json.dumps({ref: str(TRIVY / "SOURCES.md")}))  # not JSON
    monkeypatch.setenv("TRIVY_FAKE_MAP", str(mapping))
    expect_trivy(monkeypatch, insecure_hosts=[])  # the scanners below are built without insecure
    scanner = TrivyScanner(scan_fleet.oci_host, "robot", "hunter2-secret", TrivyConfig(binary=str(trivy_bin)))
    (bad_output,) = scanner.scan([target])
    assert bad_output.status == "error" and "not a usable report" in bad_output.error
    (unknown,) = scanner.scan([Target("sha256:" + "0" * 64, "oci", "scan/none")])
    assert (
        unknown.status == "error"
        and "trivy exited 1" in unknown.error
        and "MANIFEST_UNKNOWN" in unknown.error
    )
    missing = TrivyScanner(
        scan_fleet.oci_host, "robot", "pw-7f3a9c", TrivyConfig(binary=str(tmp_path / "no-trivy"))
    )
    (result,) = missing.scan([target])
    assert result.status == "error" and "not found" in result.error
    assert scanner._scrub("auth failed for hunter2-secret") == "auth failed for ***"


def test_trivy_against_ecr_uses_a_registry_token(scan_fleet, scan_config, trivy_env, monkeypatch, tmp_path):
    """scan.scanners: {ecr-local: trivy}: host and credentials come from GetAuthorizationToken
    (moto answers a fixed token, enough to check the decoding and that it travels via env)."""
    _, config = scan_config(scanners={"ecr-local": "trivy"})
    scanner = build_scanner(config, "ecr-local")
    assert isinstance(scanner, TrivyScanner)
    assert scanner.host.endswith(".dkr.ecr.us-east-1.amazonaws.com") and not scanner.insecure
    f = scan_fleet.by_name["f"]
    ref = f"{scanner.host}/scan/ecr-app@{f.digest}"
    mapping = tmp_path / "ecr-map.json"
    mapping.write_text(json.dumps({ref: str(TRIVY / "amazon-2.json.golden")}))
    monkeypatch.setenv("TRIVY_FAKE_MAP", str(mapping))
    (result,) = scanner.scan([Target(f.digest, "ecr-local", "scan/ecr-app")])
    assert result.status == "ok" and len(result.findings) == 2
    (call,) = invocations(trivy_env)
    assert call["username"] == "AWS" and call["password_sha256"] and call["argv"][-1] == ref


def test_a_scanner_that_cannot_serve_a_registry_fails_its_targets(scan_config):
    from include.registry_ops.scan.jobs import scan_targets

    _, config = scan_config(scanners={"oci-local": "ecr"})
    found, invocations_ = scan_targets(
        config, [{"digest": DIGEST, "registry": "oci-local", "repository": "x"}]
    )
    (result,) = found
    assert result.status == "error" and "'ecr' needs an ECR registry" in result.error and invocations_ == 0
