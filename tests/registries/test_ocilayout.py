"""The OCI layout adapter against the tools that define the format's use: skopeo's ``oci:``
transport and umoci read what it writes, it reads what skopeo writes, and a crash or a failed
write never leaves a layout they cannot read."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from include.registry_ops.clients import build_registry
from include.registry_ops.config import ConfigError, parse_config
from include.registry_ops.registries.base import Invalid, Manifest, NotFound, digest_of
from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from tests.conftest import OCI_PASSWORD, OCI_USER
from tests.registries.conftest import oci_adapter
from tests.registries.images import copy_image, image, index, push, unique

pytestmark = pytest.mark.skipif(
    not (shutil.which("skopeo") and shutil.which("umoci")), reason="skopeo and umoci come with `make`"
)


def run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    return proc.stdout


def host(registry_server) -> str:
    return registry_server.url.removeprefix("http://")


def _tagged(repo, kind: str):
    return next(m for m in repo.manifests if m.kind == kind and m.tags)


def test_images_restored_into_a_layout_are_read_by_skopeo_and_umoci(seeded, registry_server, tmp_path):
    oci = oci_adapter(registry_server.url)
    layout = OciLayoutRegistry("dr-layout", tmp_path)
    repo = next(r for r in seeded if any(m.kind == "image" and m.tags for m in r.manifests))
    multi = next(r for r in seeded if any(m.kind == "index" and m.tags for m in r.manifests))
    img, idx = _tagged(repo, "image"), _tagged(multi, "index")
    copy_image(oci, repo.name, layout, repo.name, img.tags[0])
    copy_image(oci, multi.name, layout, multi.name, idx.tags[0])
    directory = tmp_path / repo.name

    inspected = json.loads(run("skopeo", "inspect", f"oci:{directory}:{img.tags[0]}"))
    assert inspected["Digest"] == img.digest
    assert inspected["Layers"] == [b.digest for b in img.blobs[1:]]
    raw = run("skopeo", "inspect", "--raw", f"oci:{tmp_path / multi.name}:{idx.tags[0]}")
    assert digest_of(raw.encode()) == idx.digest
    # skopeo resolves the index to this host's platform and reads that child's config
    amd64 = json.loads(run("skopeo", "inspect", f"oci:{tmp_path / multi.name}:{idx.tags[0]}"))
    assert amd64["Digest"] == idx.digest and amd64["Architecture"] == "amd64"

    assert run("umoci", "ls", "--layout", str(directory)).split() == [img.tags[0]]
    assert run("umoci", "ls", "--layout", str(tmp_path / multi.name)).split() == [idx.tags[0]]
    stat = json.loads(run("umoci", "stat", "--json", "--image", f"{directory}:{img.tags[0]}"))
    assert "history" in stat
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--image", f"{directory}:{img.tags[0]}", str(bundle))
    build_info = json.loads((bundle / "rootfs/app/build-info.json").read_text())
    assert build_info["repo"] == repo.name

    # and back out: skopeo copies the layout image into the distribution registry unchanged
    target = unique("layout-copy/back")
    run(
        "skopeo",
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"--dest-creds={OCI_USER}:{OCI_PASSWORD}",
        f"oci:{directory}:{img.tags[0]}",
        f"docker://{host(registry_server)}/{target}:{img.tags[0]}",
    )
    assert oci.head_manifest(target, img.tags[0]) == img.digest


def test_reads_a_layout_skopeo_wrote(seeded, registry_server, tmp_path):
    repo = [r for r in seeded if any(m.kind == "image" and m.tags for m in r.manifests)][-1]
    img = _tagged(repo, "image")
    directory = tmp_path / "from-skopeo" / "app"
    directory.parent.mkdir()
    run(
        "skopeo",
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        f"--src-creds={OCI_USER}:{OCI_PASSWORD}",
        f"docker://{host(registry_server)}/{repo.name}:{img.tags[0]}",
        f"oci:{directory}:{img.tags[0]}",
    )
    layout = OciLayoutRegistry("skopeo-layout", tmp_path)
    assert layout.list_repositories() == ["from-skopeo/app"]
    assert layout.list_tags("from-skopeo/app") == [img.tags[0]]
    assert layout.get_manifest("from-skopeo/app", img.tags[0]).raw == img.raw
    for blob in img.blobs:
        assert layout.get_blob("from-skopeo/app", blob.digest) == blob.data
    (record,) = layout.list_images("from-skopeo/app")
    assert record["digest"] == img.digest and record["platform"] == img.platform
    assert record["registry_kind"] == "ocilayout" and record["tags"] == [img.tags[0]]


def test_a_writer_killed_mid_blob_leaves_a_readable_layout(tmp_path):
    layout = OciLayoutRegistry("crash", tmp_path)
    kept = push(layout, "crash/app", image("before-the-crash"), "v1")
    before = (tmp_path / "crash/app/index.json").read_bytes()
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path.cwd())!r})
        from include.registry_ops.registries.ocilayout import OciLayoutRegistry
        def chunks():
            for i in range(10_000):
                if i == 5:
                    print("writing", flush=True)
                yield bytes([i % 256]) * 65536
                time.sleep(0.01)
        OciLayoutRegistry("crash", {str(tmp_path)!r}).put_blob("crash/app", chunks(), "sha256:" + "a" * 64)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)

    assert (tmp_path / "crash/app/index.json").read_bytes() == before
    inside = {p.name for p in (tmp_path / "crash/app/blobs/sha256").iterdir()}
    assert inside == {d.split(":")[1] for d in [kept.digest, *image("before-the-crash").blobs]}
    assert list((tmp_path / ".registry-ops-tmp").iterdir())  # the partial file stayed outside
    assert run("umoci", "ls", "--layout", str(tmp_path / "crash/app")).split() == ["v1"]
    assert layout.get_manifest("crash/app", "v1").raw == kept.raw


def test_a_failed_index_write_keeps_the_old_index(tmp_path, monkeypatch):
    layout = OciLayoutRegistry("atomic", tmp_path)
    push(layout, "atomic/app", image("old"), "v1")
    index_file = tmp_path / "atomic/app/index.json"
    before = index_file.read_bytes()
    real_replace = os.replace

    def fail_on_index(src, dst, *args, **kwargs):
        if str(dst).endswith("index.json"):
            raise OSError(5, "Input/output error", str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", fail_on_index)
    with pytest.raises(Exception, match="Input/output error"):
        push(layout, "atomic/app", image("new"), "v2")
    monkeypatch.setattr(os, "replace", real_replace)
    assert index_file.read_bytes() == before
    assert layout.list_tags("atomic/app") == ["v1"]
    assert json.loads(run("skopeo", "inspect", f"oci:{tmp_path / 'atomic/app'}:v1"))["Digest"]


def test_concurrent_writers_lose_no_tag(tmp_path):
    layout = OciLayoutRegistry("busy", tmp_path)
    m = push(layout, "busy/app", image("shared"))

    def tag(i: int) -> None:
        OciLayoutRegistry("busy", tmp_path).put_manifest("busy/app", m, f"t{i:03d}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(tag, range(48)))
    assert layout.list_tags("busy/app") == [f"t{i:03d}" for i in range(48)]


def test_nothing_dangles(tmp_path):
    """A manifest needs its blobs; what a remaining manifest uses cannot be deleted."""
    layout = OciLayoutRegistry("whole", tmp_path)
    repository = "whole/app"
    orphan = image("orphan")
    with pytest.raises(Invalid) as err:
        layout.put_manifest(repository, orphan.manifest, "v1")
    assert "put them first" in err.value.problem
    assert layout.list_tags(repository) == []

    idx = index("kept-index")
    m = push(layout, repository, idx, "multi")
    child = idx.children[0].manifest.digest
    with pytest.raises(Invalid) as err:
        layout.delete_manifest(repository, child)
    assert m.digest in err.value.problem
    config = next(iter(idx.children[0].blobs))
    with pytest.raises(Invalid):
        layout.delete_blob(repository, config)
    raw = run("skopeo", "inspect", "--raw", f"oci:{tmp_path / repository}:multi")
    assert digest_of(raw.encode()) == m.digest  # still whole for skopeo

    layout.delete_manifest(repository, m.digest)  # the index goes; its children stay, untagged
    layout.delete_manifest(repository, child)
    layout.delete_blob(repository, config)
    assert layout.head_blob(repository, config) is None


def test_tags_are_annotations_and_untagged_manifests_stay_reachable(tmp_path):
    layout = OciLayoutRegistry("tags", tmp_path)
    m = push(layout, "tags/app", image("tagged"), "v1", "stable")
    layout.delete_tag("tags/app", "v1")
    layout.delete_tag("tags/app", "stable")
    entries = json.loads((tmp_path / "tags/app/index.json").read_text())["manifests"]
    assert entries == [{"mediaType": m.media_type, "digest": m.digest, "size": len(m.raw)}]
    assert run("umoci", "ls", "--layout", str(tmp_path / "tags/app")).split() == []
    assert [r["digest"] for r in layout.list_images("tags/app")] == [m.digest]
    with pytest.raises(NotFound):
        layout.delete_tag("tags/app", "v1")


def test_repositories_map_to_nested_directories(tmp_path):
    layout = OciLayoutRegistry("nested", tmp_path)
    push(layout, "team", image("outer"), "v1")
    push(layout, "team/api", image("inner"), "v1")
    assert layout.list_repositories() == ["team", "team/api"]
    assert (tmp_path / "team/api/oci-layout").is_file() and (tmp_path / "team/oci-layout").is_file()
    for bad in ("team/blobs", "Team/Api", "../outside", "team//x", "index.json"):
        with pytest.raises(Invalid):
            layout.create_repository(bad)
    assert layout.list_repositories() == ["team", "team/api"]


def test_config_and_factory(tmp_path):
    base = {"storage": {"bucket": "some-bucket"}}
    cfg = parse_config({**base, "registries": [{"name": "dr", "kind": "ocilayout", "path": str(tmp_path)}]})
    reg = build_registry(cfg.registries[0])
    assert isinstance(reg, OciLayoutRegistry) and reg.root == tmp_path and reg.name == "dr"
    for entry, problem in (
        ({"name": "dr", "kind": "ocilayout"}, "'path' is required"),
        ({"name": "dr", "kind": "ocilayout", "path": "/x", "conn_id": "c"}, "takes 'path' only"),
        ({"name": "e", "kind": "ecr", "conn_id": "aws", "path": "/x"}, "applies to it only"),
        ({"name": "e", "kind": "ecr"}, "Field required"),
    ):
        with pytest.raises(ConfigError, match=problem):
            parse_config({**base, "registries": [entry]})


def test_manifest_bytes_that_do_not_match_are_refused(tmp_path):
    layout = OciLayoutRegistry("digests", tmp_path)
    img = image("mismatch")
    push(layout, "digests/app", img)
    forged = Manifest(digest_of(b"another manifest"), img.manifest.media_type, img.manifest.raw)
    with pytest.raises(Invalid):
        layout.put_manifest("digests/app", forged, "v1")
    (tmp_path / "digests/app/blobs/sha256" / img.manifest.digest.split(":")[1]).write_bytes(b"{}")
    with pytest.raises(Invalid, match="damaged"):
        layout.get_manifest("digests/app", img.manifest.digest)


def test_full_reference_names_in_index_json_are_read_as_tags(tmp_path):
    """Some tools write ``registry/name:tag`` into ref.name; the tag is the part after ':'."""
    layout = OciLayoutRegistry("refs", tmp_path)
    m = push(layout, "refs/app", image("full-ref"))
    index_file = tmp_path / "refs/app/index.json"
    doc = json.loads(index_file.read_text())
    entry = {"mediaType": m.media_type, "digest": m.digest, "size": len(m.raw)}
    doc["manifests"] = [
        {**entry, "annotations": {"org.opencontainers.image.ref.name": "registry.example.com:5000/app:v2"}},
        {**entry, "annotations": {"org.opencontainers.image.ref.name": "plain"}},
    ]
    index_file.write_text(json.dumps(doc))
    assert layout.list_tags("refs/app") == ["plain", "v2"]
    assert layout.get_manifest("refs/app", "v2").digest == m.digest


def test_delete_repository_removes_only_that_layout_and_never_follows_a_link_out(tmp_path):
    """``delete_repository`` (the DR drill's cleanup) removes the repository's directory and the
    empty folders above it, never the root, a sibling, or what a symlink inside the root points at."""
    root, outside = tmp_path / "layouts", tmp_path / "outside"
    root.mkdir()
    reg = OciLayoutRegistry("lay", root)
    for repo in ("dr-drill/team/app", "dr-drill/keep", "prod/app"):
        push(reg, repo, image(repo), "v1")
    reg.delete_repository("dr-drill/team/app")
    assert not (root / "dr-drill" / "team").exists()  # the emptied parent went too
    assert reg.list_tags("dr-drill/keep") == ["v1"] and reg.list_tags("prod/app") == ["v1"]
    reg.delete_repository("dr-drill/team/app")  # absent already: fine

    outside.mkdir()
    (outside / "precious").write_text("not the drill's")
    (root / "dr-drill" / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(Invalid, match="is not inside the layout root"):
        reg.delete_repository("dr-drill/evil")
    assert (outside / "precious").read_text() == "not the drill's"

    lone_root = tmp_path / "lone"
    lone_root.mkdir()
    lone = OciLayoutRegistry("lone", lone_root)
    push(lone, "dr-drill/only", image("only"), "v1")
    for entry in lone_root.iterdir():  # the adapter's scratch folder: a root holding one repository
        if entry.name != "dr-drill":
            shutil.rmtree(entry)
    lone.delete_repository("dr-drill/only")
    assert lone_root.is_dir() and not (lone_root / "dr-drill").exists()  # emptied, never removed
