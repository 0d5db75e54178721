"""``keep_pulled_within_days: N`` at its boundary (planner_protect.py).

docs/retention-policies.md §4.4: "An image whose ``last_pulled_at`` is within N days
(now − pull ≤ N days) is kept." So the boundary is inclusive: pulled exactly N × 24 h before
``now`` is kept, one microsecond (the inventory's time resolution) or one second earlier is not.
Every image below is old enough for the age rule to expire it, so only the pull time decides.
The same cases go through ``registry-ops retention plan`` with the shipped example policy and a
Parquet/JSON/CSV inventory (what a user runs), and through the per-image reference loop.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from include.registry_ops import schema
from include.registry_ops.cli import main
from include.registry_ops.inventory_files import write_inventory
from tests.retention.helpers import (
    NOW,
    decide,
    digest,
    ecr_policy,
    image,
    inventory,
    planner_triples,
    reference_plan,
    rule,
)

ROOT = Path(__file__).resolve().parents[2]
US = timedelta(microseconds=1)
SECOND = timedelta(seconds=1)

# name -> (pull offset before now, as a function of N days; expected action)
CASES = {
    "exactly-N-days": (lambda n: timedelta(days=n), "keep"),
    "N-days-minus-1us": (lambda n: timedelta(days=n) - US, "keep"),
    "N-days-minus-1s": (lambda n: timedelta(days=n) - SECOND, "keep"),
    "N-minus-1-days": (lambda n: timedelta(days=n - 1), "keep"),
    "N-days-plus-1us": (lambda n: timedelta(days=n) + US, "expire"),
    "N-days-plus-1s": (lambda n: timedelta(days=n) + SECOND, "expire"),
    "N-plus-1-days": (lambda n: timedelta(days=n + 1), "expire"),
}


def records(n: int, now: datetime, repo: str = "shop/api") -> list[dict]:
    """One image per case, pushed 400 days before ``now``, pulled at the case's offset; plus one
    never pulled (nothing to keep it)."""
    out = []
    for name, (offset, _) in CASES.items():
        rec = image(name, [f"build-{name}"], None, repo=repo, pushed_at=now - timedelta(days=400))
        rec["last_pulled_at"] = now - offset(n)
        out.append(rec)
    out.append(image("never-pulled", ["build-never"], None, repo=repo, pushed_at=now - timedelta(days=400)))
    return out


EXPECTED = {digest(name): action for name, (_, action) in CASES.items()} | {digest("never-pulled"): "expire"}


@pytest.mark.parametrize("n", [1, 14, 30])
@pytest.mark.parametrize(
    "now",
    [NOW, datetime(2026, 3, 29, 3, 30, 15, 123_456, tzinfo=timezone(timedelta(hours=2)))],
    ids=["utc-noon", "plus-0200-with-microseconds"],
)
def test_pulled_within_n_days_is_inclusive_to_the_microsecond(n, now):
    frame = inventory(*records(n, now))
    pol = ecr_policy(rule(1, "any", "sinceImagePushed", 60), keep_pulled_within_days=n)
    rows, _ = decide(frame, pol, now)
    assert {d: r["action"] for d, r in rows.items()} == EXPECTED
    kept = rows[digest("exactly-N-days")]
    assert kept["reason"].endswith(f"; but pulled within the last {n} days -> keep")
    assert kept["rule_priority"] == 1
    assert planner_triples(frame, pol, now) == reference_plan(frame, pol, now)


def test_the_boundary_protects_an_image_no_rule_would_keep():
    """Without the setting every case expires: the keeps above come from keep_pulled_within_days."""
    frame = inventory(*records(14, NOW))
    rows, _ = decide(frame, ecr_policy(rule(1, "any", "sinceImagePushed", 60)))
    assert {r["action"] for r in rows.values()} == {"expire"}


@pytest.mark.parametrize("ext", ["parquet", "json", "csv"])
def test_the_cli_with_the_example_policy_keeps_the_boundary(ext, tmp_path, capfd):
    """policies/keep-pulled.yaml (N = 30) through ``registry-ops retention plan --now``."""
    path = tmp_path / f"inventory.{ext}"
    write_inventory(schema.to_table(records(30, NOW)), path)
    policy = ROOT / "policies" / "keep-pulled.yaml"
    now = NOW.isoformat().replace("+00:00", "Z")
    argv = ["retention", "plan", "--policy", str(policy), "--inventory", str(path), "--now", now]
    assert main(argv) == 0
    recs = json.loads(capfd.readouterr().out)
    assert {r["digest"]: r["action"] for r in recs} == EXPECTED


def test_only_a_recorded_pull_counts_not_a_recent_push():
    """A build pushed yesterday and never pulled is not "pulled within N days": a count rule that
    expires it is not vetoed (the pull clock falls back to the push time for sinceImagePulled
    rules, not for this protection)."""
    frame = inventory(
        image("newest", ["build-3"], 0.5),
        image("pushed-yesterday", ["build-2"], 1),
        image("pulled-yesterday", ["build-1"], 200, pulled_days=1),
    )
    pol = ecr_policy(rule(1, "any", "imageCountMoreThan", 1), keep_pulled_within_days=14)
    rows, _ = decide(frame, pol)
    assert {d: r["action"] for d, r in rows.items()} == {
        digest("newest"): "keep",
        digest("pushed-yesterday"): "expire",
        digest("pulled-yesterday"): "keep",
    }
    assert planner_triples(frame, pol) == reference_plan(frame, pol)
