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

:func:`fleet_drift` checks every ECR registry of the config (``registry-ops retention drift``);
:func:`record_drift` is the retention DAG's ``drift`` step, which warns and never fails the run.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..config import Config, ConfigError, RegistryConfig
from ..registries.ecr_errors import aws_problem
from ..store.objects import error_code
from .policy import PolicySet, ResolvedPolicy

log = logging.getLogger(__name__)

NOT_FOUND = {"LifecyclePolicyNotFoundException", "RepositoryPolicyNotFoundException"}
DRIFT_NAME = "drift.json"  # beside the run's summary.json


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

    @property
    def drifted(self) -> bool:
        """What ``retention drift`` exits 1 for: a managed repository whose native policy differs
        from the declared rules, or has none although the rules could be attached (``missing``
        without ``not_expressible``). ``unmanaged``, ``none`` and ``in_sync`` are healthy."""
        return self.status == "differs" or (self.status == "missing" and not self.not_expressible)


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
        if error_code(exc) in NOT_FOUND:
            return None
        raise


def check_repository(
    ecr: Any, repository: str, declared: ResolvedPolicy | None, registry_id: str | None = None
) -> Drift:
    name = declared.name if declared else None
    try:
        text = native_policy(ecr, repository, registry_id)
    except ClientError as exc:
        if error_code(exc) == "RepositoryNotFoundException":
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
        repositories = repository_names(ecr, registry_id)
    return [
        check_repository(ecr, repo, policies.resolve(repo, registry), registry_id) for repo in repositories
    ]


def repository_names(ecr: Any, registry_id: str | None = None) -> list[str]:
    kwargs = {"registryId": registry_id} if registry_id else {}
    pages = ecr.get_paginator("describe_repositories").paginate(**kwargs)
    return sorted(r["repositoryName"] for p in pages for r in p["repositories"])


def _ecr_registries(config: Config, name: str | None) -> list[RegistryConfig]:
    if name is None:
        return [r for r in config.registries if r.kind == "ecr"]
    reg = config.registry(name)  # unknown: ConfigError naming the configured ones
    if reg.kind != "ecr":
        raise ConfigError(
            f"{config.source}: registry {name!r} is of kind {reg.kind!r}: drift compares ECR lifecycle "
            "policies, and only ECR registries have them"
        )
    return [reg]


def fleet_drift(
    config: Config,
    policies: PolicySet,
    registry: str | None = None,
    ecr_for: Callable[[RegistryConfig], Any] | None = None,
) -> dict[str, Any]:
    """Drift of every repository (its registry's include/exclude let in) of each ECR registry of
    the config, or of the one named: ``repositories`` (one record each), ``drifted``
    (``registry/repository`` of each drifted one), ``counts`` by status and ``errors`` (a registry
    that could not be read is named there; the others are still checked)."""
    if ecr_for is None:
        from ..clients import ecr_client

        def ecr_for(reg: RegistryConfig) -> Any:
            return ecr_client(reg.conn_id or "", reg.region)

    records: list[dict[str, Any]] = []
    drifted: list[str] = []
    errors: list[str] = []
    for reg in _ecr_registries(config, registry):
        try:
            ecr = ecr_for(reg)
            repos = [r for r in repository_names(ecr, reg.registry_id) if reg.wants(r)]
            found = check_drift(
                ecr, policies, registry=reg.name, repositories=repos, registry_id=reg.registry_id
            )
        except (ClientError, BotoCoreError) as exc:
            errors.append(f"{reg.name}: drift not checked: {aws_problem(exc)}")
            continue
        records += [{"registry": reg.name, **d.to_dict()} for d in found]
        drifted += [f"{reg.name}/{d.repository}" for d in found if d.drifted]
    counts = Counter(r["status"] for r in records)
    return {
        "repositories": records,
        "drifted": drifted,
        "counts": dict(sorted(counts.items())),
        "errors": errors,
    }


def table(report: dict[str, Any]) -> str:
    """The report for people: one line per repository, its differences last and never cut."""
    head = ("REGISTRY", "REPOSITORY", "STATUS", "POLICY")
    rows = []
    for r in report["repositories"]:
        status = r["status"] + (" (not expressible)" if r["not_expressible"] else "")
        notes = r["differences"] + [f"cosmetic: {c}" for c in r["cosmetic"]]
        rows.append((r["registry"], r["repository"], status, r["policy"] or "-", "; ".join(notes)))
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(head)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True))
        + ("  " + row[4] if row[4:] else "")
        for row in [(*head, "DIFFERENCES"), *rows]
    ]
    counts = ", ".join(f"{n} {status}" for status, n in report["counts"].items()) or "none"
    lines += ["", f"{len(rows)} repositories: {counts}; drifted: {len(report['drifted'])}"]
    lines += [f"error: {e}" for e in report["errors"]]
    return "\n".join(lines)


def record_drift(config: Config, run_id: str) -> dict[str, Any]:
    """The retention DAG's ``drift`` step: the report goes to ``<runs_prefix><run_id>/drift.json``
    and each drifted repository and unreadable registry to the log at WARNING. Drift never fails
    the run (the deletions do not depend on it): it is reported, and counted in the summary."""
    from ..store.clients import s3_client
    from ..store.objects import put_json
    from .audit import run_layout
    from .jobs import load_policy_set

    if not config.retention.policy_file:
        log.info("retention: drift: no retention.policy_file, nothing declared to compare")
        return {"drifted": [], "errors": [], "key": None}
    report = fleet_drift(config, load_policy_set(config))
    key = run_layout(config.storage.bucket, config.retention.runs_prefix).id_prefix(run_id) + DRIFT_NAME
    put_json(s3_client(config), config.storage.bucket, key, report)
    by_name = {f"{r['registry']}/{r['repository']}": r for r in report["repositories"]}
    for name in report["drifted"]:
        rec = by_name[name]
        log.warning("retention: drift: %s: %s %s", name, rec["status"], "; ".join(rec["differences"]))
    for error in report["errors"]:
        log.warning("retention: drift: %s", error)
    log.info(
        "retention: drift: %s; %d drifted; written to s3://%s/%s",
        report["counts"] or "no ECR repositories",
        len(report["drifted"]),
        config.storage.bucket,
        key,
    )
    return {"drifted": report["drifted"], "errors": report["errors"], "key": key}


def read_drift(config: Config, run_id: str) -> dict[str, Any] | None:
    """The run's drift report, None when its ``drift`` step wrote none (it failed, or had no policies)."""
    from ..store.clients import s3_client
    from ..store.objects import get_json_or_none
    from .audit import run_layout

    key = run_layout(config.storage.bucket, config.retention.runs_prefix).id_prefix(run_id) + DRIFT_NAME
    return get_json_or_none(s3_client(config), config.storage.bucket, key)
