"""restore_catalog on the real local services: a distribution registry of its own (wiped and
restarted), moto ECR, OCI layout directories. The snapshot is a catalog read from the live
registry with its bytes in memory (``catalog_of``), so these tests hold the restore engine on
its own; ``test_restore_registry_store.py`` runs it from real backups in the S3 store."""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import partial

import boto3
import pytest

from devstack.fleet import make_fleet
from devstack.seed import seed_ecr, seed_oci
from devstack.services import RegistryService
from include.registry_ops.backup.restore import RestoreRefused, restore_catalog, settings_change
from include.registry_ops.registries.base import Manifest, RepositorySettings
from include.registry_ops.registries.ecr import EcrRegistry
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from tests.backup.test_restore_registry_support import Crash, Writes, catalog_of, contents, unique
from tests.conftest import OCI_PASSWORD, OCI_USER
from tests.registries.images import image, push

LIFECYCLE = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 400,
                },
                "action": {"type": "expire"},
            }
        ]
    }
)
POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "pull",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": ["ecr:BatchGetImage"],
            }
        ],
    }
)


def small(prefix: str, seed: int, repositories: int = 3, images: int = 24):
    return make_fleet(seed=seed, repositories=repositories, images=images, layer_scale=0.001, prefix=prefix)


def ecr_reg(moto_server) -> EcrRegistry:
    return EcrRegistry(
        "ecr-local", boto3.client("ecr", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    )


def oci_reg(registry_server) -> OciRegistry:
    return OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD)


def assert_restored(target, catalog, source, rename=lambda n: n) -> None:
    """Every manifest of the catalog in the target with its exact bytes, every blob with its
    size, every tag on its digest."""
    for repo in catalog.repositories:
        name = rename(repo.name)
        for m in repo.manifests:
            assert target.get_manifest(name, m.digest).raw == source.data[m.digest], (name, m.digest)
            for b in m.blobs():
                assert target.head_blob(name, b) == catalog.blob_sizes[b], (name, b)
        for tag, digest in repo.tags.items():
            head = target.head_manifest(name, tag)
            assert head is not None and head.digest == digest, (name, tag)


@pytest.fixture(scope="module")
def dr_registry(tmp_path_factory):
    """A distribution registry of this module's own: wiping it leaves the session's alone."""
    service = RegistryService(root=tmp_path_factory.mktemp("dr-registry")).start()
    yield service
    service.stop()


def wipe(service: RegistryService) -> None:
    """The disaster of the issue: the registry's storage directory removed, the registry restarted."""
    service.stop()
    shutil.rmtree(service.root / "data", ignore_errors=True)
    service.start()


def test_a_wiped_distribution_registry_comes_back_bit_exact_and_a_rerun_writes_nothing(dr_registry):
    oci = OciRegistry("oci-dr", dr_registry.url)
    fleet = small(unique("rr-oci"), seed=5, repositories=4, images=40)
    seed_oci(oci, fleet)
    repos = [r.name for r in fleet]
    before = contents(oci, repos)
    catalog, source = catalog_of(oci, repos)

    wipe(dr_registry)
    oci = OciRegistry("oci-dr", dr_registry.url)
    assert oci.list_repositories() == []
    result = restore_catalog(catalog, source, oci)

    assert result["failures"] == {} and result["failed_images"] == {}
    assert contents(oci, repos) == before  # every digest back with its bytes, every tag, every blob
    assert_restored(oci, catalog, source)
    n_manifests = len({m.digest for r in catalog.repositories for m in r.manifests})
    assert result["manifests"] == result["manifests_verified"] == n_manifests
    assert result["tags"] == sum(len(r.tags) for r in catalog.repositories)
    assert result["blobs_mounted"] > 0  # base layers shared between repositories are mounted
    placed = sum(len({b for m in r.manifests for b in m.blobs()}) for r in catalog.repositories)
    assert result["blobs"] == placed and result["bytes"] > 0
    assert result["repositories"] == len(repos) and result["seconds"] > 0

    writes = Writes(oci)
    again = restore_catalog(catalog, source, oci)
    assert writes.calls == []  # every write was checked first: nothing twice
    assert again["manifests"] == again["blobs"] == again["tags"] == 0
    assert again["manifests_present"] == n_manifests and again["blobs_present"] == placed
    assert again["failures"] == {}


def _set_settings(reg: EcrRegistry, repos: list[str]) -> str:
    """Settings on the first repository, and a repository with tag-mutability exclusions holding
    only tagged images (moto's PutImage fails on an untagged push under exclusion filters;
    AWS does not): its name, to restore with the others."""
    reg.apply_repository_settings(
        repos[0],
        RepositorySettings(
            scan_on_push=True,
            tag_mutability="IMMUTABLE",
            lifecycle_policy=LIFECYCLE,
            repository_policy=POLICY,
            resource_tags={"team": "core", "cost": "ci"},
        ),
    )
    extra = repos[0].rsplit("/", 2)[0] + "/excluded/app"
    reg.create_repository(extra)
    for n in range(3):
        img = image(f"{extra}-{n}")
        for digest, data in img.blobs.items():
            reg.put_blob(extra, data, digest, len(data))
        reg.put_manifest(extra, img.manifest, f"release-{n}")
    reg.apply_repository_settings(
        extra,
        RepositorySettings(tag_mutability="MUTABLE_WITH_EXCLUSION", tag_mutability_exclusions=("release-*",)),
    )
    return extra


def test_deleted_ecr_repositories_come_back_with_images_tags_and_settings(moto_server, ecr):
    reg = ecr_reg(moto_server)
    fleet = small(unique("rr-ecr"), seed=6, repositories=3, images=30)
    seed_ecr(ecr, fleet)
    repos = [r.name for r in fleet]
    repos.append(_set_settings(reg, repos))
    before = contents(reg, repos)
    settings = {r: reg.describe_repository(r) for r in repos}
    catalog, source = catalog_of(reg, repos)
    untagged = [m for r in catalog.repositories for m in r.manifests if m.digest not in r.tags.values()]
    assert untagged  # untagged manifests (index children, untagged images) are in the snapshot

    for name in repos:
        ecr.delete_repository(repositoryName=name, force=True)
    reg = ecr_reg(moto_server)
    result = restore_catalog(catalog, source, reg)

    assert result["failures"] == {}
    assert result["repositories_created"] == len(repos)
    assert contents(reg, repos) == before
    for name in repos:
        got = reg.describe_repository(name)
        assert settings_change(settings[name], got) is None, name
        assert {**got.as_dict(), "created_at": None} == {**settings[name].as_dict(), "created_at": None}
    assert result["settings"][repos[0]]["applied"]
    writes = Writes(reg)
    again = restore_catalog(catalog, source, reg)
    assert writes.calls == [] and again["failures"] == {}  # settings compared, not re-applied

    reg.apply_repository_settings(
        repos[0], RepositorySettings(scan_on_push=False, resource_tags={"team": "x"})
    )
    changed = reg.describe_repository(repos[0])
    writes = Writes(reg)
    dry = restore_catalog(catalog, source, reg, dry_run=True)
    assert writes.calls == [] and reg.describe_repository(repos[0]) == changed
    assert dry["settings"][repos[0]]["applied"] == ["resource_tags", "scan_on_push"]
    deaf = ecr_reg(moto_server)
    deaf.apply_repository_settings = lambda repository, settings: []  # acknowledged, nothing changed
    ignored = restore_catalog(catalog, source, deaf)
    assert "settings did not take: resource_tags, scan_on_push" in ignored["failures"][repos[0]]
    fixed = restore_catalog(catalog, source, reg)
    assert [c[0] for c in writes.calls] == ["apply_repository_settings"] and fixed["failures"] == {}
    assert settings_change(settings[repos[0]], reg.describe_repository(repos[0])) is None


def test_an_ecr_registry_restores_into_a_distribution_registry(moto_server, ecr, registry_server):
    reg = ecr_reg(moto_server)
    fleet = small(unique("rr-e2o"), seed=7, repositories=2, images=20)
    seed_ecr(ecr, fleet)
    repos = [r.name for r in fleet]
    _set_settings(reg, repos)
    catalog, source = catalog_of(reg, repos)
    target = oci_reg(registry_server)
    result = restore_catalog(catalog, source, target, rename=lambda n: "to-oci/" + n)
    assert result["failures"] == {}
    assert_restored(target, catalog, source, rename=lambda n: "to-oci/" + n)
    assert result["renamed"] == {n: "to-oci/" + n for n in repos}
    # ECR settings have no home in a distribution registry: said, not failed
    assert "tag_mutability" in result["settings"]["to-oci/" + repos[0]]["not_held"]


def test_a_distribution_registry_restores_into_ecr(moto_server, registry_server):
    oci = oci_reg(registry_server)
    fleet = small(unique("rr-o2e"), seed=8, repositories=2, images=20)
    seed_oci(oci, fleet)
    repos = [r.name for r in fleet]
    catalog, source = catalog_of(oci, repos)
    target = ecr_reg(moto_server)
    result = restore_catalog(catalog, source, target, rename=lambda n: "from-oci/" + n)
    assert result["failures"] == {} and result["repositories_created"] == 2
    assert_restored(target, catalog, source, rename=lambda n: "from-oci/" + n)
    assert result["tags"] == sum(len(r.tags) for r in catalog.repositories)


@pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo comes with `make`")
@pytest.mark.parametrize("kind", ["ecr", "oci"])
def test_either_kind_restores_into_an_oci_layout_that_skopeo_reads(
    kind, moto_server, ecr, registry_server, tmp_path
):
    if kind == "ecr":
        src = ecr_reg(moto_server)
        fleet = small(unique("rr-e2l"), seed=9, repositories=2, images=12)
        seed_ecr(ecr, fleet)
    else:
        src = oci_reg(registry_server)
        fleet = small(unique("rr-o2l"), seed=10, repositories=2, images=12)
        seed_oci(src, fleet)
    catalog, source = catalog_of(src, [r.name for r in fleet])
    layout = OciLayoutRegistry("dr-layout", tmp_path)
    result = restore_catalog(catalog, source, layout)
    assert result["failures"] == {}
    assert_restored(layout, catalog, source)
    for repo in catalog.repositories:
        tag, digest = sorted(repo.tags.items())[0]
        directory = tmp_path / repo.name
        out = subprocess.run(
            ["skopeo", "inspect", "--raw", f"oci:{directory}:{tag}"],
            capture_output=True,
            timeout=60,
            check=True,
        )
        assert out.stdout == source.data[digest]
        meta = json.loads(
            subprocess.run(
                ["skopeo", "inspect", f"oci:{directory}:{tag}"], capture_output=True, timeout=60, check=True
            ).stdout
        )
        assert meta["Digest"] == digest


@pytest.mark.parametrize("stop_on", ["put_blob", "put_manifest"])
def test_a_crash_midway_then_a_rerun_finishes_and_writes_nothing_twice(stop_on, registry_server):
    oci = oci_reg(registry_server)
    fleet = small(unique("rr-crash"), seed=12, repositories=2, images=24)
    seed_oci(oci, fleet)
    catalog, source = catalog_of(oci, [r.name for r in fleet])
    to = unique("rr-crashed")

    first = oci_reg(registry_server)
    crashed = Writes(first, stop_on=stop_on, stop_after=7)
    with pytest.raises(Crash):
        restore_catalog(catalog, source, first, rename=lambda n: to + n)
    assert len(crashed.of(stop_on)) == 7

    second = oci_reg(registry_server)
    rerun = Writes(second)
    result = restore_catalog(catalog, source, second, rename=lambda n: to + n)  # no --force needed
    assert result["failures"] == {}
    assert_restored(second, catalog, source, rename=lambda n: to + n)
    done = [c for c in crashed.calls + rerun.calls if c[0] in ("put_blob", "put_manifest")]
    assert len(done) == len(set(done))  # nothing written twice
    assert not set(crashed.of(stop_on)) & set(rerun.of(stop_on))
    assert result["manifests_present"] + result["manifests"] == len(
        {m.digest for r in catalog.repositories for m in r.manifests}
    )


@pytest.mark.parametrize("stop_on", ["put_blob", "put_manifest"])
def test_a_rerun_checks_what_a_registry_holds_even_where_its_catalog_does_not_list_it(
    stop_on, registry_server
):
    """Some registries' catalogs lag or list nothing: a repository missing from the listing is not
    taken for empty (only on kinds that create repositories explicitly, ECR, is that sure)."""
    oci = oci_reg(registry_server)
    fleet = small(unique("rr-nocat"), seed=19, repositories=1, images=8)
    seed_oci(oci, fleet)
    catalog, source = catalog_of(oci, [fleet[0].name])
    to = unique("rr-nocat-to")
    first = oci_reg(registry_server)
    crashed = Writes(first, stop_on=stop_on, stop_after=3)  # put_blob: no tag shows it was there
    with pytest.raises(Crash):
        restore_catalog(catalog, source, first, rename=lambda n: to + n)
    second = oci_reg(registry_server)
    second.list_repositories = lambda: []  # a catalog that does not list it
    rerun = Writes(second)
    result = restore_catalog(catalog, source, second, rename=lambda n: to + n)
    assert result["failures"] == {} and result["blobs_present"] == len(crashed.of("put_blob"))
    done = [c for c in crashed.calls + rerun.calls if c[0] in ("put_blob", "put_manifest")]
    assert len(done) == len(set(done))


def test_a_dry_run_writes_nothing_and_counts_what_the_restore_writes(registry_server, tmp_path):
    oci = oci_reg(registry_server)
    fleet = small(unique("rr-dry"), seed=13, repositories=2, images=16)
    seed_oci(oci, fleet)
    catalog, source = catalog_of(oci, [r.name for r in fleet])
    for target in (oci_reg(registry_server), OciLayoutRegistry("dr-layout", tmp_path)):
        to = unique("rr-dry-to")
        rename = partial(str.__add__, to)
        writes = Writes(target)
        dry = restore_catalog(catalog, source, target, rename=rename, dry_run=True)
        assert writes.calls == [] and list(tmp_path.iterdir()) == []
        assert dry["dry_run"] is True and dry["failures"] == {}
        real = restore_catalog(catalog, source, target, rename=rename)
        for key in ("repositories_created", "manifests", "blobs", "tags"):
            assert dry[key] == real[key] > 0, key
        assert dry["bytes"] >= real["bytes"]  # mounted blobs move no bytes


def test_a_target_holding_other_content_is_refused_without_force(registry_server):
    oci = oci_reg(registry_server)
    fleet = small(unique("rr-busy"), seed=14, repositories=2, images=10)
    seed_oci(oci, fleet)
    catalog, source = catalog_of(oci, [r.name for r in fleet])
    repo = catalog.repositories[1]
    tag, digest = sorted(repo.tags.items())[0]
    other = next(
        m for m in repo.manifests if m.digest != digest and m.media_type.endswith("manifest.v1+json")
    )
    oci.put_manifest(repo.name, Manifest(other.digest, other.media_type, source.data[other.digest]), tag)
    before = contents(oci, [r.name for r in fleet])

    target = oci_reg(registry_server)
    writes = Writes(target)
    with pytest.raises(RestoreRefused) as err:
        restore_catalog(catalog, source, target)
    assert writes.calls == [] and contents(oci, [r.name for r in fleet]) == before
    assert repo.name in str(err.value) and repr(tag) in str(err.value) and "--force" in str(err.value)

    forced = restore_catalog(catalog, source, target, force=True)
    assert forced["failures"] == {} and forced["tags"] == 1  # only the moved tag is written
    assert target.head_manifest(repo.name, tag).digest == digest


def test_an_untagged_manifest_of_another_image_in_the_target_is_other_content(registry_server, tmp_path):
    """Where the kind lists untagged manifests (a layout, ECR), one the snapshot lacks is found."""
    oci = oci_reg(registry_server)
    fleet = small(unique("rr-untagged"), seed=18, repositories=1, images=6)
    seed_oci(oci, fleet)
    catalog, source = catalog_of(oci, [fleet[0].name])
    layout = OciLayoutRegistry("dr-layout", tmp_path)
    stranger = push(layout, fleet[0].name, image("untagged-stranger"))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    writes = Writes(layout)
    with pytest.raises(RestoreRefused, match=f"manifest {stranger.digest}"):
        restore_catalog(catalog, source, layout)
    assert writes.calls == [] and sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_manifest_the_target_acknowledges_but_does_not_keep_is_a_named_failure(registry_server):
    oci = oci_reg(registry_server)
    fleet = small(unique("rr-lie"), seed=15, repositories=2, images=12)  # one repository of indexes
    seed_oci(oci, fleet)
    catalog, source = catalog_of(oci, [r.name for r in fleet])
    repo = next(r for r in catalog.repositories if any(m.children for m in r.manifests))
    other = next(r for r in catalog.repositories if r is not repo)
    index = next(m for m in repo.manifests if m.children and m.digest in repo.tags.values())
    lost = index.children[0]
    lied_tag, tagged = sorted(other.tags.items())[0]
    used = {d for m in other.manifests for d in (*m.children, m.subject)}  # nothing builds on it
    renamed = next(
        m.digest
        for m in other.manifests
        if m.digest != tagged and m.digest in other.tags.values() and m.digest not in used
    )
    target = oci_reg(registry_server)
    put = target.put_manifest

    def lying_put(repository, manifest, tag=None):
        if manifest.digest == lost:
            return manifest.digest  # acknowledged, never stored
        if tag == lied_tag:
            return put(repository, manifest)  # stored, but the tag never set
        if manifest.digest == renamed:
            put(repository, manifest, tag)
            return "sha256:" + "0" * 64  # stored, but the registry says it stored something else
        return put(repository, manifest, tag)

    target.put_manifest = lying_put
    to = unique("rr-lied")
    result = restore_catalog(catalog, source, target, rename=lambda n: to + n)
    assert "reads back absent" in result["failures"][lost]
    assert "needs " + lost in result["failures"][index.digest]  # the index is not written over it
    assert (
        lost in result["failed_images"][to + repo.name]
        and index.digest in result["failed_images"][to + repo.name]
    )
    assert target.head_manifest(to + repo.name, index.digest) is None
    tags = [t for t, d in repo.tags.items() if d == index.digest]
    assert all(target.head_manifest(to + repo.name, t) is None for t in tags)
    assert all(target.head_manifest(to + other.name, m.digest) for m in other.manifests)
    assert f"tag {lied_tag!r} reads back None" in result["failures"][tagged]
    assert f"stored {renamed} as sha256:{'0' * 64}" in result["failures"][renamed]


def test_a_corrupt_or_missing_backup_object_is_named_and_the_other_images_go_on(registry_server):
    oci = oci_reg(registry_server)
    fleet = small(unique("rr-rot"), seed=16, repositories=2, images=12)
    seed_oci(oci, fleet)
    catalog, source = catalog_of(oci, [r.name for r in fleet])
    repo, victim = next(
        (r, m)
        for r in catalog.repositories
        for m in r.manifests
        if m.digest in r.tags.values() and m.layers and not m.subject
    )
    rest = next(r for r in catalog.repositories if r is not repo)
    layer = victim.layers[-1]  # the image's own layer
    source.layers[layer] = source.layers[layer][:-1] + b"!"
    config_gone = None
    for m in rest.manifests:
        if m.config and sum(m.config in x.blobs() for x in rest.manifests) == 1:
            config_gone, config_user = m.config, m.digest
            break
    del source.data[config_gone]
    rotten = next(
        m
        for m in rest.manifests
        if m.digest in rest.tags.values() and config_user not in (m.digest, m.subject, *m.children)
    )
    rotten_tags = sorted(t for t, d in rest.tags.items() if d == rotten.digest)
    source.data[rotten.digest] = source.data[rotten.digest].replace(b"}", b" }", 1)  # still JSON

    target = oci_reg(registry_server)
    to = unique("rr-rotted")
    result = restore_catalog(catalog, source, target, rename=lambda n: to + n)
    assert set(result["failures"]) >= {layer, victim.digest, config_gone, config_user, rotten.digest}
    assert f"{to}{repo.name}@{victim.digest}" in result["failures"][layer]
    assert "hashes to" in result["failures"][layer] or "digest" in result["failures"][layer].lower()
    assert f"needs {layer}" in result["failures"][victim.digest]  # not sent to the registry at all
    assert "missing" in result["failures"][config_gone]
    # a manifest whose stored bytes do not hash to its digest is never sent, not even under a tag
    assert "the stored bytes hash to" in result["failures"][rotten.digest]
    assert all(target.head_manifest(to + rest.name, t) is None for t in rotten_tags)
    assert target.head_blob(to + repo.name, layer) is None  # damage is never copied
    ok = [m for m in repo.manifests if victim.digest not in (m.digest, m.subject) and layer not in m.blobs()]
    assert ok and all(target.head_manifest(to + repo.name, m.digest) for m in ok)


def test_a_layer_the_backup_lacks_comes_from_the_target_or_is_named(registry_server):
    oci = oci_reg(registry_server)
    fleet = small(unique("rr-meta"), seed=17, repositories=1, images=8)
    seed_oci(oci, fleet)
    name = fleet[0].name
    catalog, source = catalog_of(oci, [name], layers=False)  # a metadata backup
    result = restore_catalog(catalog, source, oci_reg(registry_server))  # into itself
    assert result["failures"] == {} and result["blobs"] == 0  # every layer already there

    to = unique("rr-meta-to")
    result = restore_catalog(catalog, source, oci_reg(registry_server), rename=lambda n: to + n)
    layer = next(iter(sorted(b for r in catalog.repositories for m in r.manifests for b in m.layers)))
    assert "in neither the backup nor the target" in result["failures"][layer]
    assert result["failed_images"][to + name]
