"""Crashes at every point of a run, then a rerun with the same run id: the job finishes, nothing
is deleted twice and no archive is lost. Throttling and 5xx answers are ridden out."""

from __future__ import annotations

import pytest
import requests
from botocore.awsrequest import AWSResponse
from requests.adapters import HTTPAdapter

from include.registry_ops.retention import audit, executor
from include.registry_ops.retention.executor import Limits, apply_repository
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

NO_CAPS = Limits(max_deletions_per_run=10_000, max_fraction=1.0)


class Crash(RuntimeError):
    """The injected failure."""


class Killed(BaseException):
    """A worker killed mid-run: escapes every handler, so nothing is saved on the way out."""


def _setup(registry, ret_s3, n: int = 7, **run_kw):
    fleet = seed(registry, small_fleet(unique(), repositories=1, images=30))
    repo = fleet[0]
    specs = visible(registry, repo)
    expire = with_children(specs, oldest_images(specs, n))
    return repo, plan_for(registry.name, repo, specs, expire), expire, run_ctx(ret_s3, **run_kw)


class DeleteSpy:
    """Wraps executor._delete: records every batch sent; optionally crashes before or after one."""

    def __init__(
        self, crash_before: int | None = None, crash_after: int | None = None, error: type = Crash
    ) -> None:
        self.real = executor._delete
        self.batches: list[list[str]] = []
        self.crash_before, self.crash_after, self.error = crash_before, crash_after, error

    def __call__(self, registry, repository, digests):
        n = len(self.batches) + 1
        if n == self.crash_before:
            self.crash_before = None
            raise self.error(f"injected crash before delete batch {n}")
        self.batches.append(list(digests))
        result = self.real(registry, repository, digests)
        if n == self.crash_after:
            self.crash_after = None
            raise self.error(f"injected crash after delete batch {n}")
        return result


def _catalogs(run, registry, repo) -> list[str]:
    return run.store.catalog_keys(registry.name, repo.name)


def _audit(ret_s3, result) -> dict[str, dict]:
    return {r["digest"]: r for r in audit.read_audit(ret_s3, BUCKET, result["audit_key"])}


def test_crash_between_archive_and_delete_then_rerun(any_reg, ret_s3, monkeypatch):
    repo, plan, expire, run = _setup(any_reg, ret_s3)
    spy = DeleteSpy(crash_before=1)
    monkeypatch.setattr(executor, "_delete", spy)

    first = apply_repository(run, any_reg, plan)
    assert first["status"] == "failed" and "injected crash" in first["message"]
    assert all(present(any_reg, repo.name, d) for d in expire)  # nothing deleted ...
    [catalog] = _catalogs(run, any_reg, repo)  # ... but the archive is there
    archived = {e["digest"] for e in run.store.read_catalog(catalog)["images"]}
    assert archived == expire
    records = _audit(ret_s3, first)
    assert {r["result"] for r in records.values()} == {"failed"}
    assert all("archived" in r["detail"] and r["archive_key"] == catalog for r in records.values())

    reads_before = any_reg.requests.counts.copy()
    second = apply_repository(run, any_reg, plan)
    assert second["status"] == "done" and second["deleted"] == len(expire)
    assert not any(present(any_reg, repo.name, d) for d in expire)
    assert _catalogs(run, any_reg, repo) == [catalog]  # not archived a second time
    reads = any_reg.requests.counts - reads_before
    # Nothing is read for archiving again: ECR's one BatchGetImage is the fresh look before deleting
    # (it replaced listing the repository), the registry reads no manifest at all.
    assert reads["BatchGetImage"] == (1 if any_reg.kind == "ecr" else 0) and reads["manifest_get"] == 0
    assert reads["ListImages"] == 0
    sent = [d for batch in spy.batches for d in batch]
    assert sorted(sent) == sorted(expire)  # each digest sent to delete exactly once
    assert {r["result"] for r in _audit(ret_s3, second).values()} == {"deleted"}


def test_crash_between_delete_batches_then_rerun(any_reg, ret_s3, monkeypatch):
    repo, plan, expire, run = _setup(any_reg, ret_s3, delete_batch=3)
    spy = DeleteSpy(crash_before=2)
    monkeypatch.setattr(executor, "_delete", spy)

    first = apply_repository(run, any_reg, plan)
    assert first["status"] == "failed" and first["deleted"] == 3
    done_first = set(spy.batches[0])
    assert not any(present(any_reg, repo.name, d) for d in done_first)
    assert all(present(any_reg, repo.name, d) for d in expire - done_first)

    second = apply_repository(run, any_reg, plan)
    assert second["status"] == "done" and second["deleted"] == len(expire)
    sent = [d for batch in spy.batches for d in batch]
    assert sorted(sent) == sorted(expire)  # the first batch was not sent again
    assert len(_catalogs(run, any_reg, repo)) == 1
    assert {r["result"] for r in _audit(ret_s3, second).values()} == {"deleted"}


def test_killed_between_delete_batches_with_the_journal_lagging(any_reg, ret_s3, monkeypatch):
    repo, plan, expire, run = _setup(any_reg, ret_s3, delete_batch=3, checkpoint_seconds=60)
    spy = DeleteSpy(crash_before=3, error=Killed)
    monkeypatch.setattr(executor, "_delete", spy)
    with pytest.raises(Killed):
        apply_repository(run, any_reg, plan)
    done_before = {d for batch in spy.batches for d in batch}  # two batches the journal never heard of
    assert len(done_before) == 6 and not any(present(any_reg, repo.name, d) for d in done_before)

    second = apply_repository(run, any_reg, plan)
    assert second["status"] == "done" and second["failed"] == 0
    assert not any(present(any_reg, repo.name, d) for d in expire)
    records = _audit(ret_s3, second)  # met again as gone (ECR's fresh look) or 404 (OCI): done
    assert {d for d, r in records.items() if r["result"] == "already_deleted"} == done_before
    assert {d for d, r in records.items() if r["result"] == "deleted"} == expire - done_before
    [catalog] = _catalogs(run, any_reg, repo)  # archived once, nothing lost
    assert {e["digest"] for e in run.store.read_catalog(catalog)["images"]} == expire


def test_crash_after_a_delete_went_through_but_before_the_journal(any_reg, ret_s3, monkeypatch):
    repo, plan, expire, run = _setup(any_reg, ret_s3, delete_batch=4, checkpoint_seconds=0)
    spy = DeleteSpy(crash_after=1)
    monkeypatch.setattr(executor, "_delete", spy)

    first = apply_repository(run, any_reg, plan)
    assert first["status"] == "failed"
    lost_track = set(spy.batches[0])  # deleted in the registry, not in the journal
    assert not any(present(any_reg, repo.name, d) for d in lost_track)

    second = apply_repository(run, any_reg, plan)
    assert second["status"] == "done"
    records = _audit(ret_s3, second)
    assert {d for d, r in records.items() if r["result"] == "already_deleted"} == lost_track
    assert {d for d, r in records.items() if r["result"] == "deleted"} == expire - lost_track
    assert second["deleted"] + second["already_deleted"] == len(expire)
    assert not any(present(any_reg, repo.name, d) for d in expire)
    if any_reg.kind == "ecr":  # the fresh look saw them gone: not even a repeated request
        assert sorted(d for b in spy.batches for d in b) == sorted(expire)
    [catalog] = _catalogs(run, any_reg, repo)  # every image still in the archive
    assert {e["digest"] for e in run.store.read_catalog(catalog)["images"]} == expire


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_):
        yield self._body


def test_ecr_throttling_and_5xx_are_ridden_out(ecr_reg, ret_s3):
    _repo, plan, expire, run = _setup(ecr_reg, ret_s3)
    faults = {"BatchGetImage": [400, 500], "BatchDeleteImage": [400, 503], "ListImages": []}
    sent = {op: 0 for op in faults}

    def inject(request, event_name, **_):
        op = event_name.rsplit(".", 1)[-1]
        sent[op] += 1
        if faults[op]:
            status = faults[op].pop(0)
            body = (
                b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
                if status == 400
                else b'{"__type":"ServerException","message":"internal"}'
            )
            return AWSResponse(
                request.url, status, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body)
            )
        return None

    for op in faults:
        ecr_reg.client.meta.events.register(f"before-send.ecr.{op}", inject)
    result = apply_repository(run, ecr_reg, plan)
    assert result["status"] == "done" and result["deleted"] == len(expire)
    assert all(not v for v in faults.values())
    # the fresh look rides on BatchGetImage (no ListImages any more): one read, throttled twice
    assert sent == {"BatchGetImage": 3, "BatchDeleteImage": 3, "ListImages": 0}


class Flaky(HTTPAdapter):
    """Answers the first requests of each method with the given statuses, then passes through."""

    def __init__(self, faults: dict[str, list[int]]) -> None:
        super().__init__()
        self.faults, self.failed = faults, {m: 0 for m in faults}

    def send(self, request, **kwargs):
        if self.faults.get(request.method):
            self.failed[request.method] += 1
            resp = requests.Response()
            resp.status_code, resp.url, resp.request = (
                self.faults[request.method].pop(0),
                request.url,
                request,
            )
            resp.headers["Retry-After"] = "0"
            resp._content = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
            return resp
        return super().send(request, **kwargs)


def test_registry_429_and_503_are_ridden_out(oci_reg, ret_s3):
    repo, plan, expire, run = _setup(oci_reg, ret_s3)
    flaky = Flaky({"DELETE": [503, 503, 429], "GET": [429, 503], "HEAD": [429]})
    oci_reg.session.mount("http://", flaky)
    result = apply_repository(run, oci_reg, plan)
    assert result["status"] == "done" and result["deleted"] == len(expire)
    assert flaky.failed == {"DELETE": 3, "GET": 2, "HEAD": 1}
    assert not any(present(oci_reg, repo.name, d) for d in expire)
