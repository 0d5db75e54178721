"""Pull metrics against the devstack generator's own truth (events written as CloudTrail files and
notification envelopes, read back through the real reader), and the never-pulled rules on a
hand-built inventory with events made from the documented BatchGetImage record."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from devstack import events as gen
from include.registry_ops.config import parse_config
from include.registry_ops.reports import events, ingest, pulls, tables
from include.registry_ops.reports.events import Attribution
from tests.retention.helpers import NOW, digest, image, inventory

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
ACCOUNT, REGION, HOST = "123456789012", "us-east-2", "registry.local:5000"
DAYS = [date(2026, 5, 25) + timedelta(days=n) for n in range(5)]
CONFIG = parse_config(
    {
        "registries": [
            {
                "name": "ecr-test",
                "kind": "ecr",
                "conn_id": "aws_default",
                "region": REGION,
                "registry_id": ACCOUNT,
            },
            {"name": "oci-test", "kind": "oci", "conn_id": "oci_local", "url": f"http://{HOST}"},
        ],
        "storage": {"bucket": "b-metrics"},
    }
)
ATTRIBUTION = Attribution.from_config(CONFIG)


def run(frame: pd.DataFrame, inv: pd.DataFrame | None, start: date, end: date, **kw: Any) -> dict:
    kw.setdefault("success_target", 0.99)
    kw.setdefault("never_pulled_days", 30)
    kw.setdefault("now", NOW)
    out = pulls.metrics(frame, inv, start=start, end=end, **kw)
    for name, table in out.items():
        assert tuple(table.columns) == tables.TABLES[name][0], name
    return out


# -- against the generator's truth -----------------------------------------------------------------
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    inv = inventory(
        *[image(f"m-e{n}", [f"v{n}", f"r{n}"], 60, repo=f"metrics/app{n % 4}") for n in range(16)],
        *[
            image(
                f"m-o{n}", [f"v{n}"], 60, repo=f"metrics/web{n % 3}", registry="oci-test", registry_kind="oci"
            )
            for n in range(9)
        ],
    )
    root = tmp_path_factory.mktemp("events")
    truth = gen.write_events(
        gen.DirTarget(root),
        inv,
        days=DAYS,
        account=ACCOUNT,
        region=REGION,
        oci_host=HOST,
        failure_rate=0.08,
        idle_fraction=0.25,
        by_digest_fraction=0.3,
        records_per_file=40,
        events_per_envelope=25,
        seed=21,
    )
    frame, problems = ingest.read_paths([str(root)], ATTRIBUTION, None)
    assert problems == []
    return {"inventory": inv, "truth": truth, "events": frame}


def test_pulls_by_repository_day_match_the_truth(generated):
    out = run(generated["events"], generated["inventory"], DAYS[0], DAYS[-1] + timedelta(days=1))
    got = out["pulls_by_repository_day"].set_index(["registry", "repository", "day"]).sort_index()
    want = generated["truth"]["by_repository_day"].set_index(["registry", "repository", "day"]).sort_index()
    pd.testing.assert_frame_equal(got, want.astype("int64"), check_dtype=False)
    assert int(got["failed"].sum()) == generated["truth"]["failed"] > 0


def test_tag_pulls_resolve_to_digests_through_the_inventory(generated):
    out = run(generated["events"], generated["inventory"], DAYS[0], DAYS[-1] + timedelta(days=1))
    got = out["pulls_by_image_day"].set_index(["registry", "repository", "image", "day"]).sort_index()
    want = (
        generated["truth"]["by_image_day"].set_index(["registry", "repository", "image", "day"]).sort_index()
    )
    pd.testing.assert_frame_equal(got, want.astype("int64"), check_dtype=False)
    assert generated["events"]["digest"].isna().sum() > 0  # some pulls named a tag only

    bare = run(generated["events"], None, DAYS[0], DAYS[-1] + timedelta(days=1))["pulls_by_image_day"]
    assert bare["image"].str.startswith("tag:").any()  # without an inventory: tag:<tag>
    assert bare["pulls"].sum() == got["pulls"].sum()


def test_success_rate_per_registry_and_the_window(generated):
    start, end = DAYS[1], DAYS[3]
    out = run(generated["events"], generated["inventory"], start, end, success_target=0.5)
    truth = generated["truth"]["by_repository_day"]
    inside = truth[(truth["day"] >= start) & (truth["day"] < end)]
    assert set(out["pulls_by_repository_day"]["day"]) == {DAYS[1], DAYS[2]}
    success = out["pull_success"].set_index("registry")
    for registry, rows in inside.groupby("registry"):
        p, f = int(rows["pulls"].sum()), int(rows["failed"].sum())
        assert (success.loc[registry, "pulls"], success.loc[registry, "failed"]) == (p, f)
        assert success.loc[registry, "success_rate"] == pytest.approx((p - f) / p)
    assert success.loc["oci-test", "success_rate"] == 1.0  # notifications report no failure
    assert bool(success.loc["ecr-test", "meets_target"])
    strict = run(generated["events"], generated["inventory"], start, end, success_target=0.999)
    assert not bool(strict["pull_success"].set_index("registry").loc["ecr-test", "meets_target"])
    assert bool(strict["pull_success"].set_index("registry").loc["oci-test", "meets_target"])


def test_pulls_json_is_the_command_line_format(generated):
    start, end = DAYS[0], DAYS[2]
    out = run(generated["events"], generated["inventory"], start, end)
    doc = pulls.pulls_json(out, start=start, end=end)
    assert set(doc) == {"by_repository_day", "total_pulls", "failed_pulls", "success_rate"}
    assert set(doc["by_repository_day"][0]) == {
        "registry",
        "repository",
        "day",
        "pulls",
        "failed",
        "principals",
    }
    assert {r["day"] for r in doc["by_repository_day"]} == {"2026-05-25", "2026-05-26"}
    truth = generated["truth"]["by_repository_day"]
    inside = truth[(truth["day"] >= start) & (truth["day"] < end)]
    assert doc["total_pulls"] == int(inside["pulls"].sum())
    assert doc["failed_pulls"] == int(inside["failed"].sum())
    assert doc["success_rate"] == pytest.approx(1 - doc["failed_pulls"] / doc["total_pulls"])
    json.dumps(doc)  # plain JSON types

    empty = run(generated["events"], None, date(2020, 1, 1), date(2020, 1, 8))
    assert pulls.pulls_json(empty, start=date(2020, 1, 1), end=date(2020, 1, 8)) == {
        "by_repository_day": [],
        "total_pulls": 0,
        "failed_pulls": 0,
        "success_rate": None,
    }
    assert empty["pull_success"].empty and pulls.worst_repositories(empty, 5).empty


def test_worst_repositories_lowest_success_first(generated):
    out = run(generated["events"], generated["inventory"], DAYS[0], DAYS[-1] + timedelta(days=1))
    worst = pulls.worst_repositories(out, 3)
    assert list(worst.columns) == ["registry", "repository", "pulls", "failed", "success_rate"]
    assert len(worst) == 3 and worst["success_rate"].is_monotonic_increasing
    truth = (
        generated["truth"]["by_repository_day"].groupby(["registry", "repository"])[["pulls", "failed"]].sum()
    )
    rates = (1 - truth["failed"] / truth["pulls"]).sort_values()
    assert worst["success_rate"].tolist() == pytest.approx(rates.head(3).tolist())


# -- never pulled ----------------------------------------------------------------------------------
def record(name: str | None, when: datetime, *, tag: str | None = None, **changes: Any) -> dict:
    """The documented BatchGetImage record pulling image ``name`` (by digest) or ``tag``."""
    rec = json.loads((FIXTURES / "cloudtrail-ecr-BatchGetImage.awsdocs.json").read_text())
    rec["requestParameters"]["repositoryName"] = "ret-plan/app"
    rec["requestParameters"]["imageIds"] = [{"imageTag": tag} if tag else {"imageDigest": digest(name or "")}]
    rec.update(eventTime=when.strftime("%Y-%m-%dT%H:%M:%SZ"), eventID=str(uuid.uuid4()))
    rec.update(changes)
    return rec


def events_of(*records: dict) -> pd.DataFrame:
    frame, problems = events.parse_file(
        gzip.compress(json.dumps({"Records": list(records)}).encode()), "t.json.gz", ATTRIBUTION
    )
    assert problems == []
    return frame


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def test_never_pulled_by_events_with_the_registry_as_fallback():
    inv = inventory(
        image("idle", ["idle"], 200),
        image("registry-recent", ["rr"], 200, pulled_days=5),
        image("registry-old", ["ro"], 200, pulled_days=100),
        image("events-recent", ["er"], 200),
        image("events-old", ["eo"], 200, pulled_days=60),
        image("registry-later", ["rl"], 200, pulled_days=40),
        image("failed-only", ["fo"], 200),
        image("scanner", ["sc"], 200),
        image("fresh", ["new"], 3),
        image("idx", ["multi"], 200, kind="index", children=["c1", "c2"]),
        image("c1", [], 200, parents=["idx"]),
        image("c2", [], 200, parents=["idx"]),
        image("sig", ["sha256-x.sig"], 200, kind="referrer", subject="idle"),
        image("oci-idle", ["x"], 200, registry="oci-test", registry_kind="oci"),
    )
    frame = events_of(
        record(None, ago(3), tag="er"),  # by tag: resolved through the inventory
        record("events-old", ago(45)),
        record("registry-later", ago(50)),
        record("failed-only", ago(2), errorCode="AccessDenied"),
        record(
            "scanner", ago(1), userIdentity={"type": "AWSService", "invokedBy": "inspector2.amazonaws.com"}
        ),
        record("c1", ago(1)),  # a child pulled by digest: its index was pulled
        record("idle", ago(40)),  # older than the window of 30 days
    )
    out = run(
        frame,
        inv,
        date(2026, 5, 25),
        date(2026, 6, 1),
        exclude_principals=["inspector2.amazonaws.com"],
    )["never_pulled"]
    got = {row.digest: (row.last_pull, row.last_pull_source) for row in out.itertuples(index=False)}
    assert got.keys() == {
        digest(n)
        for n in (
            "idle",
            "registry-old",
            "events-old",
            "registry-later",
            "failed-only",
            "scanner",
            "oci-idle",
        )
    }
    assert got[digest("idle")] == (pd.Timestamp(ago(40)), "events")
    assert got[digest("registry-old")] == (pd.Timestamp(ago(100)), "registry")
    assert got[digest("events-old")] == (pd.Timestamp(ago(45)), "events")
    assert got[digest("registry-later")] == (pd.Timestamp(ago(40)), "registry")
    assert pd.isna(got[digest("failed-only")][0]) and pd.isna(got[digest("failed-only")][1])
    assert pd.isna(got[digest("oci-idle")][0])
    row = out.set_index("digest").loc[digest("registry-old")]
    assert (row["registry"], row["repository"], list(row["tags"]), row["size_bytes"]) == (
        "ecr-test",
        "ret-plan/app",
        ["ro"],
        1000,
    )

    counted = run(frame, inv, date(2026, 5, 25), date(2026, 6, 1))["never_pulled"]
    assert digest("scanner") not in set(counted["digest"])  # without the exclusion, the scan counts


def test_never_pulled_without_inventory_or_events():
    assert run(events.empty_frame(), None, DAYS[0], DAYS[1])["never_pulled"].empty
    inv = inventory(image("a", ["a"], 200, pulled_days=1), image("b", ["b"], 200))
    out = run(events.empty_frame(), inv, DAYS[0], DAYS[1])
    assert out["never_pulled"]["digest"].tolist() == [digest("b")]
    assert out["pulls_by_repository_day"].empty and out["pull_success"].empty


def test_principals_are_distinct_and_unknown_ones_are_not_counted():
    frame = events_of(
        record("a", ago(1)),
        record("a", ago(1)),
        record("a", ago(1), userIdentity={"type": "AssumedRole", "arn": "arn:aws:sts::1:assumed-role/x/y"}),
    )
    frame.loc[frame.index[0], "principal"] = None
    out = run(frame, None, ago(1).date(), ago(1).date() + timedelta(days=1))
    row = out["pulls_by_repository_day"].iloc[0]
    assert (row["pulls"], row["failed"], row["principals"]) == (3, 0, 2)
