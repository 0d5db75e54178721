"""Size budget (largest layers from the real manifests: OCI GET, ECR batch_get_image) and tag
conventions, on the scan/* fleet as listed by the real inventory code."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from include.registry_ops import storage
from include.registry_ops.scan import jobs
from tests.scan.scanfleet import MB, publish_inventory


@pytest.fixture
def planned(scan_fleet, scan_config):
    _, config = scan_config()  # size_budget_mb: 1
    publish_inventory(config)
    return config, jobs.plan_run(config, datetime.now(UTC), "reports")


def test_size_budget_lists_big_images_with_their_largest_layers(planned, scan_fleet):
    config, plan = planned
    summary = jobs.size_report(config, plan)
    report = storage.get_json(jobs.s3_client(config), config.storage.bucket, summary["key"])
    by_repo = {r["repository"]: r for r in report["over_budget"]}
    assert set(by_repo) == {"scan/oci-big", "scan/ecr-big"}  # everything else is a few KB
    big, h = scan_fleet.by_name["big"], scan_fleet.by_name["h"]
    oci = by_repo["scan/oci-big"]
    assert oci["digest"] == big.digest and oci["newest_tag"] == "3.1.0" and oci["size_bytes"] == big.size
    layers = [b for b in big.blobs if b.media_type.endswith("layer.v1.tar")]
    expected = sorted(layers, key=lambda b: b.size, reverse=True)
    assert [x["digest"] for x in oci["largest_layers"]] == [b.digest for b in expected]
    assert oci["largest_layers"][0]["size_bytes"] > 1.5 * MB
    ecr = by_repo["scan/ecr-big"]
    assert ecr["size_bytes"] == h.size and ecr["largest_layers"][0]["size_bytes"] > 1.2 * MB
    assert (
        report["errors"] == [] and summary["manifest_requests"] == 3
    )  # OCI: 401 challenge + GET; ECR: one batch_get_image


def test_tag_conventions(planned):
    config, plan = planned
    summary = jobs.tag_report(config, plan)
    issues = storage.get_json(jobs.s3_client(config), config.storage.bucket, summary["key"])["issues"]
    found = sorted((i["repository"], i["rule"], i["tag"]) for i in issues)
    assert found == [
        ("scan/ecr-app", "latest_not_newest_release", "latest"),
        ("scan/ecr-big", "latest_missing", "latest"),
        ("scan/oci-app", "nonconforming_tag", "feature-x"),
        ("scan/oci-big", "latest_missing", "latest"),
        ("scan/oci-big", "release_without_commit", "3.1.0"),
        ("scan/oci-mirror", "latest_missing", "latest"),
        ("scan/oci-mirror", "release_without_commit", "1.0.0"),
    ]
    assert summary["by_rule"]["latest_missing"] == 3
