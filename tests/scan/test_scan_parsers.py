"""Parsers on the real reports in tests/fixtures: counts exactly as tests/fixtures/*/SOURCES.md
states them, and every oddity SOURCES.md lists."""

from __future__ import annotations

import copy
import json

import pytest

from include.registry_ops.scan import parsers, severity
from include.registry_ops.scan.parsers import ReportError, count, detect, parse_ecr, parse_trivy
from tests.scan.scanfleet import ECR, TRIVY

# From tests/fixtures/trivy/SOURCES.md: entries C/H/M/L/U and unique ids C/H/M/L/U.
TRIVY_COUNTS = {
    "alpine-39": ((2, 0, 4, 0, 0), (1, 0, 2, 0, 0)),
    "amazon-2": ((0, 0, 1, 1, 0), (0, 0, 1, 1, 0)),
    "busybox-with-lockfile": ((0, 1, 1, 0, 0), (0, 1, 1, 0, 0)),
    "centos-7": ((0, 0, 1, 2, 0), (0, 0, 1, 2, 0)),
    "debian-buster": ((1, 0, 0, 1, 0), (1, 0, 0, 1, 0)),
    "distroless-python27": ((0, 0, 2, 2, 0), (0, 0, 1, 1, 0)),
    "fluentd-gems": ((1, 1, 0, 0, 0), (1, 1, 0, 0, 0)),
    "photon-30": ((2, 1, 0, 0, 0), (1, 1, 0, 0, 0)),
    "sl-micro-rancher5.4": ((0, 0, 0, 0, 0), (0, 0, 0, 0, 0)),
    "spring4shell-jre11": ((1, 0, 0, 0, 0), (1, 0, 0, 0, 0)),
    "ubi-7-comprehensive": ((0, 1, 0, 1, 0), (0, 1, 0, 1, 0)),
    "ubuntu-1804": ((0, 0, 4, 1, 0), (0, 0, 1, 1, 0)),
}


def load(path):
    return json.loads(path.read_text())


def trivy(name):
    return load(TRIVY / f"{name}.json.golden")


def test_every_trivy_fixture_is_counted():
    assert sorted(p.name.removesuffix(".json.golden") for p in TRIVY.glob("*.golden")) == sorted(TRIVY_COUNTS)


@pytest.mark.parametrize("name", sorted(TRIVY_COUNTS))
def test_trivy_counts_match_sources(name):
    entries, unique = TRIVY_COUNTS[name]
    c = count(parse_trivy(trivy(name)))
    assert tuple(c["entries"][s] for s in severity.LEVELS) == entries
    assert tuple(c["unique"][s] for s in severity.LEVELS) == unique
    assert c["total_entries"] == sum(entries) and c["total_unique"] == sum(unique)


def test_trivy_oddities():
    # a Result without a Vulnerabilities key at all
    assert "Vulnerabilities" not in trivy("sl-micro-rancher5.4")["Results"][0]
    assert parse_trivy(trivy("sl-micro-rancher5.4")) == []
    # no Metadata.OS, only a cargo lang-pkgs Result
    busy = trivy("busybox-with-lockfile")
    assert "OS" not in busy["Metadata"]
    assert {r["package"] for r in parse_trivy(busy)} == {"ammonia"}
    # three Results: os-pkgs without Vulnerabilities, jar with one, custom with Target "" and no Type
    spring = trivy("spring4shell-jre11")
    assert [r.get("Class") for r in spring["Results"]] == ["os-pkgs", "lang-pkgs", "custom"]
    assert spring["Results"][2]["Target"] == "" and "Type" not in spring["Results"][2]
    (row,) = parse_trivy(spring)
    assert row == {
        "vulnerability_id": "CVE-2022-22965",
        "package": "org.springframework:spring-beans",
        "installed_version": "5.3.15",
        "fixed_version": "5.3.18",
        "severity": "CRITICAL",
        "source_severity": "CRITICAL",
    }
    # an OS Result and a language Result side by side
    assert {r["package"] for r in parse_trivy(trivy("fluentd-gems"))} == {"libidn2-0", "activesupport"}
    assert {r["package"] for r in parse_trivy(trivy("ubi-7-comprehensive"))} == {"bash", "setuptools"}
    # no FixedVersion (Status affected / will_not_fix) -> null, not ""
    bash = [r for r in parse_trivy(trivy("centos-7")) if r["package"] == "bash"]
    assert bash and bash[0]["fixed_version"] is None


def test_trivy_unknown_severity_and_bad_documents():
    report = copy.deepcopy(trivy("amazon-2"))
    report["Results"][0]["Vulnerabilities"][0]["Severity"] = "UNKNOWN"
    report["Results"][0]["Vulnerabilities"][1]["Severity"] = "SEVERE"  # not a Trivy level at all
    assert [r["severity"] for r in parse_trivy(report)] == ["UNKNOWN", "UNKNOWN"]
    no_results = {k: v for k, v in trivy("alpine-39").items() if k != "Results"}
    assert parse_trivy(no_results) == []
    with pytest.raises(ReportError, match="SchemaVersion 1"):
        parse_trivy({**report, "SchemaVersion": 1})
    with pytest.raises(ReportError, match="JSON object"):
        parse_trivy([report])


def test_ecr_basic_response():
    doc = load(ECR / "describe-image-scan-findings.basic.awscli.json")
    parsed = parse_ecr(doc)
    assert parsed.status == "COMPLETE" and parsed.source == "ecr-basic"
    assert parsed.reported_counts == {"MEDIUM": 1}
    assert parsed.rows == [
        {
            "vulnerability_id": "CVE-2019-5188",
            "package": "e2fsprogs",
            "installed_version": "1.44.1-1ubuntu1.1",
            "fixed_version": None,
            "severity": "MEDIUM",
            "source_severity": "MEDIUM",
        }
    ]
    c = count(parsed.rows)
    assert c["entries"]["MEDIUM"] == 1 and c["total_entries"] == 1 and c["total_unique"] == 1


def test_ecr_enhanced_response():
    doc = load(ECR / "describe-image-scan-findings.enhanced.moto.json")
    assert "findings" not in doc["imageScanFindings"]  # basic list absent: 0 basic findings
    parsed = parse_ecr(doc)
    assert parsed.source == "ecr-enhanced" and parsed.reported_counts == {"MEDIUM": 1, "UNTRIAGED": 1}
    by_id = {r["vulnerability_id"]: r for r in parsed.rows}
    assert by_id["CVE-2024-9681"]["installed_version"] == "7.88.1-10+deb12u8"
    assert by_id["CVE-2024-9681"]["fixed_version"] is None  # "NotAvailable"
    assert by_id["CVE-2025-24528"]["package"] == "krb5"
    assert by_id["CVE-2025-24528"]["severity"] == "UNKNOWN"  # UNTRIAGED
    assert by_id["CVE-2025-24528"]["source_severity"] == "UNTRIAGED"
    c = count(parsed.rows)
    assert c["entries"] == {"CRITICAL": 0, "HIGH": 0, "MEDIUM": 1, "LOW": 0, "UNKNOWN": 1}
    assert c["source_severities"] == {"MEDIUM": 1, "UNTRIAGED": 1}


def test_inspector_closed_findings_dropped_and_epoch_kept():
    doc = copy.deepcopy(load(ECR / "describe-image-scan-findings.enhanced.moto.json"))
    first, second = doc["imageScanFindings"]["enhancedFindings"]
    second["status"] = "CLOSED"
    first["packageVulnerabilityDetails"]["vulnerablePackages"][0]["epoch"] = 1
    first["packageVulnerabilityDetails"]["vulnerablePackages"][0]["fixedInVersion"] = "7.88.1-10+deb12u9"
    (row,) = parse_ecr(doc).rows
    assert row["installed_version"] == "1:7.88.1-10+deb12u8" and row["fixed_version"] == "7.88.1-10+deb12u9"


@pytest.mark.parametrize(
    ("word", "level"),
    [
        ("CRITICAL", "CRITICAL"),
        ("high", "HIGH"),
        ("MEDIUM", "MEDIUM"),
        ("LOW", "LOW"),
        ("UNKNOWN", "UNKNOWN"),
        ("INFORMATIONAL", "UNKNOWN"),
        ("UNDEFINED", "UNKNOWN"),
        ("UNTRIAGED", "UNKNOWN"),
        ("TOTAL", "UNKNOWN"),
        (None, "UNKNOWN"),
    ],
)
def test_severity_mapping(word, level):
    assert severity.normalize(word) == level


def test_detect():
    assert detect(trivy("alpine-39")) == "trivy"
    assert detect(load(ECR / "describe-image-scan-findings.basic.awscli.json")) == "ecr"
    with pytest.raises(parsers.ReportError):
        detect({"Records": []})
