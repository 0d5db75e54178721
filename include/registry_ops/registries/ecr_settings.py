"""ECR repository settings: create with them, describe them, apply them (``EcrRegistry``'s
``create_repository``, ``describe_repository`` and ``apply_repository_settings``).

What ``RepositorySettings`` holds maps to these calls: ``CreateRepository`` (tag mutability and
its exclusion filters, scan on push, encryption, resource tags), ``PutImageScanningConfiguration``,
``PutImageTagMutability``, ``Put/Get/DeleteLifecyclePolicy``, ``Set/Get/DeleteRepositoryPolicy``,
``TagResource``/``UntagResource``/``ListTagsForResource``. moto implements all of them.

Registry-wide settings (``describe_registry`` and ``apply_registry``, for backups): the registry
policy (``Get/PutRegistryPolicy``), replication (``DescribeRegistry``,
``PutReplicationConfiguration``), registry scanning (``Get/PutRegistryScanningConfiguration``)
and pull-through cache rules (``DescribePullThroughCacheRules``, ``CreatePullThroughCacheRule``;
moto lacks these two). Those calls take no ``registryId``: they act on the caller's own registry,
so a registry configured with another account's ``registry_id`` is refused rather than answered
with the caller's settings. Left out: repository creation templates.
"""

from __future__ import annotations

import contextlib
from datetime import UTC
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from .base import Invalid, NotFound, RepositorySettings, Unsupported

if TYPE_CHECKING:
    from .ecr import EcrRegistry

NO_POLICY = frozenset({"LifecyclePolicyNotFoundException", "RepositoryPolicyNotFoundException"})


def create(reg: EcrRegistry, repository: str, s: RepositorySettings) -> bool:
    """Create with the settings CreateRepository takes, then the policies; False if it existed."""
    kwargs: dict[str, Any] = {"repositoryName": repository}
    if s.tag_mutability is not None:
        kwargs["imageTagMutability"] = s.tag_mutability
    if s.tag_mutability_exclusions:
        kwargs["imageTagMutabilityExclusionFilters"] = _exclusions(s.tag_mutability_exclusions)
    if s.scan_on_push is not None:
        kwargs["imageScanningConfiguration"] = {"scanOnPush": s.scan_on_push}
    if s.encryption_type is not None:
        kwargs["encryptionConfiguration"] = {
            "encryptionType": s.encryption_type,
            **({"kmsKey": s.kms_key} if s.kms_key else {}),
        }
    if s.resource_tags:
        kwargs["tags"] = _tags(s.resource_tags)
    if reg.call("create_repository", repository, ("RepositoryAlreadyExistsException",), **kwargs) is None:
        return False
    _policies(reg, repository, s)
    return True


def describe(reg: EcrRegistry, repository: str) -> RepositorySettings:
    """Scanning, tag mutability and exclusions, encryption, lifecycle and repository policies,
    resource tags and creation time (four calls)."""
    repo = reg._repository(repository)
    lifecycle = _optional(reg, "get_lifecycle_policy", repository, "lifecyclePolicyText")
    policy = _optional(reg, "get_repository_policy", repository, "policyText")
    tags = reg._call("list_tags_for_resource", repository, resourceArn=repo["repositoryArn"])
    encryption = repo.get("encryptionConfiguration") or {}
    created = repo.get("createdAt")
    return RepositorySettings(
        scan_on_push=bool((repo.get("imageScanningConfiguration") or {}).get("scanOnPush", False)),
        tag_mutability=repo.get("imageTagMutability"),
        tag_mutability_exclusions=tuple(
            f["filter"] for f in repo.get("imageTagMutabilityExclusionFilters") or []
        ),
        encryption_type=encryption.get("encryptionType"),
        kms_key=encryption.get("kmsKey"),
        lifecycle_policy=lifecycle,
        repository_policy=policy,
        resource_tags={t["Key"]: t["Value"] for t in tags.get("tags") or []},
        created_at=created.astimezone(UTC) if created is not None else None,
    )


def apply(reg: EcrRegistry, repository: str, s: RepositorySettings) -> list[str]:
    """Every given setting. Encryption is fixed when a repository is created: a different one is
    refused (Invalid) before anything is changed, never silently ignored."""
    current = reg._repository(repository)
    if s.encryption_type is not None or s.kms_key is not None:
        _same_encryption(reg, repository, current.get("encryptionConfiguration") or {}, s)
    if s.scan_on_push is not None:
        reg._call(
            "put_image_scanning_configuration",
            repository,
            repositoryName=repository,
            imageScanningConfiguration={"scanOnPush": s.scan_on_push},
        )
    if s.tag_mutability is not None or s.tag_mutability_exclusions is not None:
        kwargs: dict[str, Any] = {
            "repositoryName": repository,
            "imageTagMutability": s.tag_mutability or current.get("imageTagMutability", "MUTABLE"),
        }
        if s.tag_mutability_exclusions:
            kwargs["imageTagMutabilityExclusionFilters"] = _exclusions(s.tag_mutability_exclusions)
        reg._call("put_image_tag_mutability", repository, **kwargs)
    _policies(reg, repository, s)
    if s.resource_tags is not None:
        _resource_tags(reg, repository, current["repositoryArn"], s.resource_tags)
    return []


def _same_encryption(reg: EcrRegistry, repository: str, have: dict[str, Any], s: RepositorySettings) -> None:
    want_type = s.encryption_type or have.get("encryptionType")
    if want_type != have.get("encryptionType") or (s.kms_key is not None and s.kms_key != have.get("kmsKey")):
        has = f"{have.get('encryptionType')}{' ' + have['kmsKey'] if have.get('kmsKey') else ''}"
        asked = f"{want_type}{' ' + s.kms_key if s.kms_key else ''}"
        raise reg.error(
            f"encryption is fixed when an ECR repository is created: it has {has}, asked for {asked}",
            repository,
            Invalid,
        )


def _policies(reg: EcrRegistry, repository: str, s: RepositorySettings) -> None:
    """Lifecycle and repository policy: text sets it, an empty string removes it."""
    if s.lifecycle_policy:
        reg._call(
            "put_lifecycle_policy",
            repository,
            repositoryName=repository,
            lifecyclePolicyText=s.lifecycle_policy,
        )
    elif s.lifecycle_policy == "":
        with contextlib.suppress(NotFound):
            reg._call("delete_lifecycle_policy", repository, repositoryName=repository)
    if s.repository_policy:
        reg._call(
            "set_repository_policy", repository, repositoryName=repository, policyText=s.repository_policy
        )
    elif s.repository_policy == "":
        with contextlib.suppress(NotFound):
            reg._call("delete_repository_policy", repository, repositoryName=repository)


def _resource_tags(reg: EcrRegistry, repository: str, arn: str, wanted: dict[str, str]) -> None:
    """Make the repository's resource tags exactly ``wanted``."""
    listed = reg._call("list_tags_for_resource", repository, resourceArn=arn).get("tags") or []
    have = {t["Key"]: t["Value"] for t in listed}
    gone = sorted(set(have) - set(wanted))
    if gone:
        reg._call("untag_resource", repository, resourceArn=arn, tagKeys=gone)
    if any(have.get(k) != v for k, v in wanted.items()):
        reg._call("tag_resource", repository, resourceArn=arn, tags=_tags(wanted))


def _optional(reg: EcrRegistry, operation: str, repository: str, key: str) -> str | None:
    """A policy text, or None when the repository has none."""
    resp = reg.call(operation, repository, NO_POLICY, repositoryName=repository)
    return None if resp is None else resp[key]


def _exclusions(filters: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"filterType": "WILDCARD", "filter": f} for f in filters]


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


# -- registry-level settings ---------------------------------------------------------------------
REGISTRY_SETTINGS = (
    "registry_policy",
    "replication_configuration",
    "scanning_configuration",
    "pull_through_cache_rules",
)
_RULE_FIELDS = (
    "ecrRepositoryPrefix",
    "upstreamRegistryUrl",
    "upstreamRegistry",
    "credentialArn",
    "customRoleArn",
    "upstreamRepositoryPrefix",
)


def _registry_call(reg: EcrRegistry, operation: str, absent: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """A registry-level call (no ``registryId``: these act on the caller's registry); None when
    AWS answers with a code in ``absent``; other failures as typed errors."""
    try:
        return getattr(reg.client, operation)(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in absent:
            return None
        raise reg.aws_error(f"{operation} failed", exc) from exc
    except BotoCoreError as exc:
        raise reg.aws_error(f"{operation} failed", exc) from exc


def _own_registry(reg: EcrRegistry) -> dict[str, Any]:
    """``DescribeRegistry`` of the caller's registry; Unsupported when the adapter is configured
    for another account's (its settings cannot be read or written from here)."""
    resp = _registry_call(reg, "describe_registry")
    if reg.registry_id and resp.get("registryId") != reg.registry_id:
        raise reg.error(
            f"registry-level settings of registry {reg.registry_id} cannot be read or written with "
            f"the credentials of account {resp.get('registryId')} (ECR's registry calls act on the "
            "caller's own registry)",
            None,
            Unsupported,
        )
    return resp


def describe_registry(reg: EcrRegistry) -> dict[str, Any]:
    """Registry policy (None when there is none), replication configuration, registry scanning
    configuration and pull-through cache rules (sorted by prefix, without their times), JSON-ready."""
    replication = _own_registry(reg).get("replicationConfiguration") or {"rules": []}
    policy = _registry_call(reg, "get_registry_policy", ("RegistryPolicyNotFoundException",))
    scanning = _registry_call(reg, "get_registry_scanning_configuration")
    rules: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = _registry_call(
            reg, "describe_pull_through_cache_rules", **({"nextToken": token} if token else {})
        )
        listed = page.get("pullThroughCacheRules") or []
        rules += [{k: r[k] for k in _RULE_FIELDS if r.get(k)} for r in listed]
        token = page.get("nextToken")
        if not token:
            break
    return {
        "registry_policy": policy["policyText"] if policy else None,
        "replication_configuration": replication,
        "scanning_configuration": (scanning or {}).get("scanningConfiguration")
        or {"scanType": "BASIC", "rules": []},
        "pull_through_cache_rules": sorted(rules, key=lambda r: r["ecrRepositoryPrefix"]),
    }


def apply_registry(reg: EcrRegistry, settings: dict[str, Any]) -> list[str]:
    """Apply what :func:`describe_registry` read; None values are left as they are. A rule whose
    prefix already exists is left alone (AWS has no update of the upstream). Returns the names
    of unknown settings (not applied)."""
    _own_registry(reg)
    policy = settings.get("registry_policy")
    if policy:
        _registry_call(reg, "put_registry_policy", policyText=policy)
    replication = settings.get("replication_configuration")
    if replication is not None:
        _registry_call(reg, "put_replication_configuration", replicationConfiguration=replication)
    scanning = settings.get("scanning_configuration")
    if scanning is not None:
        _registry_call(
            reg,
            "put_registry_scanning_configuration",
            scanType=scanning.get("scanType", "BASIC"),
            rules=scanning.get("rules") or [],
        )
    for rule in settings.get("pull_through_cache_rules") or []:
        _registry_call(
            reg,
            "create_pull_through_cache_rule",
            ("PullThroughCacheRuleAlreadyExistsException",),
            **{k: rule[k] for k in _RULE_FIELDS if rule.get(k)},
        )
    return sorted(k for k, v in settings.items() if k not in REGISTRY_SETTINGS and v is not None)
