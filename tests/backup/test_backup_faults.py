"""Faults and options of a backup run: a failing repository or registry does not stop the
others and keeps the snapshot from becoming latest; modes (full every N days, layers only in
full); layers stored once with the archive; server-side encryption; ECR registry settings."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from include.registry_ops.backup.run import choose_mode, run_backup
from include.registry_ops.backup.store import SnapshotStore
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from include.registry_ops.retention.archive import ArchiveStore, archive_images
from tests.backup.test_backup_support import (
    NOW,
    adapters,
    bk_bucket,  # noqa: F401 - fixture
    config_for,
    fleet_of,
    keys_under,
    puts,  # noqa: F401 - fixture
    seed_all,
    unique,
)
from tests.backup.test_backup_verify_prune import layout_config, unique_layer
from tests.registries.images import image
from tests.registries.images import push as push_image
from tests.retention_exec.helpers import ecr_registry, push


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "layout"
    root.mkdir()
    reg = OciLayoutRegistry("layout", root)
    prefix = unique()
    fleet = fleet_of(prefix, images=12)
    push(reg, fleet)
    return reg, fleet, root, prefix


def test_a_failing_repository_is_named_the_others_are_backed_up_and_latest_stays(s3, bk_bucket, layout):  # noqa: F811
    reg, fleet, root, prefix = layout
    config = layout_config(bk_bucket, root)
    store = SnapshotStore.from_config(config, s3)
    good = run_backup(config, s3, {"layout": reg}, NOW)
    broken = root / prefix / "broken"
    broken.mkdir(parents=True)
    (broken / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (broken / "index.json").write_text("{not json")
    bad = run_backup(config, s3, {"layout": reg}, NOW + timedelta(days=1))
    assert not bad["latest"]
    assert list(bad["failures"]) == [f"layout/{prefix}broken"]
    assert "index.json is not valid JSON" in bad["failures"][f"layout/{prefix}broken"]
    assert store.resolve("latest")["snapshot"] == good["snapshot"]
    published = store.resolve(bad["snapshot"])
    assert published["complete"] is False and published["failures"] == bad["failures"]
    catalog = store.read_catalog(published, "layout")
    assert sorted(r.name for r in catalog.repositories) == sorted(r.name for r in fleet)
    (broken / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    fixed = run_backup(config, s3, {"layout": reg}, NOW + timedelta(days=2))
    assert fixed["latest"] and fixed["failures"] == {}


def test_an_unreachable_registry_is_named_and_the_others_are_backed_up(
    s3,
    bk_bucket,  # noqa: F811
    moto_server,
    registry_server,
    tmp_path,
):
    prefix = unique()
    regs = adapters(moto_server, registry_server)
    seed_all({"ecr-local": regs["ecr-local"]}, fleet_of(prefix))
    config = config_for(bk_bucket, prefix)
    dead = OciRegistry("oci-local", "http://127.0.0.1:9", retries=0, backoff=0.01)
    summary = run_backup(config, s3, {"ecr-local": regs["ecr-local"], "oci-local": dead}, NOW)
    assert not summary["latest"] and list(summary["failures"]) == ["oci-local"]
    assert summary["registries"] == ["ecr-local"] and summary["manifests"] > 0
    store = SnapshotStore.from_config(config, s3)
    assert store.layout.read_pointer(s3) is None


def test_modes_full_every_n_days_and_layers_only_in_full(s3, bk_bucket, layout):  # noqa: F811
    assert choose_mode("auto", None, NOW, 7) == "full"
    last = {"last_full_at": NOW.isoformat()}
    assert choose_mode("auto", last, NOW + timedelta(days=6, hours=23), 7) == "metadata"
    assert choose_mode("auto", last, NOW + timedelta(days=7), 7) == "full"
    assert choose_mode("auto", last, NOW + timedelta(minutes=1), 0) == "full"
    assert choose_mode("metadata", None, NOW, 7) == "metadata"
    with pytest.raises(ValueError, match="'weekly' is not one of auto, metadata, full"):
        choose_mode("weekly", None, NOW, 7)

    reg, fleet, root, _ = layout
    config = layout_config(bk_bucket, root, full_every_days=7)
    store = SnapshotStore.from_config(config, s3)
    assert run_backup(config, s3, {"layout": reg}, NOW)["mode"] == "full"
    new = image(unique("new"))
    push_image(reg, fleet[0].name, new, "new")
    second = run_backup(config, s3, {"layout": reg}, NOW + timedelta(days=1))
    assert second["mode"] == "metadata" and second["latest"]
    catalog = store.read_catalog(store.resolve("latest"), "layout")
    layer = next(d for d in new.blobs if d != json.loads(new.manifest.raw)["config"]["digest"])
    assert catalog.missing_objects() == [layer]  # metadata mode: the new layer is not stored
    assert store.manifest_bytes(catalog, new.manifest.digest) == new.manifest.raw  # its manifest is
    third = run_backup(config, s3, {"layout": reg}, NOW + timedelta(days=7))
    assert third["mode"] == "full"
    catalog = store.read_catalog(store.resolve("latest"), "layout")
    assert catalog.missing_objects() == []
    with store.open_layer(catalog, layer) as f:
        assert f.read() == new.blobs[layer]


def test_a_layer_the_archive_holds_is_not_uploaded_again(s3, bk_bucket, layout, puts):  # noqa: F811
    reg, fleet, root, _ = layout
    config = layout_config(bk_bucket, root)
    repo = fleet[0]
    img = next(m for m in repo.manifests if m.kind == "image" and m.tags)
    layer = unique_layer(fleet, img)
    archive = ArchiveStore(s3, bk_bucket, config.storage.prefixes.archive)
    rows = [{"digest": img.digest, "tags": list(img.tags), "kind": img.kind}]
    result = archive_images(archive, reg, repo.name, rows, archive_layers=True, run_id="t", now=NOW)
    assert img.digest in result.archived
    key = archive.blob_key(layer.digest)
    assert key in puts.take()
    summary = run_backup(config, s3, {"layout": reg}, NOW, mode="full")
    sent = puts.take()
    assert summary["latest"] and key not in sent
    # each layer the archive did not hold, once; none of those it holds
    configs = {json.loads(m.raw).get("config", {}).get("digest") for r in fleet for m in r.manifests}
    layers = {b.digest for r in fleet for m in r.manifests for b in m.blobs} - configs
    archived = {b.digest for b in img.blobs}
    assert sorted(k for k in sent if "/blobs/" in k) == sorted(archive.blob_key(d) for d in layers - archived)
    store = SnapshotStore.from_config(config, s3)
    catalog = store.read_catalog(store.resolve("latest"), "layout")
    assert catalog.objects[layer.digest]["key"] == key
    assert key in store.resolve("latest")["objects"]


@pytest.mark.parametrize("kms", [None, "arn:aws:kms:us-east-1:123456789012:key/backup-test"])
def test_every_backup_object_is_encrypted_at_rest(s3, bk_bucket, layout, kms):  # noqa: F811
    reg, _, root, _ = layout
    config = layout_config(bk_bucket, root, **({"kms_key_id": kms} if kms else {}))
    run_backup(config, s3, {"layout": reg}, NOW, mode="full")
    written = keys_under(s3, bk_bucket)
    assert any("/packs/" in k for k in written) and any("/blobs/" in k for k in written)
    for key in written:
        head = s3.head_object(Bucket=bk_bucket, Key=key)
        if kms:
            assert head.get("ServerSideEncryption") == "aws:kms", key
            assert head.get("SSEKMSKeyId") == kms, key
        else:
            assert head.get("ServerSideEncryption") == "AES256", key


REGISTRY_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Replicate",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
                "Resource": "arn:aws:ecr:us-east-1:123456789012:repository/*",
            }
        ],
    }
)


@pytest.fixture
def registry_settings(moto_server):
    """moto's registry (one per session) given settings of every kind; put back afterwards."""
    reg = ecr_registry(moto_server.endpoint)
    before = reg.describe_registry_settings()
    wanted = {
        "registry_policy": REGISTRY_POLICY,
        "replication_configuration": {
            "rules": [{"destinations": [{"region": "us-west-2", "registryId": "123456789012"}]}]
        },
        "scanning_configuration": {
            "scanType": "ENHANCED",
            "rules": [
                {
                    "scanFrequency": "SCAN_ON_PUSH",
                    "repositoryFilters": [{"filter": "bk-settings-none/*", "filterType": "WILDCARD"}],
                }
            ],
        },
        "pull_through_cache_rules": [
            {"ecrRepositoryPrefix": "bk-hub", "upstreamRegistryUrl": "registry-1.docker.io"}
        ],
    }
    assert reg.apply_registry_settings(wanted) == []
    yield reg, wanted
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ecr.models import ecr_backends

    backend = ecr_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    backend.registry_policy = before["registry_policy"]
    backend.pull_through_cache_rules = {}
    reg.apply_registry_settings({**before, "pull_through_cache_rules": None})


def test_ecr_registry_settings_are_backed_up_and_apply_back(s3, bk_bucket, registry_settings):  # noqa: F811
    reg, wanted = registry_settings
    config = config_for(bk_bucket, unique())
    summary = run_backup(config, s3, {"ecr-local": reg}, NOW)
    assert summary["failures"] == {}
    store = SnapshotStore.from_config(config, s3)
    held = store.read_catalog(store.resolve("latest"), "ecr-local").registry_settings
    assert held["registry_policy"] == REGISTRY_POLICY
    assert held["replication_configuration"] == wanted["replication_configuration"]
    assert held["scanning_configuration"] == wanted["scanning_configuration"]
    assert held["pull_through_cache_rules"] == wanted["pull_through_cache_rules"]
    reg.client.delete_registry_policy()
    reg.client.put_replication_configuration(replicationConfiguration={"rules": []})
    assert reg.describe_registry_settings() != held
    assert reg.apply_registry_settings(held) == []
    assert reg.describe_registry_settings() == held
    assert OciLayoutRegistry("x", ".").apply_registry_settings(held) == sorted(held)


def test_registry_settings_of_another_account_are_refused_not_answered_with_ours(moto_server):
    from include.registry_ops.registries.base import Unsupported
    from include.registry_ops.registries.ecr import EcrRegistry

    ours = ecr_registry(moto_server.endpoint)
    other = EcrRegistry("ecr-other", ours.client, registry_id="999999999999")
    with pytest.raises(Unsupported, match="registry 999999999999 cannot be read or written"):
        other.describe_registry_settings()
    with pytest.raises(Unsupported, match="999999999999"):
        other.apply_registry_settings({"registry_policy": REGISTRY_POLICY})
    assert ours.describe_registry_settings()["registry_policy"] != REGISTRY_POLICY


def test_an_index_whose_child_is_gone_is_left_out_and_named(s3, bk_bucket, layout):  # noqa: F811
    reg, fleet, root, _ = layout
    repo = fleet[1]  # multi-arch indexes
    idx = next(m for m in repo.manifests if m.children and m.tags)
    child = idx.children[0]
    (root / repo.name / "blobs" / "sha256" / child.split(":", 1)[1]).unlink()
    config = layout_config(bk_bucket, root)
    summary = run_backup(config, s3, {"layout": reg}, NOW)
    assert not summary["latest"]
    assert (
        f"{idx.digest}: child manifest {child}: not in the registry any more"
        in summary["failures"][f"layout/{repo.name}"]
    )
    store = SnapshotStore.from_config(config, s3)
    catalog = store.read_catalog(store.resolve(summary["snapshot"]), "layout")
    entry = catalog.repository(repo.name)
    assert idx.digest not in {m.digest for m in entry.manifests}
    assert not set(idx.tags) & set(entry.tags)
    others = [m for m in repo.manifests if m.children and m.digest != idx.digest]
    assert others and all(m.digest in {e.digest for e in entry.manifests} for m in others)
