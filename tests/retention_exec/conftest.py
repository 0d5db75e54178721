"""Fixtures for the retention executor tests, on the session's real moto and registry servers.

Every test seeds its own repositories under a unique ``ret-exec/<id>/`` prefix and writes to its
own bucket, so nothing here touches what other tests use (and moto is never reset).
"""

from __future__ import annotations

import pytest

from include.registry_ops.registries.ecr import EcrRegistry
from include.registry_ops.registries.oci import OciRegistry
from tests.retention_exec.helpers import BUCKET, ecr_registry, oci_registry


@pytest.fixture(scope="session")
def ret_s3(s3):
    import contextlib

    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    return s3


@pytest.fixture
def ecr_reg(moto_server) -> EcrRegistry:
    """A fresh adapter per test (request counts start at zero)."""
    return ecr_registry(moto_server.endpoint)


@pytest.fixture
def oci_reg(registry_server) -> OciRegistry:
    return oci_registry(registry_server.url)


@pytest.fixture(params=["ecr", "oci"])
def any_reg(request, moto_server, registry_server):
    """The same test on ECR (moto) and on the distribution registry."""
    if request.param == "ecr":
        return ecr_registry(moto_server.endpoint)
    return oci_registry(registry_server.url)
