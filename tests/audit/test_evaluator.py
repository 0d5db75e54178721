"""The evaluator on policy documents (no AWS): each rule of AWS's evaluation logic within one
account, on the vectorized path the audit uses, and the vectorized path held equal to the
statement-by-statement one (``explain``) on random policies."""

from __future__ import annotations

import random

import numpy as np
import pytest

from include.registry_ops.audit.catalog import ACTIONS, TOKEN
from include.registry_ops.audit.evaluate import evaluate
from include.registry_ops.audit.explain import bits_of, decide

from .build import ACCT, OTHER, allow, arn, caps, deny, doc, repo, role, run, scope, user

PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
PUSH = [
    "ecr:PutImage",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:BatchCheckLayerAvailability",
]
ALICE = f"arn:aws:iam::{ACCT}:user/alice"
CI = f"arn:aws:iam::{ACCT}:role/ci"


def test_identity_grant_and_capability_definitions():
    m = run([user("alice", "p")], [repo("app")], {"p": doc(allow([*PULL, "ecr:BatchDeleteImage"]))})
    assert caps(m, ALICE, "app") == (["pull", "delete"], [])
    half = run([user("alice", "p")], [repo("app")], {"p": doc(allow([*PUSH[:4], "ecr:PutLifecyclePolicy"]))})
    assert caps(half, ALICE, "app") == (["admin"], [])  # push needs all five, admin any one


def test_explicit_deny_in_identity_beats_repository_policy_allow():
    policy = doc({"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": PULL})
    m = run([user("alice", "d")], [repo("app", policy)], {"d": doc(deny("ecr:BatchGetImage"))})
    assert caps(m, ALICE, "app") == ([], [])
    without = run([user("alice")], [repo("app", policy)])
    assert caps(without, ALICE, "app") == (["pull"], [])


def test_explicit_deny_in_repository_policy_beats_identity_allow():
    policy = doc({"Effect": "Deny", "Principal": {"AWS": ALICE}, "Action": "ecr:PutImage"})
    grant = {"p": doc(allow(["ecr:*"]))}
    m = run([user("alice", "p")], [repo("app", policy), repo("other")], grant)
    assert "push" not in caps(m, ALICE, "app")[0] and "pull" in caps(m, ALICE, "app")[0]
    assert "push" in caps(m, ALICE, "other")[0]


def test_deny_naming_the_account_reaches_every_principal_of_it():
    policy = doc({"Effect": "Deny", "Principal": {"AWS": ACCT}, "Action": "ecr:BatchDeleteImage"})
    m = run([user("alice", "p"), role("ci", "p")], [repo("app", policy)], {"p": doc(allow("ecr:*"))})
    assert "delete" not in caps(m, ALICE, "app")[0] and "delete" not in caps(m, CI, "app")[0]


def test_allow_naming_the_account_grants_nothing_by_itself():
    policy = doc({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCT}:root"}, "Action": PULL})
    m = run([user("alice")], [repo("app", policy)])
    assert caps(m, ALICE, "app") == ([], [])


def test_permissions_boundary_limits_identity_grants():
    policies = {"p": doc(allow("ecr:*")), "b": doc(allow(PULL))}
    m = run([role("ci", "p", boundary="b"), role("free", "p")], [repo("app")], policies)
    assert caps(m, CI, "app") == (["pull"], [])
    assert caps(m, f"arn:aws:iam::{ACCT}:role/free", "app")[0] == ["pull", "push", "delete", "admin"]


def test_boundary_deny_is_an_explicit_deny():
    policies = {"p": doc(allow("ecr:*")), "b": doc(allow("*"), deny("ecr:BatchGetImage"))}
    m = run([role("ci", "p", boundary="b")], [repo("app")], policies)
    assert "pull" not in caps(m, CI, "app")[0] and "push" in caps(m, CI, "app")[0]


def test_boundary_and_resource_policy_grants_user_arn_role_arn_session_everyone():
    """A user ARN, a role session and * are not limited by the boundary; a role ARN is."""
    policies = {"b": doc(allow("s3:GetObject"))}
    session = f"arn:aws:sts::{ACCT}:assumed-role/deployer/build-7"
    rp = doc(
        {"Effect": "Allow", "Principal": {"AWS": [ALICE, CI]}, "Action": PULL},
        {"Effect": "Allow", "Principal": {"AWS": session}, "Action": "ecr:BatchDeleteImage"},
    )
    public = doc({"Effect": "Allow", "Principal": "*", "Action": PULL})
    rows = [user("alice", boundary="b"), role("ci", boundary="b"), role("deployer", boundary="b")]
    m = run(rows, [repo("app", rp), repo("open", public)], policies)
    assert caps(m, ALICE, "app") == (["pull"], [])
    assert caps(m, CI, "app") == ([], [])
    assert caps(m, f"arn:aws:iam::{ACCT}:role/deployer", "app") == (["delete"], [])
    assert caps(m, CI, "open") == (["pull"], [])
    unbounded = run([role("ci")], [repo("app", rp)])
    assert caps(unbounded, CI, "app") == (["pull"], [])


def test_not_principal_deny_always_reaches_principals_with_a_boundary():
    rp = doc({"Effect": "Deny", "NotPrincipal": {"AWS": [ALICE, CI]}, "Action": "ecr:BatchGetImage"})
    policies = {"p": doc(allow(PULL)), "b": doc(allow("*"))}
    rows = [user("alice", "p"), role("ci", "p", boundary="b"), user("bob", "p")]
    m = run(rows, [repo("app", rp)], policies)
    assert caps(m, ALICE, "app") == (["pull"], [])  # listed: not denied
    assert caps(m, CI, "app") == ([], [])  # listed, but it has a boundary
    assert caps(m, f"arn:aws:iam::{ACCT}:user/bob", "app") == ([], [])  # not listed


def test_not_action():
    m = run(
        [user("alice", "p")],
        [repo("app")],
        {"p": doc({"Effect": "Allow", "NotAction": "ecr:Batch*", "Resource": "*"})},
    )
    assert caps(m, ALICE, "app") == (["admin"], [])  # pull and push need Batch* actions, delete is one
    deny_not = {"p": doc(allow("ecr:*"), {"Effect": "Deny", "NotAction": PULL, "Resource": "*"})}
    assert caps(run([user("alice", "p")], [repo("app")], deny_not), ALICE, "app") == (["pull"], [])


def test_not_resource():
    p = {"p": doc({"Effect": "Allow", "Action": "ecr:*", "NotResource": arn("prod/*")})}
    m = run([user("alice", "p")], [repo("prod/api"), repo("dev/api")], p)
    assert caps(m, ALICE, "prod/api") == ([], [])
    assert "push" in caps(m, ALICE, "dev/api")[0]


def test_question_mark_and_star_in_resource_arns():
    pattern = f"arn:aws:ecr:*:{ACCT}:repository/team-?/app*"
    m = run(
        [user("alice", "p")],
        [repo("team-a/app"), repo("team-a/app-x"), repo("team-ab/app"), repo("team-b/web")],
        {"p": doc(allow(PULL, pattern))},
    )
    assert caps(m, ALICE, "team-a/app")[0] == ["pull"]
    assert caps(m, ALICE, "team-a/app-x")[0] == ["pull"]
    assert caps(m, ALICE, "team-ab/app")[0] == []  # ? is one character
    assert caps(m, ALICE, "team-b/web")[0] == []


def test_resource_arns_are_case_sensitive_and_actions_are_not():
    p = {"p": doc(allow(["ECR:batchgetimage", "Ecr:GetDownloadURLForLayer"], arn("app")))}
    assert caps(run([user("alice", "p")], [repo("app")], p), ALICE, "app")[0] == ["pull"]
    upper = {"p": doc(allow(PULL, arn("App")))}
    assert caps(run([user("alice", "p")], [repo("app")], upper), ALICE, "app")[0] == []


def test_conditions():
    cond = {"Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}
    conditional = {"p": doc(allow(PULL, **cond))}
    assert caps(run([user("alice", "p")], [repo("app")], conditional), ALICE, "app") == ([], ["pull"])
    maybe_denied = {"p": doc(allow(PULL), deny("ecr:BatchGetImage", **cond))}
    assert caps(run([user("alice", "p")], [repo("app")], maybe_denied), ALICE, "app") == ([], ["pull"])
    denied = {"p": doc(allow(PULL, **cond), deny("ecr:BatchGetImage"))}
    assert caps(run([user("alice", "p")], [repo("app")], denied), ALICE, "app") == ([], [])
    variable = {"p": doc(allow(PULL, f"arn:aws:ecr:*:{ACCT}:repository/${{aws:username}}/*"))}
    assert caps(run([user("alice", "p")], [repo("alice/x")], variable), ALICE, "alice/x") == ([], ["pull"])


def test_group_membership_grants_and_denies():
    policies = {"g": doc(allow("ecr:*")), "gd": doc(deny("ecr:BatchDeleteImage"))}
    m = run([user("alice", "g", "gd", groups=("devs",)), user("bob")], [repo("app")], policies)
    assert caps(m, ALICE, "app")[0] == ["pull", "push", "admin"]
    assert caps(m, f"arn:aws:iam::{ACCT}:user/bob", "app") == ([], [])


def test_cross_account_and_everyone_rows():
    other = f"arn:aws:iam::{OTHER}:role/puller"
    rp = doc(
        {"Effect": "Allow", "Principal": {"AWS": [other, OTHER]}, "Action": PULL},
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "ecr:BatchGetImage"},
        {"Effect": "Deny", "Principal": "*", "Action": "ecr:GetDownloadUrlForLayer", "Condition": {"x": {}}},
    )
    m = run([user("alice")], [repo("app", rp)])
    assert caps(m, other, "app") == ([], ["pull"])
    assert caps(m, f"arn:aws:iam::{OTHER}:root", "app") == ([], ["pull"])
    assert caps(m, "*", "app") == ([], [])  # * alone has BatchGetImage only: no pull


def test_registry_policy_applies_to_the_repositories_it_names():
    reg = doc({"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": PULL, "Resource": arn("prod/*")})
    m = run([user("alice")], [repo("prod/a"), repo("dev/a")], registry_policy=reg)
    assert caps(m, ALICE, "prod/a")[0] == ["pull"] and caps(m, ALICE, "dev/a")[0] == []


def test_auth_token_is_decided_against_star_only():
    on_repo = {"p": doc(allow("ecr:GetAuthorizationToken", arn("*")))}
    m = run([user("alice", "p")], [repo("app")], on_repo)
    assert not m.token()[1][0]
    star = {"p": doc(allow("ecr:GetAuthorizationToken"))}
    assert run([user("alice", "p")], [repo("app")], star).token()[0][0]
    assert not int(run([user("alice", "p")], [repo("app")], star).certain[0, 0]) & TOKEN


# -- the vectorized path equals the statement-by-statement one -----------------------------------
ACTION_PATTERNS = [
    "ecr:*",
    "ecr:Get*",
    "ECR:batch*",
    "ecr:PutImage",
    "ecr:BatchDeleteImage",
    "*",
    "ecr:?etDownloadUrlForLayer",
    "s3:*",
]
RESOURCES = ["*", arn("prod/*"), arn("dev/a?"), f"arn:aws:ecr:*:{ACCT}:repository/*"]


def _statement(rng: random.Random, resource_policy: bool, principals: list[str]) -> dict:
    st: dict = {"Effect": rng.choice(["Allow", "Allow", "Deny"])}
    key = "NotAction" if rng.random() < 0.15 else "Action"
    st[key] = rng.sample(ACTION_PATTERNS, rng.randint(1, 3))
    if resource_policy:
        if rng.random() < 0.15:
            st["NotPrincipal"] = {"AWS": rng.sample(principals, 1)}
        else:
            st["Principal"] = (
                "*" if rng.random() < 0.2 else {"AWS": rng.sample(principals, rng.randint(1, 2))}
            )
        if rng.random() < 0.2:
            st["Resource"] = rng.choice(RESOURCES)
    else:
        st["NotResource" if rng.random() < 0.15 else "Resource"] = rng.choice(RESOURCES)
    if rng.random() < 0.25:
        st["Condition"] = {"StringEquals": {"aws:PrincipalTag/team": "x"}}
    return st


@pytest.mark.parametrize("seed", range(40))
def test_vectorized_equals_per_pair_on_random_policies(seed):
    rng = random.Random(seed)
    keys = [f"p{i}" for i in range(6)]
    policies = {k: doc(*(_statement(rng, False, []) for _ in range(rng.randint(1, 3)))) for k in keys}
    rows = []
    for i in range(5):
        mine = tuple(rng.sample(keys, rng.randint(0, 3)))
        bound = rng.choice([None, None, "p0", "p5"])
        rows.append(user(f"u{i}", *mine, boundary=bound) if i % 2 else role(f"r{i}", *mine, boundary=bound))
    names = [r.arn for r in rows] + [
        f"arn:aws:iam::{OTHER}:root",
        f"arn:aws:iam::{OTHER}:role/x",
        ACCT,
        f"arn:aws:sts::{ACCT}:assumed-role/r0/s1",
    ]
    repos = [
        repo(n, doc(*(_statement(rng, True, names) for _ in range(2))) if rng.random() < 0.7 else None)
        for n in ("prod/a", "prod/b", "dev/a1", "dev/b")
    ]
    reg = doc(*(_statement(rng, True, names) | {"Resource": rng.choice(RESOURCES)} for _ in range(2)))
    s = scope(rows, repos, policies, reg)
    m = evaluate(s)
    for i in range(len(s.rows)):
        for col in range(len(s.repos) + 1):
            assert bits_of(s, i, col) == (int(m.certain[i, col]), int(m.possible[i, col])), (seed, i, col)


def test_explain_names_the_statements():
    policies = {"p": doc({"Sid": "Pull", **allow(PULL)}), "d": doc(deny("ecr:PutImage"))}
    s = scope([user("alice", "p", "d")], [repo("app")], policies)
    d = decide(s, 0, 0, ACTIONS.index("ecr:BatchGetImage"))
    assert [(x.policy, x.label) for x in d.allows] == [("p", "Pull")]
    d = decide(s, 0, 0, ACTIONS.index("ecr:PutImage"))
    assert d.level == 0 and [(x.policy, x.label) for x in d.denies] == [("d", "#0")]
    assert np.count_nonzero(evaluate(s).certain) == 1
