"""The drill's proof and its cleanup against real targets filled by the test: the second
distribution registry of the session and an OCI image layout directory. A catalog is built from
the pushed images, so what the drill compares with is known exactly."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from include.registry_ops.backup import drill
from include.registry_ops.backup.catalog import Catalog, ManifestEntry, RepositoryEntry
from include.registry_ops.backup.drill import DrillError, DrillPlan, Selection
from include.registry_ops.registries.base import OCI_MANIFEST, Manifest
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from tests.conftest import OCI_PASSWORD, OCI_USER
from tests.registries.images import Image, image, index, push, referrer

PREFIX = f"dr-verify-{uuid.uuid4().hex[:8]}/"  # the session's second registry is shared


def entries(img: Image) -> list[ManifestEntry]:
    """Catalog entries of an image and its children, as a backup records them."""
    body = img.manifest.body
    out = [e for kid in img.children for e in entries(kid)]
    out.append(
        ManifestEntry(
            digest=img.manifest.digest,
            media_type=img.manifest.media_type,
            size=len(img.manifest.raw),
            children=[k.manifest.digest for k in img.children],
            subject=(body.get("subject") or {}).get("digest"),
            config=(body.get("config") or {}).get("digest"),
            layers=[layer["digest"] for layer in body.get("layers", [])],
        )
    )
    return out


def blobs_of(img: Image) -> dict[str, bytes]:
    out = dict(img.blobs)
    for kid in img.children:
        out.update(blobs_of(kid))
    return out


def filled(target, registry: str = "src") -> tuple[Catalog, Selection, list[Image]]:
    """A source repository of an image (tagged), a multi-arch index (tagged) and an SBOM
    referrer, pushed into its scratch name in ``target``; its catalog and the selection."""
    repo = f"app/{uuid.uuid4().hex[:8]}"
    sel = Selection(registry, repo, drill.scratch_name(PREFIX, registry, repo))
    app, multi = image(repo), index(repo + "-multi")
    sbom = referrer(app.manifest, repo + "-sbom")
    push(target, sel.target_repository, app, "1.0")
    push(target, sel.target_repository, multi, "multi")
    push(target, sel.target_repository, sbom)
    images = [app, multi, sbom]
    blob_sizes = {d: len(b) for img in images for d, b in blobs_of(img).items()}
    entry = RepositoryEntry(
        repo,
        tags={"1.0": app.manifest.digest, "multi": multi.manifest.digest},
        manifests=[e for img in images for e in entries(img)],
    )
    return Catalog(registry, "oci", repositories=[entry], blob_sizes=blob_sizes), sel, images


def plan_of(target, *selections: Selection) -> DrillPlan:
    return DrillPlan(
        snapshot="20261128T020000Z",
        taken_at="2026-11-28T02:00:00+00:00",
        mode="full",
        target=target.name,
        target_kind=target.kind,
        scratch_prefix=PREFIX,
        sample=None,
        seed="20261128T020000Z",
        repositories_in_snapshot=len(selections),
        selections=tuple(selections),
    )


@pytest.fixture
def dr_oci(dr_registry_server) -> OciRegistry:
    return OciRegistry("oci-dr", dr_registry_server.url, OCI_USER, OCI_PASSWORD)


@pytest.fixture
def layout(tmp_path) -> OciLayoutRegistry:
    root = tmp_path / "layouts"
    root.mkdir()
    return OciLayoutRegistry("layout-dr", root)


def test_a_faithful_copy_verifies_every_manifest_blob_and_tag(dr_oci):
    catalog, sel, _ = filled(dr_oci)
    v = drill.verify({"src": catalog}, [sel], dr_oci, workers=4)
    assert v.failures == []
    assert (v.manifests_checked, v.manifests_equal) == (5, 5)  # image, index + 2 children, referrer
    assert (v.blobs_checked, v.blobs_equal) == (8, 8)
    assert (v.tags_checked, v.tags_equal) == (2, 2)
    assert v.digests_checked == v.digests_equal == 13
    assert v.bytes_checked == sum(catalog.blob_sizes.values())
    assert v.repositories == [{**sel.__dict__, "manifests": 5, "blobs": 8, "tags": 2, "failures": 0}]


def test_a_blob_that_did_not_come_back_is_named(dr_oci):
    catalog, sel, (app, _, _) = filled(dr_oci)
    layer = app.manifest.body["layers"][0]["digest"]
    dr_oci.delete_blob(sel.target_repository, layer)
    v = drill.verify({"src": catalog}, [sel], dr_oci)
    assert [(f["kind"], f["digest"], f["problem"]) for f in v.failures] == [
        ("blob", layer, "blob not in the target")
    ]
    assert v.digests_equal == v.digests_checked - 1
    assert v.failures[0]["target_repository"] == sel.target_repository


def test_a_manifest_and_its_tag_that_did_not_come_back_are_named(dr_oci):
    catalog, sel, (_, multi, _) = filled(dr_oci)
    dr_oci.delete_manifest(sel.target_repository, multi.manifest.digest)
    v = drill.verify({"src": catalog}, [sel], dr_oci)
    named = {(f["kind"], f["digest"], f["tag"]) for f in v.failures}
    assert named == {("manifest", multi.manifest.digest, None), ("tag", multi.manifest.digest, "multi")}
    assert v.manifests_equal == v.manifests_checked - 1


class Unchecked(OciLayoutRegistry):
    """An adapter handing back whatever its files hold, unchecked: the drill must hash for
    itself rather than rely on the adapter's own check."""

    def open_blob(self, repository: str, digest: str):
        return open(self._blob_path(repository, digest), "rb")  # the caller closes it

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        return Manifest(reference, OCI_MANIFEST, self._blob_path(repository, reference).read_bytes())


def test_bytes_that_differ_are_caught_by_the_drills_own_hash(tmp_path):
    target = Unchecked("layout-dr", tmp_path)
    catalog, sel, (app, _, sbom) = filled(target)
    layer = app.manifest.body["layers"][0]["digest"]
    root = Path(tmp_path) / sel.target_repository / "blobs" / "sha256"
    (root / layer.split(":")[1]).write_bytes(b"other bytes of the same blob name")
    (root / sbom.manifest.digest.split(":")[1]).write_bytes(sbom.manifest.raw + b" ")
    v = drill.verify({"src": catalog}, [sel], target)
    problems = {f["digest"]: f["problem"] for f in v.failures}
    assert set(problems) == {layer, sbom.manifest.digest}
    assert problems[layer].startswith("blob came back as sha256:")
    assert problems[sbom.manifest.digest].startswith("manifest came back as sha256:")


def test_a_size_other_than_the_catalogs_is_a_failure(dr_oci):
    catalog, sel, (app, _, _) = filled(dr_oci)
    config = app.manifest.body["config"]["digest"]
    catalog.blob_sizes[config] += 1
    v = drill.verify({"src": catalog}, [sel], dr_oci)
    assert [(f["digest"], f["problem"]) for f in v.failures] == [
        (config, f"blob came back with {catalog.blob_sizes[config] - 1} bytes, the catalog says "
         f"{catalog.blob_sizes[config]}")
    ]  # fmt: skip


# -- cleanup ---------------------------------------------------------------------------------------
def gone(target, sel: Selection, catalog: Catalog) -> bool:
    repo = sel.target_repository
    entry = catalog.repositories[0]
    manifests_gone = all(target.head_manifest(repo, m.digest) is None for m in entry.manifests)
    return manifests_gone and not target.list_tags(repo) and all(
        target.head_blob(repo, d) is None for d in catalog.blob_sizes
    )  # fmt: skip


def test_cleanup_removes_the_scratch_repositories_and_nothing_else(dr_oci):
    keep = f"keep/{uuid.uuid4().hex[:8]}"
    kept = image(keep)
    push(dr_oci, keep, kept, "prod")
    (cat_a, sel_a, _), (cat_b, sel_b, _) = filled(dr_oci, "src"), filled(dr_oci, "other")
    plan = plan_of(dr_oci, sel_a, sel_b)
    out = drill.cleanup(None, None, plan, target=dr_oci, catalogs={"src": cat_a, "other": cat_b})
    assert out == {"removed": [sel_a.target_repository, sel_b.target_repository], "failed": {}}
    assert gone(dr_oci, sel_a, cat_a) and gone(dr_oci, sel_b, cat_b)
    # the repository outside the prefix is whole: tag, manifest, blobs
    assert dr_oci.head_manifest(keep, "prod") == kept.manifest.digest
    for digest, data in kept.blobs.items():
        assert dr_oci.get_blob(keep, digest) == data
    # an emptied scratch name (the distribution API cannot delete it) counts as free
    assert not set(drill.occupied(dr_oci, PREFIX)) & {sel_a.target_repository, sel_b.target_repository}


def test_cleanup_without_the_catalog_removes_what_the_target_lists(dr_oci):
    """The snapshot unreadable at cleanup time: what the target lists goes. The distribution API
    lists no untagged manifest (the referrer here), so that one stays (documented residue)."""
    _, sel, (app, multi, sbom) = filled(dr_oci)
    out = drill.cleanup(None, None, plan_of(dr_oci, sel), target=dr_oci, catalogs={})
    assert out["removed"] == [sel.target_repository]
    repo = sel.target_repository
    assert dr_oci.list_tags(repo) == []
    listed = [app, multi, *multi.children]
    assert all(dr_oci.head_manifest(repo, i.manifest.digest) is None for i in listed)
    assert all(dr_oci.head_blob(repo, d) is None for i in listed for d in blobs_of(i))
    assert dr_oci.head_manifest(repo, sbom.manifest.digest) == sbom.manifest.digest


def test_cleanup_refuses_a_plan_naming_a_repository_outside_the_prefix(dr_oci):
    """A plan that was tampered with (it travels between tasks as JSON) removes nothing at all."""
    catalog, sel, _ = filled(dr_oci)
    keep = f"keep/{uuid.uuid4().hex[:8]}"
    kept = image(keep)
    push(dr_oci, keep, kept, "prod")
    bad = Selection("src", "x", keep)
    with pytest.raises(DrillError, match=rf"refusing to remove oci-dr/{keep}: not a scratch repository"):
        drill.cleanup(None, None, plan_of(dr_oci, sel, bad), target=dr_oci, catalogs={"src": catalog})
    assert dr_oci.head_manifest(keep, "prod") == kept.manifest.digest
    assert dr_oci.head_manifest(sel.target_repository, "1.0") is not None  # checked before any removal


def test_occupied_names_the_scratch_repositories_that_hold_something(dr_oci):
    _, sel, _ = filled(dr_oci)
    outside = f"keep/{uuid.uuid4().hex[:8]}"
    push(dr_oci, outside, image(outside), "prod")
    held = drill.occupied(dr_oci, PREFIX)
    assert sel.target_repository in held and outside not in held


def test_cleanup_of_a_layout_target_removes_its_folders_only(layout):
    keep = "keep/app"
    push(layout, keep, image("kept"), "prod")
    catalog, sel, _ = filled(layout)
    out = drill.cleanup(None, None, plan_of(layout, sel), target=layout, catalogs={"src": catalog})
    assert out["removed"] == [sel.target_repository]
    assert layout.list_repositories() == [keep]
    assert not (layout.root / PREFIX).exists()  # the empty folders it made went too
    assert layout.head_manifest(keep, "prod") is not None


# -- sampling, Params ------------------------------------------------------------------------------
PAIRS = [("ecr-local", f"team/app{i:02d}") for i in range(20)] + [
    ("oci-local", f"svc/{i}") for i in range(10)
]


def test_a_sample_is_the_same_for_the_same_seed_and_stable_when_the_fleet_grows():
    one = drill.sample_repositories(PAIRS, 7, "20261128T020000Z")
    assert len(one) == 7 and set(one) <= set(PAIRS)
    assert drill.sample_repositories(list(reversed(PAIRS)), 7, "20261128T020000Z") == one
    assert drill.sample_repositories(PAIRS, 7, "20260101T020000Z") != one
    grown = drill.sample_repositories([*PAIRS, ("oci-local", "new")], 7, "20261128T020000Z")
    assert len(set(grown) - set(one)) <= 1  # at most the new one took a place
    assert drill.sample_repositories(PAIRS, None, "x") == sorted(PAIRS)
    assert drill.sample_repositories(PAIRS, 99, "x") == sorted(PAIRS)


@pytest.mark.parametrize(
    ("value", "expected"), [("all", None), ("ALL", None), (None, 5), ("", 5), (3, 3), ("12", 12)]
)
def test_sample_values(value, expected):
    assert drill.parse_sample(value, default=5) == expected


@pytest.mark.parametrize("value", [0, -1, "zero", "1.5", 2.5, True, [3]])
def test_bad_samples_are_refused_naming_the_value(value):
    with pytest.raises(DrillError, match=r"sample .*give 'all' or a number of repositories"):
        drill.parse_sample(value)
