"""The vectorized planner against the plain per-image loop planner (tests/retention/reference_planner.py),
on the devstack fleet and on randomized inventories and policies: same action, rule priority
and untag tags for every image."""

from __future__ import annotations

import importlib.util
import random
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from devstack.fleet import make_fleet
from include.registry_ops import schema
from include.registry_ops.registries.base import classify
from include.registry_ops.retention import planner
from include.registry_ops.retention.planner import plan
from include.registry_ops.retention.policy import parse_policies
from tests.retention.reference_planner import decisions, loop_plan

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "bench") not in sys.path:  # as when the bench runs as a script: it imports _local
    sys.path.append(str(ROOT / "bench"))
_spec = importlib.util.spec_from_file_location("bench_retention_plan", ROOT / "bench" / "retention_plan.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def fleet_inventory(seed: int, lists: str = "python") -> pd.DataFrame:
    """make_fleet as inventory rows (the same fields the adapters produce); list columns as
    Python lists or Arrow (``schema.built_frame``), the two forms the planner accepts."""
    records = []
    for repo in make_fleet(seed=seed, repositories=8, images=400, layer_scale=0.0001, prefix="ret-plan/"):
        parents: dict[str, list[str]] = {}
        for m in repo.manifests:
            for c in m.children:
                parents.setdefault(c, []).append(m.digest)
        for m in repo.manifests:
            records.append(
                {
                    "registry": "ecr-local",
                    "registry_kind": "ecr",
                    "repository": repo.name,
                    "digest": m.digest,
                    "tags": m.tags,
                    "kind": classify(m.media_type, m.subject, m.tags),
                    "media_type": m.media_type,
                    "size_bytes": m.size,
                    "pushed_at": m.pushed_at,
                    "last_pulled_at": m.last_pulled_at,
                    "parent_digests": parents.get(m.digest, []),
                    "child_digests": m.children,
                    "subject_digest": m.subject,
                    "snapshot_at": NOW,
                }
            )
    return schema.built_frame(schema.to_table(records), lists)


def random_policy(rng: random.Random) -> dict[str, Any]:
    """A valid random policy: tagged rules with distinct selectors, maybe untagged, maybe any."""
    rules = []
    selectors = rng.sample(
        [
            {"tagPatternList": ["*.*.*"]},
            {"tagPrefixList": ["1"]},
            {"tagPrefixList": ["2"]},
            {"tagPatternList": ["2026*"]},
            {"tagRegexList": [r"^[0-9a-f]{7}$"]},
            {"tagPatternList": ["*a*", "*1*"]},
            {"tagPrefixList": ["latest"]},
        ],
        rng.randint(1, 4),
    )
    for sel in selectors:
        count = rng.choice(["imageCountMoreThan", "sinceImagePushed", "sinceImagePulled"])
        body: dict[str, Any] = {
            "tagStatus": "tagged",
            **sel,
            "countType": count,
            "countNumber": rng.randint(1, 120),
        }
        action: dict[str, Any] = {"type": "expire"}
        if count != "imageCountMoreThan":
            body["countUnit"] = "days"
        if count == "sinceImagePulled" or rng.random() < 0.1:
            action = {"type": "transition", "targetStorageClass": "archive"}
        rules.append({"selection": body, "action": action})
    if rng.random() < 0.7:
        rules.append(
            {
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": rng.randint(1, 60),
                },
                "action": {"type": "expire"},
            }
        )
    if rng.random() < 0.6:
        rules.append(
            {
                "selection": {
                    "tagStatus": "any",
                    "countType": "imageCountMoreThan",
                    "countNumber": rng.randint(1, 40),
                },
                "action": {"type": "expire"},
            }
        )
    priority = 0
    for r in rules:  # unique, increasing, not consecutive
        priority += rng.randint(1, 3)
        r["rulePriority"] = priority
    policy: dict[str, Any] = {
        "name": "random",
        "rules": rules,
        "untag_partial": rng.random() < 0.5,
        "children_follow_index": rng.random() < 0.7,
        "protect_tags": rng.choice([[], ["latest"], ["latest", r"re:^\d+\.\d+\.\d+$"], ["2026*"]]),
        "exclude_tags": rng.choice([[], ["*0"]]),
    }
    if rng.random() < 0.5:
        policy["keep_semver"] = {"per": rng.choice(["major", "minor"]), "keep": rng.randint(1, 3)}
    if rng.random() < 0.5:
        policy["keep_pulled_within_days"] = rng.randint(1, 60)
    return {"policies": [policy]}


def compare(inventory: pd.DataFrame, policies, in_use: set[str] | None) -> int:
    result = plan(inventory, policies, NOW, in_use)
    got = decisions(result)
    expected = loop_plan(inventory, policies, NOW, in_use)
    assert got.keys() == expected.keys()
    bad = {k: (got[k], expected[k]) for k in got if got[k] != expected[k]}
    assert not bad, f"{len(bad)} differ, e.g. {next(iter(bad.items()))}"
    return len(set(result["action"]))


@pytest.mark.parametrize("lists", schema.LIST_MODES)
@pytest.mark.parametrize("seed", range(40))
def test_random_policies_on_the_devstack_fleet(seed, lists):
    rng = random.Random(seed)
    inventory = fleet_inventory(seed % 3 + 1, lists)
    in_use = set(rng.sample(list(inventory["digest"]), 5)) | {
        f"{r}:{t[0]}"
        for r, t in zip(inventory["repository"][:40:7], inventory["tags"][:40:7], strict=True)
        if t
    }
    policies = parse_policies(random_policy(rng), f"random-{seed}")
    compare(inventory, policies, in_use)


@pytest.mark.parametrize("lists", schema.LIST_MODES)
def test_the_bench_inventory_and_policy(lists):
    inventory, in_use = bench.make_inventory(20_000, 40, seed=3, lists=lists)
    kinds = compare(inventory, parse_policies(bench.BENCH_POLICY, "bench"), in_use)
    assert kinds >= 3  # keep, expire and untag all happen


@pytest.mark.parametrize(("shuffled", "max_runs"), [(False, 1024), (True, 1024), (True, 8)])
def test_arrow_and_python_lists_give_the_same_plan(shuffled, max_runs, monkeypatch):
    """The planning path reads list columns as Arrow (``lists="arrow"``): the whole plan (every
    column, reasons included) is the one the Python-list frame gives, row for row. The sandbox
    repositories are not planned: their rows are a few blocks, or (shuffled) hundreds of gaps
    between the planned rows the result shares with the inventory (or, past ``max_runs``, copies)."""
    monkeypatch.setattr(planner, "MAX_SHARED_RUNS", max_runs)
    policies = parse_policies(bench.BENCH_POLICY, "bench")
    inventory, in_use = bench.make_inventory(6_000, 12, seed=5, lists="python")
    arrow, _ = bench.make_inventory(6_000, 12, seed=5, lists="arrow")
    if shuffled:
        order = random.Random(5).sample(range(len(arrow)), len(arrow))
        inventory, arrow = inventory.iloc[order], arrow.iloc[order]
    assert isinstance(arrow["tags"].dtype, pd.ArrowDtype)
    assert isinstance(inventory["tags"].iat[0], list)
    a, b = plan(arrow, policies, NOW, in_use), plan(inventory, policies, NOW, in_use)
    assert list(a.columns) == list(b.columns) and a.index.equals(b.index)
    for col in a.columns:
        if col == "tags":  # the inventory's own column, in the form the inventory holds it
            assert a[col].tolist() == b[col].tolist()
        else:
            pd.testing.assert_series_equal(a[col], b[col], obj=col)
    assert set(a["action"]) == {"keep", "expire", "untag"}


def test_an_unknown_list_form_is_refused():
    table = schema.to_table([])
    with pytest.raises(ValueError, match="lists='pylist': expected one of python, arrow"):
        schema.built_frame(table, "pylist")
    assert isinstance(schema.built_frame(table, "arrow")["tags"].dtype, pd.ArrowDtype)
