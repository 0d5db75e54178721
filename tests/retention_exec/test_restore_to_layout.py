"""Restore into another registry: images archived from the distribution registry come back into
an OCI image layout directory (``kind: ocilayout``) with ``registry-ops restore --to-registry``,
bit for bit, and the tools that define the format read them: ``skopeo inspect oci:DIR:TAG`` and
``umoci``. Blobs come from the archive (``archive_layers``) or, where it lacks them, from the
registry the image was archived from."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from include.registry_ops.retention.executor import Limits, execute
from tests.retention_exec.helpers import (
    BUCKET,
    oci_registry,
    oldest_images,
    plan_for,
    present,
    run_ctx,
    seed,
    small_fleet,
    unique,
    visible,
    with_children,
)

pytestmark = pytest.mark.skipif(
    not (shutil.which("skopeo") and shutil.which("umoci")), reason="skopeo and umoci come with `make`"
)
CLI = [sys.executable, "-m", "include.registry_ops.cli"]
NO_CAPS = Limits(max_deletions_per_run=10_000, max_fraction=1.0)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def tool(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def archived(moto_server, registry_server, s3, tmp_path_factory):
    """Repository 0 (signed images) archived with its layers, repository 1 (multi-arch indexes)
    without; both deleted from the registry. A config naming the registry and a layout root."""
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    oci = oci_registry(registry_server.url)
    prefix = unique("restore-layout")
    fleet = seed(oci, small_fleet(prefix, repositories=2, images=10, seed=17))
    chosen = {}
    for repo, layers in zip(fleet, (True, False), strict=True):
        specs = visible(oci, repo)
        chosen[repo.name] = oldest_images(specs, 2)
        expire = with_children(specs, chosen[repo.name])
        run = run_ctx(s3, archive_layers=layers)
        [result] = execute(plan_for(oci.name, repo, specs, expire), run, lambda _: oci, limits=NO_CAPS)
        assert result["status"] == "done" and not any(present(oci, repo.name, d) for d in expire)
    work = tmp_path_factory.mktemp("restore-layout")
    root = work / "layouts"
    root.mkdir()
    config = work / "registry-ops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [prefix + "*"]},
                    {"name": "dr-layout", "kind": "ocilayout", "path": str(root)},
                ],
                "storage": {"conn_id": "aws_default", "bucket": BUCKET},
            }
        )
    )
    return {"config": str(config), "root": root, "fleet": fleet, "chosen": chosen, "oci": oci}


def _restore(archived, *extra: str) -> dict:
    proc = cli("restore", *extra, "--to-registry", "dr-layout", "--config", archived["config"])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_restore_into_a_layout_is_bit_exact_and_read_by_skopeo_and_umoci(archived, s3):
    repo = archived["fleet"][0]
    spec = next(m for m in archived["chosen"][repo.name] if m.tags)
    result = _restore(archived, "--digest", spec.digest)
    assert (result["registry"], result["from_registry"]) == ("dr-layout", "oci-local")
    assert result["repository"] == repo.name and result["verified"] is True
    assert sorted(result["blobs_uploaded"]) == sorted(b.digest for b in spec.blobs)  # all from the archive
    directory = archived["root"] / repo.name
    assert (directory / "blobs" / "sha256" / spec.digest[7:]).read_bytes() == spec.raw
    for tag in spec.tags:
        inspected = json.loads(tool("skopeo", "inspect", f"oci:{directory}:{tag}"))
        assert inspected["Digest"] == spec.digest
        assert tool("skopeo", "inspect", "--raw", f"oci:{directory}:{tag}").encode() == spec.raw
    assert sorted(tool("umoci", "ls", "--layout", str(directory)).split()) == sorted(spec.tags)
    stat = json.loads(tool("umoci", "stat", "--json", "--image", f"{directory}:{spec.tags[0]}"))
    assert "history" in stat
    assert s3.get_object(Bucket=BUCKET, Key=result["audit_key"])  # the restore is audited
    assert not present(archived["oci"], repo.name, spec.digest)  # the source is not touched


def test_an_index_archived_without_layers_takes_them_from_the_registry_it_left(archived):
    repo = archived["fleet"][1]
    spec = next(m for m in archived["chosen"][repo.name] if m.kind == "index" and m.tags)
    kids = [m for m in repo.manifests if m.digest in spec.children]
    result = _restore(archived, "--digest", spec.digest)
    layers = {b.digest for k in kids for b in k.blobs[1:]}
    assert layers <= set(result["blobs_uploaded"])  # not archived: read from oci-local
    directory = archived["root"] / repo.name
    raw = tool("skopeo", "inspect", "--raw", f"oci:{directory}:{spec.tags[0]}").encode()
    assert raw == spec.raw
    layout = OciLayoutRegistry("check", archived["root"])
    for kid in kids:
        assert layout.get_manifest(repo.name, kid.digest).raw == kid.raw
        for blob in kid.blobs:
            assert layout.get_blob(repo.name, blob.digest) == blob.data
    assert sorted(tool("umoci", "ls", "--layout", str(directory)).split()) == sorted(spec.tags)


def test_an_unknown_target_registry_exits_2_naming_the_configured_ones(archived):
    repo = archived["fleet"][0]
    spec = archived["chosen"][repo.name][0]
    before = sorted(p.name for p in archived["root"].iterdir())
    proc = cli("restore", "--digest", spec.digest, "--to-registry", "nowhere", "--config", archived["config"])
    assert proc.returncode == 2
    assert "unknown registry 'nowhere'" in proc.stderr and "dr-layout" in proc.stderr
    assert sorted(p.name for p in archived["root"].iterdir()) == before  # nothing written


def _restore_dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder="dags").dags["registry_restore"]  # a fresh one per run (conf sticks)


def test_the_restore_dag_takes_a_target_registry(airflow_db, archived, monkeypatch, capfd):
    from airflow.sdk import DagRunState

    monkeypatch.setenv("REGISTRY_OPS_CONFIG", archived["config"])
    repo = archived["fleet"][0]
    spec = [m for m in archived["chosen"][repo.name] if m.tags][-1]
    directory = archived["root"] / repo.name
    assert not (directory / "blobs" / "sha256" / spec.digest[7:]).exists()  # not restored there yet
    conf = {"mode": "restore", "digest": spec.digest, "to_registry": "dr-layout"}
    dr = _restore_dag().test(run_conf=conf)
    assert dr.state == DagRunState.SUCCESS
    assert json.loads(tool("skopeo", "inspect", f"oci:{directory}:{spec.tags[0]}"))["Digest"] == spec.digest

    dr = _restore_dag().test(run_conf={**conf, "to_registry": "nowhere"})
    assert dr.state == DagRunState.FAILED
    [ti] = dr.get_task_instances()
    assert ti.try_number == 1  # a config error: no retry
    logs = capfd.readouterr()
    assert "unknown registry 'nowhere'" in logs.out + logs.err
