"""Retention savings (``reports/savings.py``) from summaries the real retention code wrote:
``retention.jobs.apply_plan`` planning, archiving and deleting on the distribution registry, with
its summaries, audit trail and ``latest.json`` in moto S3."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone

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


def policy_file(work, name: str, globs: list[str]):
    path = work / f"{name}.json"
    policy = {"name": name, "repositories": globs, "protect_tags": [], "rules": [KEEP_3], "enabled": True}
    path.write_text(json.dumps({"policies": [policy]}))
    return path


@pytest.fixture(scope="module")
def runs(moto_server, registry_server, s3, tmp_path_factory):
    """Three repositories; executed runs inside the window, on its end day and (in UTC) the day
    before it, then a dry run inside the window that is the latest run."""
    work = tmp_path_factory.mktemp("savings")
    bucket = f"rep-savings-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    prefix = f"rep-sav/{uuid.uuid4().hex[:8]}/"
    fleet = seed(oci_registry(registry_server.url), small_fleet(prefix, repositories=3, images=36, seed=9))
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

    def apply(run_id: str, now: datetime, globs: list[str], dry_run: bool) -> dict:
        summary = jobs.apply_plan(
            config,
            inventory,
            now,
            dry_run=dry_run,
            policy_file=policy_file(work, run_id, globs),
            run_id=run_id,
        )
        assert summary["summary_key"] and not summary["repositories_failed"], summary
        return summary

    out = {
        "inside": apply("exec-inside", datetime(2026, 11, 18, 3, 0, tzinfo=UTC), [names[0]], False),
        "end": apply("exec-end-day", datetime(2026, 11, 23, 0, 30, tzinfo=UTC), [names[1]], False),
        # 01:00 at +02:00 on the 16th: audit dated the 16th, but the run is on the 15th in UTC
        "before": apply(
            "exec-before",
            datetime(2026, 11, 16, 1, 0, tzinfo=timezone(timedelta(hours=2))),
            [names[2]],
            False,
        ),
        "dry": apply("dry-latest", datetime(2026, 11, 20, 3, 0, tzinfo=UTC), [prefix + "*"], True),
    }
    after = table_to_frame(list_batch(registry, names, NOW).table)
    return config, inventory, after, out, names


def test_made_is_what_executed_runs_in_the_window_deleted(runs, s3):
    config, before, after, out, names = runs
    frame = savings(config, s3, start=START, end=END, price_per_gb_month=0.10)
    assert tuple(frame.columns) == tables.SAVINGS
    made = frame[frame["kind"] == "made"]
    assert made[["run_id", "registry"]].values.tolist() == [["exec-inside", "oci-local"]]
    inside = out["inside"]
    assert inside["images_removed"] > 0
    assert made["images"].iat[0] == inside["images_removed"]
    assert made["bytes"].iat[0] == inside["bytes_removed"]
    # independently: the digests gone from the first repository, at their inventory sizes
    repo = before[before["repository"] == names[0]]
    still = set(after.loc[after["repository"] == names[0], "digest"])
    gone = repo[~repo["digest"].isin(still)]
    assert made["images"].iat[0] == len(gone) and made["bytes"].iat[0] == int(gone["size_bytes"].sum())
    assert made["usd_month"].iat[0] == pytest.approx(made["bytes"].iat[0] / GIB * 0.10)
    assert explained_drop_bytes(frame) == inside["bytes_removed"]


def test_projected_is_the_latest_runs_would_delete(runs, s3):
    config, _, _, out, _ = runs
    frame = savings(config, s3, start=START, end=END, price_per_gb_month=0.5)
    [row] = frame[frame["kind"] == "projected"].to_dict("records")
    dry = out["dry"]
    assert dry["would_remove_images"] > 0 and dry["images_removed"] == 0
    assert row["run_id"] == "dry-latest" and row["registry"] == "oci-local"
    assert row["images"] == dry["would_remove_images"] and row["bytes"] == dry["would_remove_bytes"]
    assert row["usd_month"] == pytest.approx(row["bytes"] / GIB * 0.5)


def test_the_window_bounds(runs, s3):
    config, _, _, out, _ = runs
    wide = savings(config, s3, start=date(2026, 11, 15), end=date(2026, 11, 24), price_per_gb_month=0.1)
    made = wide[wide["kind"] == "made"]
    assert sorted(made["run_id"]) == ["exec-before", "exec-end-day", "exec-inside"]
    assert all(out[k]["images_removed"] > 0 for k in ("inside", "end", "before"))
    # the run on the 15th (UTC) has its audit records under the 16th, its own offset's day
    listed = s3.list_objects_v2(
        Bucket=config.storage.bucket, Prefix=f"{config.retention.audit_prefix}dt=2026-11-16/run=exec-before/"
    )
    assert listed["KeyCount"] > 0
    assert explained_drop_bytes(wide) == sum(out[k]["bytes_removed"] for k in ("inside", "end", "before"))
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
