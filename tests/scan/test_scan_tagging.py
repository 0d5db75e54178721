"""Tag conventions (kinds, newest tag, rules) and `registry-ops tag` against both real registries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devstack.fleet import RepoSpec
from devstack.seed import seed_oci
from include.registry_ops.registries.base import Manifest
from include.registry_ops.registries.ecr import EcrRegistry
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.scan import retag, tagging
from tests.conftest import OCI_PASSWORD, OCI_USER
from tests.scan.scanfleet import image

CLI = [sys.executable, "-m", "include.registry_ops.cli"]


@pytest.mark.parametrize(
    ("tag", "kind"),
    [
        ("1.4.2", "semver"),
        ("v2.0.0-rc.1", "semver"),
        ("1.0.0+build.7", "semver"),
        ("3f9c2ab", "commit"),
        ("3f9c2ab" * 5 + "12345", "commit"),  # 40 hex
        ("3f9c2a", "other"),  # 6 hex: too short
        ("3F9C2AB", "other"),  # uppercase is not how git prints SHAs
        ("latest", "latest"),
        ("20261127-134502", "timestamp"),
        ("20261332-134502", "other"),  # month 13
        ("1.4", "other"),
        ("feature-x", "other"),
        ("01.2.3", "other"),
    ],
)
def test_kinds(tag, kind):
    assert tagging.kind(tag) == kind


def test_semver_precedence_and_newest_tag():
    order = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
    ]
    assert sorted(reversed(order), key=tagging.semver_key) == order
    assert tagging.newest_tag(["latest", "1.9.0", "1.10.0", "abc1234"]) == "1.10.0"
    assert tagging.newest_tag(["2.0.0-rc.1", "abc1234"]) == "2.0.0-rc.1"
    assert tagging.newest_tag(["20260101-000000", "20261101-120000", "abc1234"]) == "20261101-120000"
    assert tagging.newest_tag(["abc1234", "latest"]) == "latest"
    assert tagging.newest_tag([]) is None


def test_repository_rules():
    issues = tagging.check_repository(
        "r",
        "app",
        {
            "sha256:a": ["1.2.0", "latest"],  # release without commit, and latest on an old release
            "sha256:b": ["1.3.0", "abc1234"],
            "sha256:c": ["feature-x", "20261101-120000"],
        },
    )
    rules = sorted((i["rule"], i["tag"], i["digest"]) for i in issues)
    assert rules == [
        ("latest_not_newest_release", "latest", "sha256:a"),
        ("nonconforming_tag", "feature-x", "sha256:c"),
        ("release_without_commit", "1.2.0", "sha256:a"),
    ]
    assert tagging.check_repository("r", "app", {"sha256:b": ["1.3.0", "abc1234", "latest"]}) == []
    (missing,) = tagging.check_repository("r", "app", {"sha256:b": ["1.3.0", "abc1234"]})
    assert missing["rule"] == "latest_missing"


def test_latest_only_moves_forward():
    tags, note = retag.plan_tags("2.1.0", "abc1234", "20261127-101010", ["2.0.0", "1.9.9"])
    assert tags == ["2.1.0", "abc1234", "20261127-101010", "latest"] and note == "moved"
    tags, note = retag.plan_tags("1.9.10", "abc1234", "20261127-101010", ["2.0.0"])
    assert "latest" not in tags and note == "kept on 2.0.0: 1.9.10 is older"
    tags, note = retag.plan_tags("3.0.0-rc.1", "abc1234", "20261127-101010", [])
    assert "latest" not in tags and note == "not a release"
    tags, _ = retag.plan_tags(None, "abc1234", "20261127-101010", [])
    assert tags == ["abc1234", "20261127-101010"]
    for bad in (
        ("1.2", "abc1234", "20261127-101010"),
        ("1.2.0", "xyz", "20261127-101010"),
        ("1.2.0", "abc1234", "now"),
    ):
        with pytest.raises(ValueError):
            retag.plan_tags(*bad, [])


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=120)


def test_tag_command_on_the_oci_registry(registry_server, scan_config):
    path, _ = scan_config()
    reg = OciRegistry("oci", registry_server.url, OCI_USER, OCI_PASSWORD)
    old, new = image("tag-oci-old", ["pushed-old"]), image("tag-oci-new", ["pushed-new"])
    # outside the scan/* fleet the other scan tests count (test files may run in any order)
    seed_oci(reg, [RepoSpec("scan-tagging/tag-oci", [old, new])])
    base = ["tag", "--config", str(path), "--registry", "oci-local", "--repository", "scan-tagging/tag-oci"]
    proc = run_cli(
        *base,
        "--source",
        new.digest,
        "--version",
        "2.0.0",
        "--commit",
        "aaaaaaa",
        "--timestamp",
        "20261127-100000",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["applied"] == ["2.0.0", "aaaaaaa", "20261127-100000", "latest"]
    for tag in result["applied"]:
        assert reg.head_manifest("scan-tagging/tag-oci", tag) == new.digest
    # an older release afterwards: tagged, but latest stays on 2.0.0
    proc = run_cli(*base, "--source", "pushed-old", "--version", "1.9.1", "--commit", "bbbbbbb")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["latest"] == "kept on 2.0.0: 1.9.1 is older" and "latest" not in result["applied"]
    assert reg.head_manifest("scan-tagging/tag-oci", "1.9.1") == old.digest
    assert reg.head_manifest("scan-tagging/tag-oci", "latest") == new.digest
    assert tagging.is_timestamp(result["tags"][-1])
    assert OCI_PASSWORD not in proc.stdout + proc.stderr


def test_tag_command_on_ecr(ecr, scan_config):
    path, _ = scan_config()
    ecr.create_repository(repositoryName="scan-tagging/tag-ecr")
    spec = image("tag-ecr", [])
    reg = EcrRegistry("ecr", ecr)
    # pushed untagged
    reg.put_manifest("scan-tagging/tag-ecr", Manifest(spec.digest, spec.media_type, spec.raw))
    proc = run_cli(
        "tag",
        "--config",
        str(path),
        "--registry",
        "ecr-local",
        "--repository",
        "scan-tagging/tag-ecr",
        "--source",
        spec.digest,
        "--version",
        "1.0.0",
        "--commit",
        "ccccccc",
        "--timestamp",
        "20261127-110000",
    )
    assert proc.returncode == 0, proc.stderr
    (detail,) = ecr.describe_images(repositoryName="scan-tagging/tag-ecr")["imageDetails"]
    assert detail["imageDigest"] == spec.digest
    assert sorted(detail["imageTags"]) == ["1.0.0", "20261127-110000", "ccccccc", "latest"]
    again = retag.apply(reg, "scan-tagging/tag-ecr", "latest", "ccccccc", "1.0.0", "20261127-110000")
    assert again["applied"] == ["1.0.0", "ccccccc", "20261127-110000", "latest"]  # re-applying is harmless
    proc = run_cli(
        "tag",
        "--config",
        str(path),
        "--registry",
        "ecr-local",
        "--repository",
        "scan-tagging/tag-ecr",
        "--source",
        spec.digest,
        "--commit",
        "NOT-HEX",
    )
    assert proc.returncode == 2 and "commit 'NOT-HEX'" in proc.stderr
