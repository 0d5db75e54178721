"""The executor through the registry interface only: a third adapter (an OCI image layout
directory) that nothing outside ``registries/`` knows gets the whole retention cycle (fresh look,
archive, delete, untag, restore), and ECR's typed delete refusals drive the retry of children
whose index was still there."""

from __future__ import annotations

import json
import threading

import pandas as pd
import pytest
from botocore.awsrequest import AWSResponse

from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from include.registry_ops.retention import audit
from include.registry_ops.retention.executor import Limits, execute
from include.registry_ops.retention.restore import locate, restore_image
from tests.retention_exec.helpers import (
    BUCKET,
    oldest_images,
    plan_for,
    present,
    push,
    run_ctx,
    seed,
    small_fleet,
    tags_now,
    unique,
    with_children,
)

NO_CAPS = Limits(max_deletions_per_run=10_000, max_fraction=1.0)


@pytest.fixture
def layout(tmp_path) -> OciLayoutRegistry:
    root = tmp_path / "layouts"
    root.mkdir()
    return OciLayoutRegistry("layout-local", root)


def test_a_layout_gets_the_whole_retention_cycle(layout, ret_s3):
    signed, multi = push(layout, small_fleet(unique("ret-layout"), repositories=2))
    specs = multi.manifests  # a layout's index.json reaches every manifest, untagged ones too
    chosen = oldest_images(specs, 3)
    expire = with_children(specs, chosen)
    assert any(m.kind == "index" for m in chosen)
    partial, whole = [m for m in signed.manifests if len(m.tags) >= 2][:2]
    untag = {partial.digest: partial.tags[:1], whole.digest: whole.tags}
    plan = pd.concat(
        [
            plan_for(layout.name, multi, specs, expire),
            plan_for(layout.name, signed, signed.manifests, set(), untag=untag),
        ],
        ignore_index=True,
    )
    run = run_ctx(ret_s3)
    results = {r["repository"]: r for r in execute(plan, run, lambda _: layout, limits=NO_CAPS)}

    assert results[multi.name]["status"] == "done", results
    assert results[multi.name]["deleted"] == len(expire)
    for m in specs:
        assert present(layout, multi.name, m.digest) == (m.digest not in expire), m.digest
    [doc] = [run.store.read_catalog(k) for k in run.store.catalog_keys(layout.name, multi.name)]
    assert doc["registry_kind"] == "ocilayout"
    entries = {e["digest"]: e for e in doc["images"]}
    assert set(entries) == expire
    image = next(m for m in specs if m.digest in expire and m.kind == "image")
    config = next(b for b in entries[image.digest]["blobs"] if b["role"] == "config")
    assert run.store.read_member(config) == image.blobs[0].data  # blob reads are cheap: configs kept

    untagged = results[signed.name]
    assert untagged["status"] == "done" and untagged["untagged"] == 2
    now = tags_now(layout, signed.name)  # complete on a layout: untagged manifests are listed
    assert now[partial.digest] == set(partial.tags[1:]) and now[whole.digest] == set()
    assert layout.get_manifest(signed.name, whole.digest).raw == whole.raw  # its last tag went, it stayed
    records = {r["digest"]: r for r in audit.read_audit(ret_s3, BUCKET, untagged["audit_key"])}
    assert records[whole.digest]["result"] == "untagged"

    index = next(m for m in chosen if m.kind == "index")
    back = restore_image(run.store, layout, locate(run.store, layout.name, multi.name, digest=index.digest))
    assert layout.get_manifest(multi.name, index.digest).raw == index.raw and back["verified"]
    assert sorted(back["tags_restored"]) == sorted(index.tags)
    for child in index.children:
        assert present(layout, multi.name, child)


class EcrIndexRule:
    """ECR's rule, put in front of moto (which lacks it): ``BatchDeleteImage`` refuses a manifest
    an index still in the repository lists, with ``ImageReferencedByManifestList``, judged on
    the repository as it is when the request arrives. The refused ids are taken out of the
    request moto gets and their failures added to its answer."""

    def __init__(self, client, repository: str) -> None:
        self.repository, self.pending, self.refused = repository, [], []
        self._lock = threading.Lock()
        client.meta.events.register("before-send.ecr.BatchDeleteImage", self.before_send)
        client.meta.events.register("after-call.ecr.BatchDeleteImage", self.after_call)

    def _listed(self) -> set[str]:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ecr.models import ecr_backends

        images = ecr_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].repositories[self.repository].images
        return {e["digest"] for i in images for e in json.loads(i.image_manifest).get("manifests", [])}

    def before_send(self, request, **_):
        body = json.loads(request.body)
        listed = self._listed()
        refused = [i for i in body["imageIds"] if i.get("imageDigest") in listed]
        if not refused:
            return None
        failures = [
            {
                "imageId": i,
                "failureCode": "ImageReferencedByManifestList",
                "failureReason": "Requested image is referenced by an image index",
            }
            for i in refused
        ]
        with self._lock:
            self.refused += [i["imageDigest"] for i in refused]
        body["imageIds"] = [i for i in body["imageIds"] if i not in refused]
        if not body["imageIds"]:  # nothing left for moto: ECR's answer, refusals only
            answer = json.dumps({"imageIds": [], "failures": failures}).encode()
            return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(answer))
        request.body = json.dumps(body).encode()
        request.headers["Content-Length"] = str(len(request.body))
        with self._lock:
            self.pending = failures
        return None

    def after_call(self, parsed, **_):
        with self._lock:
            pending, self.pending = self.pending, []
        parsed.setdefault("failures", []).extend(pending)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_):
        yield self._body


def test_children_refused_while_their_index_was_there_are_deleted_once_it_is_gone(ecr_reg, ret_s3):
    fleet = seed(ecr_reg, small_fleet(unique(), repositories=2))
    repo = fleet[1]
    specs = repo.manifests
    chosen = oldest_images(specs, 2)
    expire = with_children(specs, chosen)
    orphaned = next(m for m in specs if m.kind == "index" and m.digest not in expire)
    child = orphaned.children[0]  # expired on its own while its index is kept: refused for good
    rule = EcrIndexRule(ecr_reg.client, repo.name)
    plan = plan_for(ecr_reg.name, repo, specs, expire | {child})
    [result] = execute(plan, run_ctx(ret_s3), lambda _: ecr_reg, limits=NO_CAPS)

    kids = {c for m in chosen for c in m.children}
    assert kids and kids <= set(rule.refused)  # refused in the batch that held their index ...
    assert not any(present(ecr_reg, repo.name, d) for d in expire)  # ... and deleted on the retry
    assert rule.refused.count(child) == 2  # tried twice, then left
    assert present(ecr_reg, repo.name, child)
    records = {r["digest"]: r for r in audit.read_audit(ret_s3, BUCKET, result["audit_key"])}
    assert {records[d]["result"] for d in expire} == {"deleted"}
    assert records[child]["result"] == "failed"
    assert "ImageReferencedByManifestList" in records[child]["detail"]
    assert result["status"] == "failed" and result["deleted"] == len(expire)


def test_an_image_deleted_since_the_plan_is_read_as_gone_and_the_rest_goes_on(oci_reg, ret_s3):
    """The distribution API's look is the tag map (which cannot see untagged manifests), so an
    image gone since the plan shows up in the archive's read: ``read_images`` types the 404."""
    repo = seed(oci_reg, small_fleet(unique(), repositories=1))[0]
    specs = [m for m in repo.manifests if m.tags]
    chosen = oldest_images(specs, 3)
    expire = {m.digest for m in chosen}
    vanished = chosen[0].digest
    oci_reg.delete_manifest(repo.name, vanished)  # someone else deleted it meanwhile
    [result] = execute(
        plan_for(oci_reg.name, repo, specs, expire), run_ctx(ret_s3), lambda _: oci_reg, limits=NO_CAPS
    )
    records = {r["digest"]: r for r in audit.read_audit(ret_s3, BUCKET, result["audit_key"])}
    assert (
        records[vanished]["result"] == "gone"
        and "not in the registry any more" in records[vanished]["detail"]
    )
    assert {records[d]["result"] for d in expire - {vanished}} == {"deleted"}
    assert result["status"] == "done" and result["failed"] == 0


@pytest.fixture(params=["ecr", "oci", "ocilayout"])
def kind(request, moto_server, registry_server, tmp_path):
    """A fresh adapter of each kind."""
    from tests.retention_exec.helpers import ecr_registry, oci_registry

    if request.param == "ecr":
        return ecr_registry(moto_server.endpoint)
    if request.param == "oci":
        return oci_registry(registry_server.url)
    return OciLayoutRegistry("layout-local", tmp_path)


def test_bulk_deletes_type_what_was_already_gone_on_every_kind(kind):
    repo = push(kind, small_fleet(unique("bulk-delete"), repositories=1, images=6))[0]
    two = [m for m in repo.manifests if m.kind == "image" and len(m.tags) >= 2][:2]
    missing = "sha256:" + "0" * 64
    res = kind.delete_images(repo.name, [two[0].digest, missing])
    assert res.deleted == [two[0].digest] and res.gone == {missing} and set(res.failures) == {missing}
    assert not res.refused_by_index
    tag, other = two[1].tags[0], two[1].tags[1]
    res = kind.delete_tags(repo.name, [tag, "no-such-tag"])
    assert res.deleted == [tag] and res.gone == {"no-such-tag"} and set(res.failures) == {"no-such-tag"}
    assert kind.head_manifest(repo.name, tag) is None
    assert kind.head_manifest(repo.name, other) == two[1].digest  # the image keeps its other tag
    res = kind.delete_tags(repo.name, [two[1].digest])  # a digest is not a tag: never the image
    assert res.deleted == [] and set(res.failures) == {two[1].digest} and not res.gone
    assert kind.head_manifest(repo.name, two[1].digest) == two[1].digest
