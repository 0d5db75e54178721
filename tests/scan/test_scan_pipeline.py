"""The scan steps in one process against the real registry, moto (ECR + S3) and the trivy stand-in:
one scan per unique digest, index children not the index, referrers skipped, nothing scanned
again within the freshness window, findings carried over with their first_seen."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from include.registry_ops import storage
from include.registry_ops.clients import s3_client
from include.registry_ops.scan import jobs
from tests.conftest import OCI_PASSWORD, OCI_USER
from tests.scan.scanfleet import ECR, TRIVY, invocations, publish_inventory, stand_in_env, write_config


def run_once(config, run_id: str, force: bool = False, run_at: datetime | None = None):
    planned = jobs.plan_run(config, run_at or datetime.now(UTC), run_id, force=force)
    parts = [jobs.scan_batch(config, b, planned["parts_prefix"]) for b in planned["batches"]]
    return planned, parts, jobs.publish(config, planned, parts)


def findings_of(config, manifest):
    return storage.get_table(s3_client(config), config.storage.bucket, manifest["findings_key"]).to_pandas()


@pytest.fixture
def first_run(scan_fleet, scan_config, trivy_env):
    """A fresh config (no scan state) and its first run, for tests that run again."""
    _, config = scan_config(batch_size=3)
    publish_inventory(config)
    planned, parts, manifest = run_once(config, "first")
    return config, planned, parts, manifest


@pytest.fixture(scope="module")
def shared_run(scan_fleet, trivy_bin, moto_server, registry_server, tmp_path_factory):
    """One first run shared by the tests that only read its results; yields (config, plan,
    manifest, trivy invocation log)."""
    workdir = tmp_path_factory.mktemp("shared-run")
    with pytest.MonkeyPatch.context() as mp:
        log = stand_in_env(mp, scan_fleet, workdir)
        _, config = write_config(workdir, f"t-{uuid.uuid4().hex[:8]}", trivy_bin, batch_size=3)
        publish_inventory(config)
        planned, _, manifest = run_once(config, "shared")
        yield config, planned, manifest, log


def test_first_run_scans_each_unique_image_digest_once(shared_run, scan_fleet):
    _, planned, manifest, log = shared_run
    f = scan_fleet.by_name
    oci = {f[n].digest for n in ("a", "b", "c", "d", "amd", "arm", "big")}
    ecr = {f[n].digest for n in ("f", "g", "h")}
    assert planned["digests"] == len(oci | ecr) == 10
    assert planned["images"] == 11  # image a sits in two repositories
    assert planned["to_scan"] == 10 and len(planned["batches"]) == 4  # batches of 3
    calls = invocations(log)
    refs = [c["argv"][-1] for c in calls]
    assert len(refs) == 7 and len(set(refs)) == 7  # one trivy run per OCI digest, mirror not rescanned
    assert {r.rsplit("@", 1)[1] for r in refs} == oci  # children scanned; index and signature never
    assert manifest["scanner_invocations"] == 10 and manifest["error_count"] == 0
    assert manifest["scanned"] == 10 and manifest["fresh"] == 0


def test_credentials_reach_trivy_only_through_the_environment(shared_run):
    secret_hash = hashlib.sha256(OCI_PASSWORD.encode()).hexdigest()
    calls = invocations(shared_run[3])
    assert calls
    for call in calls:
        assert call["username"] == OCI_USER and call["password_sha256"] == secret_hash
        assert not any(OCI_PASSWORD in a for a in call["argv"])
        assert call["argv"][:3] == ["image", "--format", "json"]
        assert "--insecure" in call["argv"]  # the test registry speaks plain HTTP
        assert not [k for k in call["env"] if k.startswith("AWS_")]  # no AWS keys handed to trivy


def test_findings_table_holds_every_location_with_real_counts(shared_run, scan_fleet):
    config, _, manifest, _ = shared_run
    table = findings_of(config, manifest)
    f = scan_fleet.by_name

    def rows(repo, name):
        return table[(table.repository == repo) & (table.digest == f[name].digest)]

    # alpine-39: 6 entries, 3 unique ids (SOURCES.md); copied to the mirror repository unchanged
    for repo in ("scan/oci-app", "scan/oci-mirror"):
        a = rows(repo, "a")
        assert len(a) == 6 and a.vulnerability_id.nunique() == 3
        assert (a.severity == "CRITICAL").sum() == 2 and set(a.source) == {"trivy"}
    assert len(rows("scan/oci-multi", "arm")) == 2 and len(rows("scan/oci-multi", "amd")) == 3
    assert table[table.digest == f["multi"].digest].empty  # the index itself has no rows
    assert rows("scan/oci-big", "big").empty  # sl-micro: zero vulnerabilities
    g = rows("scan/ecr-app", "g")
    assert sorted(g.source_severity) == ["MEDIUM", "UNTRIAGED"] and sorted(g.severity) == [
        "MEDIUM",
        "UNKNOWN",
    ]
    assert set(g.source) == {"ecr-enhanced"}
    curl = g[g.package == "curl"].iloc[0]
    assert curl.installed_version == "7.88.1-10+deb12u8" and pd.isna(curl.fixed_version)
    fr = rows("scan/ecr-app", "f")
    assert fr.iloc[0].vulnerability_id == "CVE-2019-5188" and fr.iloc[0].package == "e2fsprogs"
    assert set(fr.source) == {"ecr-basic"}
    assert (table.first_seen == table.scanned_at).all()
    assert manifest["rows"] == len(table)


def test_incremental_runs(first_run, trivy_env, monkeypatch):
    """Second run: nothing scanned, findings kept. After the window: everything rescanned (ECR
    reads today's scan back after LimitExceededException), first_seen kept. A failed rescan keeps
    the previous findings and the last good state."""
    config, _, _, first = first_run
    key = ["registry", "repository", "digest", "vulnerability_id", "package", "installed_version"]
    cols = [*key, "first_seen", "scanned_at"]
    before = len(invocations(trivy_env))
    planned, parts, second = run_once(config, "second")
    assert planned["to_scan"] == 0 and planned["batches"] == [] and parts == []
    assert planned["fresh"] == 10 and second["scanner_invocations"] == 0
    assert len(invocations(trivy_env)) == before
    a, b = findings_of(config, first), findings_of(config, second)
    assert a.sort_values(key)[cols].values.tolist() == b.sort_values(key)[cols].values.tolist()

    planned, _, later = run_once(config, "later", run_at=datetime.now(UTC) + timedelta(hours=25))
    assert planned["to_scan"] == 10 and later["error_count"] == 0 and later["scanner_invocations"] == 10
    c = findings_of(config, later)
    assert len(c) == len(a) and sorted(c.first_seen.unique()) == sorted(a.first_seen.unique())
    assert (c.scanned_at > c.first_seen).all()

    (trivy_env.parent / "empty-map.json").write_text("{}")
    monkeypatch.setenv("TRIVY_FAKE_MAP", str(trivy_env.parent / "empty-map.json"))
    _, _, broken = run_once(config, "broken", force=True)
    assert broken["error_count"] == 7  # every OCI digest: the stand-in knows no image now
    assert "MANIFEST_UNKNOWN" in broken["errors"][0]["error"]
    with pytest.raises(jobs.ScanIncomplete, match="7 digest"):
        jobs.raise_if_incomplete(broken)
    d = findings_of(config, broken)
    assert len(d) == len(a)  # old OCI findings kept, ECR ones refreshed
    state = storage.get_table(s3_client(config), config.storage.bucket, broken["scans_key"]).to_pandas()
    assert set(state.status) == {"ok"}  # an error does not erase the last good scan


def test_uploaded_pipeline_report_replaces_a_scan(scan_fleet, scan_config, trivy_env):
    _, config = scan_config()
    publish_inventory(config)
    s3 = s3_client(config)
    digest = scan_fleet.by_name["d"].digest
    prefix = config.scan.uploads_prefix
    key = f"{prefix}oci-local/scan/oci-app/sha256-{digest[7:]}.json"
    s3.put_object(
        Bucket=config.storage.bucket, Key=key, Body=(TRIVY / "spring4shell-jre11.json.golden").read_bytes()
    )
    s3.put_object(Bucket=config.storage.bucket, Key=f"{prefix}oci-local/not-a-digest.json", Body=b"{}")
    unknown = f"{prefix}oci-local/scan/oci-app/sha256-{'0' * 64}.json"
    s3.put_object(
        Bucket=config.storage.bucket,
        Key=unknown,
        Body=(ECR / "describe-image-scan-findings.basic.awscli.json").read_bytes(),
    )
    planned, _, manifest = run_once(config, "with-upload")
    assert planned["imported"]["count"] == 1 and planned["to_scan"] == 9
    assert planned["uploads"]["pending"] == [unknown]  # not in the inventory: left for a later run
    assert planned["uploads"]["problems"][0]["key"].endswith("not-a-digest.json")
    assert not any(c["argv"][-1].endswith(digest) for c in invocations(trivy_env))
    table = findings_of(config, manifest)
    d = table[table.digest == digest]
    assert list(d.vulnerability_id) == ["CVE-2022-22965"] and set(d.source) == {"trivy-report"}
    planned, _, _ = run_once(config, "after-upload")
    assert planned["imported"]["count"] == 0 and planned["to_scan"] == 0  # imported once only


def test_untagged_images_can_be_left_out(scan_fleet, scan_config, trivy_env):
    _, config = scan_config(scan_untagged=False)
    publish_inventory(config)
    planned = jobs.plan_run(config, datetime.now(UTC), "untagged")
    assert planned["digests"] == 10  # index children count as tagged through their index


def test_no_inventory_is_a_clear_error(scan_config):
    _, config = scan_config()
    with pytest.raises(jobs.ScanError, match="no inventory snapshot"):
        jobs.plan_run(config, datetime.now(UTC), "none")


def test_manifest_is_written_and_latest_points_at_it(shared_run):
    config, _, manifest, _ = shared_run
    s3 = s3_client(config)
    pointer = json.loads(
        s3.get_object(Bucket=config.storage.bucket, Key=f"{config.storage.prefixes.reports}scan/latest.json")[
            "Body"
        ].read()
    )
    assert pointer["findings"] == manifest["findings_key"]
    stored = storage.get_json(s3, config.storage.bucket, pointer["manifest"])
    assert stored["vulnerabilities_by_severity"] == manifest["vulnerabilities_by_severity"]
    left = s3.list_objects_v2(
        Bucket=config.storage.bucket, Prefix=f"{config.storage.prefixes.reports}scan/_parts/"
    )
    assert left.get("KeyCount", 0) == 0
