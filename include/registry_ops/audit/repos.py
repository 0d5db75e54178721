"""A registry's repositories for the audit: one ``DescribeRepositories`` page per 1,000
repositories (scan on push, tag mutability, encryption come with it), then per repository its
policy (``GetRepositoryPolicy``) and, for the settings findings, whether it has a lifecycle
policy (``GetLifecyclePolicy``), read in parallel; once per registry the registry policy and
the registry scanning configuration (a scan-on-push rule there covers repositories without
their own flag, as ECR applies it).

Why not ``EcrRegistry.describe_repository``: it makes four calls per repository (the listing
entry again, both policies, resource tags); the audit needs two, and the listing it already has.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .aws import call, pages
from .policy import PolicyError, Statement, parse
from .scope import Repository

PAGE = 1000
ON_PUSH = ("SCAN_ON_PUSH", "CONTINUOUS_SCAN")


@dataclass
class Registry:
    repos: list[Repository]
    statements: list[Statement]  # the registry policy's
    problems: list[PolicyError] = field(default_factory=list)


def _policy(text: str | None, label: str, problems: list[PolicyError]) -> list[Statement]:
    if text is None:
        return []
    try:
        return parse(text, label, "resource")
    except PolicyError as exc:
        problems.append(exc)
        return []


def _scan_rules(ecr: Any) -> list[str]:
    """Repository filters (wildcards) of registry scanning rules that scan on push."""
    got = call(ecr, "get_registry_scanning_configuration") or {}
    out = []
    for rule in (got.get("scanningConfiguration") or {}).get("rules") or []:
        if rule.get("scanFrequency") in ON_PUSH:
            out += [f["filter"] for f in rule.get("repositoryFilters") or [] if f.get("filter")]
    return out


def read_registry(
    ecr: Any,
    registry_id: str | None,
    wants: Callable[[str], bool],
    settings: bool = True,
    workers: int = 8,
) -> Registry:
    ids = {"registryId": registry_id} if registry_id else {}
    listed = [
        r
        for page in pages(ecr, "describe_repositories", **ids, PaginationConfig={"PageSize": PAGE})
        for r in page["repositories"]
        if wants(r["repositoryName"])
    ]
    problems: list[PolicyError] = []

    def one(r: dict[str, Any]) -> Repository:
        name = r["repositoryName"]
        got = call(
            ecr, "get_repository_policy", ("RepositoryPolicyNotFoundException",), repositoryName=name, **ids
        )
        lifecycle = None
        if settings:
            lifecycle = call(
                ecr, "get_lifecycle_policy", ("LifecyclePolicyNotFoundException",), repositoryName=name, **ids
            )
        return Repository(
            name=name,
            arn=r["repositoryArn"],
            statements=_policy(got and got.get("policyText"), f"repository policy of {name}", problems),
            scan_on_push=bool((r.get("imageScanningConfiguration") or {}).get("scanOnPush")),
            tag_mutability=r.get("imageTagMutability"),
            encryption_type=(r.get("encryptionConfiguration") or {}).get("encryptionType"),
            lifecycle_policy=bool(lifecycle and lifecycle.get("lifecyclePolicyText")),
        )

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        repos = sorted(pool.map(one, listed), key=lambda r: r.name)
    registry = call(ecr, "get_registry_policy", ("RegistryPolicyNotFoundException",))
    statements = _policy(registry and registry.get("policyText"), "registry policy", problems)
    if settings:
        filters = _scan_rules(ecr)
        for repo in repos:
            if not repo.scan_on_push and any(fnmatch.fnmatchcase(repo.name, f) for f in filters):
                repo.scan_on_push = True
    problems.sort(key=str)
    return Registry(repos, statements, problems)
