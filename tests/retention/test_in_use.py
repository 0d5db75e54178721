"""Images in use: reference parsing, ECS and Lambda discovery against the session's moto server,
user lists, and the planner keeping what workloads use.

moto facts these tests rely on (moto 5.2.5): ECS task definitions, services, deregistration and
FARGATE ``run_task`` work, but task containers carry no ``imageDigest`` (so the running-task
digest pinning path only sees the tag); Lambda accepts ``PackageType=Image`` and, with its
default ECR stub, reports a ``ResolvedImageUri`` whose digest is a hash of the URI string, not
of an image. Other tests share the account, so assertions check inclusion, not equality.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
from botocore.stub import Stubber

from include.registry_ops.retention.in_use import (
    InUseError,
    collect_in_use,
    ecs_references,
    index_references,
    lambda_references,
    parse_reference,
    user_references,
)
from tests.retention.helpers import actions, by_name, digest, ecr_policy, image, inventory, rule

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (f"{HOST}/team/api:v1", (HOST, "team/api", "v1", None)),
        (f"{HOST}/team/api@{D}", (HOST, "team/api", None, D)),
        (f"{HOST}/team/api:v1@{D}", (HOST, "team/api", "v1", D)),
        ("localhost:5000/api:1.0", ("localhost:5000", "api", "1.0", None)),
        ("registry.example.com:5000/a/b/c", ("registry.example.com:5000", "a/b/c", "latest", None)),
        ("nginx", (None, "nginx", "latest", None)),
        ("library/nginx:1.25", (None, "library/nginx", "1.25", None)),
        (D, (None, "", None, D)),
    ],
)
def test_parse_reference(ref, expected):
    got = parse_reference(ref)
    assert (got.host, got.repository, got.tag, got.digest) == expected


@pytest.mark.parametrize(
    "ref",
    ["", "Team/API:v1", f"{HOST}/api@sha256:short", f"{HOST}/api@sha256@{D}", "api:bad tag", "a//b"],
)
def test_invalid_references_are_skipped(ref):
    assert parse_reference(ref) is None
    assert index_references({ref}).skipped == [ref]


def test_moto_lambda_digest_is_not_a_reference():
    """moto's ResolvedImageUri for a digest-pinned function looks like 'repo@sha256@sha256:...'."""
    assert parse_reference(f"{HOST}/ret-plan/fn@sha256@{D}") is None


def test_user_list_ignores_comments_and_blank_lines(tmp_path):
    path = tmp_path / "in-use.txt"
    path.write_text(f"# pinned by the payments team\n{HOST}/team/api:v1  # prod\n\n{D}\n")
    found = user_references(path)
    assert found.refs == {f"{HOST}/team/api:v1", D}
    assert found.sources[D] == {str(path)}


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def ecs(moto_server):
    return boto3.client("ecs", endpoint_url=moto_server.endpoint, region_name="us-east-1")


@pytest.fixture(scope="module")
def lam(moto_server):
    return boto3.client("lambda", endpoint_url=moto_server.endpoint, region_name="us-east-1")


def test_ecs_task_definitions_services_and_tasks(ecs, uid):
    repo = f"{HOST}/ret-plan/{uid}/web"
    active = ecs.register_task_definition(
        family=f"ret-plan-{uid}-web",
        containerDefinitions=[
            {"name": "app", "image": f"{repo}:v2", "memory": 128},
            {"name": "sidecar", "image": f"{repo}@{D}", "memory": 64},
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    old = ecs.register_task_definition(
        family=f"ret-plan-{uid}-old",
        containerDefinitions=[{"name": "app", "image": f"{repo}:v1", "memory": 128}],
    )["taskDefinition"]["taskDefinitionArn"]
    cluster = f"ret-plan-{uid}"
    ecs.create_cluster(clusterName=cluster)
    ecs.create_service(cluster=cluster, serviceName="svc", taskDefinition=old, desiredCount=1)
    ecs.deregister_task_definition(taskDefinition=old)  # the service still runs it
    batch = ecs.register_task_definition(
        family=f"ret-plan-{uid}-batch",
        containerDefinitions=[{"name": "job", "image": f"{repo}:job", "memory": 128}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.run_task(
        cluster=cluster,
        taskDefinition=batch,
        launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-1"]}},
    )
    ecs.deregister_task_definition(taskDefinition=batch)  # only the running task still uses it

    found = ecs_references(ecs)
    assert {f"{repo}:v2", f"{repo}@{D}", f"{repo}:v1", f"{repo}:job"} <= found.refs
    assert any(s.startswith("ecs task definition") for s in found.sources[f"{repo}:v2"])
    assert any(s.startswith("ecs service svc") for s in found.sources[f"{repo}:v1"])
    assert any(s.startswith("ecs task ") for s in found.sources[f"{repo}:job"])
    assert active


def test_lambda_container_image_functions(moto_server, lam, uid):
    iam = boto3.client("iam", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    role = iam.create_role(
        RoleName=f"ret-plan-{uid}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    repo = f"{HOST}/ret-plan/{uid}/fn"
    lam.create_function(
        FunctionName=f"ret-plan-{uid}-tag",
        Role=role,
        PackageType="Image",
        Code={"ImageUri": f"{repo}:v3"},
        Publish=True,
    )
    lam.create_function(
        FunctionName=f"ret-plan-{uid}-digest",
        Role=role,
        PackageType="Image",
        Code={"ImageUri": f"{repo}@{D}"},
    )
    found = lambda_references(lam)
    assert {f"{repo}:v3", f"{repo}@{D}"} <= found.refs
    sources = found.sources[f"{repo}:v3"]
    assert any(s.endswith(":$LATEST") for s in sources) and any(
        s.endswith(":1") for s in sources
    )  # every version
    assert all(ref.startswith(f"{HOST}/") for ref in found.refs if uid in ref)


def test_planner_keeps_what_workloads_use(ecs, lam, moto_server, uid):
    repo = f"ret-plan/{uid}/svc"
    ecs.register_task_definition(
        family=f"ret-plan-{uid}-svc",
        containerDefinitions=[{"name": "app", "image": f"{HOST}/{repo}:v1", "memory": 128}],
    )
    pinned = digest(f"{uid}-pinned")
    found = collect_in_use(ecs=ecs, lambda_client=lam, extra=[f"{HOST}/{repo}@{pinned}"])
    inv = inventory(
        image("used", ["v1"], 100, repo=repo),
        image("unused", ["v0"], 100, repo=repo),
        image(f"{uid}-pinned", [], 100, repo=repo),
    )
    got = by_name(
        actions(inv, ecr_policy(rule(1, "any", "sinceImagePushed", 30)), in_use=found.refs), "used unused"
    )
    assert got == {"used": "keep", "unused": "expire"}
    assert (
        actions(inv, ecr_policy(rule(1, "any", "sinceImagePushed", 30)), in_use=found.refs)[pinned] == "keep"
    )


def test_discovery_failures_raise(ecs):
    with Stubber(ecs) as stub:
        stub.add_client_error("list_task_definitions", "AccessDeniedException", "not allowed")
        with pytest.raises(InUseError, match="list_task_definitions failed"):
            ecs_references(ecs)
