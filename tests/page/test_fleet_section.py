"""The Fleet section against a real inventory: the seeded fleet listed from moto's ECR and the
distribution registry by ``inventory.run_inventory`` (a third registry refuses our credentials),
published by ``inventory.publish_snapshot`` into this module's own bucket."""

from __future__ import annotations

import io
import json
import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from include.registry_ops import inventory
from include.registry_ops.clients import build_registry
from include.registry_ops.config import parse_config
from include.registry_ops.page import fleet
from include.registry_ops.page.context import Memo, PageContext
from include.registry_ops.page.model import guard
from include.registry_ops.store import objects

BUCKET = "page-fleet-test"
BAD_PASSWORD = "wr0ng-s3cret-for-page"
PRICE = 0.25
GIB = 2**30


def _config(bucket: str):
    return parse_config(
        {
            "registries": [
                {"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default", "include": ["fleet/*"]},
                {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": ["fleet/*"]},
                {"name": "oci-bad", "kind": "oci", "conn_id": "oci_page_bad"},
            ],
            "storage": {"conn_id": "aws_default", "bucket": bucket},
            "reports": {"price_per_gb_month": PRICE},
        }
    )


@pytest.fixture(scope="module")
def published(seeded, registry_server, s3):
    """The seeded fleet's snapshot (taken an hour before the page's ``now``) and its table."""
    conn = json.loads(registry_server.conn_json())
    os.environ["AIRFLOW_CONN_OCI_PAGE_BAD"] = json.dumps({**conn, "password": BAD_PASSWORD})
    objects.ensure_bucket(s3, BUCKET)
    config = _config(BUCKET)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    listing = inventory.run_inventory(config, build_registry, at)
    manifest = inventory.publish_snapshot(
        s3,
        BUCKET,
        config.storage.prefixes.inventory,
        listing.table,
        listing.errors,
        at,
        [r.name for r in config.registries],
    )
    return config, at, manifest


def _ctx(config, s3, now=None) -> PageContext:
    return PageContext(config, s3, now or datetime.now(UTC), Memo())


def _expected(table) -> dict[tuple[str, str], dict]:
    """Per repository, counted row by row in plain Python (the rules of the module docstring)."""
    out: dict[tuple[str, str], dict] = defaultdict(
        lambda: {"images": 0, "tagged": 0, "untagged": 0, "bytes": 0, "last_push": None}
    )
    for r in table.to_pylist():
        e = out[(r["registry"], r["repository"])]
        e["images"] += 1
        if r["tags"]:
            e["tagged"] += 1
        elif not r["parent_digests"] and r["kind"] != "referrer":
            e["untagged"] += 1
        if r["kind"] in ("image", "referrer"):
            e["bytes"] += r["size_bytes"] or 0
        if r["pushed_at"] and (e["last_push"] is None or r["pushed_at"] > e["last_push"]):
            e["last_push"] = r["pushed_at"]
    return out


def test_never_run_names_the_inventory_dag(s3):
    objects.ensure_bucket(s3, "page-fleet-empty")
    section = fleet.load(_ctx(_config("page-fleet-empty"), s3))
    assert section.status == "never_run"
    assert "registry_inventory" in section.message


def test_fleet_numbers_per_repository_and_the_failed_registry(published, s3):
    config, at, manifest = published
    now = at + timedelta(hours=1)
    section = fleet.load(_ctx(config, s3, now))
    assert section.status == "ok"
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=manifest["key"])["Body"].read()))
    expected = _expected(table)
    repos = {(r["registry"], r["repository"]): r for r in section.tables[1].rows}
    assert set(repos) == set(expected) and len(expected) == 12  # 6 repositories in each registry
    for key, want in expected.items():
        got = repos[key]
        for field in ("images", "tagged", "untagged", "bytes"):
            assert got[field] == want[field], (key, field)
        assert got["usd_month"] == pytest.approx(want["bytes"] / GIB * PRICE, abs=1e-4)
        assert got["last_push"] == (want["last_push"].isoformat() if want["last_push"] else None)
    assert any(r["untagged"] for r in repos.values()) and any(r["tagged"] for r in repos.values())
    figures = {f.label: f for f in section.figures}
    assert figures["Images"].value == table.num_rows
    assert figures["Stored"].value == sum(e["bytes"] for e in expected.values())
    assert figures["Snapshot age"].value == pytest.approx(3600)
    assert figures["Complete"].value == "no" and figures["Complete"].alert
    assert figures["Registries failed"].value == ["oci-bad"] and figures["Registries failed"].alert
    assert section.as_of == at.isoformat()
    registries = {r["registry"]: r for r in section.tables[0].rows}
    assert registries["oci-bad"]["status"] == "failed" and registries["oci-bad"]["images"] == 0
    assert registries["ecr-local"]["status"] == "ok"
    assert [r["registry"] for r in section.tables[2].rows] == ["oci-bad"]
    kinds = {c.key: c.kind for c in section.tables[1].columns}
    assert kinds["bytes"] == "bytes" and kinds["usd_month"] == "usd" and kinds["last_pull"] == "time"


def test_no_secret_reaches_the_json(published, s3):
    config, _, _ = published
    text = json.dumps(guard("fleet", "Fleet", lambda: fleet.load(_ctx(config, s3))).to_json())
    assert "oci-bad" in text
    for secret in (BAD_PASSWORD, "s3cret-registry-pass", os.environ["AWS_SECRET_ACCESS_KEY"] + '"'):
        assert secret not in text


def test_a_warm_request_reads_only_the_pointer(published, s3):
    config, _, _ = published
    ctx = _ctx(config, s3)
    fleet.load(ctx)
    calls: list[str] = []
    handler = lambda event_name, **_: calls.append(event_name)  # noqa: E731
    s3.meta.events.register("before-send.s3.*", handler)
    try:
        again = fleet.load(ctx)
    finally:
        s3.meta.events.unregister("before-send.s3.*", handler)
    assert again.status == "ok" and calls == ["before-send.s3.GetObject"]


def test_a_corrupt_snapshot_or_pointer_is_an_error_naming_the_object(published, s3):
    _, _, manifest = published
    bucket = "page-fleet-corrupt"
    objects.ensure_bucket(s3, bucket)
    broken = _config(bucket)
    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key="inventory/latest.json")["Body"].read())
    for key in ("inventory/latest.json", pointer["manifest"], manifest["key"]):
        s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": BUCKET, "Key": key})
    assert fleet.load(_ctx(broken, s3)).status == "ok"

    s3.put_object(Bucket=bucket, Key=manifest["key"], Body=b"\x00garbage, not parquet")
    section = guard("fleet", "Fleet", lambda: fleet.load(_ctx(broken, s3)))
    assert section.status == "error"
    assert f"s3://{bucket}/{manifest['key']}" in section.message

    s3.put_object(Bucket=bucket, Key="inventory/latest.json", Body=b"{not json")
    section = guard("fleet", "Fleet", lambda: fleet.load(_ctx(broken, s3)))
    assert section.status == "error" and f"s3://{bucket}/inventory/latest.json" in section.message


def test_credentials_in_a_recorded_error_are_redacted(s3):
    bucket = "page-fleet-redact"
    objects.ensure_bucket(s3, bucket)
    error = "GET https://ops:hunter2-pass@registry.example/v2/_catalog failed (token=abc123xyz)"
    at = datetime.now(UTC).replace(microsecond=0)
    inventory.publish_snapshot(
        s3,
        bucket,
        "inventory/",
        inventory.combine([]),
        [{"registry": "r1", "repository": "*", "error": error}],
        at,
        ["r1"],
    )
    text = json.dumps(fleet.load(_ctx(_config(bucket), s3)).to_json())
    assert "registry.example/v2/_catalog" in text
    assert "hunter2-pass" not in text and "abc123xyz" not in text
