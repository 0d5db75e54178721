"""Scan test fixtures: the ``scan/...`` fleet in both registries with real reports, the trivy
stand-in and its environment, and per-test configs (see ``scanfleet.py`` for what and why)."""

from __future__ import annotations

import copy
import stat
import sys
import uuid
from pathlib import Path

import pytest

from devstack.fleet import RepoSpec
from devstack.seed import seed_ecr, seed_oci
from include.registry_ops.registries.oci import OciRegistry
from tests.conftest import OCI_PASSWORD, OCI_USER
from tests.scan.scanfleet import (
    ECR,
    MB,
    STAND_IN,
    TRIVY,
    ScanFleet,
    commit_of,
    image,
    index,
    seed_ecr_findings,
    signature,
    stand_in_env,
    write_config,
)


@pytest.fixture(scope="session")
def scan_fleet(moto_server, registry_server, ecr) -> ScanFleet:
    a = image("app-a", ["1.0.0", commit_of("a"), "latest"])
    b = image("app-b", ["0.9.0", commit_of("b")])
    c = image("app-c", ["20261101-120000", commit_of("c")])
    d = image("app-d", ["feature-x"])
    amd = image("multi", [], arch="amd64")
    arm = image("multi", [], arch="arm64")
    multi = index([amd, arm], ["2.0.0", commit_of("m"), "latest"])
    big = image("big", ["3.1.0"], layer_sizes=(int(1.5 * MB), 200_000, 4000))
    mirror_a = copy.copy(a)
    mirror_a.tags = ["1.0.0"]
    oci = {
        "scan/oci-app": [a, signature(a), b, c, d],
        "scan/oci-mirror": [mirror_a],
        "scan/oci-multi": [amd, arm, multi],
        "scan/oci-big": [big],
    }
    f = image("ecr-f", ["1.2.0", commit_of("f")])
    g = image("ecr-g", ["1.1.0", commit_of("g"), "latest"])
    h = image("ecr-h", ["4.0.0", commit_of("h")], layer_sizes=(int(1.2 * MB), 300_000))
    ecr_repos = {"scan/ecr-app": [f, g], "scan/ecr-big": [h]}
    host = registry_server.url.split("://", 1)[1]
    fleet = ScanFleet(host, {**oci, **ecr_repos})
    fleet.by_name = {
        "a": a,
        "b": b,
        "c": c,
        "d": d,
        "amd": amd,
        "arm": arm,
        "multi": multi,
        "big": big,
        "f": f,
        "g": g,
        "h": h,
    }
    for repo, name, report in (
        ("scan/oci-app", "a", "alpine-39"),
        ("scan/oci-mirror", "a", "alpine-39"),
        ("scan/oci-app", "b", "ubi-7-comprehensive"),
        ("scan/oci-app", "c", "ubuntu-1804"),
        ("scan/oci-app", "d", "photon-30"),
        ("scan/oci-multi", "amd", "centos-7"),
        ("scan/oci-multi", "arm", "fluentd-gems"),
        ("scan/oci-big", "big", "sl-micro-rancher5.4"),
    ):
        fleet.trivy_reports[fleet.ref(repo, name)] = TRIVY / f"{report}.json.golden"
    seed_oci(
        OciRegistry("seed", registry_server.url, OCI_USER, OCI_PASSWORD),
        [RepoSpec(name, specs) for name, specs in oci.items()],
    )
    seed_ecr(ecr, [RepoSpec(name, specs) for name, specs in ecr_repos.items()])
    for repo, spec, response in (
        ("scan/ecr-app", f, "describe-image-scan-findings.basic.awscli.json"),
        ("scan/ecr-app", g, "describe-image-scan-findings.enhanced.moto.json"),
        ("scan/ecr-big", h, "describe-image-scan-findings.basic.awscli.json"),
    ):
        seed_ecr_findings(moto_server.endpoint, repo, spec.digest, ECR / response)
        fleet.ecr_responses[spec.digest] = ECR / response
    return fleet


@pytest.fixture(scope="session")
def trivy_bin(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trivy-bin") / "trivy"
    path.write_text(STAND_IN.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def trivy_env(scan_fleet, tmp_path, monkeypatch) -> Path:
    """Point the stand-in at the fleet's reports; returns its invocation log."""
    return stand_in_env(monkeypatch, scan_fleet, tmp_path)


@pytest.fixture
def scan_config(moto_server, registry_server, smtp_server, trivy_bin, tmp_path, monkeypatch):
    """A function taking ``scan:`` overrides and writing a config (unique S3 prefixes per test, so
    each starts with no scan state); gives (path, Config) and sets $REGISTRY_OPS_CONFIG."""
    tag = f"t-{uuid.uuid4().hex[:8]}"

    def make(**scan):
        path, config = write_config(tmp_path, tag, trivy_bin, **scan)
        monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(path))
        return path, config

    return make
