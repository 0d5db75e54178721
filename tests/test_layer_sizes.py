"""``layer_sizes`` in the inventory (issue 8, deliverable 7): filled wherever the manifest was
read (OCI, OCI layout, ECR with ``read_manifests``), one size per ``layer_digests`` entry,
validated on every read, kept through Parquet, CSV and JSON, and null in snapshots written
before the column existed. ECR's ``read_manifests`` costs ceil(images/100) ``BatchGetImage``
per repository in place of ceil(indexes/100), and nothing when off."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devstack.fleet import RepoSpec, make_fleet
from devstack.seed import seed_ecr
from include.registry_ops import inventory, schema, storage
from include.registry_ops.config import ConfigError, parse_config
from include.registry_ops.inventory_files import read_inventory, write_inventory
from include.registry_ops.registries.base import INDEX_TYPES, NotFound
from include.registry_ops.registries.ecr import BATCH, EcrRegistry
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from tests.conftest import OCI_PASSWORD, OCI_USER
from tests.fleet_expect import visible_oci
from tests.retention.helpers import NOW, digest, image
from tests.retention_exec.helpers import push

BLOB_COLUMNS = ("config_digest", "layer_digests", "layer_sizes")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def expected_blobs(spec) -> dict:
    """What the manifest says: config is blobs[0], the layers follow in manifest order."""
    if spec.kind == "index":
        return {"config_digest": None, "layer_digests": None, "layer_sizes": None}
    return {
        "config_digest": spec.blobs[0].digest,
        "layer_digests": [b.digest for b in spec.blobs[1:]],
        "layer_sizes": [b.size for b in spec.blobs[1:]],
    }


def manifest_layers(registry, repository: str, digest_: str) -> tuple[list[str], list[int]] | None:
    """Layer digests and sizes read straight from the stored manifest (None for an index)."""
    m = registry.get_manifest(repository, digest_)
    if m.media_type in INDEX_TYPES:
        return None
    layers = m.body["layers"]
    return [x["digest"] for x in layers], [x["size"] for x in layers]


# -- ECR: read_manifests ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ecr_fleet(moto_server, ecr) -> list[RepoSpec]:
    """Two repositories over 100 images each (several BatchGetImage batches); the second holds
    multi-arch indexes, so the index reads made without read_manifests are not zero."""
    fleet = make_fleet(
        seed=23, repositories=2, images=330, layer_scale=0.0002, prefix=f"layers-{uuid.uuid4().hex[:6]}/"
    )
    seed_ecr(ecr, fleet)
    return fleet


def _listing(moto_server, read_manifests: bool, fleet: list[RepoSpec]) -> tuple[EcrRegistry, dict]:
    client = boto3.client("ecr", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    # off is the default: the adapter as every caller built it before the option existed
    reg = (
        EcrRegistry("ecr-local", client, read_manifests=True)
        if read_manifests
        else EcrRegistry("ecr-local", client)
    )
    return reg, {r.name: {x["digest"]: x for x in reg.list_images(r.name)} for r in fleet}


def test_ecr_read_manifests_off_reads_only_the_indexes(moto_server, ecr_fleet):
    reg, listed = _listing(moto_server, False, ecr_fleet)
    indexes = {r.name: sum(1 for m in r.manifests if m.kind == "index") for r in ecr_fleet}
    assert sum(indexes.values()) > 0
    assert reg.requests.counts == {
        "DescribeImages": sum(ceil_div(len(r.manifests), 1000) for r in ecr_fleet),
        "BatchGetImage": sum(ceil_div(n, BATCH) for n in indexes.values()),
    }
    for rows in listed.values():
        for row in rows.values():
            assert all(row.get(c) is None for c in BLOB_COLUMNS), row["digest"]


def test_ecr_read_manifests_on_reads_each_manifest_once_100_per_call(moto_server, ecr_fleet):
    off, plain = _listing(moto_server, False, ecr_fleet)
    on, listed = _listing(moto_server, True, ecr_fleet)
    images = {r.name: len(r.manifests) for r in ecr_fleet}
    indexes = {r.name: sum(1 for m in r.manifests if m.kind == "index") for r in ecr_fleet}
    assert sum(indexes.values()) > 0 and all(n > BATCH for n in images.values())
    extra = sum(ceil_div(images[r], BATCH) - ceil_div(indexes[r], BATCH) for r in images)
    assert on.requests.counts["BatchGetImage"] == off.requests.counts["BatchGetImage"] + extra
    assert on.requests.counts["BatchGetImage"] == sum(ceil_div(n, BATCH) for n in images.values())
    assert on.requests.counts["DescribeImages"] == off.requests.counts["DescribeImages"]
    assert set(on.requests.counts) == {"DescribeImages", "BatchGetImage"}  # no config blob reads

    for repo in ecr_fleet:
        for spec in repo.manifests:
            row, before = listed[repo.name][spec.digest], plain[repo.name][spec.digest]
            assert {c: row[c] for c in BLOB_COLUMNS} == expected_blobs(spec), spec.digest
            # everything else is what the listing without manifests gives
            assert {k: v for k, v in row.items() if k not in BLOB_COLUMNS} == before
            assert row.get("created_at") is None  # config blobs are not read on ECR


def test_ecr_read_manifests_rows_validate_and_match_the_manifests(moto_server, ecr_fleet):
    client = boto3.client("ecr", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    reg = EcrRegistry("ecr-local", client, read_manifests=True)
    listing = inventory.list_batch(reg, [r.name for r in ecr_fleet], NOW)
    assert not listing.errors
    table = schema.validate_table(listing.table, "listing")
    frame = schema.table_to_frame(table)
    images = frame[frame["kind"] != "index"]
    assert len(images) and images["layer_sizes"].map(len).equals(images["layer_digests"].map(len))
    repo = ecr_fleet[1].name
    for row in images[images["repository"] == repo].head(5).itertuples():
        assert manifest_layers(reg, repo, row.digest) == (row.layer_digests, row.layer_sizes)


def test_ecr_image_deleted_while_listed_keeps_its_row_without_layers(moto_server, ecr, caplog):
    """BatchGetImage after DescribeImages: an image gone in between is still a row (as listed),
    its blob columns left null, and a warning names it; an index gone fails the repository."""
    caplog.set_level(logging.WARNING)
    fleet = make_fleet(seed=29, repositories=2, images=24, layer_scale=0.0002, prefix="layers-race/")
    seed_ecr(ecr, fleet)
    client = boto3.client("ecr", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    reg = EcrRegistry("ecr-local", client, read_manifests=True)
    describe = reg.describe
    for repo, kind in ((fleet[0], "image"), (fleet[1], "index")):
        details = describe(repo.name)
        victim = next(m for m in repo.manifests if m.kind == kind)
        reg.describe = lambda _r, details=details: details  # the listing as it was before the delete
        ecr.batch_delete_image(repositoryName=repo.name, imageIds=[{"imageDigest": victim.digest}])
        if kind == "image":
            rows = {x["digest"]: x for x in reg.list_images(repo.name)}
            assert all(rows[victim.digest].get(c) is None for c in BLOB_COLUMNS)
            assert victim.digest in caplog.text and "deleted while listed" in caplog.text
            other = next(m for m in repo.manifests if m.kind == "image" and m.digest != victim.digest)
            assert rows[other.digest]["layer_sizes"] == expected_blobs(other)["layer_sizes"]
        else:
            with pytest.raises(NotFound, match=victim.digest):
                reg.list_images(repo.name)


def test_read_manifests_reaches_the_adapter_from_the_config(moto_server):
    from include.registry_ops.clients import build_registry

    config = parse_config(
        {
            "registries": [
                {"name": "on", "kind": "ecr", "conn_id": "aws_default", "read_manifests": True},
                {"name": "off", "kind": "ecr", "conn_id": "aws_default"},
            ],
            "storage": {"bucket": "layer-sizes"},
        }
    )
    assert build_registry(config.registry("on")).read_manifests is True
    assert build_registry(config.registry("off")).read_manifests is False


@pytest.mark.parametrize(
    ("registry", "problem"),
    [
        ({"kind": "oci", "conn_id": "oci_local", "read_manifests": True}, "applies to kind 'ecr' only"),
        ({"kind": "ocilayout", "path": "/tmp/x", "read_manifests": False}, "applies to kind 'ecr' only"),
        ({"kind": "ecr", "conn_id": "aws_default", "read_manifests": "yes"}, "valid boolean"),
    ],
)
def test_read_manifests_config_is_ecr_only_and_strict(registry, problem):
    with pytest.raises(ConfigError, match=problem) as err:
        parse_config(
            {"registries": [{"name": "r", **registry}], "storage": {"bucket": "layer-sizes"}}, "f.yaml"
        )
    assert "f.yaml: registries[0]" in str(err.value)


# -- OCI and OCI layout: the manifest is always read -------------------------------------------------
@pytest.mark.parametrize("read_configs", [True, False])
def test_oci_rows_carry_the_manifest_layer_sizes(seeded, registry_server, read_configs):
    oci = OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD, read_configs=read_configs)
    checked = 0
    for repo in seeded:
        rows = {x["digest"]: x for x in oci.list_images(repo.name)}
        for d, spec in visible_oci(repo).items():
            assert {c: rows[d][c] for c in BLOB_COLUMNS} == expected_blobs(spec), d
            stored = manifest_layers(oci, repo.name, d)
            assert stored == (
                None if spec.kind == "index" else (rows[d]["layer_digests"], rows[d]["layer_sizes"])
            )
            checked += spec.kind != "index"
    assert checked > 50


@pytest.mark.parametrize("read_configs", [True, False])
def test_layout_rows_carry_the_manifest_layer_sizes(tmp_path, read_configs):
    fleet = make_fleet(seed=31, repositories=2, images=30, layer_scale=0.0002, prefix="layout/")
    push(OciLayoutRegistry("layout", tmp_path), fleet)
    layout = OciLayoutRegistry("layout", tmp_path, read_configs=read_configs)
    for repo in fleet:
        rows = {x["digest"]: x for x in layout.list_images(repo.name)}
        assert set(rows) == {m.digest for m in repo.manifests}
        for spec in repo.manifests:
            assert {c: rows[spec.digest][c] for c in BLOB_COLUMNS} == expected_blobs(spec)
            stored = manifest_layers(layout, repo.name, spec.digest)
            row = rows[spec.digest]
            assert stored == (None if spec.kind == "index" else (row["layer_digests"], row["layer_sizes"]))
    built = schema.to_table([{**r, "registry": "l", "snapshot_at": NOW} for r in rows.values()])
    assert schema.validate_table(built).num_rows == len(rows)


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (
            [{"digest": digest("a"), "size": 7}, {"digest": digest("b"), "size": 0}],
            ([digest("a"), digest("b")], [7, 0]),
        ),
        ([{"digest": digest("a")}], ([digest("a")], None)),  # a size missing: no guess
        ([{"digest": digest("a"), "size": "7"}], ([digest("a")], None)),
        ([{"digest": digest("a"), "size": -1}], ([digest("a")], None)),
        (None, (None, None)),  # no layers list (Docker schema 1): unknown, not none
        ([], ([], [])),
    ],
)
def test_blob_columns_take_sizes_from_the_descriptors_only_when_sound(layers, expected):
    from include.registry_ops.registries.base import OCI_MANIFEST, Manifest
    from include.registry_ops.registries.records import blob_columns

    body = {"schemaVersion": 2, "config": {"digest": digest("cfg"), "size": 2}}
    if layers is not None:
        body["layers"] = layers
    got = blob_columns(Manifest(digest("m"), OCI_MANIFEST, json.dumps(body).encode()))
    assert got == {"config_digest": digest("cfg"), "layer_digests": expected[0], "layer_sizes": expected[1]}


# -- validation ------------------------------------------------------------------------------------
def _rows() -> list[dict]:
    layers = [digest("layer-a"), digest("layer-b")]
    return [
        image("app", ["v1"], 3, layer_digests=layers, layer_sizes=[1024, 2048], config_digest=digest("cfg")),
        image("empty", ["v2"], 2, layer_digests=[], layer_sizes=[]),
        image("multi", ["v3"], 1, kind="index", children=["app"]),
        image("old", ["v0"], 9),  # a row as a listing without manifests gives it
    ]


def test_valid_rows_pass():
    table = schema.validate_table(schema.to_table(_rows()))
    assert table["layer_sizes"].to_pylist() == [[1024, 2048], [], None, None]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"layer_sizes": [1024]}, "does not have one size per layer digest"),
        ({"layer_sizes": [1024, 2048, 4096]}, "does not have one size per layer digest"),
        ({"layer_sizes": [1024, -1]}, "holds a negative or missing layer size"),
        ({"layer_sizes": [None, 2048]}, "holds a negative or missing layer size"),
        ({"layer_digests": None}, "is set but layer_digests is not"),
    ],
)
def test_bad_layer_sizes_are_refused_naming_the_row(change, problem, tmp_path):
    rows = _rows()
    rows[0].update(change)
    bad = pa.Table.from_pylist(rows[:1] + rows[1:], schema=schema.ARROW_SCHEMA)
    key = f"ecr-test/{rows[0]['repository']}@{rows[0]['digest']}"
    with pytest.raises(schema.SchemaError, match=r"^snap: column 'layer_sizes': ") as err:
        schema.validate_table(bad, "snap")
    assert problem in str(err.value) and f"row 0 ({key})" in str(err.value)
    with pytest.raises(schema.SchemaError, match=problem):
        schema.validate_frame(schema.built_frame(bad))
    path = tmp_path / "bad.parquet"
    pq.write_table(bad, path)
    with pytest.raises(schema.SchemaError, match=rf"^{path}: column 'layer_sizes': .*{problem}"):
        read_inventory(path)


def test_the_row_named_is_the_bad_one_among_good_ones():
    rows = [dict(r, digest=digest(f"n{i}")) for i, r in enumerate(_rows() * 3)]
    rows[7]["layer_sizes"] = [5]
    rows[7]["layer_digests"] = [digest("x"), digest("y")]
    with pytest.raises(schema.SchemaError, match=r"e\.g\. row 7 \(") as err:
        schema.validate_table(schema.to_table(rows))
    assert rows[7]["digest"] in str(err.value) and "layer_sizes = [5]" in str(err.value)


def test_layer_sizes_of_the_wrong_type_are_refused(tmp_path):
    table = schema.to_table(_rows())
    as_text = table.set_column(
        table.schema.get_field_index("layer_sizes"),
        "layer_sizes",
        pa.array([["1024", "2048"], [], None, None], pa.list_(pa.string())),
    )
    with pytest.raises(
        schema.SchemaError, match=r"stored as list<item: string>, expected a list of whole numbers"
    ):
        schema.validate_table(as_text, "snap")
    csv = tmp_path / "text.csv"
    write_inventory(table, csv)
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame.loc[0, "layer_sizes"] = "1024,2048"
    frame.to_csv(csv, index=False)
    with pytest.raises(
        schema.SchemaError, match=r"column 'layer_sizes': holds text, expected a list of whole numbers"
    ):
        read_inventory(csv)
    frame.loc[0, "layer_sizes"] = "[1024.5, 2048]"
    frame.to_csv(csv, index=False)
    with pytest.raises(
        schema.SchemaError,
        match=r"column 'layer_sizes': expected a list of whole numbers \(list<int64>\); e\.g\. row 0",
    ):
        read_inventory(csv)


# -- files and snapshots -------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".json"])
def test_round_trip_keeps_sizes_empty_lists_and_nulls(tmp_path, suffix):
    table = schema.to_table(_rows())
    path = tmp_path / f"inventory{suffix}"
    write_inventory(table, path)
    frame = read_inventory(path)
    assert frame["layer_sizes"].tolist() == [[1024, 2048], [], None, None]
    assert frame["layer_digests"].tolist() == [[digest("layer-a"), digest("layer-b")], [], None, None]
    assert schema.frame_to_table(frame).equals(schema.validate_table(table))
    if suffix == ".json":
        assert json.loads(path.read_text())[0]["layer_sizes"] == "[1024, 2048]"


def _old(table: pa.Table) -> pa.Table:
    """A table as written before ``layer_sizes`` existed."""
    return table.drop_columns(["layer_sizes"])


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".json"])
def test_old_inventory_file_without_the_column_reads(tmp_path, suffix):
    path = tmp_path / f"old{suffix}"
    table = schema.to_table(_rows())
    if suffix == ".parquet":
        pq.write_table(_old(table), path)
    else:  # written as before: the same file without the column
        write_inventory(table, path)
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            frame.drop(columns=["layer_sizes"]).to_csv(path, index=False)
        else:
            records = json.loads(path.read_text())
            path.write_text(json.dumps([{k: v for k, v in r.items() if k != "layer_sizes"} for r in records]))
    assert b"layer_sizes" not in path.read_bytes()
    frame = read_inventory(path)
    assert list(frame.columns) == list(schema.COLUMNS)
    assert frame["layer_sizes"].isna().all()
    assert frame["layer_digests"].tolist()[0] == [digest("layer-a"), digest("layer-b")]


def test_old_s3_snapshot_without_the_column_reads(s3):
    bucket = "layer-sizes-old"
    storage.ensure_bucket(s3, bucket)
    at = datetime(2026, 6, 1, 12, tzinfo=UTC)
    old = _old(schema.to_table([dict(r, snapshot_at=at) for r in _rows()]))
    inventory.publish_snapshot(s3, bucket, "inventory/", old, [], at, ["ecr-test"])
    table = inventory.latest_snapshot(s3, bucket, "inventory/")
    assert table.schema.equals(schema.ARROW_SCHEMA)
    assert table["layer_sizes"].null_count == table.num_rows == 4
    assert table["layer_digests"].to_pylist()[0] == [digest("layer-a"), digest("layer-b")]
