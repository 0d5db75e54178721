"""Damage found by checksum (naming the object and the images that need it) and backup
retention (what is kept: kept snapshots' objects, the archive's, young ones), on an OCI layout
backed up into moto S3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from include.registry_ops.backup.prune import PruneRefused, kept_snapshots, prune
from include.registry_ops.backup.run import run_backup
from include.registry_ops.backup.store import BackupError, SnapshotNotFound, SnapshotStore
from include.registry_ops.backup.verify import verify_snapshot
from include.registry_ops.config import parse_config
from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from include.registry_ops.retention.archive import ArchiveStore, archive_images
from tests.backup.test_backup_support import (
    bk_bucket,  # noqa: F401 - fixture
    fleet_of,
    keys_under,
    unique,
)
from tests.registries.images import image
from tests.registries.images import push as push_image
from tests.retention_exec.helpers import push


def layout_config(bucket: str, root, **backup):
    return parse_config(
        {
            "registries": [{"name": "layout", "kind": "ocilayout", "path": str(root)}],
            "storage": {"conn_id": "aws_default", "bucket": bucket},
            "backup": backup,
        },
        "test-config",
    )


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "layout"
    root.mkdir()
    reg = OciLayoutRegistry("layout", root)
    fleet = fleet_of(unique(), images=12)
    push(reg, fleet)
    return reg, fleet, root


def _signed_image(fleet):
    """A tagged single-arch image of repository 0 with a referrer (its signature)."""
    repo = fleet[0]
    subjects = {m.subject for m in repo.manifests if m.subject}
    return repo, next(m for m in repo.manifests if m.digest in subjects and m.tags)


def test_verify_names_the_damaged_object_and_the_images_that_need_it(s3, bk_bucket, layout):  # noqa: F811
    reg, fleet, root = layout
    config = layout_config(bk_bucket, root)
    run_backup(config, s3, {"layout": reg}, datetime.now(UTC), mode="full")
    store = SnapshotStore.from_config(config, s3)
    assert verify_snapshot(store)["ok"]
    repo, img = _signed_image(fleet)
    catalog = store.read_catalog(store.resolve("latest"), "layout")
    pack = catalog.objects[img.digest]["pack"]
    layer = unique_layer(fleet, img)
    layer_key = catalog.objects[layer.digest]["key"]
    data = s3.get_object(Bucket=bk_bucket, Key=pack)["Body"].read()
    offset = catalog.objects[img.digest]["offset"]
    s3.put_object(Bucket=bk_bucket, Key=pack, Body=data[:offset] + b"X" + data[offset + 1 :])
    s3.delete_object(Bucket=bk_bucket, Key=layer_key)
    other = next(loc["pack"] for loc in catalog.objects.values() if loc.get("pack") not in (None, pack))
    data = s3.get_object(Bucket=bk_bucket, Key=other)["Body"].read()
    s3.put_object(Bucket=bk_bucket, Key=other, Body=b"x" + data[1:])  # a tar header, no member

    summary = verify_snapshot(store, store.resolve("latest")["snapshot"])
    assert not summary["ok"]
    by_key = {d["key"]: d for d in summary["damaged"]}
    assert set(by_key) == {pack, layer_key, other}
    assert "does not match its checksum" in by_key[other]["problem"]
    assert "every member the catalogs locate in it still matches" in by_key[other]["problem"]
    assert by_key[other]["images"] == []
    named = f"layout/{repo.name}@{img.digest} [{', '.join(sorted(img.tags))}]"
    assert "does not match its checksum" in by_key[pack]["problem"]
    assert named in by_key[pack]["images"]
    assert "is missing" in by_key[layer_key]["problem"]
    assert named in by_key[layer_key]["images"]
    # exactly the images that need the layer: the image, and its referrers (they need their subject)
    named_digests = {i.split("@")[1].split(" ")[0] for i in by_key[layer_key]["images"]}
    assert named_digests == {m.digest for m in repo.manifests if img.digest in (m.digest, m.subject)}
    with pytest.raises(BackupError, match=img.digest):
        store.manifest_bytes(catalog, img.digest)
    with pytest.raises(BackupError, match="is missing.*needed by.*" + img.digest):
        store.open_layer(catalog, layer.digest)


def test_a_corrupt_layer_fails_the_stream_at_its_end(s3, bk_bucket, layout):  # noqa: F811
    reg, fleet, root = layout
    config = layout_config(bk_bucket, root)
    run_backup(config, s3, {"layout": reg}, datetime.now(UTC), mode="full")
    store = SnapshotStore.from_config(config, s3)
    _, img = _signed_image(fleet)
    catalog = store.read_catalog(store.resolve("latest"), "layout")
    layer = unique_layer(fleet, img)
    s3.put_object(Bucket=bk_bucket, Key=catalog.objects[layer.digest]["key"], Body=layer.data[:-1] + b"!")
    with pytest.raises(BackupError, match="does not hash to"), store.open_layer(catalog, layer.digest) as f:
        f.read()


def test_unknown_snapshot_names_the_newest_that_exist(s3, bk_bucket, layout):  # noqa: F811
    reg, _, root = layout
    config = layout_config(bk_bucket, root)
    store = SnapshotStore.from_config(config, s3)
    with pytest.raises(SnapshotNotFound, match="no backup snapshot is latest yet"):
        store.resolve("latest")
    first = run_backup(config, s3, {"layout": reg}, datetime(2026, 11, 1, tzinfo=UTC))
    with pytest.raises(
        SnapshotNotFound, match=f"'20261102T000000Z' does not exist.*newest: {first['snapshot']}"
    ):
        store.resolve("20261102T000000Z")
    with pytest.raises(SnapshotNotFound, match="not a snapshot id"):
        store.resolve("yesterday")


def unique_layer(fleet, img):
    """The layer no other manifest of the fleet has (each image has one of its own)."""
    others = {b.digest for r in fleet for m in r.manifests if m.digest != img.digest for b in m.blobs}
    return next(b for b in img.blobs if b.media_type.endswith("tar") and b.digest not in others)


def _archive_one(s3, bucket, reg, repo, img, now):
    """Archive one image (its layers too) into the same blob store the backups use."""
    archive = ArchiveStore(s3, bucket, "archive/")
    images = [{"digest": img.digest, "tags": list(img.tags), "kind": img.kind, "media_type": img.media_type}]
    result = archive_images(archive, reg, repo.name, images, archive_layers=True, run_id="t", now=now)
    assert result.failures == {} and img.digest in result.archived
    return archive


def test_prune_keeps_what_kept_snapshots_the_archive_and_young_objects_need(s3, bk_bucket, layout):  # noqa: F811
    reg, fleet, root = layout
    config = layout_config(bk_bucket, root, keep_daily=3, keep_monthly=1, prune_grace_hours=1)
    store = SnapshotStore.from_config(config, s3)
    t = datetime.now(UTC)
    repo, img = _signed_image(fleet)
    layer = unique_layer(fleet, img)
    run_backup(config, s3, {"layout": reg}, t - timedelta(days=41), mode="full")
    extra = image(unique("extra"))  # an image that lives between the two old snapshots only
    push_image(reg, repo.name, extra, "extra")
    old = run_backup(config, s3, {"layout": reg}, t - timedelta(days=40), mode="full")
    old_catalog = store.read_catalog(store.resolve(old["snapshot"]), "layout")
    gone_catalog = store.resolve(old["snapshot"])["registries"]["layout"]["catalog"]["key"]
    gone_pack = old_catalog.objects[extra.manifest.digest]["pack"]
    gone_layer = next(k for d, k in ((d, old_catalog.objects[d].get("key")) for d in extra.blobs) if k)
    archive = _archive_one(s3, bk_bucket, reg, repo, img, t)
    # the image, its signature and the extra image leave the registry: only the old snapshots
    # and (for the image) the archive hold them
    reg.delete_manifest(repo.name, extra.manifest.digest)
    for m in repo.manifests:
        if m.digest == img.digest or m.subject == img.digest:
            reg.delete_manifest(repo.name, m.digest)
    run_backup(config, s3, {"layout": reg}, t - timedelta(days=1), mode="full")
    latest = run_backup(config, s3, {"layout": reg}, t, mode="metadata")
    layer_key = store.blobs.blob_key(layer.digest)
    assert archive.read_blob(layer.digest) == layer.data

    dry = prune(config, s3, t + timedelta(minutes=30), dry_run=True)
    assert len(dry["deleted_snapshots"]) == 2 and old["snapshot"] in dry["deleted_snapshots"]
    assert store.resolve(old["snapshot"])  # a dry run deletes nothing

    young = prune(config, s3, t + timedelta(minutes=30))
    assert young["deleted_snapshots"] == dry["deleted_snapshots"]
    assert young["deleted_objects"] == 0 and young["kept_young"] > 0
    with pytest.raises(SnapshotNotFound):
        store.resolve(old["snapshot"])

    later = prune(config, s3, t + timedelta(hours=2))
    present = keys_under(s3, bk_bucket)
    assert later["deleted_objects"] > 0
    assert gone_pack not in present  # only the pruned snapshots needed them
    assert gone_layer not in present
    assert gone_catalog not in present
    assert layer_key in present  # the archive still needs it
    assert archive.read_blob(layer.digest) == layer.data
    assert verify_snapshot(store)["ok"] and store.resolve("latest")["snapshot"] == latest["snapshot"]
    assert all(k in present for k in store.resolve("latest")["objects"])


def test_prune_deletes_nothing_when_an_archive_catalog_cannot_be_read(s3, bk_bucket, layout):  # noqa: F811
    reg, _, root = layout
    config = layout_config(bk_bucket, root, keep_daily=1, keep_monthly=0, prune_grace_hours=1)
    t = datetime.now(UTC)
    run_backup(config, s3, {"layout": reg}, t - timedelta(days=3), mode="full")
    (root / next(p.name for p in root.iterdir())).rename(root / "moved-away")  # its images leave
    run_backup(config, s3, {"layout": reg}, t, mode="full")
    s3.put_object(Bucket=bk_bucket, Key="archive/images/layout/x/20260101T000000000000Z-0.json", Body=b"{")
    before = keys_under(s3, bk_bucket)
    with pytest.raises(PruneRefused, match="archive catalog"):
        prune(config, s3, t + timedelta(hours=2))
    assert keys_under(s3, bk_bucket).keys() == before.keys()


def test_prune_refuses_when_no_snapshot_is_kept(s3, bk_bucket, layout):  # noqa: F811
    reg, _, root = layout
    config = layout_config(bk_bucket, root)
    run_backup(config, s3, {"layout": reg}, datetime.now(UTC), mode="full")
    prefixes = config.storage.prefixes.model_copy(update={"backup": "elsewhere/"})
    wrong = config.model_copy(update={"storage": config.storage.model_copy(update={"prefixes": prefixes})})
    before = keys_under(s3, bk_bucket)
    with pytest.raises(PruneRefused, match="no snapshot under"):
        prune(wrong, s3, datetime.now(UTC) + timedelta(days=30))
    assert keys_under(s3, bk_bucket).keys() == before.keys()


def _snap(sid: str, complete: bool = True, latest: bool = False) -> dict:
    at = datetime.strptime(sid, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return {"snapshot": sid, "taken_at": at.isoformat(), "complete": complete, "latest": latest}


def test_retention_keeps_the_newest_complete_of_each_day_and_month_and_latest():
    snaps = [
        _snap("20261127T020000Z", complete=False),
        _snap("20261127T010000Z"),  # today's newest complete one
        _snap("20261126T230000Z"),
        _snap("20261126T020000Z"),
        _snap("20261120T020000Z"),  # outside 2 days: November's newest is kept instead
        _snap("20261031T020000Z"),  # October's newest
        _snap("20261030T020000Z"),
        _snap("20260801T020000Z", latest=True),  # whatever its age
    ]
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    kept = kept_snapshots(snaps, now, keep_daily=2, keep_monthly=2, grace=timedelta(hours=1))
    assert kept == {"20261127T010000Z", "20261126T230000Z", "20261031T020000Z", "20260801T020000Z"}
    young = kept_snapshots(snaps, datetime(2026, 11, 27, 2, 30, tzinfo=UTC), 1, 0, timedelta(hours=1))
    assert "20261127T020000Z" in young  # within the grace: a run may be publishing it


def test_a_catalog_replaced_by_another_valid_one_is_refused_by_its_checksum(s3, bk_bucket, layout):  # noqa: F811
    from include.registry_ops.backup.catalog import decode, encode

    reg, _, root = layout
    config = layout_config(bk_bucket, root)
    run_backup(config, s3, {"layout": reg}, datetime.now(UTC))
    store = SnapshotStore.from_config(config, s3)
    manifest = store.resolve("latest")
    key = manifest["registries"]["layout"]["catalog"]["key"]
    catalog = decode(s3.get_object(Bucket=bk_bucket, Key=key)["Body"].read(), key)
    catalog.repositories = catalog.repositories[1:]  # a repository quietly gone
    s3.put_object(Bucket=bk_bucket, Key=key, Body=encode(catalog))
    fresh = SnapshotStore.from_config(config, s3)
    with pytest.raises(
        BackupError, match=f"catalog .*{key}.* does not match its sha256.*every image of registry layout"
    ):
        fresh.read_catalog(manifest, "layout")
    summary = verify_snapshot(fresh)
    assert [d["key"] for d in summary["damaged"]] == [key]
    assert summary["damaged"][0]["images"] == ["every image of layout"]


def test_prune_deletes_nothing_when_a_snapshot_manifest_cannot_be_read(s3, bk_bucket, layout):  # noqa: F811
    reg, _, root = layout
    config = layout_config(bk_bucket, root, keep_daily=1, keep_monthly=0, prune_grace_hours=1)
    t = datetime.now(UTC)
    old = run_backup(config, s3, {"layout": reg}, t - timedelta(days=3), mode="full")
    run_backup(config, s3, {"layout": reg}, t, mode="full")
    store = SnapshotStore.from_config(config, s3)
    s3.put_object(Bucket=bk_bucket, Key=store.manifest_key(old["snapshot"]), Body=b"{truncated")
    before = keys_under(s3, bk_bucket)
    with pytest.raises(PruneRefused, match=f"snapshot {old['snapshot']} cannot be read"):
        prune(config, s3, t + timedelta(hours=2))
    assert keys_under(s3, bk_bucket).keys() == before.keys()
