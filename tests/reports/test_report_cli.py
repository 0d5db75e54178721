"""``registry-ops report pulls`` and ``report cost`` as users run them: event files generated from
the documented samples in a local directory and in moto's S3, an inventory file written by the
real writer; totals checked against the generator's own truth and hand-computed sums."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import date

import pandas as pd
import pytest
import yaml

from devstack.events import DirTarget, S3Target, day_range, fleet_inventory, write_events
from devstack.fleet import make_fleet
from include.registry_ops import cli, schema, storage
from include.registry_ops.inventory_files import write_inventory
from include.registry_ops.reports import tables

GIB = 2**30
DAYS = day_range(date(2026, 11, 10), 6)  # 10th..15th


@pytest.fixture(scope="module")
def fleet_frame():
    ecr = fleet_inventory(make_fleet(seed=71, repositories=3, images=40, prefix="cli/"), "ecr-prod", "ecr")
    oci = fleet_inventory(make_fleet(seed=72, repositories=2, images=30, prefix="cli/"), "oci-prod", "oci")
    return ecr, oci


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def event_dir(fleet_frame, tmp_path_factory):
    root = tmp_path_factory.mktemp("events")
    ecr, oci = fleet_frame
    truth = write_events(DirTarget(root), ecr, days=DAYS, records_per_file=50, failure_rate=0.1, seed=1)
    truth_oci = write_events(DirTarget(root), oci, days=DAYS, notifications_prefix="oci/", seed=2)
    (root / "AWSLogs" / "broken.json.gz").write_bytes(b"\x1f\x8b\x08\x00truncated")
    return root, truth, truth_oci


def _window(truth, since: date, until: date):
    frame = truth["by_repository_day"]
    return frame[(frame["day"] >= since) & (frame["day"] < until)]


def test_pulls_from_a_directory_match_what_was_written(capsys, event_dir):
    root, truth, truth_oci = event_dir
    since, until = date(2026, 11, 11), date(2026, 11, 14)  # the 14th excluded
    code, out, err = run(
        capsys, "report", "pulls", "--events", str(root), "--since", str(since), "--until", str(until)
    )
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) >= {"by_repository_day", "total_pulls", "failed_pulls", "success_rate"}
    assert tuple(doc["by_repository_day"][0]) == tables.PULLS_BY_REPOSITORY_DAY  # the keys
    expect_ecr, expect_oci = _window(truth, since, until), _window(truth_oci, since, until)
    assert doc["total_pulls"] == int(expect_ecr["pulls"].sum() + expect_oci["pulls"].sum()) > 0
    assert doc["failed_pulls"] == int(expect_ecr["failed"].sum()) > 0  # distribution pulls never fail
    assert doc["success_rate"] == pytest.approx(1 - doc["failed_pulls"] / doc["total_pulls"])
    assert {r["day"] for r in doc["by_repository_day"]} == {"2026-11-11", "2026-11-12", "2026-11-13"}
    # without a config, registries are named by what the events carry: account/region, host
    registries = {r["registry"] for r in doc["by_repository_day"]}
    assert "123456789012.dkr.ecr.us-east-1.amazonaws.com" in registries and len(registries) == 2
    # the truncated file is named, and everything else still counted
    assert any("broken.json.gz" in p["source"] for p in doc["problems"]), doc["problems"]


def test_pulls_as_csv_and_table(capsys, event_dir):
    root, truth, _ = event_dir
    args = [
        "report",
        "pulls",
        "--events",
        str(root / "AWSLogs"),
        "--since",
        "2026-11-10",
        "--until",
        "2026-11-16",
    ]
    code, out, _ = run(capsys, *args, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and sum(int(r["pulls"]) for r in rows) == int(truth["by_repository_day"]["pulls"].sum())
    code, out, _ = run(capsys, *args, "--format", "table")
    assert code == 0 and out.split()[:6] == ["registry", "repository", "day", "pulls", "failed", "principals"]


def test_pulls_from_s3_with_the_config_naming_registries(capsys, fleet_frame, s3, moto_server, tmp_path):
    ecr, _ = fleet_frame
    bucket = f"cli-events-{uuid.uuid4().hex[:8]}"
    storage.ensure_bucket(s3, bucket)
    truth = write_events(S3Target(s3, bucket), ecr, days=DAYS[:2], seed=3)
    path = tmp_path / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "ecr-prod", "kind": "ecr", "conn_id": "aws_default", "region": "us-east-1"}
                ],
                "storage": {"conn_id": "aws_default", "bucket": bucket},
            }
        )
    )
    code, out, err = run(
        capsys,
        "report",
        "pulls",
        "--events",
        f"s3://{bucket}/AWSLogs/",
        "--since",
        str(DAYS[0]),
        "--until",
        str(DAYS[2]),
        "--config",
        str(path),
    )
    assert code == 0, err
    doc = json.loads(out)
    assert {r["registry"] for r in doc["by_repository_day"]} == {"ecr-prod"}
    assert doc["total_pulls"] == int(truth["by_repository_day"]["pulls"].sum())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-11-10", "--until", "2026-11-10"], "must be after --since"),
        (["--since", "last week", "--until", "2026-11-10"], "--since: not a YYYY-MM-DD day"),
        (["--since", "2026-11-01", "--until", "2026-11-10", "--events", "/no/such/dir"], "/no/such/dir"),
    ],
)
def test_pulls_bad_input_exits_2_naming_it(capsys, event_dir, args, message):
    root, _, _ = event_dir
    events = [] if "--events" in args else ["--events", str(root)]
    code, _, err = run(capsys, "report", "pulls", *events, *args)
    assert code == 2 and message in err, err


def test_cost_from_an_inventory_file(capsys, fleet_frame, tmp_path):
    ecr, oci = fleet_frame
    frame = pd.concat([ecr, oci], ignore_index=True)
    path = tmp_path / "inventory.parquet"
    write_inventory(schema.frame_to_table(frame), path)
    stored: dict[tuple[str, str], int] = {}
    seen = set()
    for r in frame.itertuples():  # hand-computed: distinct image and referrer digests
        if r.kind in ("image", "referrer") and (r.registry, r.repository, r.digest) not in seen:
            seen.add((r.registry, r.repository, r.digest))
            stored[(r.registry, r.repository)] = stored.get((r.registry, r.repository), 0) + int(r.size_bytes)

    code, out, err = run(capsys, "report", "cost", "--inventory", str(path), "--price-per-gb-month", "0.5")
    assert code == 0, err
    doc = json.loads(out)
    got = {(r["registry"], r["repository"]): r for r in doc["by_repository"]}
    assert {k: r["stored_bytes"] for k, r in got.items()} == stored
    assert doc["total_usd_month"] == pytest.approx(sum(stored.values()) / GIB * 0.5, abs=1e-4)
    assert tuple(next(iter(got.values()))) == tables.COST_BY_REPOSITORY[:6]  # the keys

    cfg = tmp_path / "teams.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "registries": [{"name": "oci-prod", "kind": "oci", "conn_id": "oci_local"}],
                "storage": {"bucket": "unused-bucket"},
                "reports": {"teams": {"web": ["oci-prod/*"]}},
            }
        )
    )
    code, out, _ = run(
        capsys, "report", "cost", "--inventory", str(path), "--config", str(cfg), "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and {r["team"] for r in rows if r["registry"] == "oci-prod"} == {"web"}
    assert {r["team"] for r in rows if r["registry"] == "ecr-prod"} == {"unassigned"}


def test_cost_bad_input_exits_2(capsys, tmp_path):
    bad = tmp_path / "inventory.csv"
    bad.write_text("registry,repository\nx,y\n")
    code, _, err = run(capsys, "report", "cost", "--inventory", str(bad))
    assert code == 2 and str(bad) in err
    code, _, err = run(capsys, "report", "cost", "--inventory", str(bad), "--price-per-gb-month", "-1")
    assert code == 2 and "must not be negative" in err
