"""``registry-ops restore-registry`` and ``restore_registry`` from real backups (``run_backup``
into moto S3) on the local stack: a distribution registry of this module's own (wiped and
restarted), ECR in two moto regions (two registries: one backed up, one empty), the session's
distribution registry and OCI layout directories. Bad input exits 2 with nothing written;
a damaged store object exits 1 naming it and the images that need it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from devstack.fleet import make_fleet
from devstack.seed import seed_ecr, seed_oci
from devstack.services import RegistryService
from include.registry_ops import cli
from include.registry_ops.backup.restore import RestoreRefused, restore_registry
from include.registry_ops.backup.run import run_backup
from include.registry_ops.backup.store import SnapshotStore
from include.registry_ops.config import load_config
from include.registry_ops.registries.ecr import EcrRegistry
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from tests.backup.test_backup_support import NOW
from tests.backup.test_restore_registry import _set_settings
from tests.backup.test_restore_registry_support import contents
from tests.conftest import OCI_PASSWORD, OCI_USER
from tests.registries.images import image, push

WEST, CENTRAL, BUSY, DRY = "eu-west-1", "eu-central-1", "ap-south-1", "ap-southeast-2"
REGISTRY_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "replicate",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": ["ecr:ReplicateImage", "ecr:CreateRepository"],
                "Resource": "*",
            }
        ],
    }
)
REGISTRY_SETTINGS = {
    "registry_policy": REGISTRY_POLICY,
    "replication_configuration": {
        "rules": [{"destinations": [{"region": "eu-north-1", "registryId": "123456789012"}]}]
    },
    "scanning_configuration": {
        "scanType": "ENHANCED",
        "rules": [
            {
                "scanFrequency": "SCAN_ON_PUSH",
                "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}],
            }
        ],
    },
    "pull_through_cache_rules": [
        {"ecrRepositoryPrefix": "hub", "upstreamRegistryUrl": "registry-1.docker.io"}
    ],
}


def ecr_in(moto_server, region: str, name: str) -> EcrRegistry:
    return EcrRegistry(name, boto3.client("ecr", endpoint_url=moto_server.endpoint, region_name=region))


def run_cli(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = cli.main(["restore-registry", *args])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


def report(what: str, out: dict) -> None:
    """The restore's rate, on the terminal's stderr (pytest -s shows it; stdout is the CLI's)."""
    rate = f"{out['manifests']} manifests, {out['seconds']}s, {out['manifests_per_second']}/s"
    sys.__stderr__.write(f"\nrestore {what}: {rate}\n")


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes (what 'nothing written' compares)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def stack(moto_server, registry_server, s3, tmp_path_factory):
    """ECR (eu-west-1) and a distribution registry of its own, seeded and configured, backed up
    (full) into a bucket of this module; the config file naming them and the targets."""
    work = tmp_path_factory.mktemp("restore-store")
    (work / "dr-registry").mkdir()
    dr = RegistryService(root=work / "dr-registry").start()
    os.environ["AIRFLOW_CONN_OCI_DR"] = dr.conn_json()
    prefix = f"rrs/{uuid.uuid4().hex[:8]}/"
    bucket = f"rrs-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    layouts = {n: work / n for n in ("dr-layout", "ecr-layout", "rot-layout")}
    for path in layouts.values():
        path.mkdir()
    doc = {
        "registries": [
            {
                "name": "ecr-west",
                "kind": "ecr",
                "conn_id": "aws_default",
                "region": WEST,
                "include": [prefix + "*"],
            },
            {"name": "ecr-central", "kind": "ecr", "conn_id": "aws_default", "region": CENTRAL},
            {"name": "ecr-busy", "kind": "ecr", "conn_id": "aws_default", "region": BUSY},
            {"name": "ecr-dry", "kind": "ecr", "conn_id": "aws_default", "region": DRY},
            {"name": "oci-dr", "kind": "oci", "conn_id": "oci_dr", "include": [prefix + "*"]},
            {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [prefix + "*"]},
            *({"name": n, "kind": "ocilayout", "path": str(p)} for n, p in layouts.items()),
        ],
        "storage": {"conn_id": "aws_default", "bucket": bucket},
        "backup": {"registries": ["ecr-west", "oci-dr"]},
    }
    config_file = work / "registry-ops.yaml"
    config_file.write_text(yaml.safe_dump(doc))
    config = load_config(config_file)

    west = ecr_in(moto_server, WEST, "ecr-west")
    ecr_fleet = make_fleet(seed=31, repositories=3, images=24, layer_scale=0.001, prefix=prefix + "ecr/")
    seed_ecr(west.client, ecr_fleet, region=WEST)
    ecr_repos = [r.name for r in ecr_fleet]
    ecr_repos.append(_set_settings(west, ecr_repos))
    west.apply_registry_settings(REGISTRY_SETTINGS)
    oci = OciRegistry("oci-dr", dr.url)
    oci_fleet = make_fleet(seed=32, repositories=3, images=24, layer_scale=0.001, prefix=prefix + "oci/")
    seed_oci(oci, oci_fleet)
    oci_repos = [r.name for r in oci_fleet]

    summary = run_backup(config, s3, {"ecr-west": west, "oci-dr": oci}, NOW, mode="full")
    assert summary["failures"] == {} and summary["latest"], summary
    yield {
        "config": config,
        "file": str(config_file),
        "bucket": bucket,
        "snapshot": summary["snapshot"],
        "dr": dr,
        "layouts": layouts,
        "prefix": prefix,
        "ecr_repos": ecr_repos,
        "oci_repos": oci_repos,
        "ecr_before": contents(west, ecr_repos),
        "ecr_settings": {r: west.describe_repository(r) for r in ecr_repos},
        "registry_settings": west.describe_registry_settings(),
        "oci_before": contents(oci, oci_repos),
    }
    dr.stop()
    os.environ.pop("AIRFLOW_CONN_OCI_DR", None)


def test_bad_input_exits_2_and_writes_nothing(stack, capsys, moto_server):
    cfg, layout = stack["file"], stack["layouts"]["dr-layout"]
    central = ecr_in(moto_server, CENTRAL, "ecr-central")
    before = (tree(layout), central.list_repositories(), central.describe_registry_settings())
    cases = [
        (["--snapshot", "latest", "--target", "nowhere"], "unknown registry 'nowhere'"),
        (["--snapshot", "20200101T000000Z", "--target", "dr-layout"], "does not exist"),
        (["--snapshot", "yesterday", "--target", "dr-layout"], "is not a snapshot id"),
        (["--snapshot", "latest", "--target", "dr-layout", "--registry", "nosuch"], "holds no catalog"),
        (
            ["--snapshot", "latest", "--target", "ecr-central", "--repos", "nomatch/*"],
            "no repository matches",
        ),
    ]
    for args, message in cases:
        code, out, err = run_cli(capsys, *args, "--config", cfg)
        assert code == 2 and out is None, (args, err)
        assert message in err, (args, err)
    code, _, err = run_cli(capsys, "--snapshot", "20200101T000000Z", "--target", "dr-layout", "--config", cfg)
    assert stack["snapshot"] in err  # the newest snapshots that do exist are named
    assert (tree(layout), central.list_repositories(), central.describe_registry_settings()) == before


def test_two_source_repositories_restored_to_one_name_are_refused(stack, s3):
    with pytest.raises(RestoreRefused, match="would both be restored"):
        restore_registry(stack["config"], s3, "latest", "dr-layout", rename=lambda n: "one/name")
    assert tree(stack["layouts"]["dr-layout"]) == {}


def test_a_wiped_distribution_registry_comes_back_from_the_snapshot(stack, capsys):
    dr = stack["dr"]
    dr.stop()
    shutil.rmtree(dr.root / "data", ignore_errors=True)  # the storage directory removed
    dr.start()
    oci = OciRegistry("oci-dr", dr.url)
    assert oci.list_repositories() == []
    args = [
        "--snapshot",
        stack["snapshot"],
        "--target",
        "oci-dr",
        "--registry",
        "oci-dr",
        "--config",
        stack["file"],
    ]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert out["failures"] == {} and out["repositories"] == len(stack["oci_repos"])
    assert contents(oci, stack["oci_repos"]) == stack["oci_before"]  # every digest, tag and blob
    assert out["manifests"] == out["manifests_verified"] > 0 and out["bytes"] > 0
    report("oci-dr", out)

    code, again, _ = run_cli(capsys, *args)
    assert code == 0 and again["manifests"] == again["blobs"] == again["tags"] == 0
    assert again["manifests_present"] == out["manifests"]


def test_deleted_ecr_repositories_come_back_with_their_settings(stack, capsys, moto_server):
    west = ecr_in(moto_server, WEST, "ecr-west")
    for name in stack["ecr_repos"]:
        west.client.delete_repository(repositoryName=name, force=True)
    args = [
        "--snapshot",
        "latest",
        "--target",
        "ecr-west",
        "--registry",
        "ecr-west",
        "--config",
        stack["file"],
    ]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert out["failures"] == {} and out["repositories_created"] == len(stack["ecr_repos"])
    assert contents(west, stack["ecr_repos"]) == stack["ecr_before"]
    for name, settings in stack["ecr_settings"].items():
        got = west.describe_repository(name).as_dict()
        assert {**got, "created_at": None} == {**settings.as_dict(), "created_at": None}, name
    assert west.describe_registry_settings() == stack["registry_settings"]
    assert out["registries"]["ecr-west"]["registry_settings"] == {}  # same registry: nothing to change
    report("ecr-west", out)


def test_an_ecr_registry_comes_back_in_another_region_with_its_registry_settings(stack, s3, moto_server):
    central = ecr_in(moto_server, CENTRAL, "ecr-central")
    out = restore_registry(stack["config"], s3, "latest", "ecr-central", source_registry="ecr-west")
    assert out["failures"] == {}
    assert set(out["registries"]["ecr-west"]["registry_settings"]["applied"]) == set(REGISTRY_SETTINGS)
    assert central.describe_registry_settings() == stack["registry_settings"]
    assert contents(central, stack["ecr_repos"]) == stack["ecr_before"]
    again = restore_registry(stack["config"], s3, "latest", "ecr-central", source_registry="ecr-west")
    assert again["manifests"] == again["blobs"] == again["tags"] == 0
    assert again["registries"]["ecr-west"]["registry_settings"] == {}


def test_a_distribution_registry_restores_into_ecr(stack, s3, moto_server):
    central = ecr_in(moto_server, CENTRAL, "ecr-central")
    out = restore_registry(
        stack["config"],
        s3,
        "latest",
        "ecr-central",
        source_registry="oci-dr",
        rename=lambda n: "from-oci/" + n,
    )
    assert out["failures"] == {}
    renamed = ["from-oci/" + n for n in stack["oci_repos"]]
    got = contents(central, renamed)
    for name in stack["oci_repos"]:
        want = stack["oci_before"][name]
        have = got["from-oci/" + name]
        assert have["tags"] == want["tags"]
        assert {d: have["manifests"][d] for d in want["manifests"]} == want["manifests"]
        assert {d: have["blobs"][d] for d in want["blobs"]} == want["blobs"]
    # a renamed restore leaves the registry-level settings of the target alone
    assert out["registries"]["oci-dr"]["registry_settings"] == {}


def test_an_ecr_registry_restores_into_a_distribution_registry(stack, s3, registry_server):
    out = restore_registry(stack["config"], s3, "latest", "oci-local", source_registry="ecr-west")
    assert out["failures"] == {}
    target = OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD)
    for name, want in stack["ecr_before"].items():
        for digest, raw in want["manifests"].items():
            assert target.get_manifest(name, digest).raw == raw
        for tag, digest in want["tags"].items():
            assert target.head_manifest(name, tag).digest == digest
        for blob, size in want["blobs"].items():
            assert target.head_blob(name, blob) == size
    assert "not_held" in out["registries"]["ecr-west"]["registry_settings"]


@pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo comes with `make`")
def test_an_ecr_registry_restores_into_an_oci_layout_skopeo_reads(stack, capsys):
    root = stack["layouts"]["ecr-layout"]
    args = [
        "--snapshot",
        "latest",
        "--target",
        "ecr-layout",
        "--registry",
        "ecr-west",
        "--config",
        stack["file"],
    ]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    for name, want in stack["ecr_before"].items():
        for tag, digest in sorted(want["tags"].items())[:3]:
            raw = subprocess.run(
                ["skopeo", "inspect", "--raw", f"oci:{root / name}:{tag}"],
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout
            assert raw == want["manifests"][digest]
            meta = subprocess.run(
                ["skopeo", "inspect", f"oci:{root / name}:{tag}"], capture_output=True, check=True, timeout=60
            ).stdout
            assert json.loads(meta)["Digest"] == digest


def test_a_dry_run_writes_nothing_and_says_what_it_would(stack, capsys):
    root = stack["layouts"]["dr-layout"]
    before = tree(root)
    args = ["--snapshot", "latest", "--target", "dr-layout", "--registry", "oci-dr", "--dry-run"]
    code, out, err = run_cli(capsys, *args, "--config", stack["file"])
    assert code == 0, err
    assert tree(root) == before
    assert out["dry_run"] is True and out["repositories_created"] == len(stack["oci_repos"])
    n = len({d for r in stack["oci_before"].values() for d in r["manifests"]})
    assert out["manifests"] == n and out["tags"] > 0 and out["blobs"] > 0 and out["bytes"] > 0


def test_a_target_holding_other_content_is_refused_then_forced(stack, capsys):
    root = stack["layouts"]["dr-layout"]
    name = stack["oci_repos"][0]
    tag = sorted(stack["oci_before"][name]["tags"])[0]
    layout = OciLayoutRegistry("dr-layout", root)
    stranger = push(layout, name, image("not-in-the-snapshot"), tag)
    before = tree(root)
    args = [
        "--snapshot",
        "latest",
        "--target",
        "dr-layout",
        "--registry",
        "oci-dr",
        "--config",
        stack["file"],
    ]
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out is None
    assert f"dr-layout/{name}" in err and repr(tag) in err and "--force" in err
    assert tree(root) == before  # nothing written

    code, out, err = run_cli(capsys, *args, "--force")
    assert code == 0, err
    assert layout.head_manifest(name, tag).digest == stack["oci_before"][name]["tags"][tag]
    assert layout.head_manifest(name, stranger.digest) is not None  # nothing deleted


def test_damaged_store_objects_are_named_with_their_images_and_the_rest_comes_back(stack, s3, capsys):
    """A rotten layer object and one rotten manifest inside a pack (read whole by the restore):
    each named with its S3 object and the images needing it; those images are not written,
    everything else is; exit 1."""
    store, bucket = SnapshotStore.from_config(stack["config"], s3), stack["bucket"]
    catalog = store.read_catalog(store.resolve("latest"), "oci-dr")
    everywhere = [m for r in catalog.repositories for m in r.manifests]
    plain = [  # tagged images (no index, no referrer): the first wave, many members of one pack
        (r, m)
        for r in catalog.repositories
        for m in r.manifests
        if m.layers and not m.subject and m.digest in r.tags.values()
    ]
    repo, image_ = plain[0]
    layer = next(d for d in reversed(image_.layers) if sum(d in m.layers for m in everywhere) == 1)
    other_repo, victim = next((r, m) for r, m in plain if r is not repo)
    damage = {catalog.objects[layer]["key"]: -1}  # the layer's last byte
    loc = catalog.objects[victim.digest]
    damage[loc["pack"]] = int(loc["offset"]) + int(loc["size"]) // 2  # a byte inside the member
    originals = {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in damage}
    for key, at in damage.items():
        rotten = bytearray(originals[key])
        rotten[at] ^= 0xFF
        s3.put_object(Bucket=bucket, Key=key, Body=bytes(rotten))
    try:
        args = ["--snapshot", "latest", "--target", "rot-layout", "--registry", "oci-dr"]
        code, out, err = run_cli(capsys, *args, "--config", stack["file"])
    finally:
        for key, data in originals.items():
            s3.put_object(Bucket=bucket, Key=key, Body=data)
    assert code == 1
    layer_why, victim_why = out["failures"][layer], out["failures"][victim.digest]
    assert (
        store.url(catalog.objects[layer]["key"]) in layer_why and f"{repo.name}@{image_.digest}" in layer_why
    )
    assert store.url(loc["pack"]) in victim_why and f"{other_repo.name}@{victim.digest}" in victim_why
    assert "does not match" in victim_why  # found by the store's check, not copied from the pack
    assert image_.digest in out["failures"] and layer in err and victim.digest in err
    layout = OciLayoutRegistry("rot-layout", stack["layouts"]["rot-layout"])
    assert layout.head_blob(repo.name, layer) is None  # damage is never copied
    assert layout.head_manifest(repo.name, image_.digest) is None
    assert layout.head_manifest(other_repo.name, victim.digest) is None
    fine = [
        (r.name, m.digest)
        for r in catalog.repositories
        for m in r.manifests
        if m.digest not in out["failures"]
    ]
    assert len(fine) > len(everywhere) // 2
    assert all(layout.head_manifest(name, digest) for name, digest in fine)


def test_registry_settings_configured_otherwise_in_the_target_are_refused(stack, capsys, moto_server):
    busy = ecr_in(moto_server, BUSY, "ecr-busy")
    other = json.loads(REGISTRY_POLICY)
    other["Statement"][0]["Sid"] = "someone-elses"
    busy.apply_registry_settings({"registry_policy": json.dumps(other)})
    before = (busy.describe_registry_settings(), busy.list_repositories())
    args = [
        "--snapshot",
        "latest",
        "--target",
        "ecr-busy",
        "--registry",
        "ecr-west",
        "--config",
        stack["file"],
    ]
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out is None
    assert "registry setting registry_policy" in err and "--force" in err
    assert "replication_configuration" not in err  # unset in the target: not a conflict
    assert (busy.describe_registry_settings(), busy.list_repositories()) == before


def test_a_dry_run_of_a_whole_ecr_registry_changes_no_registry_setting(stack, capsys, moto_server):
    dry = ecr_in(moto_server, DRY, "ecr-dry")
    before = (dry.describe_registry_settings(), dry.list_repositories())
    args = ["--snapshot", "latest", "--target", "ecr-dry", "--registry", "ecr-west", "--dry-run"]
    code, out, err = run_cli(capsys, *args, "--config", stack["file"])
    assert code == 0, err
    assert set(out["registries"]["ecr-west"]["registry_settings"]["would_apply"]) == set(REGISTRY_SETTINGS)
    assert out["repositories_created"] == len(stack["ecr_repos"])
    assert (dry.describe_registry_settings(), dry.list_repositories()) == before
