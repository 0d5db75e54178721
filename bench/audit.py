"""Access audit bench: IAM and ECR requests for an account of 2,000 principals and 500
repositories against the least possible, and the time to evaluate every principal x repository
pair.

Run from the repository root (not a pytest test)::

    .venv/bin/python bench/audit.py            # 2,000 principals x 500 repositories
    .venv/bin/python bench/audit.py --quick    # 200 principals x 50 repositories

The account lives on moto (started here; GetAccountAuthorizationDetails paged as AWS pages it,
by the test shim ``tests/audit/moto_gaad_paging.py``) and is built through moto's backend in
this process (thousands of API calls would only time moto). Half the principals are users in
groups, half roles, a tenth of the roles have a permissions boundary; every principal has an
inline policy of its own and managed policies from a shared pool; 60 % of the repositories
have a repository policy naming principals, a few other accounts or everyone.

What runs is the audit's own code (``audit.run.audit``) with boto3 clients on moto. The
requests are counted by botocore's before-send events (retries would count). The least
possible, as the issue defines it: pages of GetAccountAuthorizationDetails (1,000 items a
page) plus one policy read per repository. The evaluation is timed on the same scope twice:
the vectorized evaluator the audit uses, and the per-pair one (``audit.explain``: every
statement of every policy for each pair and action) on a random sample of pairs, extrapolated
to all of them; the sample's answers are checked equal. Every figure is measured in the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import tempfile
import time
from typing import Any

import _local

ROOT = _local.prepare(
    AIRFLOW_HOME=tempfile.mkdtemp(prefix="airflow-home-bench-"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
)

import boto3  # noqa: E402

from devstack.services import MotoService  # noqa: E402
from include.registry_ops.audit import run as audit_run  # noqa: E402
from include.registry_ops.audit.evaluate import evaluate  # noqa: E402
from include.registry_ops.audit.explain import bits_of  # noqa: E402
from include.registry_ops.config import parse_config  # noqa: E402
from tests.audit.moto_gaad_paging import enable_gaad_paging  # noqa: E402

ACCOUNT = "777700001111"
REGION = "us-east-1"
OTHERS = ("888800002222", "999900003333")
PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
PUSH = ["ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload"]
PUSH += ["ecr:BatchCheckLayerAvailability"]

REPORT = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)


def out(line: str = "") -> None:
    print(line, file=REPORT, flush=True)


def row(label: str, value: Any, comment: str = "") -> None:
    text = f"  {label:<58} {value!s:>14}"
    out(f"{text}   {comment}" if comment else text)


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def repo_arn(name: str) -> str:
    return f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{name}"


def build(principals: int, repositories: int, rng: random.Random) -> dict[str, int]:
    """The account, straight into moto's backend; returns what was made."""
    from moto.ecr.models import ecr_backends
    from moto.iam.models import iam_backends

    iam = iam_backends[ACCOUNT]["aws"]
    ecr = ecr_backends[ACCOUNT][REGION]
    teams = max(5, repositories // 10)
    repos = [f"team-{i % teams:03d}/svc-{i // teams:03d}" for i in range(repositories)]
    pool = []
    for i in range(max(10, principals // 40)):
        team = f"team-{i % teams:03d}"
        statements = [
            {"Sid": "TeamPull", "Effect": "Allow", "Action": PULL, "Resource": repo_arn(f"{team}/*")},
            {"Sid": "Token", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        ]
        if i % 3 == 0:
            statements.append(
                {"Sid": "TeamPush", "Effect": "Allow", "Action": PUSH, "Resource": repo_arn(f"{team}/*")}
            )
        if i % 7 == 0:
            statements.append(
                {"Sid": "NoDelete", "Effect": "Deny", "Action": "ecr:BatchDelete*", "Resource": "*"}
            )
        if i % 11 == 0:
            statements.append(
                {
                    "Sid": "VpcAdmin",
                    "Effect": "Allow",
                    "Action": "ecr:*",
                    "Resource": repo_arn(f"{team}/svc-00?"),
                    "Condition": {"StringEquals": {"aws:SourceVpc": "vpc-1"}},
                }
            )
        pool.append(iam.create_policy("", "/", doc(*statements), f"pool-{i:03d}", []).arn)
    boundaries = [
        iam.create_policy(
            "", "/", doc({"Effect": "Allow", "Action": [*PULL, *PUSH], "Resource": "*"}), f"boundary-{i}", []
        ).arn
        for i in range(3)
    ]
    groups = [f"group-{i:02d}" for i in range(max(5, principals // 100))]
    for i, g in enumerate(groups):
        iam.create_group(g)
        iam.attach_group_policy(pool[i % len(pool)], g)
        iam.put_group_policy(
            g, "inline", doc({"Effect": "Allow", "Action": "ecr:Describe*", "Resource": "*"})
        )
    trust = doc(
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    )
    arns = []
    users = principals // 2
    for i in range(principals):
        own = doc(
            {"Effect": "Allow", "Action": PULL, "Resource": repo_arn(rng.choice(repos))},
            {
                "Effect": "Allow",
                "Action": "ecr:BatchDeleteImage",
                "Resource": repo_arn(f"team-{rng.randrange(teams):03d}/*"),
            },
        )
        if i < users:
            name = f"user-{i:04d}"
            iam.create_user(REGION, name, "/")
            iam.put_user_policy(name, "own", own)
            for g in rng.sample(groups, rng.randint(1, 2)):
                iam.add_user_to_group(g, name)
            if i % 10 == 0:
                iam.create_access_key(name)
            arns.append(f"arn:aws:iam::{ACCOUNT}:user/{name}")
        else:
            name = f"role-{i:04d}"
            boundary = boundaries[i % 3] if i % 10 == 0 else None
            iam.create_role(name, trust, "/", boundary, "", [], None)
            iam.put_role_policy(name, "own", own)
            for p in rng.sample(pool, rng.randint(1, 2)):
                iam.attach_role_policy(p, name)
            arns.append(f"arn:aws:iam::{ACCOUNT}:role/{name}")
    with_policy = 0
    for i, name in enumerate(repos):
        ecr.create_repository(
            name, None, {"encryptionType": "AES256"}, {"scanOnPush": i % 2 == 0}, "MUTABLE", []
        )
        if rng.random() < 0.6:
            statements = [
                {
                    "Sid": "Named",
                    "Effect": "Allow",
                    "Principal": {"AWS": rng.sample(arns, 3)},
                    "Action": [*PULL, *PUSH],
                }
            ]
            if i % 20 == 0:
                statements.append(
                    {
                        "Sid": "Partner",
                        "Effect": "Allow",
                        "Principal": {"AWS": rng.choice(OTHERS)},
                        "Action": PULL,
                    }
                )
            if i % 100 == 0:
                statements.append({"Sid": "Public", "Effect": "Allow", "Principal": "*", "Action": PULL})
            if i % 9 == 0:
                statements.append(
                    {
                        "Sid": "Guard",
                        "Effect": "Deny",
                        "Principal": {"AWS": rng.choice(arns)},
                        "Action": "ecr:PutImage",
                    }
                )
            ecr.set_repository_policy(None, name, doc(*statements))
            with_policy += 1
    return {
        "users": users,
        "roles": principals - users,
        "groups": len(groups),
        "managed": len(pool) + len(boundaries),
        "repositories": repositories,
        "with_policy": with_policy,
        "boundaries": sum(1 for i in range(users, principals) if i % 10 == 0),
    }


def clients(endpoint: str) -> audit_run.ClientFactory:
    creds = boto3.client("sts", endpoint_url=endpoint, region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/auditor", RoleSessionName="bench"
    )["Credentials"]
    kw = {
        "endpoint_url": endpoint,
        "region_name": REGION,
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
    }
    return lambda reg: audit_run.Clients(
        boto3.client("iam", **kw), boto3.client("sts", **kw), boto3.client("ecr", **kw)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 principals x 50 repositories")
    parser.add_argument("--sample", type=int, default=2000, help="pairs the per-pair evaluator decides")
    args = parser.parse_args()
    principals, repositories = (200, 50) if args.quick else (2000, 500)
    rng = random.Random(10)
    out(f"registry-ops access audit bench{'  (--quick)' if args.quick else ''}")
    enable_gaad_paging()
    server = MotoService().start()
    try:
        factory = clients(server.endpoint)
        t0 = time.perf_counter()
        made = build(principals, repositories, rng)
        built = time.perf_counter() - t0
        out()
        out(f"account (built through moto's backend in {built:.1f} s)")
        row(
            "principals: users in groups / roles (with a boundary)",
            f"{made['users']} / {made['roles']}",
            f"({made['boundaries']} with a boundary), {made['groups']} groups",
        )
        row("customer managed policies (pool + boundaries)", made["managed"])
        row("repositories / with a repository policy", f"{made['repositories']} / {made['with_policy']}")

        config = parse_config(
            {
                "registries": [{"name": "bench", "kind": "ecr", "conn_id": "unused", "region": REGION}],
                "storage": {"bucket": "registry-ops-bench"},
                "audit": {"report_wait_seconds": 10},
            },
            "<bench>",
        )
        t0 = time.perf_counter()
        result = audit_run.audit(config, clients_for=factory)
        wall = time.perf_counter() - t0
        assert not result.errors, result.errors
        (summary,) = result.registries
        req = summary["requests"]
        gaad = req["iam:GetAccountAuthorizationDetails"]
        items = made["users"] + made["roles"] + made["groups"] + made["managed"]
        least = math.ceil(items / 1000) + made["repositories"]
        access_reads = sum(
            req.get(k, 0)
            for k in (
                "iam:GetAccountAuthorizationDetails",
                "ecr:DescribeRepositories",
                "ecr:GetRepositoryPolicy",
                "ecr:GetRegistryPolicy",
                "sts:GetCallerIdentity",
            )
        )
        total = sum(req.values())
        out()
        out("requests (IAM, ECR and STS, counted by botocore)")
        for op, n in sorted(req.items()):
            row(op, n)
        row("total", total)
        row(
            "least possible: GAAD pages + one policy read per repository",
            least,
            f"ceil({items} items / 1000) + {made['repositories']}",
        )
        row(
            "access reads (GAAD, DescribeRepositories, policies, account id)",
            access_reads,
            f"{access_reads / least:.3f} x the least",
        )
        row(
            "all requests (+ settings: lifecycle per repository, scanning;",
            total,
            f"{total / least:.3f} x the least",
        )
        row("  keys: credential report, key ids for flagged users)", "")
        row(
            "per-principal reads instead: at least 4 per user/role",
            4 * principals,
            f"{4 * principals / gaad:.0f} x the GAAD pages",
        )
        out()
        matrix = result.matrices["bench"]
        scope = matrix.scope
        pairs = len(scope.rows) * len(scope.repos)
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            again = evaluate(scope)
            best = min(best, time.perf_counter() - t0)
        sample = [
            (rng.randrange(len(scope.rows)), rng.randrange(len(scope.repos) + 1)) for _ in range(args.sample)
        ]
        t0 = time.perf_counter()
        naive = [bits_of(scope, i, c) for i, c in sample]
        per_pair = (time.perf_counter() - t0) / len(sample)
        agree = sum(
            1
            for (i, c), bits in zip(sample, naive, strict=True)
            if bits == (int(again.certain[i, c]), int(again.possible[i, c]))
        )
        granted = sum(1 for r in result.access)
        out(
            f"evaluation of {len(scope.rows):,} principals x {len(scope.repos):,} repositories = "
            f"{pairs:,} pairs (+ the * column)"
        )
        row("vectorized evaluator (best of 3)", f"{best:.2f} s", f"{pairs / best / 1e6:.1f} M pairs/s")
        row(
            f"per-pair evaluator, {len(sample):,} sampled pairs",
            f"{per_pair * 1e6:.0f} us/pair",
            f"extrapolated {per_pair * pairs:.0f} s for all",
        )
        row("speed-up", f"{per_pair * pairs / best:.0f} x")
        row("sampled pairs where both agree", f"{agree}/{len(sample)}")
        row("access rows (principal x repository with something)", f"{granted:,}")
        row("findings", f"{len(result.findings):,}")
        row("whole audit wall time (reads on moto, evaluate, findings)", f"{wall:.1f} s")
        assert agree == len(sample), "the vectorized and per-pair evaluators disagree"
    finally:
        server.stop()


if __name__ == "__main__":
    main()
