"""The audit against moto (IAM, ECR, STS): one account (``scenario.py``) with a case of every
finding id and every evaluation rule, read the way production reads it (the registry's Airflow
connection, GetAccountAuthorizationDetails pages, one policy read per repository, the
credential report).

Who shows what: alice (group devs) — group membership, a group Deny beating a repository-policy
Allow, ``?`` in a resource ARN and odd-case actions, human-write-access, no-mfa-writer,
no-auth-token, model-excess; mallory — ``ecr:*`` on ``*`` (wildcard-write) and a repository
policy Deny beating it; ci-bot — a declared service account, a conditional grant, a stale key;
carol — an unused key, a typo (unknown-action), a malformed inline policy; ops — a registry
policy grant; role deployer — a permissions boundary limiting its identity grants and a
repository-policy grant to its role ARN (model-missing); builder — NotAction (not-action-allow),
a conditional Deny; janitor — NotResource; reader — an AWS managed policy; another account's
root (allowlisted) and a third account's user (cross-account-principal); ``*``
(public-repository); repository settings (the four Security Hub-style ids).
"""

from __future__ import annotations

import json
import math

import pytest
import yaml

from include.registry_ops.audit.account import read_account
from include.registry_ops.audit.aws import Requests
from include.registry_ops.audit.findings import SEVERITY
from include.registry_ops.audit.run import audit
from include.registry_ops.cli import main
from include.registry_ops.config import load_config

from . import scenario
from .conftest import new_account


@pytest.fixture(scope="module")
def world(moto_server, tmp_path_factory):
    acct = new_account(moto_server.endpoint)
    config = scenario.build(acct, tmp_path_factory.mktemp("audit"))
    return acct, config, audit(load_config(config)).as_dict()


def _short(principal: str) -> str:
    return principal.split(":", 5)[-1] if principal.startswith("arn:") else principal


@pytest.fixture(scope="module")
def access(world):
    _, _, result = world
    return {
        (_short(r["principal"]), r["repository"]): (r["capabilities"], r["conditional"])
        for r in result["access"]
    }


@pytest.mark.parametrize(
    ("principal", "repository", "expected"),
    [
        # group membership grants push; the group's Deny beats the repository policy's Allow of delete
        ("user/alice", "dev/sandbox", (["push"], [])),
        # ? is one character, actions match whatever their case
        ("user/alice", "team-a/app", (["pull"], [])),
        ("user/alice", "team-ab/app", None),
        # the repository policy's Deny beats ecr:* on *
        ("user/mallory", "prod/payments", (["pull", "push", "admin"], [])),
        ("user/mallory", "dev/sandbox", (["pull", "push", "delete", "admin"], [])),
        # the boundary limits the identity grant (ecr:* on prod/*) and the role-ARN grant of push
        ("role/deployer", "prod/payments", (["pull"], [])),
        # NotAction grants all but what it names; a Deny under a condition leaves delete conditional
        ("role/builder", "team-a/app", (["pull", "push", "admin"], ["delete"])),
        # an Allow under a condition is conditional
        ("user/ci-bot", "prod/payments", (["push"], ["pull"])),
        # NotResource
        ("role/janitor", "team-ab/app", (["delete"], [])),
        ("role/janitor", "prod/payments", None),
        # an AWS managed policy (read with GetPolicy/GetPolicyVersion)
        ("role/reader", "dev/sandbox", (["pull"], [])),
        # the registry policy (V2 scope) grants a user directly
        ("user/ops", "dev/sandbox", (["delete"], [])),
        ("user/ops", "prod/payments", None),
        # other accounts and everyone, as the repository policies name them
        ("root", "prod/payments", (["pull"], [])),
        ("user/contractor", "dev/sandbox", (["push"], [])),
        ("*", "prod/web", (["pull"], [])),
        ("user/carol", "prod/web", (["pull"], [])),  # everyone's pull reaches carol too
        ("user/carol", "dev/sandbox", None),
    ],
)
def test_effective_access(access, principal, repository, expected):
    assert access.get((principal, repository)) == expected


def test_access_rows_only_where_a_principal_has_something(world):
    _, _, result = world
    assert result["access"] and all(r["capabilities"] or r["conditional"] for r in result["access"])
    assert {r["registry"] for r in result["access"]} == {"ecr-audit"}
    assert not result["errors"]


def _policy(label: str | None) -> str | None:
    return label.rsplit("/", 1)[-1] if label and label.startswith("arn:") else label


def _index(result):
    return {
        (
            f["id"],
            _short(f["principal"] or "-"),
            f["repository"],
            _policy(f["policy"]),
            f["statement"],
        )
        for f in result["findings"]
    }


def test_every_finding_id_with_the_policy_and_statement_causing_it(world):
    _, _, result = world
    assert {f["id"] for f in result["findings"]} == set(SEVERITY)
    found = _index(result)
    expected = {
        ("model-excess", "user/alice", "dev/sandbox", "devs-push", "DevPush"),
        ("model-excess", "user/ops", "dev/sandbox", "registry policy", "OpsDelete"),
        ("model-missing", "role/deployer", "prod/payments", None, None),
        ("model-missing", "role/ghost", None, None, None),
        ("human-write-access", "user/alice", "dev/sandbox", "devs-push", "DevPush"),
        ("human-write-access", "user/mallory", None, "ecr-everything", "All"),
        ("human-write-access", "user/ops", "dev/sandbox", "registry policy", "OpsDelete"),
        ("wildcard-write", "user/mallory", None, "ecr-everything", "All"),
        ("wildcard-write", "role/builder", None, "inline policy build of role/builder", "EverythingButIam"),
        ("wildcard-write", "role/builder", "dev/sandbox", "repository policy of dev/sandbox", "BuildAll"),
        ("not-action-allow", "role/builder", None, "inline policy build of role/builder", "EverythingButIam"),
        ("not-action-allow", "role/builder", "dev/sandbox", "repository policy of dev/sandbox", "BuildAll"),
        ("public-repository", "*", "prod/web", "repository policy of prod/web", "Public"),
        (
            "cross-account-principal",
            "user/contractor",
            "dev/sandbox",
            "repository policy of dev/sandbox",
            "Contractor",
        ),
        ("no-auth-token", "user/alice", None, None, None),
        ("no-auth-token", "user/ops", None, None, None),
        ("no-auth-token", "role/deployer", None, None, None),
        ("stale-access-key", "user/ci-bot", None, None, None),
        ("stale-access-key", "user/carol", None, None, None),
        ("unused-access-key", "user/carol", None, None, None),
        ("no-mfa-writer", "user/alice", None, None, None),
        ("scan-on-push-off", "-", "prod/payments", None, None),
        ("mutable-tags", "-", "team-a/app", None, None),
        ("no-lifecycle-policy", "-", "dev/sandbox", None, None),
        ("no-kms-encryption", "-", "team-ab/app", None, None),
        ("malformed-policy", "user/carol", None, "inline policy broken of user/carol", "#0"),
        ("malformed-policy", "-", None, "repository policy of team-ab/app", None),
        ("unknown-action", "-", None, "typo", "Typo"),
    }
    assert expected <= found, sorted(map(str, expected - found))
    by_id = {f["id"]: f for f in result["findings"]}
    assert by_id["public-repository"]["severity"] == "critical"
    assert "AKIA" in next(f["detail"] for f in result["findings"] if f["id"] == "unused-access-key")


@pytest.mark.parametrize(
    ("fid", "principal", "repository"),
    [
        ("human-write-access", "user/ci-bot", None),  # a declared service account
        ("no-mfa-writer", "user/mallory", None),  # has an MFA device
        ("wildcard-write", "role/deployer", None),  # ecr:* on prod/*, but its boundary leaves only pull
        ("scan-on-push-off", "-", "team-a/app"),  # the registry scanning rule team-* scans on push
        ("scan-on-push-off", "-", "prod/web"),
        ("mutable-tags", "-", "prod/web"),
        ("unused-access-key", "user/ci-bot", None),  # used yesterday
        ("model-excess", "user/carol", "prod/web"),  # everyone's pull is the public-repository finding
        ("model-excess", "root", "prod/payments"),  # allowlisted for pull on prod/*
        ("cross-account-principal", "root", "prod/payments"),
        ("model-excess", "role/janitor", "dev/sandbox"),  # the model allows it
    ],
)
def test_no_finding_where_the_rules_say_none(world, fid, principal, repository):
    _, _, result = world
    assert not [k for k in _index(result) if k[:3] == (fid, principal, repository)]


def test_requests_are_pages_plus_one_policy_read_per_repository(world):
    """Not one call per principal: 1 GetAccountAuthorizationDetails page for 5 users, 4 roles,
    1 group and 6 managed policies; per repository one policy read (and one lifecycle read for
    the settings findings); the AWS managed policy read once; key ids only for the 2 users with
    a key finding."""
    _, _, result = world
    (reg,) = result["summary"]["registries"]
    assert reg["repositories"] == 5 and reg["principals"] == 9 + 3  # + *, OTHER root, contractor
    req = reg["requests"]
    assert req["iam:GetAccountAuthorizationDetails"] == 1
    assert req["ecr:DescribeRepositories"] == 1
    assert req["ecr:GetRepositoryPolicy"] == 5 and req["ecr:GetLifecyclePolicy"] == 5
    assert req["ecr:GetRegistryPolicy"] == 1 and req["ecr:GetRegistryScanningConfiguration"] == 1
    assert req["iam:GetPolicy"] == 1 and req["iam:GetPolicyVersion"] == 1
    assert req["iam:ListAccessKeys"] == 2 and req["iam:GetCredentialReport"] == 1
    assert not {k for k in req if k.startswith("iam:")} - {
        "iam:GetAccountAuthorizationDetails",
        "iam:GetPolicy",
        "iam:GetPolicyVersion",
        "iam:ListAccessKeys",
        "iam:GenerateCredentialReport",
        "iam:GetCredentialReport",
    }


def test_account_details_are_read_across_pages(world):
    acct, _, _ = world
    iam, sts = acct.client("iam"), acct.client("sts")
    whole = read_account(iam, sts)
    requests = Requests()
    requests.watch(iam)
    paged = read_account(iam, sts, page_size=2)
    items = 5 + 1 + 4 + 6  # users, groups, roles, customer managed policies
    assert requests.counts["iam:GetAccountAuthorizationDetails"] == math.ceil(items / 2)
    assert [(r.arn, r.policies, r.boundary) for r in paged.rows] == [
        (r.arn, r.policies, r.boundary) for r in whole.rows
    ]
    assert paged.policies == whole.policies


def test_cli_json_and_table(world, capfd):
    _, config, result = world
    assert main(["audit", "iam", "--config", str(config)]) == 0
    out = json.loads(capfd.readouterr().out)
    assert out["access"] == result["access"]
    assert [f["id"] for f in out["findings"]] == [f["id"] for f in result["findings"]]
    assert set(out) == {"access", "findings", "errors", "summary"}
    assert main(["audit", "iam", "--config", str(config), "--format", "table"]) == 0
    text = capfd.readouterr().out
    assert text.startswith("ACCESS (") and "FINDINGS (" in text
    assert "public-repository" in text and "registry policy" in text


def test_cli_keys(world, capfd):
    acct, config, _ = world
    assert main(["audit", "keys", "--config", str(config)]) == 0
    keys = {k["user"]: k for k in json.loads(capfd.readouterr().out)["keys"]}
    assert set(keys) == {"alice", "ci-bot", "carol"}
    assert keys["carol"]["age_days"] == 120 and keys["carol"]["last_used"] is None
    assert keys["ci-bot"]["idle_days"] == 1 and keys["alice"]["age_days"] == 0
    assert all(k["account"] == acct.id for k in keys.values())
    assert not any("secret" in json.dumps(k).lower() for k in keys.values())


def test_two_registries_of_one_account_read_its_iam_once(world, tmp_path):
    """Two registries (here: two views of the same account's repositories) share one IAM read
    and one credential report; account-wide findings come once, with the first registry."""
    acct, _, whole = world
    config = acct.config(tmp_path, scenario.model(acct))
    data = yaml.safe_load(config.read_text())
    first = {**data["registries"][0], "name": "ecr-prod", "include": ["prod/*"]}
    second = {**data["registries"][0], "name": "ecr-rest", "exclude": ["prod/*"]}
    data["registries"] = [first, second]
    config.write_text(yaml.safe_dump(data))
    result = audit(load_config(config)).as_dict()
    req = {r["registry"]: r["requests"] for r in result["summary"]["registries"]}
    assert req["ecr-prod"]["iam:GetAccountAuthorizationDetails"] == 1
    assert "iam:GetAccountAuthorizationDetails" not in req["ecr-rest"]
    assert req["ecr-prod"]["ecr:GetRepositoryPolicy"] == 2 and req["ecr-rest"]["ecr:GetRepositoryPolicy"] == 3
    keys = [f for f in result["findings"] if f["id"] in ("stale-access-key", "unused-access-key")]
    assert len(keys) == 3 and {f["registry"] for f in keys} == {"ecr-prod"}

    # the same cells for the account's principals and *; another account's principal has a row
    # only in a registry whose policies name it (the contractor's public pull is the * row's)
    def cells(rows):
        return sorted(
            (r["principal"], r["repository"])
            for r in rows
            if acct.id in r["principal"] or r["principal"] == "*"
        )

    assert cells(result["access"]) == cells(whole["access"])
