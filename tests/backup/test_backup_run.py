"""The backup engine end to end on the local stack: moto ECR (seeded, layers held), the
distribution registry (pushed) and an OCI layout directory, into moto S3."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from include.registry_ops.backup.run import run_backup
from include.registry_ops.backup.store import SnapshotStore
from include.registry_ops.registries.base import Manifest
from include.registry_ops.store.blobs import digest_of
from tests.backup.test_backup_support import (
    NOW,
    Crash,
    adapters,
    bk_bucket,  # noqa: F401 - fixture
    config_for,
    expected,
    fleet_of,
    keys_under,
    puts,  # noqa: F401 - fixture
    seed_all,
    unique,
)


@pytest.fixture
def stack(moto_server, registry_server, s3, bk_bucket, tmp_path):  # noqa: F811
    """A fleet of its own in the three registries, a config and a bucket for it."""
    prefix = unique()
    fleet = fleet_of(prefix)
    regs = adapters(moto_server, registry_server, tmp_path / "layout")
    seed_all(regs, fleet)
    config = config_for(bk_bucket, prefix, tmp_path / "layout")
    return {"prefix": prefix, "fleet": fleet, "regs": regs, "config": config, "s3": s3, "bucket": bk_bucket}


def test_unchanged_second_run_puts_only_the_manifest_and_pointer(stack, puts):  # noqa: F811
    config, s3, regs = stack["config"], stack["s3"], stack["regs"]
    first = run_backup(config, s3, regs, NOW)
    assert first["failures"] == {}
    assert first["latest"] and first["mode"] == "full"
    assert first["puts"] == len(puts.take())
    second = run_backup(config, s3, regs, NOW + timedelta(days=1))
    store = SnapshotStore.from_config(config, s3)
    sent = puts.take()
    assert sorted(sent) == sorted([store.manifest_key(second["snapshot"]), store.layout.latest_key])
    assert second["puts"] == 2
    assert second["manifests_read"] == 0
    assert second["latest"] and store.resolve("latest")["snapshot"] == second["snapshot"]
    assert second["manifests"] == first["manifests"]


def test_catalogs_hold_every_manifest_config_and_layer_bit_exact(stack):
    config, s3, regs, fleet = stack["config"], stack["s3"], stack["regs"], stack["fleet"]
    summary = run_backup(config, s3, regs, NOW)
    assert summary["failures"] == {}
    store = SnapshotStore.from_config(config, s3)
    manifest = store.resolve("latest")
    for name, reg in regs.items():
        catalog = store.read_catalog(manifest, name)
        assert catalog.registry_kind == reg.kind
        for spec in fleet:
            entry = catalog.repository(spec.name)
            assert entry is not None, f"{name}: {spec.name} not backed up"
            want = {m.digest: m for m in expected(reg, spec)}
            assert {m.digest for m in entry.manifests} == set(want)
            assert entry.tags == {t: m.digest for m in want.values() for t in m.tags}
            for m in want.values():
                assert store.manifest_bytes(catalog, m.digest) == m.raw
                for blob in m.blobs:
                    with store.open_layer(catalog, blob.digest) as f:
                        assert f.read() == blob.data
        assert catalog.missing_objects() == []
        assert manifest["registries"][name]["manifests"] == len(
            {m.digest for r in catalog.repositories for m in r.manifests}
        )
    ecr = store.read_catalog(manifest, "ecr-local")
    for spec in fleet:
        settings = regs["ecr-local"].describe_repository(spec.name).as_dict()
        assert ecr.repository(spec.name).settings == settings


def test_a_new_image_costs_its_pack_its_catalog_and_the_snapshot(stack, puts):  # noqa: F811
    config, s3, regs, fleet = stack["config"], stack["s3"], stack["regs"], stack["fleet"]
    run_backup(config, s3, regs, NOW)
    oci = regs["oci-local"]
    repo = fleet[0].name
    base = next(m for m in fleet[0].manifests if m.kind == "image")
    body = json.loads(base.raw)
    body["annotations"] = {"new": "1"}
    raw = json.dumps(body).encode()
    new = Manifest(digest_of(raw), base.media_type, raw)
    oci.put_manifest(repo, new, "new-tag")
    puts.take()
    second = run_backup(config, s3, {"oci-local": oci}, NOW + timedelta(hours=1))
    assert second["failures"] == {}
    assert second["manifests_read"] == 1
    sent = puts.take()
    store = SnapshotStore.from_config(config, s3)
    kinds = sorted(k.split("/")[1] if k.startswith("archive/") else k.rsplit("/", 1)[-1] for k in sent)
    assert kinds == ["backup-catalogs", "latest.json", "manifest.json", "packs"]
    catalog = store.read_catalog(store.resolve("latest"), "oci-local")
    assert catalog.repository(repo).tags["new-tag"] == new.digest
    assert store.manifest_bytes(catalog, new.digest) == raw
    # registries not in the run are carried from their previous snapshot
    assert set(store.resolve("latest")["registries"]) == {"ecr-local", "oci-local", "layout"}


@pytest.mark.parametrize(
    ("where", "after"),
    [("/packs/", 3), ("/blobs/", 5), ("/backup-catalogs/", 1), ("/manifest.json", 0)],
    ids=["packs", "layers", "catalog", "snapshot-manifest"],
)
def test_a_crash_between_uploads_never_becomes_latest_and_the_rerun_sends_nothing_twice(
    stack,
    puts,  # noqa: F811
    where,
    after,
):
    config, s3, regs = stack["config"], stack["s3"], stack["regs"]
    store = SnapshotStore.from_config(config, s3)
    puts.crash_on, puts.crash_after = where, after
    with pytest.raises(Crash):
        run_backup(config, s3, regs, NOW)
    landed = puts.take()
    assert sum(where in k for k in landed) == after
    assert store.layout.read_pointer(s3) is None
    assert store.list_snapshots() == []
    puts.crash_on = None
    rerun = run_backup(config, s3, regs, NOW + timedelta(minutes=5))
    assert rerun["latest"] and rerun["failures"] == {}
    again = puts.take()
    assert set(again) & set(landed) == set()
    if where == "/manifest.json":  # everything had landed: only the snapshot is left to write
        assert sorted(again) == sorted([store.manifest_key(rerun["snapshot"]), store.layout.latest_key])
    objects = keys_under(s3, stack["bucket"])
    assert all(k in objects for k in store.resolve("latest")["objects"])


def test_latest_moves_only_when_every_object_the_snapshot_needs_is_listed(stack):
    from include.registry_ops.backup.run import backup_registry, plan_backup, publish_snapshot

    config, s3, regs = stack["config"], stack["s3"], stack["regs"]
    plan = plan_backup(config, s3, NOW, "full", ["layout"])
    part = backup_registry(config, s3, regs["layout"], plan)
    store = SnapshotStore.from_config(config, s3)
    catalog = store.read_catalog({"snapshot": plan["snapshot"], "registries": {"layout": part}}, "layout")
    pack = sorted({loc["pack"] for loc in catalog.objects.values() if "pack" in loc})[0]
    s3.delete_object(Bucket=stack["bucket"], Key=pack)  # gone between the upload and the publish
    summary = publish_snapshot(config, s3, plan, [part])
    assert not summary["latest"] and store.layout.read_pointer(s3) is None
    assert pack in summary["failures"]["store"]


def test_a_stored_object_that_went_missing_is_stored_again_not_reused(stack):
    config, s3, regs = stack["config"], stack["s3"], stack["regs"]
    layout = {"layout": regs["layout"]}
    run_backup(config, s3, layout, NOW)
    store = SnapshotStore.from_config(config, s3)
    catalog = store.read_catalog(store.resolve("latest"), "layout")
    pack = sorted({loc["pack"] for loc in catalog.objects.values() if "pack" in loc})[0]
    lost = sorted(d for d, loc in catalog.objects.items() if loc.get("pack") == pack)
    layer = sorted(d for d, loc in catalog.objects.items() if "key" in loc)[0]
    s3.delete_object(Bucket=stack["bucket"], Key=pack)
    s3.delete_object(Bucket=stack["bucket"], Key=catalog.objects[layer]["key"])
    again = run_backup(config, s3, layout, NOW + timedelta(days=7))
    assert again["latest"] and again["failures"] == {} and again["mode"] == "full"
    catalog = store.read_catalog(store.resolve("latest"), "layout")
    assert again["manifests_read"] > 0  # read from the registry again: its stored copy was gone
    present = keys_under(s3, stack["bucket"])
    assert all(catalog.objects[d].get("pack", catalog.objects[d].get("key")) in present for d in lost)
    assert catalog.objects[layer]["key"] in present
    for digest in lost:
        assert digest_of(store.manifest_bytes(catalog, digest)) == digest
    with store.open_layer(catalog, layer) as f:
        assert digest_of(f.read()) == layer


def test_a_landed_object_that_does_not_read_back_keeps_the_rerun_from_latest(stack, puts):  # noqa: F811
    config, s3, regs = stack["config"], stack["s3"], stack["regs"]
    layout = {"layout": regs["layout"]}
    store = SnapshotStore.from_config(config, s3)
    puts.crash_on, puts.crash_after = "/backup-catalogs/", 0
    with pytest.raises(Crash):
        run_backup(config, s3, layout, NOW)
    pack = next(k for k in puts.take() if "/packs/" in k)
    s3.put_object(Bucket=stack["bucket"], Key=pack, Body=b"damaged after it landed")
    puts.crash_on = None
    rerun = run_backup(config, s3, layout, NOW + timedelta(minutes=5))
    assert not rerun["latest"] and store.layout.read_pointer(s3) is None
    assert pack in rerun["failures"]["layout"]


@pytest.mark.parametrize("kind", ["/packs/", "/blobs/", "/backup-catalogs/"])
def test_an_upload_that_does_not_read_back_as_sent_keeps_the_snapshot_from_latest(stack, puts, kind):  # noqa: F811
    config, s3, regs = stack["config"], stack["s3"], stack["regs"]
    puts.corrupt_on = kind  # the first byte: a tar header of a pack, outside every member
    summary = run_backup(config, s3, {"layout": regs["layout"]}, NOW, mode="full")
    damaged = next(k for k in puts.take() if kind in k)
    assert puts.corrupt_on is None
    assert not summary["latest"] and SnapshotStore.from_config(config, s3).layout.read_pointer(s3) is None
    assert hex_of_key(damaged) in " ".join(summary["failures"].values())


def hex_of_key(key: str) -> str:
    return key.rsplit("/", 1)[-1].split(".")[0]


def test_a_registry_whose_step_left_no_result_is_a_failure_not_an_absence(stack):
    from include.registry_ops.backup.run import backup_registry, plan_backup, publish_snapshot

    config, s3, regs = stack["config"], stack["s3"], stack["regs"]
    plan = plan_backup(config, s3, NOW, "full", ["layout", "oci-local"])
    parts = [backup_registry(config, s3, regs["layout"], plan)]  # oci-local's task died
    summary = publish_snapshot(config, s3, plan, parts)
    assert not summary["latest"] and summary["failures"] == {"oci-local": "no result from its backup step"}
    assert summary["registries"] == ["layout"]
