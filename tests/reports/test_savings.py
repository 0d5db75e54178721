"""Retention savings (``reports/savings.py``) from summaries the real retention code wrote:
``retention.jobs.apply_plan`` planning, archiving and deleting on the distribution registry, with
its summaries, audit trail and ``latest.json`` in moto S3."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
import yaml

from include.registry_ops.clients import build_registry
from include.registry_ops.config import load_config
from include.registry_ops.inventory import list_batch
from include.registry_ops.reports import tables
from include.registry_ops.reports.savings import explained_drop_bytes, savings
from include.registry_ops.reports.settings import GIB
from include.registry_ops.retention import jobs
from include.registry_ops.schema import table_to_frame
from tests.retention_exec.helpers import NOW, oci_registry, seed, small_fleet

START, END = date(2026, 11, 16), date(2026, 11, 23)  # the report's window; END excluded
KEEP_3 = {
    "rulePriority": 1,
    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 3},
    "action": {"type": "expire"},
}


def policy_file(work, name: str, globs: list[str], dry_globs: list[str]):
    """A policy file: keep the newest 3 in ``globs`` (enabled), the same as a dry run in ``dry_globs``."""
    path = work / f"{name}.json"
    policies = [{"name": name, "repositories": globs, "protect_tags": [], "rules": [KEEP_3], "enabled": True}]
    if dry_globs:
        policies.append(
            {"name": f"{name}-dry", "repositories": dry_globs, "protect_tags": [], "rules": [KEEP_3]}
        )
    path.write_text(json.dumps({"policies": policies}))
    return path


def at(day: int, hour: int, offset_hours: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, 0, tzinfo=timezone(timedelta(hours=offset_hours)))


# run -> (when, index of the repository it executes on); the window is [16, 23) in UTC days
EXECUTED = {
    "exec-inside": (at(18, 3), 0),
    "exec-end-day": (at(23, 0), 1),  # the end day is excluded
    "exec-before": (at(16, 1, +2), 2),  # 15th 23:00 UTC: before the window; audit dated the 16th
    "exec-early-local": (at(15, 22, -5), 3),  # 16th 03:00 UTC: inside; audit dated the 15th
    "exec-late-local": (at(23, 1, +2), 4),  # 22nd 23:00 UTC: inside; audit dated the 23rd
}
IN_WINDOW = ["exec-early-local", "exec-inside", "exec-late-local"]


@pytest.fixture(scope="module")
def runs(moto_server, registry_server, s3, tmp_path_factory):
    """Five repositories, one executed run on each (times around the window's bounds, some in
    other offsets), then a dry run inside the window that is the latest run. The first run also
    holds a dry-run policy: an executed run's would-deletes are not savings made."""
    work = tmp_path_factory.mktemp("savings")
    bucket = f"rep-savings-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    prefix = f"rep-sav/{uuid.uuid4().hex[:8]}/"
    fleet = seed(oci_registry(registry_server.url), small_fleet(prefix, repositories=5, images=50, seed=9))
    path = work / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [prefix + "*"]}
                ],
                "storage": {"conn_id": "aws_default", "bucket": bucket},
                "retention": {"in_use_discovery": [], "max_fraction_per_repository": 1.0},
            }
        )
    )
    config = load_config(path)
    registry = build_registry(config.registries[0])
    names = [r.name for r in fleet]
    inventory = table_to_frame(list_batch(registry, names, NOW).table)

    def apply(run_id: str, now: datetime, globs: list[str], dry_run: bool, dry_globs=()) -> dict:
        policies = policy_file(work, run_id, globs, list(dry_globs))
        summary = jobs.apply_plan(
            config, inventory, now, dry_run=dry_run, policy_file=policies, run_id=run_id
        )
        assert summary["summary_key"] and not summary["repositories_failed"], summary
        return summary

    out = {}
    for run_id, (when, n) in EXECUTED.items():
        dry_globs = [names[1]] if run_id == "exec-inside" else []
        out[run_id] = apply(run_id, when, [names[n]], False, dry_globs)
        assert out[run_id]["images_removed"] > 0
    out["dry-latest"] = apply("dry-latest", at(20, 3), [prefix + "*"], True)
    after = table_to_frame(list_batch(registry, names, NOW).table)
    return config, inventory, after, out, names


def test_made_is_what_executed_runs_in_the_window_deleted(runs, s3):
    config, before, after, out, names = runs
    frame = savings(config, s3, start=START, end=END, price_per_gb_month=0.10)
    assert tuple(frame.columns) == tables.SAVINGS
    made = frame[frame["kind"] == "made"].set_index("run_id")
    assert made.index.tolist() == IN_WINDOW and set(made["registry"]) == {"oci-local"}
    for run_id in IN_WINDOW:
        assert made.loc[run_id, "images"] == out[run_id]["images_removed"]
        assert made.loc[run_id, "bytes"] == out[run_id]["bytes_removed"]
    inside = out["exec-inside"]
    assert inside["would_remove_images"] > 0  # its dry-run policy's: not made
    # independently: the digests gone from the first repository, at their inventory sizes
    repo = before[before["repository"] == names[0]]
    still = set(after.loc[after["repository"] == names[0], "digest"])
    gone = repo[~repo["digest"].isin(still)]
    assert made.loc["exec-inside", "images"] == len(gone)
    assert made.loc["exec-inside", "bytes"] == int(gone["size_bytes"].sum())
    assert made["usd_month"].tolist() == pytest.approx((made["bytes"] / GIB * 0.10).tolist())
    assert explained_drop_bytes(frame) == sum(out[r]["bytes_removed"] for r in IN_WINDOW)


def test_projected_is_the_latest_runs_would_delete(runs, s3):
    config, _, _, out, _ = runs
    frame = savings(config, s3, start=START, end=END, price_per_gb_month=0.5)
    [row] = frame[frame["kind"] == "projected"].to_dict("records")
    dry = out["dry-latest"]
    assert dry["would_remove_images"] > 0 and dry["images_removed"] == 0
    assert row["run_id"] == "dry-latest" and row["registry"] == "oci-local"
    assert row["images"] == dry["would_remove_images"] and row["bytes"] == dry["would_remove_bytes"]
    assert row["usd_month"] == pytest.approx(row["bytes"] / GIB * 0.5)


def test_the_window_bounds(runs, s3):
    config, _, _, out, _ = runs
    wide = savings(config, s3, start=date(2026, 11, 15), end=date(2026, 11, 24), price_per_gb_month=0.1)
    assert sorted(wide.loc[wide["kind"] == "made", "run_id"]) == sorted(EXECUTED)
    assert explained_drop_bytes(wide) == sum(out[r]["bytes_removed"] for r in EXECUTED)
    # the run before the window (in UTC) has its audit records under the 16th, its own offset's day
    listed = s3.list_objects_v2(
        Bucket=config.storage.bucket, Prefix=f"{config.retention.audit_prefix}dt=2026-11-16/run=exec-before/"
    )
    assert listed["KeyCount"] > 0
    last_day = savings(config, s3, start=END, end=END + timedelta(days=1), price_per_gb_month=0.1)
    assert last_day.loc[last_day["kind"] == "made", "run_id"].tolist() == ["exec-end-day"]
    nothing = savings(config, s3, start=date(2026, 10, 1), end=date(2026, 10, 8), price_per_gb_month=0.1)
    assert nothing["kind"].tolist() == ["projected"] and explained_drop_bytes(nothing) == 0
    with pytest.raises(ValueError, match=r"end \(excluded\) must come after the start"):
        savings(config, s3, start=END, end=START, price_per_gb_month=0.1)


def test_no_retention_run_yet(runs, s3):
    config, *_ = runs
    empty = config.retention.model_copy(update={"runs_prefix": "none/", "audit_prefix": "none-audit/"})
    fresh = config.model_copy(update={"retention": empty})
    frame = savings(fresh, s3, start=START, end=END, price_per_gb_month=0.1)
    assert frame.empty and tuple(frame.columns) == tables.SAVINGS
    assert explained_drop_bytes(frame) == 0
