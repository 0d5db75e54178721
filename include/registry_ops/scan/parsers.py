"""Normalize scanner output into finding rows (see ``findings.FINDING_FIELDS``).

Two formats, both as the tools emit them:

- **Trivy JSON** (``trivy image --format json``, SchemaVersion 2): every element of
  ``Results[].Vulnerabilities[]`` is one row. Tolerated, because real reports do it: a Result
  without ``Vulnerabilities`` (nothing found, e.g. SLE Micro), a report without ``Metadata.OS``
  (busybox with only a Cargo.lock), ``Class: custom`` Results with ``Target: ""`` and no
  ``Type``, OS and language Results side by side, and vulnerabilities without ``FixedVersion``
  (Status ``affected``/``will_not_fix``) or without ``Title``/``PkgID``.
- **ECR DescribeImageScanFindings** (one page or the pages joined): basic ``findings[]``
  (package name and version only in ``attributes[]`` key/value pairs, no fixed version) and
  Inspector ``enhancedFindings[]`` (one row per ``vulnerablePackages[]`` entry; version built as
  ``[epoch:]version[-release]``; ``fixedInVersion: NotAvailable`` means none). Inspector findings
  with status CLOSED are dropped (no longer present); SUPPRESSED ones are kept, because the
  project's allowlist, with a reason and an expiry, is the one place exceptions are made.

The same CVE often appears once per affected package (alpine-39: 6 entries, 3 CVEs), so counts
are given both ways: entries and unique vulnerability ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .severity import LEVELS, normalize

NOT_AVAILABLE = frozenset({"", "NotAvailable", "NOT_AVAILABLE", "None"})


class ReportError(ValueError):
    """The document is not a scanner report this module understands; the message says why."""


def parse_trivy(report: Any) -> list[dict[str, Any]]:
    """Rows from one Trivy JSON report (``trivy image --format json``)."""
    if not isinstance(report, Mapping):
        raise ReportError(f"a Trivy report is a JSON object, got {type(report).__name__}")
    version = report.get("SchemaVersion")
    if version != 2:
        raise ReportError(f"Trivy report SchemaVersion {version!r} is not supported (expected 2)")
    results = report.get("Results") or []
    if not isinstance(results, list):
        raise ReportError("Trivy report: 'Results' is not a list")
    rows: list[dict[str, Any]] = []
    for i, result in enumerate(results):
        for vuln in result.get("Vulnerabilities") or []:
            vid = vuln.get("VulnerabilityID")
            if not vid:
                raise ReportError(
                    f"Trivy report: Results[{i}] ({result.get('Target')!r}) has a "
                    "vulnerability without VulnerabilityID"
                )
            rows.append(
                {
                    "vulnerability_id": vid,
                    "package": vuln.get("PkgName"),
                    "installed_version": vuln.get("InstalledVersion"),
                    "fixed_version": vuln.get("FixedVersion") or None,
                    "severity": normalize(vuln.get("Severity")),
                    "source_severity": vuln.get("Severity"),
                }
            )
    return rows


@dataclass
class EcrFindings:
    """One DescribeImageScanFindings response (or its pages joined), normalized."""

    status: str | None
    description: str | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)  # ecr-basic / ecr-enhanced
    reported_counts: dict[str, int] = field(default_factory=dict)  # findingSeverityCounts as sent
    next_token: str | None = None

    @property
    def source(self) -> str:
        """``ecr-enhanced`` if Inspector findings are present, else ``ecr-basic``."""
        return "ecr-enhanced" if "ecr-enhanced" in self.sources else "ecr-basic"


def _attributes(finding: Mapping[str, Any]) -> dict[str, str]:
    return {a.get("key"): a.get("value") for a in finding.get("attributes") or [] if a.get("key")}


def _inspector_version(pkg: Mapping[str, Any]) -> str | None:
    version = pkg.get("version")
    if not version:
        return None
    if pkg.get("release"):
        version = f"{version}-{pkg['release']}"
    epoch = pkg.get("epoch")
    if epoch not in (None, 0, "0"):
        version = f"{epoch}:{version}"
    return version


def _basic_rows(findings: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for f in findings:
        attrs = _attributes(f)
        rows.append(
            {
                "vulnerability_id": f.get("name") or f.get("uri") or "UNNAMED",
                "package": attrs.get("package_name"),
                "installed_version": attrs.get("package_version"),
                "fixed_version": None,  # basic scanning does not say
                "severity": normalize(f.get("severity")),
                "source_severity": f.get("severity"),
            }
        )
    return rows


def _enhanced_rows(findings: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for f in findings:
        if f.get("status") == "CLOSED":
            continue
        details = f.get("packageVulnerabilityDetails") or {}
        vid = details.get("vulnerabilityId") or f.get("title") or f.get("findingArn") or "UNNAMED"
        for pkg in details.get("vulnerablePackages") or [{}]:
            fixed = pkg.get("fixedInVersion")
            rows.append(
                {
                    "vulnerability_id": vid,
                    "package": pkg.get("name"),
                    "installed_version": _inspector_version(pkg),
                    "fixed_version": None if fixed in NOT_AVAILABLE or fixed is None else fixed,
                    "severity": normalize(f.get("severity")),
                    "source_severity": f.get("severity"),
                }
            )
    return rows


def parse_ecr(response: Any) -> EcrFindings:
    """Normalize a DescribeImageScanFindings response (AWS CLI JSON or a boto3 dict)."""
    if not isinstance(response, Mapping) or not (
        "imageScanFindings" in response or "imageScanStatus" in response
    ):
        raise ReportError("not a DescribeImageScanFindings response (no imageScanFindings/imageScanStatus)")
    status = response.get("imageScanStatus") or {}
    body = response.get("imageScanFindings") or {}
    out = EcrFindings(status.get("status"), status.get("description"), next_token=response.get("nextToken"))
    out.reported_counts = {k: int(v) for k, v in (body.get("findingSeverityCounts") or {}).items()}
    if "findings" in body:
        out.sources.add("ecr-basic")
        out.rows.extend(_basic_rows(body["findings"] or []))
    if "enhancedFindings" in body:
        out.sources.add("ecr-enhanced")
        out.rows.extend(_enhanced_rows(body["enhancedFindings"] or []))
    return out


def count(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-severity counts of entries and of unique vulnerability ids (the CLI's output)."""
    entries = dict.fromkeys(LEVELS, 0)
    unique: dict[str, set[str]] = {s: set() for s in LEVELS}
    source: dict[str, int] = {}
    for r in rows:
        entries[r["severity"]] += 1
        unique[r["severity"]].add(r["vulnerability_id"])
        word = str(r.get("source_severity"))
        source[word] = source.get(word, 0) + 1
    return {
        "entries": entries,
        "unique": {s: len(ids) for s, ids in unique.items()},
        "total_entries": sum(entries.values()),
        "total_unique": len({r["vulnerability_id"] for r in rows}),
        "source_severities": dict(sorted(source.items())),
    }


def detect(document: Any) -> str:
    """``trivy`` or ``ecr`` for a loaded JSON document, else ReportError."""
    if isinstance(document, Mapping):
        if "SchemaVersion" in document and ("Results" in document or "ArtifactName" in document):
            return "trivy"
        if "imageScanFindings" in document or "imageScanStatus" in document:
            return "ecr"
    raise ReportError("neither a Trivy JSON report nor an ECR DescribeImageScanFindings response")
