"""Retention planning keeps what ECS runs: discovery wired through the config, against moto."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
import yaml

from include.registry_ops import inventory
from include.registry_ops.config import load_config
from include.registry_ops.retention import jobs
from include.registry_ops.retention.in_use import InUseError
from tests.conftest import BUCKET
from tests.retention_exec.helpers import ecr_registry, seed, small_fleet, unique

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def _config(tmp_path, prefix: str, discovery: list[str]):
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "policies": [
                    {
                        "name": "keep-one",
                        "repositories": [f"{prefix}*"],
                        "enabled": True,
                        "rules": [
                            {
                                "rulePriority": 1,
                                "selection": {
                                    "tagStatus": "any",
                                    "countType": "imageCountMoreThan",
                                    "countNumber": 1,
                                },
                                "action": {"type": "expire"},
                            }
                        ],
                    }
                ],
            }
        )
    )
    path = tmp_path / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default", "region": "us-east-1"}
                ],
                "storage": {"bucket": BUCKET},
                "retention": {"policy_file": str(policy), "in_use_discovery": discovery},
            }
        )
    )
    return load_config(path)


def test_an_image_an_ecs_task_definition_runs_is_kept(moto_server, tmp_path):
    prefix = unique("ret-inuse")
    fleet = seed(ecr_registry(moto_server.endpoint), small_fleet(prefix, repositories=1, images=12))
    repo = fleet[0]
    pinned = next(  # the oldest CI build (no release tag, which is protected by default)
        m
        for m in sorted(repo.manifests, key=lambda m: m.pushed_at)
        if m.kind == "image" and not any("." in t or t == "latest" for t in m.tags)
    )
    ecs = boto3.client("ecs", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    ecs.register_task_definition(
        family=f"inuse-{prefix.split('/')[1]}",
        containerDefinitions=[{"name": "app", "image": f"{HOST}/{repo.name}@{pinned.digest}", "memory": 64}],
    )

    config = _config(tmp_path, prefix, ["ecs", "lambda"])
    refs = jobs.in_use_refs(config)
    assert f"{HOST}/{repo.name}@{pinned.digest}" in refs

    listing = inventory.list_batch(ecr_registry(moto_server.endpoint), [repo.name], datetime.now(UTC))
    frame = listing.table.to_pandas()
    policies = jobs.load_policy_set(config)
    now = datetime(2026, 11, 27, tzinfo=UTC)
    with_discovery = jobs.make_plan(frame, policies, now, refs).set_index("digest")
    without = jobs.make_plan(frame, policies, now, None).set_index("digest")
    assert without.loc[pinned.digest, "action"] == "expire"  # the policy alone would delete it
    assert with_discovery.loc[pinned.digest, "action"] == "keep"
    assert "use" in with_discovery.loc[pinned.digest, "reason"]


def test_discovery_off_means_no_source(moto_server, tmp_path):
    assert jobs.in_use_refs(_config(tmp_path, "ret-inuse-off/", [])) is None


def test_a_failing_discovery_stops_the_plan(tmp_path, monkeypatch):
    """Without knowing what runs nothing may be deleted: a dead ECS endpoint raises."""
    # one attempt (the connection's config_kwargs): botocore's 8 on a refused port add ~40 s
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        '{"conn_type": "aws", "login": "x", "password": "y", "extra": {"region_name": "us-east-1", '
        '"endpoint_url": "http://127.0.0.1:9", '
        '"config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}}}',
    )
    with pytest.raises(InUseError, match="in-use discovery: list_task_definitions failed"):
        jobs.in_use_refs(_config(tmp_path, "ret-inuse-dead/", ["ecs"]))
