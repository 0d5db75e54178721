"""Rotation tests on the session's moto server (IAM, Secrets Manager, STS), with moto's IAM
enforcement on: every request is signed and checked against the caller's key and secret, so a
key "works" only with its true secret (moto does not check a key's Active/Inactive status:
the tests check that in IAM). The rotation signs as an admin user made here; its connection
``AIRFLOW_CONN_ROTATION_TEST`` serves the CLI and the DAG.

Each test makes its own IAM users (unique names); the original key of a service account is
backdated 30 days in moto's backend (moto stamps keys with the current time), so it is due.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import boto3
import pytest
import requests
import yaml
from botocore.exceptions import ClientError

from devstack.services import RegistryService
from include.registry_ops.config import Config, parse_config
from include.registry_ops.rotation import keys
from include.registry_ops.rotation.settings import ServiceAccount
from include.registry_ops.rotation.verify import sts_identity

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
CONN_ID = "rotation_test"
ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


@contextlib.contextmanager
def moto_enforces_iam(endpoint: str) -> Iterator[None]:
    """moto authenticates (signature against the key's secret) and authorizes every request."""
    previous = requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).json()
    try:
        yield
    finally:
        requests.post(
            f"{endpoint}/moto-api/reset-auth",
            data=previous["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"].encode(),
            timeout=10,
        )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Aws:
    endpoint: str
    admin: dict[str, str]  # AccessKeyId, SecretAccessKey of the rotation's own user

    def client(self, service: str, key: str | None = None, secret: str | None = None) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=key or self.admin["AccessKeyId"],
            aws_secret_access_key=secret or self.admin["SecretAccessKey"],
        )

    @property
    def iam(self) -> Any:
        return self.client("iam")

    @property
    def sm(self) -> Any:
        return self.client("secretsmanager")

    def clients(self) -> keys.Clients:
        return keys.Clients(self.iam, self.sm, sts_identity(self.client("sts")))

    def backend_key(self, key_id: str) -> Any:
        from moto.iam.models import iam_backends

        return iam_backends[ACCOUNT]["aws"].access_keys[key_id]

    # -- service accounts ------------------------------------------------------------------------
    def service_account(self, age_days: int = 30) -> ServiceAccount:
        """A CI user with one key (created ``age_days`` ago) held by a new secret as AWSCURRENT."""
        user = unique("ci")
        self.iam.create_user(UserName=user)
        key = self.iam.create_access_key(UserName=user)["AccessKey"]
        self.backdate(key["AccessKeyId"], age_days)
        secret_id = f"ci/{user}"
        self.sm.create_secret(Name=secret_id, SecretString=json.dumps(_doc(user, key)))
        return ServiceAccount(user=user, secret_id=secret_id)

    def backdate(self, key_id: str, days: int) -> None:
        self.backend_key(key_id).create_date = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days)

    def extra_key(self, user: str, active: bool = True, age_days: int = 30) -> dict[str, str]:
        key = self.iam.create_access_key(UserName=user)["AccessKey"]
        self.backdate(key["AccessKeyId"], age_days)
        if not active:
            self.iam.update_access_key(UserName=user, AccessKeyId=key["AccessKeyId"], Status="Inactive")
        return key

    # -- reading back ----------------------------------------------------------------------------
    def labelled(self, secret_id: str, label: str) -> dict[str, str] | None:
        try:
            doc = self.sm.get_secret_value(SecretId=secret_id, VersionStage=label)["SecretString"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise
        return json.loads(doc)

    def keys(self, user: str) -> dict[str, bool]:
        """key id -> active"""
        listed = self.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
        return {k["AccessKeyId"]: k["Status"] == "Active" for k in listed}

    def tags(self, user: str) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in self.iam.list_user_tags(UserName=user)["Tags"]}

    def stages(self, secret_id: str) -> dict[str, list[str]]:
        return {
            v: sorted(s) for v, s in self.sm.describe_secret(SecretId=secret_id)["VersionIdsToStages"].items()
        }

    def snapshot(self, account: ServiceAccount) -> dict[str, Any]:
        return {
            "keys": self.keys(account.user),
            "tags": self.tags(account.user),
            "stages": self.stages(account.secret_id),
        }

    def works(self, account: ServiceAccount) -> bool:
        """The secret's AWSCURRENT key is active in IAM and signs a request AWS answers as the user."""
        doc = self.labelled(account.secret_id, "AWSCURRENT")
        assert doc is not None
        if not self.keys(account.user).get(doc["AccessKeyId"]):
            return False
        sts = self.client("sts", doc["AccessKeyId"], doc["SecretAccessKey"])
        try:
            arn = sts.get_caller_identity()["Arn"]
        except ClientError:
            return False
        return arn == f"arn:aws:iam::{ACCOUNT}:user/{account.user}"


def _doc(user: str, key: dict[str, str]) -> dict[str, str]:
    return {"UserName": user, "AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def make_config(
    accounts: list[ServiceAccount] = (),
    directory: Path | None = None,
    registries: list[dict[str, Any]] = (),
    **rotation: Any,
) -> Config:
    """A config with ``accounts`` (and ``rotation`` settings); written to ``directory`` if given."""
    data = {
        "registries": [{"name": "layout", "kind": "ocilayout", "path": "/nonexistent"}, *registries],
        "storage": {"conn_id": "aws_default", "bucket": "registry-ops-test"},
        "rotation": {
            "conn_id": CONN_ID,
            "verify_timeout_seconds": 2,
            "service_accounts": [a.model_dump() for a in accounts],
            **rotation,
        },
    }
    if directory is None:
        return parse_config(data)
    path = directory / "registry-ops.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return parse_config(data, str(path))


@pytest.fixture(autouse=True)
def _moto_logs_quiet() -> Iterator[None]:
    """moto runs in this process and logs whole requests at DEBUG (a PutSecretValue's secret
    string): under ``-vv`` that would be moto's log, not ours; it is kept at WARNING."""
    logger = logging.getLogger("moto")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@pytest.fixture
def aws(moto_server) -> Iterator[Aws]:
    """An admin user (allowed everything) signs the rotation's requests; moto enforces IAM."""
    plain = boto3.client("iam", endpoint_url=moto_server.endpoint, region_name=REGION)
    name = unique("rotator")
    plain.create_user(UserName=name)
    plain.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=ALLOW_ALL)
    admin = plain.create_access_key(UserName=name)["AccessKey"]
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {
            "conn_type": "aws",
            "login": admin["AccessKeyId"],
            "password": admin["SecretAccessKey"],
            "extra": {"region_name": REGION, "endpoint_url": moto_server.endpoint},
        }
    )
    with moto_enforces_iam(moto_server.endpoint):
        yield Aws(moto_server.endpoint, admin)


# -- an OCI registry of its own, with htpasswd basic auth ------------------------------------------
OTHER_LINE = "other:" + bcrypt.hashpw(b"other-pass", bcrypt.gensalt(4)).decode()


@dataclass
class Reg:
    server: RegistryService
    user: str
    secret_id: str
    first: str  # the password the registry starts with

    @property
    def path(self) -> Path:
        return self.server.root / "htpasswd"

    def entry(self, **over: Any) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "user": self.user,
            "secret_id": self.secret_id,
            "url": self.server.url,
            **over,
        }

    def status(self, password: str, user: str | None = None) -> int:
        return requests.get(
            f"{self.server.url}/v2/", auth=(user or self.user, password), timeout=10
        ).status_code


@pytest.fixture
def reg(aws: Aws) -> Iterator[Reg]:
    """A registry this test starts (user ``ci-pull``), its password in a new secret shaped as the
    registry's Airflow connection."""
    user, first = "ci-pull", "first-" + uuid.uuid4().hex
    server = RegistryService(username=user, password=first).start()
    path = server.root / "htpasswd"
    path.write_text(OTHER_LINE + "\n" + path.read_text())  # another user's line, to be kept
    os.chmod(path, 0o640)
    secret_id = unique("registry/oci-rot")
    connection = json.loads(server.conn_json())  # the secret is the registry's Airflow connection
    aws.sm.create_secret(Name=secret_id, SecretString=json.dumps(connection))
    yield Reg(server, user, secret_id, first)
    server.stop()
