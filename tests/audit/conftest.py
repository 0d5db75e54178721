"""A fresh AWS account per test (or module) on the session's moto server: STS AssumeRole into
a new account id gives credentials that moto maps to that account, so every audit here reads
an account nothing else touches (the moto server is shared by the whole test session).

The account's Airflow connection (``AIRFLOW_CONN_<ID>`` with the session token in its extra)
is what the audit's clients are built from, as in production.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

REGION = "us-east-1"
_ids = itertools.count(1)


@contextlib.contextmanager
def _aws_managed_policies() -> Iterator[None]:
    """moto loads AWS managed policies into an account's IAM when the account is first used and
    this variable is set; it is set only meanwhile (other tests' accounts stay as they were)."""
    before = os.environ.get("MOTO_IAM_LOAD_MANAGED_POLICIES")
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MOTO_IAM_LOAD_MANAGED_POLICIES", None)
        else:
            os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = before


@dataclass
class AwsAccount:
    id: str
    endpoint: str
    credentials: dict[str, str]
    conn_id: str

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.credentials["AccessKeyId"],
            aws_secret_access_key=self.credentials["SecretAccessKey"],
            aws_session_token=self.credentials["SessionToken"],
        )

    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:iam::{self.id}:{kind}/{name}"

    def repo_arn(self, name: str) -> str:
        return f"arn:aws:ecr:{REGION}:{self.id}:repository/{name}"

    def iam_backend(self) -> Any:
        from moto.iam.models import iam_backends

        return iam_backends[self.id]["aws"]

    def ecr_backend(self) -> Any:
        from moto.ecr.models import ecr_backends

        return ecr_backends[self.id][REGION]

    def config(self, directory: Path, model: dict[str, Any] | None = None, **audit: Any) -> Path:
        """A config file with this account's ECR registry (and its access model beside it)."""
        if model is not None:
            (directory / "access-model.yaml").write_text(yaml.safe_dump(model), encoding="utf-8")
            audit.setdefault("model", "access-model.yaml")
        path = directory / "registry-ops.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "registries": [
                        {"name": "ecr-audit", "kind": "ecr", "conn_id": self.conn_id, "region": REGION}
                    ],
                    "storage": {"conn_id": "aws_default", "bucket": "registry-ops-test"},
                    "audit": {"report_wait_seconds": 5, **audit},
                }
            ),
            encoding="utf-8",
        )
        return path


def new_account(endpoint: str) -> AwsAccount:
    account = f"{720000000000 + os.getpid() % 10000 * 1000 + next(_ids):012d}"
    sts = boto3.client("sts", endpoint_url=endpoint, region_name=REGION)
    with _aws_managed_policies():
        creds = sts.assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/registry-auditor", RoleSessionName="audit"
        )["Credentials"]
        conn_id = f"audit_{account}"
        acct = AwsAccount(account, endpoint, creds, conn_id)
        acct.client("iam").list_users()  # the account's IAM exists now, with AWS's managed policies
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
        {
            "conn_type": "aws",
            "login": creds["AccessKeyId"],
            "password": creds["SecretAccessKey"],
            "extra": {
                "aws_session_token": creds["SessionToken"],
                "region_name": REGION,
                "endpoint_url": endpoint,
            },
        }
    )
    return acct


@pytest.fixture
def aws_account(moto_server) -> AwsAccount:
    return new_account(moto_server.endpoint)


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.fixture(autouse=True, scope="session")
def _gaad_pages_like_aws() -> None:
    from tests.audit.moto_gaad_paging import enable_gaad_paging

    enable_gaad_paging()
