"""Executor against the real moto server and distribution registry: archive, verify, delete,
dry runs, caps, per-repository failures, fresh looks and untagging."""

from __future__ import annotations

import io
import json
import tarfile

import pandas as pd
import pytest

from include.registry_ops.registries.ecr import EcrRegistry
from include.registry_ops.retention import audit
from include.registry_ops.retention.archive import ArchiveError, ArchiveStore
from include.registry_ops.retention.executor import Limits, apply_repository, execute, stops
from tests.retention_exec.helpers import (
    BUCKET,
    oldest_images,
    plan_for,
    present,
    run_ctx,
    seed,
    small_fleet,
    tags_now,
    unique,
    visible,
    with_children,
)

NO_CAPS = Limits(max_deletions_per_run=10_000, max_fraction=1.0)


def _keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for p in pages for o in p.get("Contents", [])]


def test_archive_is_read_back_then_images_are_deleted(any_reg, ret_s3):
    fleet = seed(any_reg, small_fleet(unique()))
    repo = fleet[1]  # multi-arch: indexes with children
    specs = visible(any_reg, repo)
    chosen = oldest_images(specs, 3)
    expire = with_children(specs, chosen)
    assert any(m.kind == "index" for m in chosen) and len(expire) > len(chosen)
    run = run_ctx(ret_s3)
    plan = plan_for(any_reg.name, repo, specs, expire)

    [result] = execute(plan, run, lambda _: any_reg, limits=NO_CAPS)

    assert result["status"] == "done", result
    assert result["deleted"] == len(expire) and result["failed"] == 0
    assert result["bytes_deleted"] == sum(m.size for m in specs if m.digest in expire)
    for m in specs:
        assert present(any_reg, repo.name, m.digest) == (m.digest not in expire), m.digest
    # one catalog, and its pack holds every expired manifest byte for byte
    store = run.store
    [entry_doc] = [store.read_catalog(k) for k in store.catalog_keys(any_reg.name, repo.name)]
    entries = {e["digest"]: e for e in entry_doc["images"]}
    assert set(entries) == expire
    pack = ret_s3.get_object(Bucket=BUCKET, Key=entry_doc["pack"])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(pack)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for m in specs:
        if m.digest in expire:
            assert members[f"blobs/sha256/{m.digest[7:]}"] == m.raw
            assert store.read_member(entries[m.digest]["manifest"]) == m.raw
    for index in (m for m in chosen if m.kind == "index"):
        assert {c["digest"] for c in entries[index.digest]["children"]} == set(index.children)
    first = entries[chosen[0].digest]
    assert first["tags"] == chosen[0].tags and first["rule_priority"] == 1
    assert first["reason"] == "rule 1 (test): expire" and first["run_id"] == run.run_id
    if any_reg.kind == "oci":  # the registry serves config blobs: they are in the pack too
        image = next(m for m in specs if m.digest in expire and m.kind == "image")
        config = next(b for b in entries[image.digest]["blobs"] if b["role"] == "config")
        assert store.read_member(config) == image.blobs[0].data
    # one audit record per action, in S3 and naming the archive
    records = audit.read_audit(ret_s3, BUCKET, result["audit_key"])
    assert len(records) == len(expire)
    assert {r["result"] for r in records} == {"deleted"}
    assert all(r["archive_key"] == entry_doc["images"][0]["catalog"] for r in records)


def test_an_archive_that_does_not_verify_blocks_the_delete(ecr_reg, ret_s3, monkeypatch):
    fleet = seed(ecr_reg, small_fleet(unique(), repositories=1))
    repo = fleet[0]
    specs = visible(ecr_reg, repo)
    expire = with_children(specs, oldest_images(specs, 4))
    run = run_ctx(ret_s3)
    real_get = ArchiveStore._get

    def corrupting_get(self, key, byte_range=None):
        data = real_get(self, key, byte_range)
        if not data or not key.endswith(".tar"):
            return data
        mid = len(data) // 3  # inside a member (the tail of a tar is zero padding)
        return data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]

    monkeypatch.setattr(ArchiveStore, "_get", corrupting_get)
    [result] = execute(plan_for(ecr_reg.name, repo, specs, expire), run, lambda _: ecr_reg, limits=NO_CAPS)
    assert result["status"] == "failed" and result["deleted"] == 0
    assert "ArchiveError" in result["message"] and "does not hash" in result["message"]
    assert all(present(ecr_reg, repo.name, d) for d in expire)
    assert ArchiveError.__name__ in result["message"]


def test_dry_run_deletes_nothing_and_writes_no_archive(any_reg, ret_s3):
    fleet = seed(any_reg, small_fleet(unique(), repositories=1))
    repo = fleet[0]
    specs = visible(any_reg, repo)
    expire = with_children(specs, oldest_images(specs, 4))
    for run, plan in (
        (run_ctx(ret_s3, dry_run=True), plan_for(any_reg.name, repo, specs, expire)),  # the run's flag
        (run_ctx(ret_s3), plan_for(any_reg.name, repo, specs, expire, dry_run=True)),  # the policy's
    ):
        before = any_reg.requests.total
        [result] = execute(plan, run, lambda _: any_reg, limits=NO_CAPS)
        assert result["status"] == "done" and result["would_delete"] == len(expire) and result["deleted"] == 0
        assert any_reg.requests.total == before  # not a single registry call
        records = audit.read_audit(ret_s3, BUCKET, result["audit_key"])
        assert {r["result"] for r in records} == {"would_delete"} and all(r["dry_run"] for r in records)
    assert all(present(any_reg, repo.name, d) for d in expire)
    assert _keys(ret_s3, run.store.catalog_prefix(any_reg.name, repo.name)) == []


def test_caps_stop_that_repository_and_the_others_go_on(ecr_reg, ret_s3):
    fleet = seed(ecr_reg, small_fleet(unique(), repositories=3, images=36))
    plans, expected = [], {}
    for repo, share in zip(fleet, (0.8, 0.3, 0.4), strict=True):
        specs = visible(ecr_reg, repo)
        tops = oldest_images(specs, len(specs))
        chosen = []
        for m in tops:  # grow the expire set up to the wanted share of the repository
            if len(with_children(specs, [*chosen, m])) > share * len(specs):
                break
            chosen.append(m)
        expire = with_children(specs, chosen)
        expected[repo.name] = expire
        plans.append(plan_for(ecr_reg.name, repo, specs, expire))
    plan = pd.concat(plans, ignore_index=True)
    budget = len(expected[fleet[1].name]) + 1  # room for repository 1, not for 2 as well
    limits = Limits(max_deletions_per_run=budget, max_fraction=0.5)

    halted = stops(plan, limits)
    assert set(halted) == {(ecr_reg.name, fleet[0].name), (ecr_reg.name, fleet[2].name)}
    results = {r["repository"]: r for r in execute(plan, run_ctx(ret_s3), lambda _: ecr_reg, limits=limits)}

    first, second, third = (results[r.name] for r in fleet)
    assert first["status"] == "stopped" and "over the cap of 50% of a repository" in first["message"]
    assert third["status"] == "stopped" and "max_deletions_per_run" in third["message"]
    assert second["status"] == "done" and second["deleted"] == len(expected[fleet[1].name])
    for repo in (fleet[0], fleet[2]):
        assert all(present(ecr_reg, repo.name, d) for d in expected[repo.name])
        records = audit.read_audit(ret_s3, BUCKET, results[repo.name]["audit_key"])
        assert {r["result"] for r in records} == {"stopped"}
    summary = audit.summarize(list(results.values()), 0.10, dry_run=False)
    assert summary["repositories_stopped"] == sorted(f"{ecr_reg.name}/{r.name}" for r in (fleet[0], fleet[2]))


def test_one_failing_repository_does_not_stop_the_others(ecr_reg, ret_s3):
    fleet = seed(ecr_reg, small_fleet(unique(), repositories=1))
    repo = fleet[0]
    specs = visible(ecr_reg, repo)
    expire = with_children(specs, oldest_images(specs, 2))
    ghost = plan_for(ecr_reg.name, repo, specs, expire)
    ghost["repository"] = repo.name + "-missing"
    plan = pd.concat([ghost, plan_for(ecr_reg.name, repo, specs, expire)], ignore_index=True)
    results = {r["repository"]: r for r in execute(plan, run_ctx(ret_s3), lambda _: ecr_reg, limits=NO_CAPS)}
    assert results[repo.name]["status"] == "done" and results[repo.name]["deleted"] == len(expire)
    bad = results[repo.name + "-missing"]
    assert bad["status"] == "failed" and "RepositoryNotFoundException" in bad["message"]
    assert f"{ecr_reg.name}/{repo.name}-missing" in bad["message"]


def test_an_image_tagged_since_the_plan_is_left_alone(ecr_reg, ret_s3):
    fleet = seed(ecr_reg, small_fleet(unique(), repositories=1))
    repo = fleet[0]
    specs = visible(ecr_reg, repo)
    chosen = oldest_images(specs, 3)
    plan = plan_for(ecr_reg.name, repo, specs, with_children(specs, chosen))
    from include.registry_ops.registries.base import Manifest

    promoted = chosen[0]
    ecr_reg.put_manifest(repo.name, Manifest(promoted.digest, promoted.media_type, promoted.raw), "hotfix")
    [result] = execute(plan, run_ctx(ret_s3), lambda _: ecr_reg, limits=NO_CAPS)
    records = {r["digest"]: r for r in audit.read_audit(ret_s3, BUCKET, result["audit_key"])}
    assert records[promoted.digest]["result"] == "skipped" and "hotfix" in records[promoted.digest]["detail"]
    assert present(ecr_reg, repo.name, promoted.digest)
    assert all(records[m.digest]["result"] == "deleted" for m in chosen[1:])


def test_untag_on_ecr_removes_only_those_tags_and_never_the_last(ecr_reg, oci_reg, ret_s3):
    fleet = small_fleet(unique(), repositories=1)
    seed(ecr_reg, fleet)
    repo = fleet[0]
    specs = visible(ecr_reg, repo)
    two = [m for m in specs if len(m.tags) >= 2 and m.kind == "image"][:2]
    partial, whole = two
    plan = plan_for(
        ecr_reg.name, repo, specs, set(), untag={partial.digest: partial.tags[:1], whole.digest: whole.tags}
    )
    [result] = execute(plan, run_ctx(ret_s3), lambda _: ecr_reg, limits=NO_CAPS)
    now = tags_now(ecr_reg, repo.name)
    assert now[partial.digest] == set(partial.tags[1:])
    assert now[whole.digest] == set(whole.tags)
    records = {r["digest"]: r for r in audit.read_audit(ret_s3, BUCKET, result["audit_key"])}
    assert records[partial.digest]["result"] == "untagged"
    assert records[partial.digest]["tags_removed"] == partial.tags[:1]
    assert records[whole.digest]["result"] == "skipped" and "last tag" in records[whole.digest]["detail"]
    assert result["status"] == "done" and result["untagged"] == 1


def test_untag_on_the_distribution_registry_removes_tags_and_keeps_the_images(oci_reg, ret_s3):
    """Formerly "reported unsupported": ``OciRegistry.delete_tag`` removes one tag now (a throwaway
    manifest pushed to the tag, then deleted), and the manifest stays
    (``untag_keeps_manifest``), so the untag step runs here too, an image's last tag included."""
    fleet = seed(oci_reg, small_fleet(unique(), repositories=1))
    repo = fleet[0]
    specs = visible(oci_reg, repo)
    partial, whole = [m for m in specs if len(m.tags) >= 2 and m.kind == "image"][:2]
    untag = {partial.digest: partial.tags[:1], whole.digest: whole.tags}
    plan = plan_for(oci_reg.name, repo, specs, set(), untag=untag)
    [result] = execute(plan, run_ctx(ret_s3), lambda _: oci_reg, limits=NO_CAPS)
    assert result["status"] == "done" and result["untagged"] == 2 and result["unsupported"] == 0
    now = tags_now(oci_reg, repo.name)
    assert now[partial.digest] == set(partial.tags[1:])  # the tag is gone, the others stay
    assert whole.digest not in now  # every tag gone ...
    for m in (partial, whole):  # ... and the manifests are still there, bit for bit
        assert oci_reg.get_manifest(repo.name, m.digest).raw == m.raw
    for m in specs:  # no other image lost a tag
        if m.tags and m.digest not in untag:
            assert now[m.digest] == set(m.tags), m.digest
    records = {r["digest"]: r for r in audit.read_audit(ret_s3, BUCKET, result["audit_key"])}
    assert records[partial.digest]["result"] == "untagged"
    assert records[partial.digest]["tags_removed"] == partial.tags[:1]
    assert records[whole.digest]["result"] == "untagged"
    assert sorted(records[whole.digest]["tags_removed"]) == sorted(whole.tags)


def test_journal_marks_the_repository_done_and_a_rerun_does_nothing(ecr_reg, ret_s3):
    fleet = seed(ecr_reg, small_fleet(unique(), repositories=1))
    repo = fleet[0]
    specs = visible(ecr_reg, repo)
    plan = plan_for(ecr_reg.name, repo, specs, with_children(specs, oldest_images(specs, 3)))
    run = run_ctx(ret_s3)
    first = apply_repository(run, ecr_reg, plan)
    calls = ecr_reg.requests.total
    again = apply_repository(run, ecr_reg, plan)
    assert ecr_reg.requests.total == calls  # the journal says done: no registry call at all
    assert {k: again[k] for k in ("deleted", "status")} == {k: first[k] for k in ("deleted", "status")}
    journal = json.loads(
        ret_s3.get_object(
            Bucket=BUCKET, Key=audit.journal_key(run.runs_prefix, run.run_id, ecr_reg.name, repo.name)
        )["Body"].read()
    )
    assert journal["status"] == "done" and len(journal["deleted"]) == first["deleted"]
    assert isinstance(ecr_reg, EcrRegistry)


@pytest.mark.parametrize("bad", [{"action": "delete"}, {"drop": "untag_tags"}])
def test_a_plan_off_contract_is_refused(ret_s3, bad):
    from include.registry_ops.retention.executor import PlanError, validate_plan

    frame = pd.DataFrame(
        [
            {
                c: None
                for c in (
                    "registry",
                    "repository",
                    "digest",
                    "tags",
                    "kind",
                    "media_type",
                    "size_bytes",
                    "pushed_at",
                    "action",
                    "rule_priority",
                    "reason",
                    "untag_tags",
                    "dry_run",
                    "policy",
                )
            }
        ]
    )
    frame["action"] = bad.get("action", "keep")
    if "drop" in bad:
        frame = frame.drop(columns=[bad["drop"]])
    with pytest.raises(PlanError):
        validate_plan(frame)


def test_a_policy_asking_for_layers_gets_them_archived(oci_reg, ret_s3):
    """Through the real planner: a policy's archive_layers overrides the config default (off)."""
    from include.registry_ops import schema
    from include.registry_ops.inventory import list_batch
    from include.registry_ops.retention.planner import plan as make_plan
    from include.registry_ops.retention.policy import parse_policies
    from tests.retention_exec.helpers import NOW

    fleet = seed(oci_reg, small_fleet(unique(), repositories=1))
    repo = fleet[0]
    rule = {
        "rulePriority": 1,
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 6},
        "action": {"type": "expire"},
    }
    policies = parse_policies(
        {
            "policies": [
                {"name": "p", "enabled": True, "protect_tags": [], "archive_layers": True, "rules": [rule]}
            ]
        }
    )
    inventory = schema.table_to_frame(list_batch(oci_reg, [repo.name], NOW).table)
    plan = make_plan(inventory, policies, NOW)
    expire = plan[plan["action"] == "expire"]
    assert len(expire) > 0
    run = run_ctx(ret_s3)  # archive_layers False in the run's defaults
    [result] = execute(plan, run, lambda _: oci_reg, limits=NO_CAPS, policies=policies)
    assert result["status"] == "done" and result["deleted"] == len(expire)
    specs = {m.digest: m for m in repo.manifests}
    layers = {b.digest for d in expire["digest"] for b in specs[d].blobs[1:]}
    assert layers
    for digest in layers:
        assert ret_s3.head_object(Bucket=BUCKET, Key=run.store.blob_key(digest))["ContentLength"] > 0
    [catalog] = run.store.catalog_keys(oci_reg.name, repo.name)
    assert {e["restorable"] for e in run.store.read_catalog(catalog)["images"]} == {"full"}


@pytest.mark.parametrize("dry_run", [True, False])
def test_the_run_check_names_failed_and_capped_repositories(dry_run):
    from include.registry_ops.retention.executor import failed_result
    from include.registry_ops.retention.jobs import RetentionIncomplete, raise_if_incomplete

    stopped = {
        **failed_result("ecr", "a/capped", "ecr/a/capped: stopped, nothing deleted: over the cap"),
        "status": "stopped",
    }
    results = [failed_result("oci", "b/broken", "oci/b/broken: ConnectionError: refused"), stopped]
    summary = {**audit.summarize(results, 0.10, dry_run=dry_run), "run_id": "r1"}
    with pytest.raises(RetentionIncomplete) as err:
        raise_if_incomplete(summary)
    assert "oci/b/broken: ConnectionError: refused" in str(err.value)
    assert ("ecr/a/capped" in str(err.value)) is not dry_run
    raise_if_incomplete({**summary, "repositories_failed": [], "repositories_stopped": []})
