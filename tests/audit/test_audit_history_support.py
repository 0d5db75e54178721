"""What the audit history, gate and DAG tests share: a small account on moto whose baseline is
clean but for one medium finding, the changes the tests make to it, per-test configs (their
own reports prefix in the shared bucket), and readers of the emails the SMTP sink received.

The account (``build``): repositories ``prod/api`` and ``prod/web`` scanned on push, KMS
encrypted, with a lifecycle policy, ``prod/api`` with immutable tags and ``prod/web`` with
mutable ones (``mutable-tags``, medium: the finding a test fixes); role ``deployer`` (pull and
push on ``prod/*``), role ``reader`` (pull on ``prod/api``), user ``ci`` (CI's service account:
push on ``prod/*``, an access key); ``prod/api``'s repository policy lets account ``PARTNER``
pull (allowlisted in the model). Each principal has ``ecr:GetAuthorizationToken``.
"""

from __future__ import annotations

import email
import json
import uuid
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import boto3
import yaml

from include.registry_ops import storage
from tests.conftest import BUCKET

from .conftest import REGION, AwsAccount, policy

PARTNER = "650000000005"
PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
PUSH = [
    "ecr:PutImage",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:BatchCheckLayerAvailability",
]
TOKEN = {"Sid": "Token", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}
LIFECYCLE = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 5},
                "action": {"type": "expire"},
            }
        ]
    }
)


def model() -> dict[str, Any]:
    return {
        "service_accounts": ["user/ci"],
        "grants": [
            {"principals": ["role/deployer"], "repositories": ["prod/*"], "capabilities": ["pull", "push"]},
            {"principals": ["role/reader"], "repositories": ["*"], "capabilities": ["pull"]},
            {"principals": ["user/ci"], "repositories": ["prod/*"], "capabilities": ["pull", "push"]},
        ],
        "cross_account": [
            {
                "principal": PARTNER,
                "repositories": ["prod/*"],
                "capabilities": ["pull"],
                "reason": "the partner's cluster pulls the API image",
            }
        ],
    }


def build(acct: AwsAccount) -> dict[str, str]:
    """The account above; returns the secrets it holds (for the tests that look for them)."""
    iam, ecr = acct.client("iam"), acct.client("ecr")
    for name, mutability in (("prod/api", "IMMUTABLE"), ("prod/web", "MUTABLE")):
        ecr.create_repository(
            repositoryName=name,
            imageTagMutability=mutability,
            imageScanningConfiguration={"scanOnPush": True},
            encryptionConfiguration={"encryptionType": "KMS"},
        )
        ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=LIFECYCLE)
    ecr.set_repository_policy(
        repositoryName="prod/api",
        policyText=policy(
            {"Sid": "PartnerPull", "Effect": "Allow", "Principal": {"AWS": PARTNER}, "Action": PULL}
        ),
    )
    trust = policy(
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    )
    for role, actions, resource in (
        ("deployer", PULL + PUSH, acct.repo_arn("prod/*")),
        ("reader", PULL, acct.repo_arn("prod/api")),
    ):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
        iam.put_role_policy(
            RoleName=role,
            PolicyName=role,
            PolicyDocument=policy(
                {"Sid": "Repos", "Effect": "Allow", "Action": actions, "Resource": resource}, TOKEN
            ),
        )
    iam.create_user(UserName="ci")
    iam.put_user_policy(
        UserName="ci",
        PolicyName="ci-push",
        PolicyDocument=policy(
            {"Sid": "Push", "Effect": "Allow", "Action": PULL + PUSH, "Resource": acct.repo_arn("prod/*")},
            TOKEN,
        ),
    )
    key = iam.create_access_key(UserName="ci")["AccessKey"]
    return {
        "ci_key_id": key["AccessKeyId"],
        "ci_secret": key["SecretAccessKey"],
        "audit_secret": acct.credentials["SecretAccessKey"],
        "audit_token": acct.credentials["SessionToken"],
    }


def age_key(acct: AwsAccount, user: str, days: int) -> None:
    """moto stamps keys with the current time: make the user's first key ``days`` old (test-only)."""
    key = acct.iam_backend().users[user].access_keys[0]
    key.create_date = key.create_date - timedelta(days=days)


# -- the changes the tests make -------------------------------------------------------------------
def grant_reader_web(acct: AwsAccount) -> None:
    """A grant added: reader may pull prod/web too (within the model)."""
    acct.client("iam").put_role_policy(
        RoleName="reader",
        PolicyName="reader-web",
        PolicyDocument=policy(
            {"Sid": "Web", "Effect": "Allow", "Action": PULL, "Resource": acct.repo_arn("prod/web")}
        ),
    )


def remove_partner_policy(acct: AwsAccount) -> None:
    """A policy removed: prod/api's repository policy (the partner's pull)."""
    acct.client("ecr").delete_repository_policy(repositoryName="prod/api")


def fix_mutable_tags(acct: AwsAccount) -> None:
    """A finding fixed: prod/web's tags become immutable."""
    acct.client("ecr").put_image_tag_mutability(repositoryName="prod/web", imageTagMutability="IMMUTABLE")


def scan_off(acct: AwsAccount, repository: str = "prod/api") -> None:
    """A new high finding: scan-on-push-off."""
    acct.client("ecr").put_image_scanning_configuration(
        repositoryName=repository, imageScanningConfiguration={"scanOnPush": False}
    )


# -- configs --------------------------------------------------------------------------------------
def write_config(
    acct: AwsAccount,
    directory: Path,
    *,
    security: list[str] | None = None,
    recipients: tuple[str, ...] = ("ops@example.com",),
    smtp_conn_id: str = "smtp_default",
    extra_registries: tuple[dict[str, Any], ...] = (),
    audit: dict[str, Any] | None = None,
) -> Path:
    """A config with the account's registry, the model beside it, a reports prefix of its own."""
    (directory / "access-model.yaml").write_text(yaml.safe_dump(model()), encoding="utf-8")
    notifications: dict[str, Any] = {"recipients": list(recipients), "smtp_conn_id": smtp_conn_id}
    if security is not None:
        notifications["security_recipients"] = security
    registries = [{"name": "ecr-audit", "kind": "ecr", "conn_id": acct.conn_id, "region": REGION}]
    doc = {
        "registries": registries + list(extra_registries),
        "storage": {
            "conn_id": "aws_default",
            "bucket": BUCKET,
            "prefixes": {"reports": f"reports-{uuid.uuid4().hex[:10]}/"},
        },
        "notifications": notifications,
        "audit": {"model": "access-model.yaml", "report_wait_seconds": 5, **(audit or {})},
    }
    path = directory / "registry-ops.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    storage.ensure_bucket(boto3.client("s3", endpoint_url=acct.endpoint, region_name=REGION), BUCKET)
    return path


# -- emails ---------------------------------------------------------------------------------------
def parts(msg: Message) -> dict[str, Any]:
    """html, text and attachments (name -> bytes) of a received message."""
    out: dict[str, Any] = {"attachments": {}}
    for p in msg.walk():
        if p.get_content_disposition() == "attachment":
            out["attachments"][p.get_filename()] = p.get_payload(decode=True)
        elif p.get_content_type() == "text/html":
            out["html"] = p.get_payload(decode=True).decode()
        elif p.get_content_type() == "text/plain":
            out["text"] = p.get_payload(decode=True).decode()
    return out


def raw(msg: Message) -> str:
    """The whole message as received, attachments decoded (to look for secrets everywhere)."""
    decoded = [p.get_payload(decode=True) or b"" for p in msg.walk() if not p.is_multipart()]
    return msg.as_string() + "".join(d.decode("utf-8", "replace") for d in decoded)


def reparse(msg: Message) -> Message:
    return email.message_from_string(msg.as_string())
