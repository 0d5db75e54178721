"""``registry-ops retention plan``: the parser, plan_command, the real CLI entry point (in-process
and as a subprocess), every example policy in policies/, and the error paths."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from include.registry_ops import schema
from include.registry_ops.inventory_files import write_inventory
from include.registry_ops.retention.plan_cli import add_plan_parser, plan_command
from tests.retention.helpers import NOW, digest, image

ROOT = Path(__file__).resolve().parents[2]
POLICIES = sorted((ROOT / "policies").iterdir())
ACTIONS = {"keep", "expire", "transition", "untag"}
NOW_TEXT = NOW.isoformat().replace("+00:00", "Z")
RECORDS = [
    image("old-release", ["1.0.0"], 400, repo="shop/api", pulled_days=200),
    image("old-build", ["20250101-120000", "abc1234"], 400, repo="shop/api"),
    image("new-build", ["20260530-120000", "def5678"], 2, repo="shop/api"),
    image("main-old", ["main-1", "keep-me"], 50, repo="platform/gateway"),
    image("untagged", [], 30, repo="platform/gateway"),
    image("c1", [], 30, repo="data/etl", parents=["idx"]),
    image("idx", ["pr-12"], 30, repo="data/etl", kind="index", children=["c1"]),
    image(
        "sig", ["sha256-" + digest("idx")[7:] + ".sig"], 30, repo="data/etl", kind="referrer", subject="idx"
    ),
]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="registry-ops")
    sub = root.add_subparsers(dest="command", required=True)
    retention = sub.add_parser("retention").add_subparsers(dest="retention_command", required=True)
    add_plan_parser(retention)
    return root


@pytest.fixture(scope="module")
def inventories(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("plan-cli")
    table = schema.to_table(RECORDS)
    out = {}
    for ext in ("parquet", "csv", "json"):
        out[ext] = folder / f"inventory.{ext}"
        write_inventory(table, out[ext])
    return out


def run(*argv: str) -> tuple[int, object]:
    args = parser().parse_args(["retention", "plan", *argv])
    return args.func(args)


@pytest.mark.parametrize("policy", POLICIES, ids=[p.name for p in POLICIES])
def test_every_example_policy_plans_the_inventory(policy, inventories):
    code, records = run(
        "--policy", str(policy), "--inventory", str(inventories["parquet"]), "--now", NOW_TEXT
    )
    assert code == 0 and isinstance(records, list)
    for rec in records:
        assert set(rec) >= {"registry", "repository", "digest", "tags", "action", "rule_priority", "reason"}
        assert rec["action"] in ACTIONS and rec["reason"]
        assert rec["rule_priority"] is None or isinstance(rec["rule_priority"], int)
    json.dumps(records)  # JSON-ready


def test_records_are_ordered_and_reproducible(inventories):
    argv = ("--policy", str(ROOT / "policies" / "fleet.yaml"), "--now", NOW_TEXT)
    results = [run(*argv, "--inventory", str(inventories[ext]))[1] for ext in ("parquet", "csv", "json")]
    assert results[0] == results[1] == results[2]  # all three inventory formats
    keys = [(r["registry"], r["repository"]) for r in results[0]]
    assert keys == sorted(keys)
    by = {r["digest"]: r for r in results[0]}
    assert by[digest("old-build")]["action"] == "expire" and by[digest("old-build")]["rule_priority"] == 1
    assert by[digest("new-build")]["action"] == "keep"
    assert by[digest("old-release")]["action"] == "keep"  # no rule selects it in "services"
    assert by[digest("untagged")]["action"] == "expire"
    assert {r["policy"] for r in results[0]} == {"services", "data"}


def test_now_makes_age_rules_reproducible(inventories):
    argv = ("--policy", str(ROOT / "policies" / "fleet.yaml"), "--inventory", str(inventories["parquet"]))
    early = {r["digest"]: r["action"] for r in run(*argv, "--now", "2025-01-05T00:00:00Z")[1]}
    late = {r["digest"]: r["action"] for r in run(*argv, "--now", NOW_TEXT)[1]}
    assert early[digest("old-build")] == "keep" and late[digest("old-build")] == "expire"
    assert run(*argv, "--now", "2026-06-01T12:00:00")[1] == run(*argv, "--now", NOW_TEXT)[1]  # naive = UTC


def test_in_use_file_keeps_images(inventories, tmp_path):
    refs = tmp_path / "in-use.txt"
    refs.write_text("# pinned\n123456789012.dkr.ecr.us-east-1.amazonaws.com/shop/api:20250101-120000\n")
    argv = ("--policy", str(ROOT / "policies" / "fleet.yaml"), "--inventory", str(inventories["json"]))
    recs = {r["digest"]: r for r in run(*argv, "--now", NOW_TEXT, "--in-use", str(refs))[1]}
    assert recs[digest("old-build")]["action"] == "keep"
    assert "tag in use as 123456789012" in recs[digest("old-build")]["reason"]


def test_table_format(inventories):
    code, text = run(
        "--policy",
        str(ROOT / "policies" / "multi-arch.yaml"),
        "--inventory",
        str(inventories["csv"]),
        "--now",
        NOW_TEXT,
        "--format",
        "table",
    )
    assert code == 0 and isinstance(text, str)
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["REPOSITORY", "DIGEST", "TAGS", "ACTION", "RULE"]
    assert lines[-1] == "8 image(s): 7 keep, 1 expire, 0 transition, 0 untag"
    child = next(line for line in lines if line.split()[1] == digest("c1")[:19])
    assert "child of the kept index " + digest("idx")[:19] in child and child.endswith("-> keep")


def test_errors_name_the_file(inventories, tmp_path):
    bad = tmp_path / "bad-policy.json"
    bad.write_text(
        json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged"}, "action": {}}]})
    )
    with pytest.raises(
        ValueError, match=r"bad-policy\.json: policy 'bad-policy': rule rulePriority=1: selection"
    ):
        run("--policy", str(bad), "--inventory", str(inventories["parquet"]))
    with pytest.raises(ValueError, match="cannot read inventory"):
        run(
            "--policy",
            str(ROOT / "policies" / "fleet.yaml"),
            "--inventory",
            str(tmp_path / "missing.parquet"),
        )
    with pytest.raises(ValueError, match="--now"):
        run(
            "--policy",
            str(ROOT / "policies" / "fleet.yaml"),
            "--inventory",
            str(inventories["csv"]),
            "--now",
            "soon",
        )


def test_plan_command_directly(inventories):
    args = argparse.Namespace(
        policy=str(ROOT / "policies" / "ecr-lifecycle.json"),
        inventory=str(inventories["parquet"]),
        now=NOW_TEXT,
    )
    code, records = plan_command(args)
    assert code == 0 and len(records) == len(RECORDS)  # a plain ECR policy governs every repository


cli_present = (ROOT / "include" / "registry_ops" / "commands" / "retention.py").exists()


@pytest.mark.skipif(not cli_present, reason="commands/retention.py (the executor side) is not there yet")
def test_through_the_registry_ops_cli(inventories, capsys):
    from include.registry_ops.cli import main

    code = main(
        [
            "retention",
            "plan",
            "--policy",
            str(ROOT / "policies" / "fleet.yaml"),
            "--inventory",
            str(inventories["parquet"]),
            "--now",
            NOW_TEXT,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert {r["digest"] for r in json.loads(out)} == {r["digest"] for r in RECORDS}
    bad = main(["retention", "plan", "--policy", "/nonexistent.yaml", "--inventory", str(inventories["csv"])])
    assert bad == 2 and "nonexistent.yaml: cannot read policy file" in capsys.readouterr().err


@pytest.mark.skipif(not cli_present, reason="commands/retention.py (the executor side) is not there yet")
def test_as_a_user_runs_it(inventories):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "include.registry_ops.cli",
            "retention",
            "plan",
            "--policy",
            str(ROOT / "policies" / "untag-partial.yaml"),
            "--inventory",
            str(inventories["json"]),
            "--now",
            NOW_TEXT,
            "--format",
            "table",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ.copy(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("REPOSITORY")
