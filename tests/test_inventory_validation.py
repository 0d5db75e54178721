"""Every inventory read is validated: Parquet, CSV and JSON files (``read_inventory``) and S3
snapshots (``schema.table_to_frame``). A bad one is refused with the file or S3 URI, the column,
a sample row and the problem, and the CLI exits 2 before anything is planned or deleted.

The reproduction: a Parquet inventory whose ``tags`` column held comma-joined strings was read as
lists of single characters, and the planner expired images tagged ``latest`` or semver that are
protected by default.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from include.registry_ops import schema, storage
from include.registry_ops.cli import main
from include.registry_ops.inventory_files import read_inventory, write_inventory
from tests.retention.helpers import NOW, image

ROOT = Path(__file__).resolve().parents[1]
NOW_TEXT = NOW.isoformat()
POLICY = {
    "version": 1,
    "policies": [
        {
            "name": "expire-old",
            "repositories": ["*"],
            "rules": [
                {
                    "rulePriority": 1,
                    "selection": {
                        "tagStatus": "any",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": 30,
                    },
                    "action": {"type": "expire"},
                }
            ],
        }
    ],
}
# Old images: every one would expire but for the default protection of `latest` and semver tags.
RECORDS = [
    image("release", ["3.0.1", "643ab9e"], 400, repo="shop/api"),
    image("latest", ["latest", "9f8e7d6"], 300, repo="shop/api"),
    image("build", ["20250101-120000"], 200, repo="shop/api"),
]


def _with(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def comma_joined(table: pa.Table) -> pa.Table:
    """The bad file of the report: tags as one comma-joined string per image."""
    joined = pa.array([",".join(tags) for tags in table["tags"].to_pylist()], pa.string())
    return _with(table, "tags", joined)


@pytest.fixture
def good() -> pa.Table:
    return schema.to_table(RECORDS)


@pytest.fixture
def policy(tmp_path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    return path


@pytest.fixture
def config(tmp_path) -> Path:
    """A config that parses; the inventory is refused before any service is contacted."""
    path = tmp_path / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [{"name": "ecr-test", "kind": "ecr", "conn_id": "aws_default"}],
                "storage": {"bucket": "validation-never-touched"},
            }
        )
    )
    return path


def refused(path: Path | str, **expect: str) -> str:
    with pytest.raises(schema.SchemaError) as err:
        read_inventory(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    for text in expect.values():
        assert text in msg, msg
    return msg


# -- the reproduction, through the CLI -------------------------------------------------------------
def test_comma_joined_tags_in_parquet_exit_2_naming_file_and_column(tmp_path, good, policy, config, capsys):
    bad = tmp_path / "comma-tags.parquet"
    pq.write_table(comma_joined(good), bad)
    plan = ["retention", "plan", "--policy", str(policy), "--inventory", str(bad), "--now", NOW_TEXT]
    apply = ["retention", "apply", "--policy", str(policy), "--inventory", str(bad), "--config", str(config)]
    for argv in (plan, apply):
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == "", argv  # nothing planned, nothing printed as a result
        assert str(bad) in err and "column 'tags'" in err and "'3.0.1,643ab9e'" in err, err
        assert "never split" in err and "shop/api" in err, err


def test_the_same_rows_as_lists_plan_with_protected_tags_kept(tmp_path, good, policy, capsys):
    ok = tmp_path / "ok.parquet"
    write_inventory(good, ok)
    code = main(["retention", "plan", "--policy", str(policy), "--inventory", str(ok), "--now", NOW_TEXT])
    actions = {r["digest"]: r["action"] for r in json.loads(capsys.readouterr().out)}
    assert code == 0
    assert [actions[r["digest"]] for r in RECORDS] == ["keep", "keep", "expire"]


# -- Parquet --------------------------------------------------------------------------------------
def test_duplicate_keys_are_refused(tmp_path, good):
    path = tmp_path / "dupes.parquet"
    pq.write_table(pa.concat_tables([good, good.slice(1, 1)]), path)
    msg = refused(path, column="column 'digest'", problem="not unique: it repeats row 1")
    assert f"row 3 (ecr-test/shop/api@{RECORDS[1]['digest']})" in msg


def test_same_digest_in_two_repositories_is_not_a_duplicate(tmp_path, good):
    other = schema.to_table([{**r, "repository": "shop/web"} for r in RECORDS])
    path = tmp_path / "two-repos.parquet"
    pq.write_table(pa.concat_tables([good, other]), path)
    assert len(read_inventory(path)) == 6


def test_duplicates_are_found_among_many_rows(tmp_path):
    """The hashed key check on a bigger table: one repeated row among 5,000 is named exactly."""
    records = [image(f"img-{i}", [f"b-{i}"], 10, repo=f"team/app-{i % 7}") for i in range(5000)]
    table = schema.to_table([*records, records[4321]])
    with pytest.raises(schema.SchemaError, match=r"repeats row 4321; e\.g\. row 5000 "):
        schema.validate_table(table, "many")
    schema.validate_table(schema.to_table(records), "many")  # and none when there is none


@pytest.mark.parametrize(
    ("column", "values", "problem", "shown"),
    [
        (
            "digest",
            pa.array(["sha256:abc", RECORDS[1]["digest"], "x"]),
            "is not a digest of the form sha256:",
            "sha256:abc",
        ),
        ("digest", pa.array(["SHA256:" + "A" * 64] * 3), "is not a digest", "SHA256:AAAA"),
        ("kind", pa.array(["image", "imgae", "index"]), "unknown value, expected one of", "'imgae'"),
        ("registry_kind", pa.array(["ecr", "gcr", "ecr"]), "unknown value", "'gcr'"),
        ("size_bytes", pa.array(["10", "20", "30"]), "stored as string, expected whole numbers", "'10'"),
        ("size_bytes", pa.array([1, -5, 3], pa.int64()), "is negative", "-5"),
        ("pushed_at", pa.array(["2026-01-01", None, None]), "stored as string, expected timestamps", "'2026"),
        (
            "tags",
            pa.array([["a"], None, []], pa.list_(pa.string())),
            "is null; the column is required",
            "None",
        ),
        ("tags", pa.array([[1], [2], [3]], pa.list_(pa.int64())), "stored as list<element: int64>", "[1]"),
        ("parent_digests", pa.array(["", "", ""]), "stored as string, expected a list of strings", "''"),
        ("repository", pa.array([1, 2, 3], pa.int64()), "stored as int64, expected text", "1"),
    ],
)
def test_wrong_types_and_values_name_column_row_and_problem(tmp_path, good, column, values, problem, shown):
    path = tmp_path / "bad.parquet"
    pq.write_table(_with(good, column, values), path)
    msg = refused(path, column=f"column {column!r}", problem=problem)
    assert f"{column} = {shown}" in msg and "e.g. row " in msg, msg


def test_not_an_inventory_names_what_is_missing(tmp_path, good, policy, capsys):
    random = tmp_path / "random.parquet"
    pq.write_table(pa.table({"name": ["a"], "value": [1]}), random)
    refused(
        random, what="not an inventory: missing columns registry, registry_kind, repository, digest, tags"
    )
    plan_like = tmp_path / "plan.parquet"  # a plan file: key and tags, but no inventory columns
    pq.write_table(
        good.select(["registry", "repository", "digest", "tags"]).append_column(
            "action", pa.array(["keep"] * 3)
        ),
        plan_like,
    )
    msg = refused(plan_like, what="not an inventory: missing columns registry_kind, kind, parent_digests")
    assert "KeyError" not in msg
    code = main(["retention", "plan", "--policy", str(policy), "--inventory", str(random), "--now", NOW_TEXT])
    err = capsys.readouterr().err
    assert code == 2 and "not an inventory: missing columns" in err and "KeyError" not in err
    text = tmp_path / "not.parquet"
    text.write_text("registry,repository\n")
    refused(text, what="not a Parquet file")


def test_optional_columns_may_be_left_out_and_extra_ones_are_dropped(tmp_path, good):
    path = tmp_path / "lean.parquet"
    pq.write_table(good.select(list(schema.REQUIRED)).append_column("note", pa.array(["x"] * 3)), path)
    frame = read_inventory(path)
    assert list(frame.columns) == list(schema.COLUMNS)
    assert frame["media_type"].isna().all() and frame["tags"].iloc[0] == ["3.0.1", "643ab9e"]


def test_dictionary_strings_and_nanosecond_times_are_accepted(tmp_path, good):
    frame = schema.table_to_frame(good)
    frame["repository"] = frame["repository"].astype("category")
    frame["pushed_at"] = frame["pushed_at"].astype("datetime64[ns, UTC]")
    path = tmp_path / "pandas-written.parquet"
    frame.to_parquet(path)
    back = read_inventory(path)
    assert back["repository"].tolist() == ["shop/api"] * 3
    assert back["pushed_at"].tolist() == schema.table_to_frame(good)["pushed_at"].tolist()


def test_parquet_lists_can_stay_arrow_with_the_same_values(tmp_path, good):
    """The CLI's plan and apply read Parquet with ``lists="arrow"`` (the planner's input): the
    list columns are Arrow-backed (a missing list is NA), the validation is the same, and every
    value equals the Python-list read."""
    path = tmp_path / "inv.parquet"
    write_inventory(good, path)
    python, arrow = read_inventory(path), read_inventory(path, lists="arrow")
    for col in schema.LIST_COLUMNS:
        assert isinstance(arrow[col].dtype, pd.ArrowDtype), col
        assert [None if v is pd.NA else v for v in arrow[col].tolist()] == python[col].tolist(), col
    scalars = [c for c in schema.COLUMNS if c not in schema.LIST_COLUMNS]
    assert arrow[scalars].equals(python[scalars])
    pq.write_table(comma_joined(good), tmp_path / "comma.parquet")
    with pytest.raises(schema.SchemaError, match="tags"):
        read_inventory(tmp_path / "comma.parquet", lists="arrow")
    with pytest.raises(ValueError, match="lists='numpy'"):
        read_inventory(path, lists="numpy")


# -- CSV and JSON ---------------------------------------------------------------------------------
def test_csv_comma_joined_tags_are_refused_not_split(tmp_path, good):
    frame = schema.table_to_frame(good)
    frame["tags"] = [",".join(t) for t in frame["tags"]]
    path = tmp_path / "comma.csv"
    frame.to_csv(path, index=False)
    msg = refused(path, column="column 'tags'", problem="holds text, expected a list of strings")
    assert "'3.0.1,643ab9e'" in msg and "(3 rows)" in msg


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("pushed_at", "yesterday", "not an ISO-8601 time"),
        ("size_bytes", "12 MB", "not a number"),
        ("size_bytes", "12.5", "expected whole numbers"),
        ("digest", "sha256:short", "is not a digest"),
        ("tags", '["1.0", ', "holds text"),
    ],
)
def test_csv_bad_cells_name_column_and_row(tmp_path, good, column, value, problem):
    ok = tmp_path / "ok.csv"
    write_inventory(good, ok)
    frame = pd.read_csv(ok, dtype=str, keep_default_na=False)
    frame.loc[2, column] = value
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    msg = refused(path, column=f"column {column!r}", problem=problem)
    assert "e.g. row 2 (ecr-test/shop/api@" in msg, msg


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("3.0.1,643ab9e", "holds text, expected a list of strings"),
        ([1, 2], "expected a list of strings"),
        ({"a": 1}, "expected a list of strings"),
    ],
)
def test_json_list_columns_must_hold_lists_of_strings(tmp_path, good, value, problem):
    ok = tmp_path / "ok.json"
    write_inventory(good, ok)
    records = json.loads(ok.read_text())
    records[1]["tags"] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    msg = refused(path, column="column 'tags'", problem=problem)
    assert "row 1 (ecr-test/shop/api@" in msg, msg


def test_json_real_lists_and_text_arrays_both_read(tmp_path, good):
    ok = tmp_path / "ok.json"
    write_inventory(good, ok)
    records = json.loads(ok.read_text())
    records[0]["tags"] = ["3.0.1", "643ab9e"]  # a real JSON list; the writer stores text arrays
    ok.write_text(json.dumps(records))
    assert read_inventory(ok)["tags"].tolist() == [
        ["3.0.1", "643ab9e"],
        ["9f8e7d6", "latest"],
        ["20250101-120000"],
    ]


def test_json_shapes(tmp_path, good):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert read_inventory(empty).empty and list(read_inventory(empty).columns) == list(schema.COLUMNS)
    obj = tmp_path / "object.json"
    obj.write_text(json.dumps(POLICY))
    refused(obj, what="not an inventory: expected a JSON list of records")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"registry": ')
    refused(broken, what="not valid JSON")
    wrong = tmp_path / "wrong.json"
    write_inventory(good, wrong)
    records = json.loads(wrong.read_text())
    records[0]["repository"] = 5
    wrong.write_text(json.dumps(records))
    refused(wrong, column="column 'repository'", problem="expected text (string)", row="row 0 (ecr-test/5@")


def test_duplicates_in_csv_are_refused(tmp_path, good):
    ok = tmp_path / "ok.csv"
    write_inventory(good, ok)
    lines = ok.read_text().splitlines()
    path = tmp_path / "dupes.csv"
    path.write_text("\n".join([*lines, lines[1]]) + "\n")  # the first image again
    refused(path, column="column 'digest'", problem="repeats row 0")


# -- frames built in code and S3 snapshots --------------------------------------------------------
def test_validate_frame_refuses_text_in_a_list_column():
    frame = schema.to_frame(RECORDS)
    schema.validate_frame(frame)  # the listing's frame is fine
    frame["child_digests"] = frame["child_digests"].astype(object)
    frame.at[2, "child_digests"] = "sha256:" + "a" * 64
    with pytest.raises(schema.SchemaError, match=r"^inventory: column 'child_digests': holds text"):
        schema.validate_frame(frame)


@pytest.fixture
def snapshot_bucket(s3):
    bucket = "inventory-validation"
    storage.ensure_bucket(s3, bucket)
    return bucket


def _publish(s3, bucket: str, table: pa.Table, prefix: str) -> str:
    """A snapshot as the inventory DAG lays it out: the Parquet, its manifest, latest.json."""
    key = f"{prefix}dt=2026-06-01/120000Z/inventory.parquet"
    storage.put_table(s3, bucket, key, table)
    storage.put_json(s3, bucket, key.replace("inventory.parquet", "manifest.json"), {"snapshot_at": NOW_TEXT})
    storage.put_json(
        s3,
        bucket,
        prefix + "latest.json",
        {"key": key, "manifest": key.replace("inventory.parquet", "manifest.json")},
    )
    return key


def test_s3_snapshot_reads_are_validated(s3, snapshot_bucket, good, tmp_path, capsys):
    from include.registry_ops.inventory import latest_snapshot

    key = _publish(s3, snapshot_bucket, comma_joined(good), "bad/")
    uri = f"s3://{snapshot_bucket}/{key}"
    with pytest.raises(schema.SchemaError, match=rf"^{uri}: column 'tags': stored as string"):
        latest_snapshot(s3, snapshot_bucket, "bad/")
    with pytest.raises(schema.SchemaError, match=rf"^{uri}: column 'tags'"):
        schema.table_to_frame(storage.get_table(s3, snapshot_bucket, key), uri)

    # retention apply --from-s3 plans on latest.json's snapshot: refused, exit 2, URI named
    config = tmp_path / "s3.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "registries": [{"name": "ecr-test", "kind": "ecr", "conn_id": "aws_default"}],
                "storage": {"bucket": snapshot_bucket, "prefixes": {"inventory": "bad/"}},
            }
        )
    )
    assert main(["retention", "apply", "--from-s3", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert uri in err and "column 'tags'" in err, err

    good_key = _publish(s3, snapshot_bucket, good, "good/")
    table = latest_snapshot(s3, snapshot_bucket, "good/")
    assert table.schema.equals(schema.ARROW_SCHEMA) and good_key.startswith("good/")


def test_scan_reads_its_snapshot_validated(s3, snapshot_bucket, good, tmp_path):
    from include.registry_ops.config import parse_config
    from include.registry_ops.scan.jobs import _inventory

    key = _publish(s3, snapshot_bucket, pa.concat_tables([good, good]), "scan-dupes/")
    config = parse_config(
        {
            "registries": [{"name": "ecr-test", "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"bucket": snapshot_bucket},
        }
    )
    with pytest.raises(
        schema.SchemaError, match=rf"^s3://{snapshot_bucket}/{key}: column 'digest'.*not unique"
    ):
        _inventory(s3, config, key)


def test_publish_validates_each_part_and_conforms_one_from_an_older_version(s3, snapshot_bucket, good):
    """The inventory DAG's publish step reads the mapped tasks' parts through the schema: a part
    written before ``layer_sizes`` existed (a task of the previous release, mid-upgrade) joins
    one written after, and a broken part fails naming its object."""
    from include.registry_ops import inventory_jobs
    from include.registry_ops.config import parse_config

    config = parse_config(
        {
            "registries": [{"name": "oci-local", "kind": "oci", "conn_id": "oci_local"}],
            "storage": {"bucket": snapshot_bucket, "prefixes": {"inventory": "parts-test/"}},
        },
        "test",
    )
    old = good.drop_columns(["layer_sizes"])
    keys = ["parts-test/_parts/r1/0.parquet", "parts-test/_parts/r1/1.parquet"]
    storage.put_table(s3, snapshot_bucket, keys[0], old)
    storage.put_table(s3, snapshot_bucket, keys[1], good)
    parts = [{"key": k, "errors": [], "listed_at": NOW_TEXT} for k in keys]
    registries = [{"registry": "oci-local", "error": None}]
    manifest = inventory_jobs.publish(config, registries, parts)
    assert manifest["images"] == 2 * good.num_rows

    storage.put_table(s3, snapshot_bucket, keys[0], comma_joined(good))
    with pytest.raises(schema.SchemaError, match=rf"s3://{snapshot_bucket}/{keys[0]}: column 'tags'"):
        inventory_jobs.publish(config, registries, parts)


def test_an_empty_snapshot_round_trips_through_a_frame():
    """A registry whose include globs match nothing publishes an empty snapshot; its frame (whose
    list columns pandas may type as float64) must convert back, not crash the scan's plan."""
    empty = schema.ARROW_SCHEMA.empty_table()
    frame = schema.table_to_frame(empty)
    frame["tags"] = frame["tags"].astype("float64")  # what an empty column may come back as
    table = schema.frame_to_table(frame, "empty.parquet")
    assert table.num_rows == 0 and table.schema.equals(schema.ARROW_SCHEMA)
