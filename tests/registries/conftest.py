"""The registry interface on all three adapters: ECR on moto (with the paging and layer
shims), the distribution registry of the session, and an OCI layout in a temporary directory."""

from __future__ import annotations

import boto3
import pytest

from include.registry_ops.registries.base import Registry
from include.registry_ops.registries.ecr import EcrRegistry
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from tests.conftest import OCI_PASSWORD, OCI_USER

KINDS = ("ecr", "oci", "ocilayout")


def ecr_adapter(endpoint: str, **kwargs) -> EcrRegistry:
    client = boto3.client("ecr", endpoint_url=endpoint, region_name="us-east-1")
    return EcrRegistry("ecr-local", client, **kwargs)


def oci_adapter(url: str, **kwargs) -> OciRegistry:
    return OciRegistry("oci-local", url, OCI_USER, OCI_PASSWORD, **kwargs)


@pytest.fixture
def ecr_adapter_(moto_server) -> EcrRegistry:
    return ecr_adapter(moto_server.endpoint)


@pytest.fixture
def oci_adapter_(registry_server) -> OciRegistry:
    return oci_adapter(registry_server.url)


@pytest.fixture
def layout_adapter(tmp_path) -> OciLayoutRegistry:
    root = tmp_path / "layouts"
    root.mkdir()
    return OciLayoutRegistry("layout-local", root)


@pytest.fixture(params=KINDS)
def registry(request) -> Registry:
    """The same test on each adapter; a fresh adapter per test (request counts start at zero)."""
    name = {"ecr": "ecr_adapter_", "oci": "oci_adapter_", "ocilayout": "layout_adapter"}[request.param]
    return request.getfixturevalue(name)
