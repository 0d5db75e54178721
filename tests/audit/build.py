"""Scopes built from policy documents, for the evaluator's unit tests (no AWS involved)."""

from __future__ import annotations

from typing import Any

from include.registry_ops.audit.evaluate import Matrix, evaluate
from include.registry_ops.audit.policy import parse
from include.registry_ops.audit.repos import Registry
from include.registry_ops.audit.run import external_rows
from include.registry_ops.audit.scope import Repository, Row, Scope

ACCT = "111122223333"
OTHER = "444455556666"
REGION = "us-east-1"


def doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def arn(repo: str) -> str:
    return f"arn:aws:ecr:{REGION}:{ACCT}:repository/{repo}"


def user(name: str, *policies: str, boundary: str | None = None, groups: tuple[str, ...] = ()) -> Row:
    return Row(f"arn:aws:iam::{ACCT}:user/{name}", "user", ACCT, name, policies, boundary, groups)


def role(name: str, *policies: str, boundary: str | None = None) -> Row:
    return Row(f"arn:aws:iam::{ACCT}:role/{name}", "role", ACCT, name, policies, boundary)


def repo(name: str, policy: dict[str, Any] | None = None) -> Repository:
    statements = parse(policy, f"repository policy of {name}", "resource") if policy else []
    return Repository(name, arn(name), statements)


def scope(
    rows: list[Row],
    repos: list[Repository],
    policies: dict[str, dict[str, Any]] | None = None,
    registry_policy: dict[str, Any] | None = None,
) -> Scope:
    parsed = {k: parse(v, k, "identity") for k, v in (policies or {}).items()}
    reg_statements = parse(registry_policy, "registry policy", "resource") if registry_policy else []
    extra = external_rows(ACCT, {r.arn for r in rows}, Registry(repos, reg_statements))
    return Scope(ACCT, rows + extra, parsed, repos, reg_statements, "test")


def caps(m: Matrix, principal: str, repository: str) -> tuple[list[str], list[str]]:
    """(capabilities, conditional) of one cell, as the access rows give them."""
    i = next(n for n, r in enumerate(m.scope.rows) if r.arn == principal)
    j = next(n for n, r in enumerate(m.scope.repos) if r.name == repository)
    certain = [c for c, (cc, _) in m.capabilities.items() if cc[i, j]]
    conditional = [c for c, (cc, pp) in m.capabilities.items() if pp[i, j] and not cc[i, j]]
    return certain, conditional


def run(*args: Any, **kwargs: Any) -> Matrix:
    return evaluate(scope(*args, **kwargs))
