"""Drift check: does each ECR repository's native lifecycle policy match the declared rules?

Fleet-wide policy as code is only trustworthy if someone notices hand edits in the console
(registries.md §5 #7). Both sides are normalized before comparing, so formatting, key order,
tag-list order (entries are AND-combined, order is meaningless) and defaults written or left
out (``storageClass: standard``) are not reported. Descriptions are compared but reported as
cosmetic: they do not change what ECR deletes.

Statuses: ``in_sync``; ``differs``; ``missing`` (declared, no native policy); ``unmanaged``
(native policy, no declared policy governs the repository); ``none`` (neither);
``repository_missing``. ``not_expressible`` is set when the declared rules use extensions ECR
cannot run (``tagRegexList``): attaching them natively is impossible, so such repositories are
expected to have no native policy and ``missing`` is their healthy state.

Note that a native policy acts without the platform's extensions (in-use images, protected
tags, untag-instead-of-delete): attach declared rules natively only where the rules alone are safe.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from .policy import PolicySet, ResolvedPolicy

NOT_FOUND = {"LifecyclePolicyNotFoundException", "RepositoryPolicyNotFoundException"}


@dataclass
class Drift:
    repository: str
    status: str
    policy: str | None
    not_expressible: bool = False
    differences: list[str] = field(default_factory=list)
    cosmetic: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize(document: Any) -> dict[int, dict[str, Any]]:
    """A lifecycle policy document (dict or JSON text) as {rulePriority: canonical rule}."""
    if isinstance(document, (str, bytes)):
        document = json.loads(document)
    out: dict[int, dict[str, Any]] = {}
    for rule in (document or {}).get("rules", []):
        sel = dict(rule.get("selection") or {})
        canon: dict[str, Any] = {
            "tagStatus": sel.get("tagStatus"),
            "storageClass": sel.get("storageClass", "standard"),
            "countType": sel.get("countType"),
            "countNumber": sel.get("countNumber"),
        }
        if "countUnit" in sel:
            canon["countUnit"] = sel["countUnit"]
        for key in ("tagPrefixList", "tagPatternList", "tagRegexList"):
            if key in sel:
                canon[key] = sorted(sel[key])
        action = dict(rule.get("action") or {})
        canon["action"] = action.get("type")
        if action.get("targetStorageClass"):
            canon["targetStorageClass"] = action["targetStorageClass"]
        canon["description"] = rule.get("description") or ""
        out[rule.get("rulePriority")] = canon
    return out


def compare(declared: Any, native: Any) -> tuple[list[str], list[str]]:
    """(differences, cosmetic differences) between two policy documents, by rule priority."""
    want, have = normalize(declared), normalize(native)
    diffs: list[str] = []
    cosmetic: list[str] = []
    for prio in sorted(set(want) | set(have), key=lambda p: (p is None, p)):
        if prio not in have:
            diffs.append(f"rule {prio}: declared but not in the native policy")
            continue
        if prio not in want:
            diffs.append(f"rule {prio}: in the native policy but not declared")
            continue
        w, h = want[prio], have[prio]
        for key in sorted(set(w) | set(h)):
            if w.get(key) != h.get(key):
                line = f"rule {prio}: {key}: declared {w.get(key)!r}, native {h.get(key)!r}"
                (cosmetic if key == "description" else diffs).append(line)
    return diffs, cosmetic


def native_policy(ecr: Any, repository: str, registry_id: str | None = None) -> str | None:
    """The repository's lifecycle policy text, None when it has none; raises for a missing repo."""
    kwargs = {"repositoryName": repository, **({"registryId": registry_id} if registry_id else {})}
    try:
        return ecr.get_lifecycle_policy(**kwargs)["lifecyclePolicyText"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in NOT_FOUND:
            return None
        raise


def check_repository(
    ecr: Any, repository: str, declared: ResolvedPolicy | None, registry_id: str | None = None
) -> Drift:
    name = declared.name if declared else None
    try:
        text = native_policy(ecr, repository, registry_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "RepositoryNotFoundException":
            return Drift(repository, "repository_missing", name)
        raise
    expressible = declared is None or declared.native
    if declared is None:
        return Drift(repository, "unmanaged" if text else "none", None)
    if text is None:
        return Drift(repository, "missing", name, not_expressible=not expressible)
    try:
        diffs, cosmetic = compare(declared.ecr_policy(), text)
    except (ValueError, TypeError, AttributeError) as exc:
        diffs, cosmetic = [f"native policy is not a valid lifecycle policy document: {exc}"], []
    status = "differs" if diffs else "in_sync"
    return Drift(repository, status, name, not expressible, diffs, cosmetic)


def check_drift(
    ecr: Any,
    policies: PolicySet,
    *,
    registry: str = "",
    repositories: list[str] | None = None,
    registry_id: str | None = None,
) -> list[Drift]:
    """Drift of every repository (all of the registry's when ``repositories`` is None)."""
    if repositories is None:
        kwargs = {"registryId": registry_id} if registry_id else {}
        pages = ecr.get_paginator("describe_repositories").paginate(**kwargs)
        repositories = sorted(r["repositoryName"] for p in pages for r in p["repositories"])
    return [
        check_repository(ecr, repo, policies.resolve(repo, registry), registry_id) for repo in repositories
    ]
