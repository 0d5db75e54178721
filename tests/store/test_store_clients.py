"""One S3 client per connection and process (``store/clients.py``), shared by every job module,
with the ``jobs.s3_client`` seam tests use still deciding what a module's steps get."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from include.registry_ops import inventory_jobs
from include.registry_ops.config import parse_config
from include.registry_ops.retention import jobs as retention_jobs
from include.registry_ops.scan import jobs as scan_jobs
from include.registry_ops.store import clients


@pytest.fixture(autouse=True)
def fresh_cache():
    clients.forget()
    yield
    clients.forget()


class Builds:
    """A stand-in builder counting what it was asked to build."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str | None]] = Counter()
        self.lock = threading.Lock()

    def __call__(self, conn_id: str, region: str | None) -> object:
        with self.lock:
            self.calls[conn_id, region] += 1
        return object()


def test_one_client_per_connection():
    build = Builds()
    a = clients.s3_for("aws_a", build=build)
    assert clients.s3_for("aws_a", build=build) is a
    b = clients.s3_for("aws_b", build=build)
    assert b is not a and clients.s3_for("aws_a", "eu-west-1", build=build) is not a
    assert build.calls == {("aws_a", None): 1, ("aws_b", None): 1, ("aws_a", "eu-west-1"): 1}


def test_threads_share_one_client():
    build = Builds()
    got: list[object] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        got.append(clients.s3_for("aws_a", build=build))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert build.calls == {("aws_a", None): 1} and len({id(c) for c in got}) == 1


def test_a_forked_process_builds_its_own(monkeypatch):
    """A boto3 client must not cross a fork (Celery's prefork pool): the child gets a new one and
    the parent's is dropped from the child's cache."""
    build = Builds()
    parent = clients.s3_for("aws_a", build=build)
    monkeypatch.setattr(clients.os, "getpid", lambda: -42)
    child = clients.s3_for("aws_a", build=build)
    assert child is not parent and build.calls == {("aws_a", None): 2}
    assert all(pid == -42 for pid, _, _ in clients._CACHE)


def test_every_job_module_shares_the_cache(moto_server):
    config = parse_config(
        {
            "registries": [{"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"conn_id": "aws_default", "bucket": "bucket-b"},
        }
    )
    s3 = inventory_jobs.s3_client(config)
    assert scan_jobs.s3_client(config) is s3 and retention_jobs.s3_client(config) is s3
    assert s3.meta.endpoint_url == moto_server.endpoint  # a real client, from the Airflow connection
    assert "Buckets" in s3.list_buckets()


def test_the_jobs_seam_still_decides_what_a_step_uses(monkeypatch):
    """Tests replace ``jobs.s3_client``; a step must call the module attribute, not a copy."""
    config = parse_config(
        {
            "registries": [{"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"conn_id": "aws_default", "bucket": "bucket-b"},
        }
    )
    asked: list[str] = []

    class Injected:
        def head_bucket(self, Bucket: str) -> None:
            asked.append(Bucket)

    monkeypatch.setattr(inventory_jobs, "s3_client", lambda _: Injected())
    assert inventory_jobs.start(config) == ["ecr-local"]
    monkeypatch.setattr(retention_jobs, "s3_client", lambda _: Injected())
    retention_jobs.release_leases(config, [], "holder", "run")  # no registries: only the client
    assert asked == ["bucket-b"]
