"""The one run-id cleaner (``store.runs.clean_run_id``): what it makes of Airflow's run ids, what
it refuses, and that every capability's keys go through it (and no other copy exists)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from include.registry_ops import inventory_jobs
from include.registry_ops.config import parse_config
from include.registry_ops.retention import audit
from include.registry_ops.retention import jobs as retention_jobs
from include.registry_ops.scan import store as scan_store
from include.registry_ops.store.runs import clean_run_id

ROOT = Path(__file__).resolve().parents[2]
NASTY = "scheduled__2026-11-28T07:13:00+00:00/../x y"
CLEAN = "scheduled__2026-11-28T07_13_00_00_00_.._x_y"


@pytest.mark.parametrize(
    ("run_id", "clean"),
    [
        ("manual__2026-11-28T07:13:00+00:00", "manual__2026-11-28T07_13_00_00_00"),
        ("asset_triggered__2026-11-28T07:13:00.123+00:00", "asset_triggered__2026-11-28T07_13_00.123_00_00"),
        ("run-1", "run-1"),
        ("a/b", "a_b"),
        ("ab ü", "ab_"),
        (NASTY, CLEAN),
    ],
)
def test_run_ids_become_one_key_segment(run_id, clean):
    assert clean_run_id(run_id) == clean
    assert "/" not in clean and clean_run_id(clean) == clean  # cleaning twice changes nothing


@pytest.mark.parametrize("run_id", ["", "..", ".", "::", "/", "__"])
def test_a_run_id_without_a_letter_or_digit_is_refused(run_id):
    with pytest.raises(ValueError, match="has no letter or digit"):
        clean_run_id(run_id)


def test_every_capability_names_its_run_folders_with_the_one_cleaner():
    config = parse_config(
        {
            "registries": [{"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"conn_id": "aws_default", "bucket": "bucket-b"},
        }
    )
    keys = [
        inventory_jobs.part_key(config, NASTY, {"registry": "ecr-local", "batch": 3}),
        scan_store.parts_prefix(config, NASTY),
        retention_jobs._run_key(config, NASTY, "plan.parquet"),
        audit.journal_key("retention/runs/", NASTY, "ecr-local", "shop/cart"),
        audit.audit_key("retention/audit/", datetime(2026, 11, 28), NASTY, "ecr-local", "shop/cart"),
    ]
    for key in keys:
        assert f"/{CLEAN}/" in key or f"/run={CLEAN}/" in key, key
    with pytest.raises(ValueError, match="no letter or digit"):
        inventory_jobs.part_key(config, "::", {"registry": "ecr-local", "batch": 0})


def test_no_other_copy_of_the_cleaner_exists():
    """The rule lives in store/runs.py alone: a copy would drift, and a rerun would then look
    for its journal under another key."""
    pattern = re.compile(r"\[\^A-Za-z0-9_\.-\]")
    found = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "include" / "registry_ops").rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert found == ["include/registry_ops/store/runs.py"]
