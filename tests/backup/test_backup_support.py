"""Helpers and fixtures of the backup engine tests (no tests here; the name keeps it with them).

Every test seeds repositories under a prefix of its own on the session's moto and distribution
registry, builds OCI layouts in its own temp dir and writes to a bucket of its own, so nothing
here touches what other tests use. Import the fixtures by name into a test module.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devstack.fleet import ManifestSpec, RepoSpec, make_fleet
from include.registry_ops.config import Config, parse_config
from include.registry_ops.registries.base import Registry
from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from tests.retention_exec.helpers import ecr_registry, oci_registry, push, seed

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def unique(prefix: str = "bk") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:8]}/"


def fleet_of(prefix: str, repositories: int = 2, images: int = 16, seed_: int = 5) -> list[RepoSpec]:
    """Repository 0: signed single-arch images (cosign signatures, attestations with a
    subject); repository 1: multi-arch indexes with untagged children."""
    return make_fleet(
        seed=seed_, repositories=repositories, images=images, layer_scale=0.0003, prefix=prefix, now=NOW
    )


def config_for(bucket: str, prefix: str, layout: Path | None = None, **backup: Any) -> Config:
    """ecr-local (moto), oci-local (the distribution registry) and, given a directory, a layout;
    each limited to ``prefix``."""
    regs: list[dict[str, Any]] = [
        {"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default", "include": [prefix + "*"]},
        {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [prefix + "*"]},
    ]
    if layout is not None:
        regs.append({"name": "layout", "kind": "ocilayout", "path": str(layout), "include": [prefix + "*"]})
    return parse_config(
        {"registries": regs, "storage": {"conn_id": "aws_default", "bucket": bucket}, "backup": backup},
        "test-config",
    )


class Puts:
    """Keys of the PutObject requests a client sends (a botocore hook); a PUT whose key matches
    ``crash_on`` (the n-th such PUT, ``crash_after`` counted from 0) raises :class:`Crash` before
    it is sent, as a process killed between two uploads would stop; the first PUT whose key
    matches ``corrupt_on`` sends its bytes with the first one flipped (damage on the way)."""

    def __init__(self, s3: Any) -> None:
        self.s3, self.keys = s3, []
        self.crash_on: str | None = None
        self.corrupt_on: str | None = None  # the first PUT whose key has it stores other bytes
        self.crash_after = 0
        self._seen = 0
        self._lock = threading.Lock()
        s3.meta.events.register("before-parameter-build.s3.PutObject", self, unique_id=f"puts-{id(self)}")

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        key = params.get("Key", "")
        with self._lock:
            if self.crash_on and self.crash_on in key:
                if self._seen >= self.crash_after:
                    raise Crash(f"injected: killed before the PUT of {key}")
                self._seen += 1
            if self.corrupt_on and self.corrupt_on in key:
                self.corrupt_on = None
                body = params["Body"]
                data = body if isinstance(body, bytes) else body.read()
                params["Body"] = bytes([data[0] ^ 0xFF]) + data[1:]  # S3 stores what it did not get
            self.keys.append(key)

    def take(self) -> list[str]:
        with self._lock:
            out, self.keys = self.keys, []
        return out

    def close(self) -> None:
        self.s3.meta.events.unregister("before-parameter-build.s3.PutObject", unique_id=f"puts-{id(self)}")


class Crash(BaseException):
    """An injected crash: not an error the backup handles, so it stops the run like a kill."""


@pytest.fixture
def puts(s3) -> Iterator[Puts]:
    recorder = Puts(s3)
    yield recorder
    recorder.close()


@pytest.fixture
def bk_bucket(s3) -> str:
    name = f"bk-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def adapters(moto_server, registry_server, layout: Path | None = None) -> dict[str, Registry]:
    regs: dict[str, Registry] = {
        "ecr-local": ecr_registry(moto_server.endpoint),
        "oci-local": oci_registry(registry_server.url),
    }
    if layout is not None:
        layout.mkdir(parents=True, exist_ok=True)
        regs["layout"] = OciLayoutRegistry("layout", layout)
    return regs


def seed_all(regs: dict[str, Registry], fleet: list[RepoSpec]) -> None:
    """The same fleet in every registry: ECR seeded in moto (layers held), the distribution
    registry by pushes, a layout through the interface."""
    for reg in regs.values():
        if reg.kind == "ocilayout":
            push(reg, fleet)
        else:
            seed(reg, fleet)


def expected(registry: Registry, repo: RepoSpec) -> list[ManifestSpec]:
    """What a backup of the registry must hold of a seeded repository: everything where listings
    reach untagged manifests (ECR, layouts), else the tagged manifests and their children."""
    if registry.capabilities.lists_untagged_manifests:
        return list(repo.manifests)
    by = {m.digest: m for m in repo.manifests}
    out = {m.digest: m for m in repo.manifests if m.tags}
    for m in list(out.values()):
        out.update({c: by[c] for c in m.children})
    return list(out.values())


def keys_under(s3: Any, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o for p in pages for o in p.get("Contents", [])}
