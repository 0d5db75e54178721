"""Which inventory snapshot a run plans on (``include/registry_ops/snapshots.py``), on moto S3.

Reproduces issue 7 item 13: queued inventory events reached the run oldest first and the
retention run planned on a snapshot taken before the demo's deletions.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from include.registry_ops import schema, snapshots, storage
from include.registry_ops.config import parse_config
from include.registry_ops.inventory import publish_snapshot
from include.registry_ops.retention import jobs as retention_jobs
from include.registry_ops.scan import jobs as scan_jobs

T0 = datetime(2026, 11, 20, 7, 13, tzinfo=UTC)
CLI = [sys.executable, "-m", "include.registry_ops.cli"]


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _table(images: int, at: datetime):
    """A snapshot of ``images`` untagged images in one repository: sizes tell snapshots apart."""
    return schema.to_table(
        {
            "registry": "ecr-local",
            "registry_kind": "ecr",
            "repository": "shop/cart",
            "digest": _digest(f"{at}-{n}"),
            "tags": [],
            "kind": "image",
            "size_bytes": 1000,
            "pushed_at": at - timedelta(days=60 + n),
            "parent_digests": [],
            "child_digests": [],
            "snapshot_at": at,
        }
        for n in range(images)
    )


def _config(bucket: str, **retention):
    return parse_config(
        {
            "registries": [{"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"conn_id": "aws_default", "bucket": bucket},
            "retention": retention,
        }
    )


@pytest.fixture
def published(s3):
    """A fresh bucket with three snapshots, one hour apart (7, 5 and 3 images); the last is latest."""
    bucket = f"snapshots-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    manifests = [
        publish_snapshot(s3, bucket, "inventory/", _table(images, at), [], at, ["ecr-local"])
        for images, at in ((7, T0), (5, T0 + timedelta(hours=1)), (3, T0 + timedelta(hours=2)))
    ]
    extras = [{k: m[k] for k in ("bucket", "key", "snapshot_at")} for m in manifests]
    return _config(bucket), extras


def test_several_events_in_any_order_plan_on_the_newest(published, s3):
    config, extras = published
    for order in itertools.permutations(extras):
        chosen = snapshots.load(config, s3, list(order))
        assert chosen.location.key == extras[-1]["key"], order
        assert len(chosen.frame) == 3 and set(chosen.frame["snapshot_at"]) == {T0 + timedelta(hours=2)}


def test_no_event_plans_on_latest_json(published, s3):
    config, extras = published
    chosen = snapshots.load(config, s3, [{}])  # an event created by hand, without extra
    assert chosen.location.as_dict() == extras[-1]


def test_an_event_older_than_the_newest_snapshot_is_refused_naming_both(published, s3):
    config, extras = published
    with pytest.raises(snapshots.SnapshotStale) as err:
        snapshots.load(config, s3, [extras[1], extras[0]])
    message = str(err.value)
    for extra in (extras[1], extras[2]):  # the chosen one and the newest known, with their times
        assert f"s3://{extra['bucket']}/{extra['key']}" in message
        assert extra["snapshot_at"] in message
    assert extras[0]["key"] not in message


def test_an_event_without_snapshot_at_is_refused(published, s3):
    config, extras = published
    with pytest.raises(snapshots.SnapshotError, match="no snapshot_at"):
        snapshots.load(config, s3, [{"bucket": extras[2]["bucket"], "key": extras[2]["key"]}])


def test_no_pointer_is_snapshot_missing(s3):
    bucket = f"snapshots-empty-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    with pytest.raises(snapshots.SnapshotMissing) as err:
        snapshots.load(_config(bucket), s3, [])
    assert f"no inventory snapshot at s3://{bucket}/inventory/latest.json" in str(err.value)
    assert "run the registry_inventory DAG first" in str(err.value)
    assert isinstance(err.value, ValueError)  # the CLI maps it to exit 2


def test_no_bucket_is_bucket_missing_naming_it(s3):
    bucket = f"snapshots-none-{uuid.uuid4().hex[:8]}"
    with pytest.raises(storage.BucketMissing, match=f"S3 bucket '{bucket}' does not exist"):
        snapshots.load(_config(bucket), s3, [])


def test_a_pointer_to_a_deleted_snapshot_is_snapshot_missing(published, s3):
    config, extras = published
    s3.delete_object(Bucket=extras[2]["bucket"], Key=extras[2]["key"])
    with pytest.raises(snapshots.SnapshotMissing, match=extras[2]["key"]):
        snapshots.load(config, s3, [])


def test_retention_plan_run_plans_on_the_newest_event(published, s3, tmp_path):
    """Through ``retention.jobs.plan_run``: events oldest-last still plan on the 3-image snapshot."""
    config, extras = published
    policy = tmp_path / "policies.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "policies": [
                    {
                        "name": "untagged",
                        "enabled": True,
                        "repositories": ["*"],
                        "rules": [
                            {
                                "rulePriority": 1,
                                "selection": {
                                    "tagStatus": "untagged",
                                    "countType": "sinceImagePushed",
                                    "countUnit": "days",
                                    "countNumber": 7,
                                },
                                "action": {"type": "expire"},
                            }
                        ],
                    }
                ]
            }
        )
    )
    config = _config(
        config.storage.bucket,
        policy_file=str(policy),
        in_use_discovery=[],
        max_fraction_per_repository=1.0,
    )
    now = T0 + timedelta(hours=3)
    planned = retention_jobs.plan_run(config, "manual__stale", now, True, [extras[0], extras[2], extras[1]])
    assert planned["snapshot"] == extras[2]
    assert planned["actions"] == {"expire": 3}
    with pytest.raises(snapshots.SnapshotStale):
        retention_jobs.plan_run(config, "manual__stale2", now, True, [extras[0]])


def test_scan_plans_on_the_newest_event_and_refuses_a_stale_one(published, s3):
    config, extras = published
    frame, key = scan_jobs._inventory(s3, config, [extras[1], extras[2], extras[0]])
    assert key == extras[2]["key"] and len(frame) == 3
    with pytest.raises(scan_jobs.ScanError, match="older than the newest known"):
        scan_jobs._inventory(s3, config, [extras[0]])
    frame, key = scan_jobs._inventory(s3, config, extras[0]["key"])  # once planned: that key, as is
    assert key == extras[0]["key"] and len(frame) == 7


@pytest.mark.parametrize("create", [True, False], ids=["empty bucket", "no bucket"])
def test_cli_apply_from_s3_without_a_snapshot_exits_2(s3, moto_server, tmp_path, create):
    bucket = f"snapshots-cli-{uuid.uuid4().hex[:8]}"
    if create:
        s3.create_bucket(Bucket=bucket)
    config = tmp_path / "registry-ops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "registries": [{"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default"}],
                "storage": {"conn_id": "aws_default", "bucket": bucket},
            }
        )
    )
    env = {**os.environ, "AIRFLOW_CONN_AWS_DEFAULT": moto_server.conn_json()}
    done = subprocess.run(
        [*CLI, "retention", "apply", "--from-s3", "--policy", "policies/fleet.yaml", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    if create:
        assert f"no inventory snapshot at s3://{bucket}/inventory/latest.json" in done.stderr
        assert "run the registry_inventory DAG first" in done.stderr
    else:
        assert f"S3 bucket '{bucket}' does not exist (storage.bucket in {config})" in done.stderr
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert (bucket in buckets) == create  # a missing bucket was not created on the way
    if create:
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
