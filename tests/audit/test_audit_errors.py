"""Bad input and missing permissions: an access model with an unknown capability, a bad glob
or a bad principal fails naming file, key and problem before AWS is asked anything (exit 2);
the audit's own missing IAM permission is named (exit 1, the rest of the JSON still printed);
a registry of another account is refused."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
import requests
import yaml

from include.registry_ops.audit.model import parse_model
from include.registry_ops.cli import main
from include.registry_ops.config import ConfigError

from .conftest import AwsAccount, policy

MODEL = {
    "grants": [{"principals": ["role/deployer"], "repositories": ["prod/*"], "capabilities": ["pull"]}],
    "cross_account": [
        {"principal": "210987654321", "repositories": ["prod/*"], "capabilities": ["pull"], "reason": "prod"}
    ],
}


@pytest.mark.parametrize(
    ("path", "value", "key", "problem"),
    [
        (
            ("grants", 0, "capabilities"),
            ["pull", "write"],
            "grants[0].capabilities",
            "unknown capability 'write'",
        ),
        (
            ("grants", 0, "repositories"),
            ["prod/[ab]"],
            "grants[0].repositories",
            "bad repository glob 'prod/[ab]'",
        ),
        (("grants", 0, "repositories"), ["Prod/*"], "grants[0].repositories", "bad repository glob 'Prod/*'"),
        (("grants", 0, "principals"), ["users/alice"], "grants[0].principals", "bad principal 'users/alice'"),
        (("cross_account", 0, "principal"), "2109", "cross_account[0].principal", "bad principal '2109'"),
        (
            ("cross_account", 0, "capabilities"),
            ["read"],
            "cross_account[0].capabilities",
            "unknown capability",
        ),
        (("grants", 0, "required"), "yes", "grants[0].required", "valid boolean"),
    ],
)
def test_bad_model_fails_naming_file_key_and_problem(aws_account, tmp_path, capfd, path, value, key, problem):
    model = json.loads(json.dumps(MODEL))
    target = model
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    config = aws_account.config(tmp_path, model)
    assert main(["audit", "iam", "--config", str(config)]) == 2
    err = capfd.readouterr().err
    assert str(tmp_path / "access-model.yaml") in err and key in err and problem in err, err


def test_model_problems_before_any_request(tmp_path, capfd):
    """A config whose connection does not even exist: the model's error comes first."""
    (tmp_path / "m.yaml").write_text(
        "grants:\n  - principals: [role/x]\n    repositories: ['a/*']\n    capabilities: [pul]\n"
    )
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "registries": [{"name": "e", "kind": "ecr", "conn_id": "no_such_connection"}],
                "storage": {"bucket": "registry-ops-test"},
                "audit": {"model": "m.yaml"},
            }
        )
    )
    assert main(["audit", "iam", "--config", str(config)]) == 2
    assert "capabilities: unknown capability 'pul'" in capfd.readouterr().err


def test_model_yaml_errors_and_missing_file(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("grants: [\n")
    from include.registry_ops.audit.model import load_model
    from include.registry_ops.config import parse_config

    config = parse_config(
        {
            "registries": [{"name": "e", "kind": "ecr", "conn_id": "c"}],
            "storage": {"bucket": "abc"},
            "audit": {"model": "m.yaml"},
        },
        str(tmp_path / "c.yaml"),
    )
    with pytest.raises(ConfigError, match=r"m\.yaml: not valid YAML at line"):
        load_model(config)
    bad.unlink()
    with pytest.raises(ConfigError, match=r"m\.yaml: cannot read the access model"):
        load_model(config)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_model(["x"], "m.yaml")
    assert parse_model(None, "m.yaml").grants == []


def test_audit_registries_must_be_ecr(aws_account, tmp_path, capfd):
    config = aws_account.config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["registries"].append({"name": "layout", "kind": "ocilayout", "path": str(tmp_path)})
    data["audit"]["registries"] = ["layout"]
    config.write_text(yaml.safe_dump(data))
    assert main(["audit", "iam", "--config", str(config)]) == 2
    assert "audit.registries: 'layout' is a ocilayout registry" in capfd.readouterr().err


def test_registry_of_another_account_is_refused(aws_account, tmp_path, capfd):
    config = aws_account.config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["registries"][0]["registry_id"] = "999999999999"
    config.write_text(yaml.safe_dump(data))
    assert main(["audit", "iam", "--config", str(config)]) == 1
    out = json.loads(capfd.readouterr().out)
    assert out["access"] == [] and "is in account 999999999999" in out["errors"][0]["error"]


# -- the audit's own permissions ---------------------------------------------------------------
@contextlib.contextmanager
def moto_enforces_iam(endpoint: str) -> Iterator[None]:
    """moto checks every request against the caller's IAM policies meanwhile (its auth mode)."""
    previous = requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).json()
    try:
        yield
    finally:
        requests.post(
            f"{endpoint}/moto-api/reset-auth",
            data=previous["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"].encode(),
            timeout=10,
        )


def _auditor(acct: AwsAccount, *denied: str) -> None:
    """A user allowed everything but ``denied``; the account's connection signs as it."""
    import os

    iam = acct.client("iam")
    iam.create_user(UserName="auditor")
    statements = [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
    if denied:
        statements.append({"Effect": "Deny", "Action": list(denied), "Resource": "*"})
    iam.put_user_policy(UserName="auditor", PolicyName="audit", PolicyDocument=policy(*statements))
    key = iam.create_access_key(UserName="auditor")["AccessKey"]
    acct.client("ecr").create_repository(repositoryName="app")
    os.environ[f"AIRFLOW_CONN_{acct.conn_id.upper()}"] = json.dumps(
        {
            "conn_type": "aws",
            "login": key["AccessKeyId"],
            "password": key["SecretAccessKey"],
            "extra": {"region_name": "us-east-1", "endpoint_url": acct.endpoint},
        }
    )


@pytest.mark.parametrize(
    "permission",
    ["iam:GetAccountAuthorizationDetails", "ecr:GetRepositoryPolicy", "ecr:DescribeRepositories"],
)
def test_missing_permission_is_named(aws_account, moto_server, tmp_path, capfd, permission):
    _auditor(aws_account, permission)
    config = aws_account.config(tmp_path)
    with moto_enforces_iam(moto_server.endpoint):
        code = main(["audit", "iam", "--config", str(config)])
    out = json.loads(capfd.readouterr().out)
    assert code == 1
    (error,) = out["errors"]
    assert f"lack {permission}" in error["error"] and error["registry"] == "ecr-audit"


def test_without_the_credential_report_the_access_part_goes_on(aws_account, moto_server, tmp_path, capfd):
    _auditor(aws_account, "iam:GenerateCredentialReport")
    aws_account.client("ecr").set_repository_policy(
        repositoryName="app",
        policyText=policy(
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            }
        ),
    )
    config = aws_account.config(tmp_path)
    with moto_enforces_iam(moto_server.endpoint):
        code = main(["audit", "iam", "--config", str(config)])
    out = json.loads(capfd.readouterr().out)
    assert code == 1
    assert "lack iam:GenerateCredentialReport" in out["errors"][0]["error"]
    assert {
        "principal": "*",
        "repository": "app",
        "registry": "ecr-audit",
        "capabilities": ["pull"],
        "conditional": [],
    } in out["access"]


def test_with_every_permission_the_same_user_audits(aws_account, moto_server, tmp_path, capfd):
    """The control: moto's auth mode does not deny the audit by itself."""
    _auditor(aws_account)
    config = aws_account.config(tmp_path)
    with moto_enforces_iam(moto_server.endpoint):
        code = main(["audit", "iam", "--config", str(config)])
    out = json.loads(capfd.readouterr().out)
    assert code == 0 and out["errors"] == []
    assert any(
        f["id"] == "human-write-access" and f["principal"].endswith(":user/auditor") for f in out["findings"]
    )


def test_an_unreachable_endpoints_credentials_never_enter_the_audit_error():
    """botocore names the endpoint URL it could not reach; the AuditError built from it (which
    any traceback prints) carries the URL without its ``user:secret@``."""
    import boto3
    from botocore.config import Config

    from devstack.services import free_port
    from include.registry_ops.audit import aws

    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCyNOTPRINTED"
    sts = boto3.client(
        "sts",
        endpoint_url=f"http://AKIAEXAMPLE:{secret}@127.0.0.1:{free_port()}",
        region_name="us-east-1",
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    with pytest.raises(aws.AuditError) as caught:
        aws.call(sts, "get_caller_identity")
    assert "sts:GetCallerIdentity failed: EndpointConnectionError" in str(caught.value)
    assert secret not in str(caught.value) and "http://***@127.0.0.1:" in str(caught.value)
