"""A rerun (or an Airflow retry) finishes exactly what did not finish.

Reproductions from the hardening issue: the registry dies in the middle of an apply and comes
back; an image whose archive fails; S3 failing under the journal. Each on the real distribution
registry (a dedicated one, so it can be stopped and started again on the same storage) or on moto.
"""

from __future__ import annotations

import contextlib
import logging

import pytest

from devstack.services import RegistryService, free_port
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.retention import audit, executor
from include.registry_ops.retention.archive import ArchiveResult
from include.registry_ops.retention.executor import apply_repository
from tests.retention_exec.helpers import (
    BUCKET,
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


@pytest.fixture
def own_registry(tmp_path):
    """A registry of this test alone (no auth), restartable on the same port and storage."""
    root, port = tmp_path / "registry", free_port()
    root.mkdir()
    service = RegistryService(root=root, port=port).start()
    yield service
    service.stop()


def _journal(run, registry_name, repo_name) -> audit.Journal:
    return audit.Journal.load(
        run.s3, run.bucket, audit.journal_key(run.runs_prefix, run.run_id, registry_name, repo_name)
    )


def _setup(registry, ret_s3, n: int = 8, **run_kw):
    fleet = seed(registry, small_fleet(unique(), repositories=1, images=30))
    repo = fleet[0]
    specs = visible(registry, repo)
    expire = with_children(specs, oldest_images(specs, n))
    return repo, plan_for(registry.name, repo, specs, expire), expire, run_ctx(ret_s3, **run_kw)


def test_registry_dies_mid_apply_and_the_rerun_finishes_exactly_the_rest(own_registry, ret_s3, monkeypatch):
    reg = OciRegistry("oci-own", own_registry.url, backoff=0.01, retries=1, timeout=5)
    repo, plan, expire, run = _setup(reg, ret_s3, delete_batch=3, checkpoint_seconds=0)
    real_delete = executor._delete
    sent: list[str] = []

    def delete_then_die(registry, repository, digests):
        result = real_delete(registry, repository, digests)
        sent.extend(result.deleted)
        if len(sent) <= 3:  # after the first batch the registry goes away
            own_registry.stop()
        return result

    monkeypatch.setattr(executor, "_delete", delete_then_die)
    first = apply_repository(run, reg, plan)
    assert first["status"] == "failed" and first["deleted"] == 3
    assert first["failed"] == len(expire) - 3
    journal = _journal(run, reg.name, repo.name)
    assert journal.status == "incomplete"  # not "done": a rerun must not answer from it
    assert set(journal.archived) == expire and len(journal.deleted) == 3
    catalogs = run.store.catalog_keys(reg.name, repo.name)
    assert len(catalogs) == 1

    own_registry.start()  # the registry is back, same storage
    resent: list[str] = []

    def record(registry, repository, digests):
        resent.extend(digests)
        return real_delete(registry, repository, digests)

    monkeypatch.setattr(executor, "_delete", record)
    second = apply_repository(run, reg, plan)  # the same command: same run id
    assert second["status"] == "done" and second["deleted"] == len(expire)
    assert sorted(resent) == sorted(expire - set(sent))  # exactly the ones that had not finished
    assert run.store.catalog_keys(reg.name, repo.name) == catalogs  # nothing archived twice
    assert not any(present(reg, repo.name, d) for d in expire)
    records = {r["digest"]: r for r in audit.read_audit(ret_s3, BUCKET, second["audit_key"])}
    assert {r["result"] for r in records.values()} == {"deleted"}  # the first 3 from the journal
    assert _journal(run, reg.name, repo.name).status == "done"


def test_an_image_whose_archive_fails_is_kept_and_the_rerun_archives_and_deletes_it(
    any_reg, ret_s3, monkeypatch
):
    repo, plan, expire, run = _setup(any_reg, ret_s3)
    top = sorted(d for d in expire if plan.set_index("digest").at[d, "kind"] == "image")
    victim = top[0]
    real_archive = executor.archive_images

    def archive_all_but_victim(store, registry, repository, images, **kw):
        result: ArchiveResult = real_archive(
            store, registry, repository, [i for i in images if i["digest"] != victim], **kw
        )
        if any(i["digest"] == victim for i in images):
            result.failures[victim] = "injected: the blob could not be read back"
        return result

    monkeypatch.setattr(executor, "archive_images", archive_all_but_victim)
    first = apply_repository(run, any_reg, plan)
    assert present(any_reg, repo.name, victim)  # not archived, so not deleted
    assert first["status"] == "failed" and first["failed"] == 1
    assert first["deleted"] == len(expire) - 1
    by = {r["digest"]: r for r in audit.read_audit(ret_s3, BUCKET, first["audit_key"])}
    assert by[victim]["result"] == "failed" and "not archived, so not deleted" in by[victim]["detail"]

    monkeypatch.setattr(executor, "archive_images", real_archive)
    second = apply_repository(run, any_reg, plan)
    assert second["status"] == "done" and second["deleted"] == len(expire)
    assert not present(any_reg, repo.name, victim)
    catalogs = run.store.catalog_keys(any_reg.name, repo.name)
    assert len(catalogs) == 2  # the first pack, then the victim's alone
    assert {e["digest"] for e in run.store.read_catalog(catalogs[0])["images"]} == {victim}


class _S3Down:
    """Makes moto's S3 refuse PutObject on keys containing ``part`` once ``armed``."""

    def __init__(self, s3, part: str) -> None:
        self.part, self.armed = part, False
        s3.meta.events.register("before-call.s3.PutObject", self)
        self.s3 = s3

    def __call__(self, params, **_):
        if self.armed and self.part in params.get("url_path", ""):
            raise ConnectionError("injected: S3 is unreachable")

    def close(self) -> None:
        self.s3.meta.events.unregister("before-call.s3.PutObject", self)


def test_s3_failing_under_the_journal_leaves_each_deletion_in_the_log(ecr_reg, ret_s3, monkeypatch, caplog):
    _repo, plan, _expire, run = _setup(ecr_reg, ret_s3, delete_batch=2, checkpoint_seconds=3600)
    down = _S3Down(ret_s3, "/journal/")
    real_delete = executor._delete
    deleted: list[str] = []

    def delete_then_break_s3(registry, repository, digests):
        result = real_delete(registry, repository, digests)
        deleted.extend(result.deleted)
        down.armed = True  # S3 fails right after the first deletes: no journal save succeeds
        return result

    monkeypatch.setattr(executor, "_delete", delete_then_break_s3)
    try:
        with caplog.at_level(logging.ERROR, logger="include.registry_ops"):
            result = apply_repository(run, ecr_reg, plan)
    finally:
        down.close()
    assert result["status"] == "failed" and "journal not saved" in result["message"]
    assert deleted  # deletions happened before S3 failed ...
    logged = [r.getMessage() for r in caplog.records if "retention audit (not in S3" in r.getMessage()]
    for digest in deleted:  # ... and each one's record is in the log
        assert any(digest in line and '"result": "deleted"' in line for line in logged), digest
    # the audit object (written after) has them too: S3 only refused journal writes here
    by = {r["digest"]: r for r in audit.read_audit(ret_s3, BUCKET, result["audit_key"])}
    assert all(by[d]["result"] == "deleted" for d in deleted)


def test_a_lost_lease_stops_deleting(ecr_reg, ret_s3):
    from include.registry_ops.retention.lease import LeaseLost

    calls = []

    def lost() -> None:
        calls.append(1)
        raise LeaseLost("registry ecr-local: our lease was taken over: held by cli:other")

    repo, plan, expire, _ = _setup(ecr_reg, ret_s3)
    run = run_ctx(ret_s3, lease_check=lost)
    result = apply_repository(run, ecr_reg, plan)
    assert calls and result["status"] == "failed" and "lease was taken over" in result["message"]
    assert result["deleted"] == 0
    assert all(present(ecr_reg, repo.name, d) for d in expire)  # archived, but nothing deleted
    with contextlib.suppress(Exception):
        assert run.store.catalog_keys(ecr_reg.name, repo.name)
