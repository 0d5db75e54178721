"""`registry-ops archive verify` (and `reindex`, `list`): every catalog, pack, blob and the digest
index checked, each object read once; damage listed with the images it affects, exit 1."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from include.registry_ops.cli import main as cli_main
from include.registry_ops.retention.archive_verify import verify_archive
from tests.retention_exec.archive_helpers import (
    Requests,
    archive_fleet,
    new_store,
    overwrite,
    s3_client,
    write_catalog,
)
from tests.retention_exec.helpers import BUCKET

CLI = [sys.executable, "-m", "include.registry_ops.cli"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """As a user runs it (a process of its own: Airflow's connection lookup makes it ~15 s)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def result(out: str) -> object:
    """The command's JSON: in this process Airflow's own log lines land on stdout before it."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line in ("{", "[", "[]"))
    return json.loads("\n".join(lines[start:]))


@pytest.fixture
def main(capfd):
    """``registry-ops`` in this process (``cli.main``), returning what a process would."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capfd.readouterr()
        code = cli_main(list(args))
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def _config(tmp_path, prefix: str, bucket: str = BUCKET) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [{"name": "oci-local", "kind": "oci", "conn_id": "oci_local"}],
                "storage": {"conn_id": "aws_default", "bucket": bucket, "prefixes": {"archive": prefix}},
            }
        )
    )
    return str(path)


@pytest.fixture
def archived(oci_reg, moto_server, ret_s3):
    """Two repositories archived with their layers in packs of two images: blobs shared by
    images of several catalogs; the index compacted."""
    client = s3_client(moto_server.endpoint)
    store = new_store(client)
    for repo_index in (0, 1):
        archive_fleet(oci_reg, store, n=4, repo_index=repo_index, archive_batch=2, archive_layers=True)
    store.compact_index()
    docs = {k: store.read_catalog(k) for k in store.catalog_keys()}
    return store, docs


def _refs(docs: dict) -> tuple[dict, dict]:
    """Per pack key and per blob key: the catalogs referencing it and the images using it."""
    packs, blobs = {}, {}
    for key, doc in docs.items():
        for e in doc["images"]:
            for ref in [e["manifest"], *e["children"], *e["blobs"]]:
                where = packs.setdefault(ref["pack"], ({}, set())) if "pack" in ref else None
                if where is None:
                    where = blobs.setdefault(ref["key"], ({}, set()))
                where[0][key] = True
                where[1].add(e["digest"])
    return packs, blobs


def test_a_sound_archive_verifies_reading_each_object_once(archived):
    store, docs = archived
    packs, blobs = _refs(docs)
    assert any(len(catalogs) > 1 for catalogs, _ in blobs.values())  # shared: "once" means something
    counter = Requests(store.s3)
    summary = verify_archive(store)
    assert summary["damaged"] == [] and summary["index"]["state"] == "ok"
    assert summary["catalogs"] == len(docs) and summary["packs"] == len(packs)
    assert summary["blobs"] == len(blobs) > 0
    assert summary["images"] == sum(len(d["images"]) for d in docs.values())
    gets = Counter({key: n for (op, key), n in counter.keys.items() if op == "GetObject"})
    for key in [*docs, *packs, *blobs]:
        assert gets[key] == 1, key


def test_verify_lists_each_damaged_object_with_the_images_it_affects(archived):
    store, docs = archived
    catalogs = sorted(docs)
    bad_catalog = catalogs[0]
    healthy = {k: d for k, d in docs.items() if k != bad_catalog}
    packs, blobs = _refs(healthy)
    overwrite(store.s3, bad_catalog, b'{"kind": "registry-ops/retention-archive-catalog"')

    # a pack with one byte flipped inside one member: that member's images are affected
    pack = sorted(packs)[0]
    entry = next(e for d in healthy.values() for e in d["images"] if e["manifest"]["pack"] == pack)
    data = bytearray(store.read_object(pack))
    data[entry["manifest"]["offset"] + 3] ^= 0xFF
    overwrite(store.s3, pack, bytes(data))
    member_users = {
        e["digest"]
        for d in healthy.values()
        for e in d["images"]
        for ref in [e["manifest"], *e["children"], *e["blobs"]]
        if ref.get("pack") == pack and ref["offset"] == entry["manifest"]["offset"]
    }
    gone_blob, rotten_blob = sorted(blobs)[:2]
    store.s3.delete_object(Bucket=BUCKET, Key=gone_blob)
    overwrite(store.s3, rotten_blob, b"not the layer")

    summary = verify_archive(store)
    damaged = {d["key"]: d for d in summary["damaged"]}
    assert set(damaged) == {bad_catalog, pack, gone_blob, rotten_blob}
    assert "is not JSON" in damaged[bad_catalog]["problem"]
    assert damaged[bad_catalog]["images_affected"] == sorted(e["digest"] for e in docs[bad_catalog]["images"])
    assert "does not hash to its name" in damaged[pack]["problem"]
    assert "1 of" in damaged[pack]["problem"] and damaged[pack]["images_affected"] == sorted(member_users)
    assert "is missing" in damaged[gone_blob]["problem"]
    assert damaged[gone_blob]["images_affected"] == sorted(blobs[gone_blob][1])
    assert "does not hash to" in damaged[rotten_blob]["problem"]
    assert summary["index"]["state"] == "ok"


def test_verify_and_reindex_on_the_command_line(archived, tmp_path, main):
    store, docs = archived
    config = _config(tmp_path, store.prefix)
    ok = main("archive", "verify", "--config", config)
    assert ok.returncode == 0, ok.stderr
    assert result(ok.stdout)["damaged"] == []

    # a catalog written without its index delta (an older registry-ops): restores by digest
    # would miss it, so verify reports the index, and reindex repairs it
    source = sorted(docs)[0]
    copy = source.replace(".json", "0.json")
    store.s3.copy_object(Bucket=BUCKET, Key=copy, CopySource={"Bucket": BUCKET, "Key": source})
    proc = cli("archive", "verify", "--config", config)  # the real process: exit 1, JSON on stdout
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    [d] = summary["damaged"]
    assert d["key"] == store.index.pointer_key and summary["index"]["state"] == "incomplete"
    assert d["images_affected"] == sorted(e["digest"] for e in docs[source]["images"])
    assert "archive reindex" in proc.stderr
    fixed = main("archive", "reindex", "--config", config)
    assert fixed.returncode == 0, fixed.stderr
    assert result(fixed.stdout)["catalogs"] == len(docs) + 1
    again = main("archive", "verify", "--config", config)
    assert again.returncode == 0 and result(again.stdout)["damaged"] == []
    assert store.index.lookup(d["images_affected"][0]) == sorted([source, copy])

    # one repository's part, and a scope with nothing in it (a typo) is the user's error
    registry, repository = store.place_of(source)
    part = main("archive", "verify", "--registry", registry, "--repository", repository, "--config", config)
    assert part.returncode == 0
    assert (
        result(part.stdout)["catalogs"] == sum(store.place_of(k) == (registry, repository) for k in docs) + 1
    )
    typo = main("archive", "verify", "--registry", "oci-locl", "--config", config)
    assert typo.returncode == 2 and "no archive catalogs for oci-locl" in typo.stderr


def test_list_skips_a_damaged_catalog_naming_it(moto_server, ret_s3, tmp_path, main, caplog):
    store = new_store(s3_client(moto_server.endpoint))
    _good, good_digests = write_catalog(store)
    bad, _ = write_catalog(store)
    overwrite(store.s3, bad, b"\x00")
    proc = main("archive", "list", "--limit", "10", "--config", _config(tmp_path, store.prefix))
    assert proc.returncode == 0, proc.stderr
    assert sorted(e["digest"] for e in result(proc.stdout)) == sorted(good_digests)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"s3://{BUCKET}/{bad}" in w for w in warnings)  # where it lands depends on Airflow's set-up


def test_a_missing_bucket_is_the_users_error(moto_server, tmp_path, main):
    proc = main("archive", "verify", "--config", _config(tmp_path, "archive/", bucket="no-such-bucket-here"))
    assert proc.returncode == 2 and "'no-such-bucket-here' does not exist" in proc.stderr
