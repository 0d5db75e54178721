"""The Great Expectations suites of the report tables (``reports.quality``), run for real on GX
core in process: a valid report passes; each broken table fails the expectation that names it,
with its sample rows; GX writes nothing outside its temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from include.registry_ops.reports import quality, tables
from include.registry_ops.reports.model import Report

ROOT = Path(__file__).resolve().parents[2]
GIB = 2**30
PRICE = 0.10
START, END = date(2026, 11, 16), date(2026, 11, 23)  # the last day is 2026-11-22


def usd(size: int) -> float:
    return size / GIB * PRICE


def frame(name: str, rows: list[tuple]) -> pd.DataFrame:
    columns, _ = tables.TABLES[name]
    return pd.DataFrame(rows, columns=list(columns)) if rows else tables.empty(columns)


def valid_tables() -> dict[str, pd.DataFrame]:
    a, b, c = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64
    snap = pd.Timestamp("2026-11-23T06:00:00Z")
    return {
        "cost": frame(
            "cost",
            [
                ("ecr", "app", a, "image", "payments", 2 * GIB, usd(2 * GIB)),
                ("ecr", "app", b, "referrer", "payments", 1000, usd(1000)),
                ("oci", "web", c, "image", "unassigned", 3 * GIB, usd(3 * GIB)),
            ],
        ),
        "cost_by_repository": frame(
            "cost_by_repository",
            [
                ("ecr", "app", "payments", 2, 2 * GIB + 1000, usd(2 * GIB + 1000), GIB, usd(GIB)),
                ("oci", "web", "unassigned", 1, 3 * GIB, usd(3 * GIB), None, None),
            ],
        ).astype({"unique_layer_bytes_estimate": "Int64"}),  # as cost.py builds it
        "cost_by_team": frame(
            "cost_by_team",
            [
                ("payments", 1, 2, 2 * GIB + 1000, usd(2 * GIB + 1000)),
                ("unassigned", 1, 1, 3 * GIB, usd(3 * GIB)),
            ],
        ),
        "pulls_by_repository_day": frame(
            "pulls_by_repository_day",
            [
                ("ecr", "app", date(2026, 11, 16), 10, 1, 3),
                ("ecr", "app", date(2026, 11, 17), 5, 0, 2),
                ("oci", "web", date(2026, 11, 22), 4, 4, 1),
            ],
        ),
        "pulls_by_image_day": frame(
            "pulls_by_image_day",
            [
                ("ecr", "app", a, date(2026, 11, 16), 10, 1, 3),
                ("ecr", "app", a, date(2026, 11, 17), 5, 0, 2),
                ("oci", "web", "tag:latest", date(2026, 11, 22), 4, 4, 1),
            ],
        ),
        "pull_success": frame("pull_success", [("ecr", 15, 1, 14 / 15, False), ("oci", 4, 4, 0.0, False)]),
        "never_pulled": frame(
            "never_pulled",
            [("oci", "web", c, ["latest"], 3 * GIB, pd.Timestamp("2026-09-01T00:00:00Z"), "inventory")],
        ),
        "trend": frame("trend", [(snap, "ecr", 2, 2 * GIB + 1000, usd(2 * GIB + 1000))]),
        "growers": frame("growers", [("ecr", "app", "payments", 2 * GIB, 3 * GIB, GIB, usd(GIB))]),
        "s3_storage": frame("s3_storage", [("archive", "STANDARD", 10, 5000, 5000 / GIB * 0.023)]),
        "savings": frame("savings", [("made", "2026-11-20T0300", "ecr", 1, GIB, usd(GIB))]),
    }


def report(*only: str, **overrides: pd.DataFrame) -> Report:
    """The valid report with ``overrides``; with ``only``: just those tables and ``cost`` (each
    validation runs GX once per table: the tests of one table's rule keep to that table)."""
    built = valid_tables() | overrides
    total_pulls = int(built["pulls_by_repository_day"]["pulls"].sum())
    if only:
        built = {name: built[name] for name in built if name in {"cost", *only}}
    return Report(
        period="weekly",
        start=START,
        end=END,
        generated_at=datetime(2026, 11, 23, 7, tzinfo=UTC),
        price_per_gb_month=PRICE,
        tables=built,
        headline={"total_pulls": total_pulls},
    )


def stored(rep: Report) -> int:
    return int(rep.tables["cost"]["size_bytes"].sum())


def failed(result: quality.QualityResult) -> set[tuple[str, str, str]]:
    """(table, expectation, column(s)) of each failure."""
    out = set()
    for f in result.failures:
        kw = f["kwargs"]
        cols = [kw[k] for k in ("column", "column_A", "column_B") if k in kw] + kw.get("column_list", [])
        out.add((f["table"], f["expectation"], ",".join(cols)))
    return out


def only(result: quality.QualityResult, table: str, expectation: str) -> dict:
    matches = [f for f in result.failures if f["table"] == table and f["expectation"] == expectation]
    assert len(matches) == 1, result.failures
    return matches[0]


@pytest.fixture(scope="module")
def valid_result() -> quality.QualityResult:
    rep = report()
    return quality.validate(rep, previous_stored_bytes=stored(rep))


def test_importing_quality_does_not_import_great_expectations():
    code = "import sys, include.registry_ops.reports.quality; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_valid_report_passes_every_suite(valid_result):
    assert valid_result.success, valid_result.failures
    assert valid_result.failures == []
    assert set(valid_result.results) == set(tables.TABLES)
    assert all(r["success"] for r in valid_result.results.values())
    json.dumps(valid_result.results)  # JSON as stored beside the report
    names = {r["meta"]["active_batch_definition"]["data_asset_name"] for r in valid_result.results.values()}
    assert names == set(tables.TABLES)


def test_every_rule_is_in_the_suites(valid_result):
    """The plan as GX ran it: one suite per table, with the issue's expectations."""
    kinds = {
        (table, r["expectation_config"]["type"], json.dumps(r["expectation_config"]["kwargs"].get("column")))
        for table, result in valid_result.results.items()
        for r in result["results"]
    }
    assert ("cost", "expect_compound_columns_to_be_unique", "null") in kinds
    assert ("pull_success", "expect_column_values_to_be_unique", '"registry"') in kinds
    assert ("cost", "expect_column_sum_to_be_between", '"size_bytes"') in kinds
    assert ("cost_by_repository", "expect_column_values_to_be_between", '"usd_month_estimate_error"') in kinds
    assert ("pulls_by_image_day", "expect_column_values_to_be_between", '"day"') in kinds
    assert ("pull_success", "expect_table_row_count_to_be_between", "null") in kinds


def test_bytes_and_counts_are_classified_for_every_table():
    """A new bytes or count column in tables.py is checked without touching quality.py."""
    checked = {c for columns, _ in tables.TABLES.values() for c in quality.non_negative_columns(columns)}
    assert checked == {
        "pulls",
        "failed",
        "principals",
        "images",
        "objects",
        "repositories",
        "bytes",
        "size_bytes",
        "stored_bytes",
        "unique_layer_bytes_estimate",
        "bytes_before",
        "bytes_now",
    }


def test_the_frames_are_not_changed(valid_result):
    rep = report()
    before = {name: f.copy() for name, f in rep.tables.items()}
    quality.validate(rep, previous_stored_bytes=None)
    for name, f in rep.tables.items():
        pd.testing.assert_frame_equal(f, before[name])


def test_tables_read_back_from_parquet_pass(tmp_path):
    """The lead validates the tables as stored (Parquet): nullable ints, tz timestamps, dates."""
    rep = report()
    for name, table in rep.tables.items():
        table.to_parquet(tmp_path / f"{name}.parquet")
        rep.tables[name] = pd.read_parquet(tmp_path / f"{name}.parquet")
    assert rep.tables["cost_by_repository"]["unique_layer_bytes_estimate"].dtype == "Int64"
    result = quality.validate(rep, previous_stored_bytes=stored(rep))
    assert result.success, result.failures


def test_a_duplicated_cost_row_fails_compound_uniqueness():
    cost = valid_tables()["cost"]
    cost = pd.concat([cost, cost.iloc[[1]]], ignore_index=True)
    result = quality.validate(report("cost", cost=cost), previous_stored_bytes=None)
    assert not result.success
    assert failed(result) == {("cost", "expect_compound_columns_to_be_unique", "registry,repository,digest")}
    failure = only(result, "cost", "expect_compound_columns_to_be_unique")
    assert [s["digest"] for s in failure["samples"]] == ["sha256:" + "b" * 64] * 2
    assert failure["samples"][0]["kind"] == "referrer"  # whole rows
    assert failure["observed"]["unexpected_count"] == 2


def test_a_duplicated_single_column_key_fails_uniqueness():
    success = valid_tables()["pull_success"]
    success.loc[1, "registry"] = "ecr"
    result = quality.validate(report("pull_success", pull_success=success), previous_stored_bytes=None)
    assert failed(result) == {("pull_success", "expect_column_values_to_be_unique", "registry")}
    failure = only(result, "pull_success", "expect_column_values_to_be_unique")
    assert [s["pulls"] for s in failure["samples"]] == [15, 4]


def test_samples_are_the_offending_rows_whatever_the_frame_index():
    """A frame concatenated without a new index repeats labels: samples still name the rows."""
    cost = valid_tables()["cost"]
    cost = pd.concat([cost, cost.iloc[[2]].assign(size_bytes=-9, usd_month=usd(-9))])
    assert list(cost.index) == [0, 1, 2, 2]
    result = quality.validate(report("cost", cost=cost), previous_stored_bytes=None)
    assert [
        s["size_bytes"] for s in only(result, "cost", "expect_column_values_to_be_between")["samples"]
    ] == [-9]
    unique = only(result, "cost", "expect_compound_columns_to_be_unique")
    assert [s["size_bytes"] for s in unique["samples"]] == [3 * GIB, -9]


def test_at_most_five_samples_and_the_full_count():
    cost = valid_tables()["cost"]
    cost = pd.concat([cost.iloc[[2]]] * 8, ignore_index=True)
    cost["digest"] = [f"sha256:{i:064x}" for i in range(8)]
    cost[["size_bytes", "usd_month"]] = [-1, usd(-1)]
    failure = only(
        quality.validate(report("cost", cost=cost), previous_stored_bytes=None),
        "cost",
        "expect_column_values_to_be_between",
    )
    assert failure["observed"]["unexpected_count"] == 8
    assert [s["digest"] for s in failure["samples"]] == [f"sha256:{i:064x}" for i in range(5)]


def test_a_duplicated_repository_day_fails_compound_uniqueness():
    pulls = valid_tables()["pulls_by_repository_day"]
    pulls.loc[1, "day"] = date(2026, 11, 16)
    result = quality.validate(
        report("pulls_by_repository_day", pulls_by_repository_day=pulls), previous_stored_bytes=None
    )
    assert failed(result) == {
        ("pulls_by_repository_day", "expect_compound_columns_to_be_unique", "registry,repository,day")
    }
    failure = only(result, "pulls_by_repository_day", "expect_compound_columns_to_be_unique")
    assert [s["day"] for s in failure["samples"]] == ["2026-11-16", "2026-11-16"]


@pytest.mark.parametrize(
    ("table", "column"),
    [("cost", "registry"), ("cost", "digest"), ("pull_success", "registry"), ("savings", "run_id")],
)
def test_a_null_key_fails(table, column):
    broken = valid_tables()[table]
    broken.loc[0, column] = None
    result = quality.validate(report(table, **{table: broken}), previous_stored_bytes=None)
    assert (table, "expect_column_values_to_not_be_null", column) in failed(result)
    assert only(result, table, "expect_column_values_to_not_be_null")["samples"][0][column] is None


def test_a_negative_size_fails_and_names_the_row():
    cost = valid_tables()["cost"]
    cost.loc[2, ["size_bytes", "usd_month"]] = [-5, usd(-5)]
    result = quality.validate(report("cost", cost=cost), previous_stored_bytes=None)
    assert failed(result) == {("cost", "expect_column_values_to_be_between", "size_bytes")}
    failure = only(result, "cost", "expect_column_values_to_be_between")
    assert failure["kwargs"] == {"column": "size_bytes", "min_value": 0.0}
    assert failure["observed"]["unexpected_values"] == [-5]
    json.dumps(result.failures, allow_nan=False)  # stored in the validation summary
    assert failure["samples"] == [
        {
            "registry": "oci",
            "repository": "web",
            "digest": "sha256:" + "c" * 64,
            "kind": "image",
            "team": "unassigned",
            "size_bytes": -5,
            "usd_month": usd(-5),
            "usd_month_error": 0.0,
        }
    ]


@pytest.mark.parametrize(
    ("table", "column"),
    [
        (name, column)
        for name, (columns, _) in tables.TABLES.items()
        for column in quality.non_negative_columns(columns)
    ],
)
def test_every_negative_count_or_bytes_column_fails(table, column):
    broken = valid_tables()[table]
    broken[column] = broken[column].astype("float64")
    broken.loc[0, column] = -1
    rep = report(table, **{table: broken})
    result = quality.validate(rep, previous_stored_bytes=None)
    assert (table, "expect_column_values_to_be_between", column) in failed(result)


def test_more_failed_than_pulls_fails():
    pulls = valid_tables()["pulls_by_repository_day"]
    pulls.loc[1, "failed"] = 6
    result = quality.validate(
        report("pulls_by_repository_day", pulls_by_repository_day=pulls), previous_stored_bytes=None
    )
    assert failed(result) == {
        ("pulls_by_repository_day", "expect_column_pair_values_a_to_be_greater_than_b", "pulls,failed")
    }
    failure = only(result, "pulls_by_repository_day", "expect_column_pair_values_a_to_be_greater_than_b")
    assert failure["kwargs"] == {"column_A": "pulls", "column_B": "failed", "or_equal": True}
    assert [(s["day"], s["pulls"], s["failed"]) for s in failure["samples"]] == [("2026-11-17", 5, 6)]


@pytest.mark.parametrize("table", ["pulls_by_image_day", "pull_success"])
def test_more_failed_than_pulls_fails_in_every_pull_table(table):
    broken = valid_tables()[table]
    broken.loc[0, "failed"] = 11 if table == "pulls_by_image_day" else 16
    result = quality.validate(report(table, **{table: broken}), previous_stored_bytes=None)
    assert (table, "expect_column_pair_values_a_to_be_greater_than_b", "pulls,failed") in failed(result)


@pytest.mark.parametrize(
    ("table", "day"),
    [
        ("pulls_by_repository_day", date(2026, 11, 23)),  # the end is excluded
        ("pulls_by_repository_day", date(2026, 11, 15)),
        ("pulls_by_image_day", date(2026, 11, 23)),
    ],
)
def test_a_day_outside_the_window_fails(table, day):
    broken = valid_tables()[table]
    broken.loc[0, "day"] = day
    result = quality.validate(report(table, **{table: broken}), previous_stored_bytes=None)
    assert failed(result) == {(table, "expect_column_values_to_be_between", "day")}
    failure = only(result, table, "expect_column_values_to_be_between")
    assert failure["kwargs"] == {"column": "day", "min_value": "2026-11-16", "max_value": "2026-11-22"}
    assert failure["samples"][0]["day"] == day.isoformat()


def test_days_as_pandas_timestamps_are_checked_as_dates():
    pulls = valid_tables()["pulls_by_repository_day"]
    pulls["day"] = pd.to_datetime(pulls["day"])
    assert quality.validate(
        report("pulls_by_repository_day", pulls_by_repository_day=pulls), previous_stored_bytes=None
    ).success
    pulls.loc[0, "day"] = pd.Timestamp("2026-11-23")
    result = quality.validate(
        report("pulls_by_repository_day", pulls_by_repository_day=pulls), previous_stored_bytes=None
    )
    assert failed(result) == {("pulls_by_repository_day", "expect_column_values_to_be_between", "day")}


def test_a_cost_off_by_two_cents_fails_and_one_cent_passes():
    cost = valid_tables()["cost"]
    cost.loc[0, "usd_month"] += 0.02
    result = quality.validate(report("cost", cost=cost), previous_stored_bytes=None)
    assert failed(result) == {("cost", "expect_column_values_to_be_between", "usd_month_error")}
    failure = only(result, "cost", "expect_column_values_to_be_between")
    assert failure["kwargs"] == {"column": "usd_month_error", "min_value": 0.0, "max_value": 0.01}
    (sample,) = failure["samples"]
    assert sample["usd_month"] == pytest.approx(0.22) and sample["size_bytes"] == 2 * GIB
    assert sample["usd_month_error"] == pytest.approx(0.02)
    cost.loc[0, "usd_month"] -= 0.011
    assert quality.validate(report("cost", cost=cost), previous_stored_bytes=None).success


PAIRS = [(name, b, u, required) for name, pairs in quality.PRICED.items() for b, u, required in pairs]


@pytest.mark.parametrize(("table", "usd_column"), [(name, u) for name, _, u, _ in PAIRS])
def test_every_priced_table_off_by_two_cents_fails(table, usd_column):
    broken = valid_tables()[table]
    broken.loc[0, usd_column] -= 0.02
    result = quality.validate(report(table, **{table: broken}), previous_stored_bytes=None)
    error = quality.error_column(usd_column)
    assert failed(result) == {(table, "expect_column_values_to_be_between", error)}
    assert only(result, table, "expect_column_values_to_be_between")["samples"][0][error] == pytest.approx(
        0.02
    )


@pytest.mark.parametrize(
    ("table", "column"), [(name, c) for name, b, u, required in PAIRS if required for c in (b, u)]
)
def test_a_missing_price_or_size_fails(table, column):
    broken = valid_tables()[table]
    broken[column] = broken[column].astype("object")
    broken.loc[0, column] = None
    result = quality.validate(report(table, **{table: broken}), previous_stored_bytes=None)
    assert failed(result) == {(table, "expect_column_values_to_not_be_null", column)}


def test_an_unknown_estimate_is_not_priced():
    """A repository without layer data has neither estimate column: nothing to compare."""
    by_repo = valid_tables()["cost_by_repository"]
    assert by_repo.loc[1, ["unique_layer_bytes_estimate", "usd_month_estimate"]].isna().all()
    assert quality.validate(
        report("cost_by_repository", cost_by_repository=by_repo), previous_stored_bytes=None
    ).success


def test_a_success_rate_above_one_fails():
    success = valid_tables()["pull_success"]
    success.loc[1, "success_rate"] = 1.2
    result = quality.validate(report("pull_success", pull_success=success), previous_stored_bytes=None)
    assert failed(result) == {("pull_success", "expect_column_values_to_be_between", "success_rate")}
    failure = only(result, "pull_success", "expect_column_values_to_be_between")
    assert failure["kwargs"] == {"column": "success_rate", "min_value": 0.0, "max_value": 1.0}
    assert failure["samples"][0]["registry"] == "oci"


@pytest.mark.parametrize("table", ["cost", "cost_by_repository", "cost_by_team"])
def test_an_empty_cost_table_fails(table):
    result = quality.validate(report(table, **{table: frame(table, [])}), previous_stored_bytes=None)
    assert failed(result) == {(table, "expect_table_row_count_to_be_between", "")}
    assert only(result, table, "expect_table_row_count_to_be_between")["observed"] == 0


def test_a_missing_cost_table_is_checked_as_empty():
    rep = report("pull_success")
    del rep.tables["cost"]
    result = quality.validate(rep, previous_stored_bytes=None)
    assert failed(result) == {("cost", "expect_table_row_count_to_be_between", "")}


def test_an_empty_window_is_allowed_and_a_lost_pull_table_is_not():
    empty = {name: frame(name, []) for name in quality.PULL_TABLES}
    rep = report(*quality.PULL_TABLES, **empty)
    assert rep.headline["total_pulls"] == 0 and rep.empty_window
    assert quality.validate(rep, previous_stored_bytes=None).success
    for name in quality.PULL_TABLES:
        rep = report(name, **{name: frame(name, [])})
        rep.headline["total_pulls"] = 19
        result = quality.validate(rep, previous_stored_bytes=None)
        assert failed(result) == {(name, "expect_table_row_count_to_be_between", "")}


def test_pull_tables_disagreeing_about_events_fail():
    """No headline count, but pulls_by_repository_day has rows: the other pull tables must too."""
    rep = report(*quality.PULL_TABLES, pull_success=frame("pull_success", []))
    rep.headline.clear()
    result = quality.validate(rep, previous_stored_bytes=None)
    assert failed(result) == {("pull_success", "expect_table_row_count_to_be_between", "")}


def test_the_storage_drop_rule():
    rep = report("cost")
    total = stored(rep)
    previous = round(total / 0.4)  # a 60 % drop
    result = quality.validate(rep, previous_stored_bytes=previous)
    assert failed(result) == {("cost", "expect_column_sum_to_be_between", "size_bytes")}
    failure = only(result, "cost", "expect_column_sum_to_be_between")
    assert failure["observed"] == total
    assert failure["kwargs"]["min_value"] == pytest.approx(previous * 0.5)
    assert failure["kwargs"]["max_value"] == pytest.approx(previous * 1.5)
    # retention deleted 10 % of the previous bytes and more in the window: the drop is explained
    explained = previous - total - round(previous * 0.5) + 1
    assert quality.validate(rep, previous_stored_bytes=previous, explained_drop_bytes=explained).success
    short = quality.validate(rep, previous_stored_bytes=previous, explained_drop_bytes=explained - 1000)
    assert failed(short) == {("cost", "expect_column_sum_to_be_between", "size_bytes")}
    # growth of 60 % fails too; a tighter max_change moves both bounds
    assert not quality.validate(rep, previous_stored_bytes=round(total / 1.6)).success
    assert quality.validate(rep, previous_stored_bytes=round(total / 1.4)).success
    assert not quality.validate(rep, previous_stored_bytes=round(total / 1.4), max_change=0.3).success


def test_stored_bytes_bounds():
    assert quality.stored_bytes_bounds(None) is None
    assert quality.stored_bytes_bounds(0) is None  # nothing to compare a change with
    assert quality.stored_bytes_bounds(1000) == (500, 1500)
    assert quality.stored_bytes_bounds(1000, explained_drop_bytes=300, max_change=0.2) == (500, 1200)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"previous_stored_bytes": -1}, "previous_stored_bytes"),
        ({"previous_stored_bytes": 1, "explained_drop_bytes": -1}, "explained_drop_bytes"),
        ({"previous_stored_bytes": 1, "max_change": 0}, "max_change"),
    ],
)
def test_bad_arguments_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        quality.validate(report(), **kwargs)


def test_an_unknown_table_is_named():
    rep = report()
    rep.tables["costs"] = rep.tables["cost"]
    with pytest.raises(ValueError, match="costs"):
        quality.validate(rep, previous_stored_bytes=None)


def test_a_missing_column_fails_the_column_list_and_says_so():
    cost = valid_tables()["cost"].drop(columns=["team"])
    result = quality.validate(report("cost", cost=cost), previous_stored_bytes=None)
    failure = only(result, "cost", "expect_table_columns_to_match_ordered_list")
    assert "team" not in failure["observed"] and "registry" in failure["observed"]
    json.dumps(result.results)


def test_an_expectation_gx_cannot_compute_fails_with_its_error():
    cost = valid_tables()["cost"].drop(columns=["size_bytes"])
    result = quality.validate(report("cost", cost=cost), previous_stored_bytes=stored(report()))
    errors = [f for f in result.failures if isinstance(f["observed"], dict) and "error" in f["observed"]]
    assert errors and all(
        f'"{f["kwargs"]["column"]}" in BatchData does not exist' in f["observed"]["error"] for f in errors
    )
    assert {f["expectation"] for f in errors} >= {"expect_column_sum_to_be_between"}


def test_data_docs_hold_the_site_for_these_validations(valid_result):
    docs = valid_result.data_docs
    index = docs["index.html"].decode()
    pages = {path: body.decode() for path, body in docs.items() if path.startswith("validations/")}
    assert len(pages) == len(tables.TABLES)
    for name in tables.TABLES:
        (page,) = [body for path, body in pages.items() if path.startswith(f"validations/{name}/")]
        assert f'Expectation Suite:</span> <a href="../../../../expectations/{name}.html" >{name}</a>' in page
        assert f"Validations / {name} / weekly_2026-11-16_2026-11-22 / 2026-11-23T07:00:00Z" in page
        assert f"expectations/{name}.html" in docs
        assert f"validations/{name}/weekly_2026-11-16_2026-11-22/" in index
    assert any(path.startswith("static/") for path in docs)


def test_gx_writes_nothing_outside_its_temporary_directory(tmp_path, monkeypatch):
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    home = Path.home()
    before = (set(os.listdir(ROOT)), set(os.listdir(home)) if home.is_dir() else set())
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    rep = report()
    result = quality.validate(rep, previous_stored_bytes=stored(rep))
    assert result.success and "index.html" in result.data_docs
    assert list(cwd.iterdir()) == []
    assert list(tmp.iterdir()) == []  # the docs site was built there and removed
    after = (set(os.listdir(ROOT)), set(os.listdir(home)) if home.is_dir() else set())
    assert after[0] - before[0] == set() and after[1] - before[1] == set()
    assert not (home / ".great_expectations").exists() or ".great_expectations" in before[1]


def test_alert_text_names_each_failure_with_its_samples():
    cost = valid_tables()["cost"]
    cost = pd.concat([cost, cost.iloc[[0]]], ignore_index=True)
    cost.loc[2, ["size_bytes", "usd_month"]] = [-7, usd(-7)]
    rep = report("cost", cost=cost)
    result = quality.validate(rep, previous_stored_bytes=None)
    text = quality.alert_text(result, rep)
    assert text.startswith(
        "Registry report weekly 2026-11-16..2026-11-22: 2 data-quality expectation(s) failed"
    )
    assert "table cost: expect_compound_columns_to_be_unique on registry, repository, digest" in text
    assert "table cost: expect_column_values_to_be_between on size_bytes" in text
    assert "expected: min_value=0.0" in text
    assert "observed: 1 of 4 row(s) unexpected, values [-7]" in text
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("     {")]
    assert [(r["digest"][7], r["size_bytes"]) for r in rows] == [("a", 2 * GIB), ("a", 2 * GIB), ("c", -7)]
    assert '"size_bytes": -7' in text
    assert "stakeholder email is held back" in text


def test_alert_text_names_table_level_failures():
    rep = report("cost", cost=frame("cost", []))
    text = quality.alert_text(quality.validate(rep, previous_stored_bytes=None), rep)
    assert "table cost: expect_table_row_count_to_be_between (whole table)" in text
    assert "expected: min_value=1" in text and "observed: 0" in text


def test_a_hundred_thousand_row_cost_table_validates_in_seconds():
    n = 100_000
    sizes = pd.Series(range(n), dtype="int64") * 4096 + 1
    cost = pd.DataFrame(
        {
            "registry": ["ecr"] * n,
            "repository": [f"repo-{i % 500}" for i in range(n)],
            "digest": [f"sha256:{i:064x}" for i in range(n)],
            "kind": ["image"] * n,
            "team": ["payments"] * n,
            "size_bytes": sizes,
            "usd_month": sizes / GIB * PRICE,
        }
    )
    cost.loc[99_999, "usd_month"] += 1
    rep = report(cost=cost)
    started = time.perf_counter()
    result = quality.validate(rep, previous_stored_bytes=stored(rep))
    elapsed = time.perf_counter() - started
    print(f"\n100,000-row cost table and 10 small tables validated in {elapsed:.2f} s")
    assert failed(result) == {("cost", "expect_column_values_to_be_between", "usd_month_error")}
    assert (
        only(result, "cost", "expect_column_values_to_be_between")["samples"][0]["digest"]
        == f"sha256:{n - 1:064x}"
    )
    assert elapsed < 30
