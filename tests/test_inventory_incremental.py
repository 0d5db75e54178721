"""Incremental OCI inventory against the real distribution registry: the previous snapshot is
the cache, an unchanged registry costs list pages and one HEAD per tag (no manifest or blob GET),
moved tags cost their new digests only, and every incremental result equals a full listing row
by row. A damaged cache costs requests, never wrong rows; ``full`` and the weekly full listing
ignore the cache."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
import yaml

from devstack.fleet import make_fleet
from devstack.seed import seed_oci
from include.registry_ops import inventory_cache, inventory_jobs
from include.registry_ops.config import load_config
from include.registry_ops.inventory import latest_snapshot
from include.registry_ops.registries.base import Manifest, Unavailable, digest_of
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.store import objects
from tests.conftest import OCI_PASSWORD, OCI_USER

BUCKET = "incremental-inventory"
REG = "oci-incr"
PREFIX = "incr/"


@pytest.fixture(scope="module")
def config(moto_server, registry_server, s3, tmp_path_factory):
    path = tmp_path_factory.mktemp("incr") / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": REG, "kind": "oci", "conn_id": "oci_local", "include": [f"{PREFIX}*"]}
                ],
                "storage": {"conn_id": "aws_default", "bucket": BUCKET},
                "inventory": {"batch_size": 2},
            }
        )
    )
    objects.ensure_bucket(s3, BUCKET)
    return load_config(path)


@pytest.fixture(scope="module")
def pushed(registry_server, config):
    """Five repositories (two with multi-arch indexes, signed ones) pushed for real."""
    fleet = make_fleet(seed=23, repositories=5, images=70, prefix=PREFIX, layer_scale=0.0005)
    client = OciRegistry("seed", registry_server.url, OCI_USER, OCI_PASSWORD)
    seed_oci(client, fleet)
    return fleet


@pytest.fixture
def built(monkeypatch):
    """Every registry client the jobs build, to read its request counts."""
    clients: list = []
    real = inventory_jobs.build_registry

    def build(reg):
        client = real(reg)
        clients.append(client)
        return client

    from include.registry_ops import clients as factory

    monkeypatch.setattr(inventory_jobs, "build_registry", build)
    monkeypatch.setattr(factory, "build_registry", build)  # the command line imports it from there
    return clients


def run(config, s3, built, run_id: str, full: bool = False) -> tuple[dict, pa.Table, dict[str, int]]:
    """One inventory as the DAG runs it; the snapshot, its rows and the listing's requests."""
    built.clear()
    reg = inventory_jobs.repository_batches(config, REG, full)
    listers = len(built)
    parts = [inventory_jobs.list_batch_to_s3(config, b, run_id) for b in reg["batches"]]
    manifest = inventory_jobs.publish(config, [reg], parts)
    requests: dict[str, int] = {}
    for client in built[listers:]:
        for op, n in client.requests.counts.items():
            requests[op] = requests.get(op, 0) + n
    table = latest_snapshot(s3, BUCKET, "inventory/")
    return manifest, table, requests


def rows(table: pa.Table) -> list[dict]:
    return table.drop_columns(["snapshot_at"]).to_pylist()


def tag_count(table: pa.Table) -> int:
    return sum(len(t or []) for t in table["tags"].to_pylist())


def test_an_unchanged_registry_costs_one_head_per_tag_and_no_get(pushed, config, s3, built):
    first, full_rows, full_requests = run(config, s3, built, "incr-1", full=True)
    assert full_requests.get("manifest_get", 0) > 0 and full_requests.get("blob_get", 0) > 0
    assert "manifest_head" not in full_requests
    assert first["cache"]["manifests"].startswith(first["key"].rsplit("/", 1)[0])
    assert set(first["full_listing_at"]) == {REG}

    second, again, requests = run(config, s3, built, "incr-2")
    assert rows(again) == rows(full_rows)  # row by row, every column
    assert requests.get("manifest_get", 0) == 0 and requests.get("blob_get", 0) == 0
    assert requests["manifest_head"] == tag_count(full_rows)
    assert requests["tags_list"] == full_requests["tags_list"]
    assert second["full_listing_at"] == first["full_listing_at"]  # the chain's full listing


def test_moved_tags_cost_their_new_digests_and_the_result_equals_a_full_listing(
    pushed, config, s3, built, registry_server
):
    run(config, s3, built, "incr-3", full=True)
    client = OciRegistry("mover", registry_server.url, OCI_USER, OCI_PASSWORD)
    repo = pushed[0]
    images = [m for m in repo.manifests if m.tags and m.kind == "image"]
    # one tag moves to an image the repository already has; one image is pushed new under a tag
    moved_tag, target = images[0].tags[0], images[1]
    client.put_manifest(repo.name, client.get_manifest(repo.name, target.digest), moved_tag)
    fresh = json.loads(client.get_manifest(repo.name, images[2].digest).raw)
    fresh["annotations"] = {"org.example.rebuilt": "yes"}
    raw = json.dumps(fresh).encode()
    new = Manifest(digest_of(raw), client.get_manifest(repo.name, images[2].digest).media_type, raw)
    client.put_manifest(repo.name, new, "rebuilt")

    _, incremental, requests = run(config, s3, built, "incr-4")
    assert requests.get("manifest_get", 0) == 1  # the one new digest
    assert requests.get("blob_get", 0) == 0  # its config was known
    assert requests["manifest_head"] == tag_count(incremental) - 1  # "rebuilt" is a new tag: one GET
    _, full, _ = run(config, s3, built, "incr-5", full=True)
    assert rows(incremental) == rows(full)


def test_a_damaged_cache_costs_requests_never_wrong_rows(pushed, config, s3, built):
    first, full, _ = run(config, s3, built, "incr-6", full=True)
    key = first["cache"]["manifests"]
    table = objects.get_table(s3, BUCKET, key)
    raw = table["manifest"].to_pylist()
    raw[0] = raw[0].replace(b'"schemaVersion"', b'"schemaversion"')  # bytes no longer hash to the digest
    objects.put_table(s3, BUCKET, key, table.set_column(3, "manifest", pa.array(raw, pa.binary())))

    damaged = table["digest"][0].as_py()
    _, again, requests = run(config, s3, built, "incr-7")
    # the damaged digest is fetched again in each repository that has it, nothing else is
    assert requests.get("manifest_get", 0) == full["digest"].to_pylist().count(damaged) >= 1
    assert rows(again) == rows(full)


def test_full_asked_or_due_ignores_the_cache(pushed, config, s3, built):
    manifest, _, _ = run(config, s3, built, "incr-8", full=True)
    full_at = datetime.fromisoformat(manifest["full_listing_at"][REG])
    assert inventory_cache.listing_mode(config, s3, REG, full_at + timedelta(days=6))["cache"]
    due = inventory_cache.listing_mode(config, s3, REG, full_at + timedelta(days=7))
    assert due["cache"] is None and "last full listing" in due["why"]
    asked = inventory_cache.listing_mode(config, s3, REG, datetime.now(UTC), full=True)
    assert asked["cache"] is None


def test_a_failed_repository_makes_the_next_listing_full(pushed, config, s3, built, monkeypatch):
    real = OciRegistry.list_images

    def broken(self, repository):
        if repository == pushed[1].name:
            raise Unavailable(self.name, "injected outage", repository)
        return real(self, repository)

    monkeypatch.setattr(OciRegistry, "list_images", broken)
    manifest, _, _ = run(config, s3, built, "incr-9")
    assert manifest["errors"] and REG not in manifest["full_listing_at"]
    monkeypatch.setattr(OciRegistry, "list_images", real)
    assert inventory_cache.listing_mode(config, s3, REG, datetime.now(UTC))["cache"] is None


def test_the_command_line_lists_incrementally_from_the_latest_snapshot(pushed, config, s3, built, tmp_path):
    from include.registry_ops.cli import main

    run(config, s3, built, "incr-10", full=True)
    built.clear()
    args = ["inventory", "--config", str(config.source), "--registry", REG]
    assert main([*args, "--out", str(tmp_path / "full.parquet")]) == 0
    full_requests = sum(c.requests.counts.get("manifest_get", 0) for c in built)
    built.clear()
    assert main([*args, "--out", str(tmp_path / "incr.parquet"), "--incremental"]) == 0
    incremental_requests = sum(c.requests.counts.get("manifest_get", 0) for c in built)
    assert full_requests > 0 and incremental_requests == 0

    import pyarrow.parquet as pq

    full, incr = (
        pq.read_table(tmp_path / f"{n}.parquet").drop_columns(["snapshot_at"]) for n in ("full", "incr")
    )
    assert incr.to_pylist() == full.to_pylist()


def test_a_new_digest_asked_for_by_many_threads_is_fetched_once():
    """Two tags of one new digest, or one child of two indexes, are looked up at the same time by
    the listing's thread pool: one GET, the others wait for it."""
    import threading
    import time

    from include.registry_ops.registries.known import KnownContent

    raw = b'{"schemaVersion": 2}'
    manifest = Manifest(digest_of(raw), "application/vnd.oci.image.manifest.v1+json", raw)
    known, calls, start = KnownContent(), [], threading.Barrier(8)

    def fetch() -> Manifest:
        calls.append(1)
        time.sleep(0.2)
        return manifest

    results: list[Manifest] = []

    def ask() -> None:
        start.wait()
        results.append(known.manifest(manifest.digest, fetch))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [manifest] * 8


def test_when_the_one_fetch_fails_the_waiting_threads_fetch_themselves():
    import threading

    from include.registry_ops.registries.known import KnownContent

    raw = b'{"schemaVersion": 2, "x": 1}'
    manifest = Manifest(digest_of(raw), "application/vnd.oci.image.manifest.v1+json", raw)
    known, owner_in, release = KnownContent(), threading.Event(), threading.Event()

    def failing() -> Manifest:
        owner_in.set()
        release.wait(5)
        raise Unavailable(REG, "injected")

    errors: list[Exception] = []

    def owner() -> None:
        try:
            known.manifest(manifest.digest, failing)
        except Unavailable as exc:
            errors.append(exc)

    t = threading.Thread(target=owner)
    t.start()
    owner_in.wait(5)
    waiter: list[Manifest] = []
    w = threading.Thread(target=lambda: waiter.append(known.manifest(manifest.digest, lambda: manifest)))
    w.start()
    release.set()
    t.join()
    w.join()
    assert errors and waiter == [manifest]
