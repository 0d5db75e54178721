"""One account on moto holding a case of every finding id and every evaluation rule (the
module docstring of test_audit_moto.py lists which principal shows which).

Two things are put into moto's backend directly, because moto refuses them through the API:
a malformed inline policy and a malformed repository policy (AWS refuses them too today: they
stand for documents the audit cannot evaluate), and a registry policy granting a repository
action (moto validates registry policies with the V1 scope, replication actions only; AWS's
V2 scope accepts every ECR action). Access-key dates are set in the backend too: moto stamps
keys with the current time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .conftest import REGION, AwsAccount, policy

OTHER = "610000000006"  # allowlisted in the model for pull on prod/*
THIRD = "630000000003"  # not allowlisted
PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
PUSH = [
    "ecr:PutImage",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:BatchCheckLayerAvailability",
]
REPOS = ("prod/payments", "prod/web", "dev/sandbox", "team-a/app", "team-ab/app")
NOW = datetime.now(UTC)


def model(acct: AwsAccount) -> dict[str, Any]:
    return {
        "service_accounts": ["user/ci-bot"],
        "grants": [
            {"principals": ["group/devs"], "repositories": ["dev/*", "team-*"], "capabilities": ["pull"]},
            {
                "principals": ["user/ci-bot"],
                "repositories": ["prod/*"],
                "capabilities": ["pull", "push"],
                "required": True,
            },
            {
                "principals": ["role/deployer"],
                "repositories": ["prod/payments"],
                "capabilities": ["pull", "push"],
                "required": True,
            },
            {"principals": ["role/reader"], "repositories": ["*"], "capabilities": ["pull"]},
            {"principals": ["role/janitor"], "repositories": ["dev/*", "team-*"], "capabilities": ["delete"]},
            {
                "principals": ["user/mallory", "role/builder"],
                "repositories": ["*"],
                "capabilities": ["pull", "push", "delete", "admin"],
            },
            {
                "principals": ["role/ghost"],
                "repositories": ["prod/*"],
                "capabilities": ["pull"],
                "required": True,
            },
        ],
        "cross_account": [
            {
                "principal": OTHER,
                "repositories": ["prod/*"],
                "capabilities": ["pull"],
                "reason": "the production cluster account pulls its images",
            }
        ],
    }


def _managed(iam: Any, name: str, *statements: dict[str, Any]) -> str:
    return iam.create_policy(PolicyName=name, PolicyDocument=policy(*statements))["Policy"]["Arn"]


def _age_key(acct: AwsAccount, user: str, days: int, used_days_ago: int | None) -> None:
    from moto.iam.models import AccessKeyLastUsed

    key = acct.iam_backend().users[user].access_keys[0]
    key.create_date = key.create_date - timedelta(days=days)
    key.last_used = (
        None
        if used_days_ago is None
        else AccessKeyLastUsed(
            timestamp=datetime.now(UTC).replace(tzinfo=None) - timedelta(days=used_days_ago),
            service="ecr",
            region=REGION,
        )
    )


def build(acct: AwsAccount, directory: Path) -> Path:
    iam, ecr = acct.client("iam"), acct.client("ecr")
    a = acct.id
    repo = acct.repo_arn
    # -- repositories --------------------------------------------------------------------------
    for name in REPOS:
        if name == "prod/web":
            ecr.create_repository(
                repositoryName=name,
                imageTagMutability="IMMUTABLE",
                imageScanningConfiguration={"scanOnPush": True},
                encryptionConfiguration={"encryptionType": "KMS"},
            )
            ecr.put_lifecycle_policy(
                repositoryName=name,
                lifecyclePolicyText=json.dumps(
                    {
                        "rules": [
                            {
                                "rulePriority": 1,
                                "selection": {
                                    "tagStatus": "untagged",
                                    "countType": "imageCountMoreThan",
                                    "countNumber": 5,
                                },
                                "action": {"type": "expire"},
                            }
                        ]
                    }
                ),
            )
        else:
            ecr.create_repository(repositoryName=name)
    ecr.put_registry_scanning_configuration(
        scanType="BASIC",
        rules=[
            {
                "scanFrequency": "SCAN_ON_PUSH",
                "repositoryFilters": [{"filter": "team-*", "filterType": "WILDCARD"}],
            }
        ],
    )
    ecr.set_repository_policy(
        repositoryName="prod/payments",
        policyText=policy(
            {
                "Sid": "DeployerPush",
                "Effect": "Allow",
                "Principal": {"AWS": acct.arn("role", "deployer")},
                "Action": PUSH,
            },
            {
                "Sid": "NoDeleteMallory",
                "Effect": "Deny",
                "Principal": {"AWS": acct.arn("user", "mallory")},
                "Action": "ecr:BatchDeleteImage",
            },
            {"Sid": "ProdAccountPull", "Effect": "Allow", "Principal": {"AWS": OTHER}, "Action": PULL},
        ),
    )
    ecr.set_repository_policy(
        repositoryName="prod/web",
        policyText=policy({"Sid": "Public", "Effect": "Allow", "Principal": "*", "Action": PULL}),
    )
    # -- principals ----------------------------------------------------------------------------
    for role in ("deployer", "builder", "janitor", "reader"):
        kwargs: dict[str, Any] = {}
        if role == "deployer":
            kwargs["PermissionsBoundary"] = _managed(
                iam,
                "deployer-boundary",
                {"Effect": "Allow", "Action": [*PULL, "ecr:GetAuthorizationToken"], "Resource": "*"},
            )
        iam.create_role(
            RoleName=role,
            AssumeRolePolicyDocument=policy(
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ),
            **kwargs,
        )
    for user in ("alice", "mallory", "ci-bot", "carol", "ops"):
        iam.create_user(UserName=user)
    ecr.set_repository_policy(
        repositoryName="dev/sandbox",
        policyText=policy(
            {
                "Sid": "Contractor",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{THIRD}:user/contractor"},
                "Action": PUSH,
            },
            {
                "Sid": "AliceDelete",
                "Effect": "Allow",
                "Principal": {"AWS": acct.arn("user", "alice")},
                "Action": "ecr:BatchDeleteImage",
            },
            {
                "Sid": "BuildAll",
                "Effect": "Allow",
                "Principal": {"AWS": acct.arn("role", "builder")},
                "NotAction": "ecr:DeleteRepository",
            },
        ),
    )
    # alice: a group's managed push and inline deny; her own inline pull with ? and odd case
    iam.create_group(GroupName="devs")
    iam.add_user_to_group(GroupName="devs", UserName="alice")
    iam.attach_group_policy(
        GroupName="devs",
        PolicyArn=_managed(
            iam, "devs-push", {"Sid": "DevPush", "Effect": "Allow", "Action": PUSH, "Resource": repo("dev/*")}
        ),
    )
    iam.put_group_policy(
        GroupName="devs",
        PolicyName="devs-no-delete",
        PolicyDocument=policy({"Effect": "Deny", "Action": "ecr:BatchDeleteImage", "Resource": "*"}),
    )
    iam.put_user_policy(
        UserName="alice",
        PolicyName="alice-pull",
        PolicyDocument=policy(
            {
                "Sid": "TeamPull",
                "Effect": "Allow",
                "Action": ["ECR:batchgetimage", "ecr:GETDOWNLOADURLFORLAYER"],
                "Resource": f"arn:aws:ecr:*:{a}:repository/team-?/app",
            }
        ),
    )
    iam.create_login_profile(UserName="alice", Password="Not-a-real-Pa55word!")
    iam.create_access_key(UserName="alice")
    # mallory: ecr:* on *, console with MFA
    iam.attach_user_policy(
        UserName="mallory",
        PolicyArn=_managed(
            iam, "ecr-everything", {"Sid": "All", "Effect": "Allow", "Action": "ecr:*", "Resource": "*"}
        ),
    )
    iam.create_login_profile(UserName="mallory", Password="Not-a-real-Pa55word!")
    iam.create_virtual_mfa_device(VirtualMFADeviceName="mallory")
    iam.enable_mfa_device(
        UserName="mallory",
        SerialNumber=f"arn:aws:iam::{a}:mfa/mallory",
        AuthenticationCode1="123456",
        AuthenticationCode2="654321",
    )
    # ci-bot: CI's service account; push on prod/*, pull only from a VPC; an old key used yesterday
    iam.attach_user_policy(
        UserName="ci-bot",
        PolicyArn=_managed(
            iam,
            "ci-push",
            {"Sid": "Push", "Effect": "Allow", "Action": PUSH, "Resource": repo("prod/*")},
            {"Sid": "Token", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Sid": "PullFromVpc",
                "Effect": "Allow",
                "Action": PULL,
                "Resource": repo("prod/*"),
                "Condition": {"StringEquals": {"aws:SourceVpc": "vpc-0123"}},
            },
        ),
    )
    iam.create_access_key(UserName="ci-bot")
    _age_key(acct, "ci-bot", days=120, used_days_ago=1)
    # carol: a typo, a malformed inline policy, an old key never used
    iam.attach_user_policy(
        UserName="carol",
        PolicyArn=_managed(
            iam, "typo", {"Sid": "Typo", "Effect": "Allow", "Action": "ecr:PutImages", "Resource": "*"}
        ),
    )
    acct.iam_backend().users["carol"].policies["broken"] = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Permit", "Action": "ecr:*", "Resource": "*"}]}
    )
    iam.create_access_key(UserName="carol")
    _age_key(acct, "carol", days=120, used_days_ago=None)
    # roles
    iam.put_role_policy(
        RoleName="deployer",
        PolicyName="deploy",
        PolicyDocument=policy(
            {"Sid": "Deploy", "Effect": "Allow", "Action": "ecr:*", "Resource": repo("prod/*")}
        ),
    )
    iam.put_role_policy(
        RoleName="builder",
        PolicyName="build",
        PolicyDocument=policy(
            {
                "Sid": "EverythingButIam",
                "Effect": "Allow",
                "NotAction": ["iam:*", "ecr:DeleteRepository"],
                "Resource": "*",
            },
            {
                "Sid": "MaybeNoDelete",
                "Effect": "Deny",
                "Action": "ecr:BatchDeleteImage",
                "Resource": "*",
                "Condition": {"StringNotEquals": {"aws:PrincipalTag/team": "platform"}},
            },
        ),
    )
    iam.put_role_policy(
        RoleName="janitor",
        PolicyName="sweep",
        PolicyDocument=policy(
            {
                "Sid": "DeleteOutsideProd",
                "Effect": "Allow",
                "Action": "ecr:BatchDeleteImage",
                "NotResource": repo("prod/*"),
            },
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        ),
    )
    iam.attach_role_policy(
        RoleName="reader", PolicyArn="arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly"
    )
    # straight into moto's backend: what its API refuses (see the module docstring)
    backend = acct.ecr_backend()
    backend.repositories["team-ab/app"].policy = "{not json"
    backend.registry_policy = policy(
        {
            "Sid": "OpsDelete",
            "Effect": "Allow",
            "Principal": {"AWS": acct.arn("user", "ops")},
            "Action": "ecr:BatchDeleteImage",
            "Resource": repo("dev/*"),
        }
    )
    return acct.config(directory, model(acct))
