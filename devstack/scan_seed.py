"""Scan data for the demo fleet (demo only): Trivy cannot run here, so the demo plays the part
of the build pipelines and of ECR's scanner with REAL reports from ``tests/fixtures``:

- OCI images: a real Trivy JSON report (of one of Trivy's own test images, see
  ``tests/fixtures/trivy/SOURCES.md``) is uploaded per image digest to the pipeline-upload
  prefix, where ``registry_scan`` imports reports instead of running Trivy;
- ECR images: a real ``DescribeImageScanFindings`` response (AWS CLI sample, see
  ``tests/fixtures/ecr/SOURCES.md``) is seeded into moto per digest through moto's seeding
  endpoint, so ECR's native scan path returns it.

The report chosen for an image depends only on its digest (deterministic). The findings are
real Trivy/ECR output, but for other images than the seeded ones: the demo says so.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import requests

from devstack.fleet import RepoSpec

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def _scannable(fleet: list[RepoSpec]) -> list[tuple[str, str]]:
    return [(repo.name, m.digest) for repo in fleet for m in repo.manifests if m.kind == "image"]


def upload_trivy_reports(s3: Any, bucket: str, prefix: str, registry: str, fleet: list[RepoSpec]) -> int:
    """One real Trivy report per OCI image digest, at the key layout pipelines use."""
    reports = sorted((FIXTURES / "trivy").glob("*.json.golden"))
    bodies = [r.read_bytes() for r in reports]
    count = 0
    for repository, digest in _scannable(fleet):
        body = bodies[int(digest[7:15], 16) % len(bodies)]
        key = f"{prefix}{registry}/{repository}/sha256-{digest[7:]}.json"
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
        count += 1
    return count


def seed_ecr_findings(endpoint: str, fleet: list[RepoSpec], region: str = "us-east-1") -> int:
    """Bind a real DescribeImageScanFindings response to every ECR image digest in moto."""
    sample = json.loads((FIXTURES / "ecr" / "describe-image-scan-findings.basic.awscli.json").read_text())
    results = []
    for repository, digest in _scannable(fleet):
        result = copy.deepcopy(sample)
        result["repositoryName"] = repository
        result["imageId"] = {"imageDigest": digest}
        results.append(result)
    for i in range(0, len(results), 200):
        resp = requests.post(
            f"{endpoint}/moto-api/static/ecr/scan-finding-results",
            json={"results": results[i : i + 200], "region": region},
            timeout=60,
        )
        resp.raise_for_status()
    return len(results)
