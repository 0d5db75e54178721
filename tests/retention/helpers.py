"""Small builders for planner tests: images by name, ages in days before a fixed ``NOW``."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from include.registry_ops import schema
from include.registry_ops.registries.base import OCI_INDEX, OCI_MANIFEST
from include.registry_ops.retention.planner import plan
from include.registry_ops.retention.policy import PolicySet, parse_policies

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
REPO = "ret-plan/app"


def digest(name: str) -> str:
    """A stable digest per test image name (so tests can refer to images by name)."""
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def image(
    name: str,
    tags: list[str] | None = None,
    days: float | None = None,
    *,
    repo: str = REPO,
    registry: str = "ecr-test",
    kind: str = "image",
    parents: list[str] | None = None,
    children: list[str] | None = None,
    subject: str | None = None,
    pulled_days: float | None = None,
    created_days: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One inventory record; ``parents``/``children``/``subject`` are image names."""
    rec = {
        "registry": registry,
        "registry_kind": "ecr",
        "repository": repo,
        "digest": digest(name),
        "tags": sorted(tags or []),
        "kind": kind,
        "media_type": OCI_INDEX if kind == "index" else OCI_MANIFEST,
        "size_bytes": 1000,
        "pushed_at": None if days is None else NOW - timedelta(days=days),
        "created_at": None if created_days is None else NOW - timedelta(days=created_days),
        "last_pulled_at": None if pulled_days is None else NOW - timedelta(days=pulled_days),
        "parent_digests": [digest(p) for p in parents or []],
        "child_digests": [digest(c) for c in children or []],
        "subject_digest": digest(subject) if subject else None,
        "snapshot_at": NOW,
    }
    rec.update(extra)
    return rec


def inventory(*records: dict[str, Any]) -> pd.DataFrame:
    """Records as a schema-typed inventory frame (extra columns kept)."""
    frame = schema.to_frame(records)
    extras = {k for r in records for k in r} - set(schema.COLUMNS)
    for key in sorted(extras):
        frame[key] = [r.get(key) for r in records]
    return frame


def ecr_policy(*rules: dict[str, Any], **settings: Any) -> PolicySet:
    """A one-policy set for every repository; no extension defaults change ECR behaviour unless
    ``settings`` say so (protect_tags defaults to none here, to test ECR semantics bare)."""
    settings.setdefault("protect_tags", [])
    return parse_policies({"policies": [{"name": "test", "rules": list(rules), **settings}]}, "test.yaml")


def rule(
    priority: int,
    status: str,
    count_type: str,
    number: int,
    *,
    prefixes: list[str] | None = None,
    patterns: list[str] | None = None,
    regexes: list[str] | None = None,
    action: str = "expire",
    storage: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    sel: dict[str, Any] = {"tagStatus": status, "countType": count_type, "countNumber": number}
    if count_type != "imageCountMoreThan":
        sel["countUnit"] = "days"
    if prefixes is not None:
        sel["tagPrefixList"] = prefixes
    if patterns is not None:
        sel["tagPatternList"] = patterns
    if regexes is not None:
        sel["tagRegexList"] = regexes
    if storage:
        sel["storageClass"] = storage
    act: dict[str, Any] = {"type": action}
    if action == "transition":
        act["targetStorageClass"] = "archive"
    out: dict[str, Any] = {"rulePriority": priority, "selection": sel, "action": act}
    if description:
        out["description"] = description
    return out


def decide(frame: pd.DataFrame, policies: PolicySet, now: datetime = NOW, in_use: set[str] | None = None):
    """Plan and return {image digest: row dict} plus the plan frame."""
    result = plan(frame, policies, now, in_use)
    return {r["digest"]: r for r in result.to_dict("records")}, result


def actions(frame: pd.DataFrame, policies: PolicySet, now: datetime = NOW, in_use: set[str] | None = None):
    """{digest: action} for quick assertions."""
    rows, _ = decide(frame, policies, now, in_use)
    return {d: r["action"] for d, r in rows.items()}


def named(names: str) -> dict[str, str]:
    return {digest(n): n for n in names.split()}


def by_name(result: dict[str, Any], names: str) -> dict[str, Any]:
    """Re-key a {digest: value} dict by the image names given (space separated)."""
    lookup = named(names)
    return {lookup[d]: v for d, v in result.items() if d in lookup}


def reference_plan(
    frame: pd.DataFrame, policies: PolicySet, now: datetime = NOW, in_use: set[str] | None = None
) -> dict[str, tuple[str, int | None, list[str]]]:
    """{digest: (action, rule priority, untag tags)} from the plain per-image loop planner of
    ``tests/retention/reference_planner.py`` (the differential reference), for one-registry inventories."""
    from tests.retention.reference_planner import loop_plan

    return {key[2]: value for key, value in loop_plan(frame, policies, now, in_use).items()}


def planner_triples(
    frame: pd.DataFrame, policies: PolicySet, now: datetime = NOW, in_use: set[str] | None = None
) -> dict[str, tuple[str, int | None, list[str]]]:
    """The real planner's decisions in ``reference_plan``'s shape, to compare the two."""
    return {
        r.digest: (r.action, None if pd.isna(r.rule_priority) else int(r.rule_priority), list(r.untag_tags))
        for r in plan(frame, policies, now, in_use).itertuples(index=False)
    }
