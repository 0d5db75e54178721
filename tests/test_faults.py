"""Throttling and 5xx answers are retried with backoff (faults injected in front of the real
services: botocore's before-send hook for ECR, a failing transport adapter for the registry)."""

from __future__ import annotations

import requests
from botocore.awsrequest import AWSResponse
from requests.adapters import HTTPAdapter

from include.registry_ops.clients import RETRIES
from include.registry_ops.registries.ecr import EcrRegistry
from include.registry_ops.registries.oci import OciRegistry
from tests.conftest import OCI_PASSWORD, OCI_USER


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_):
        yield self._body


def test_ecr_throttling_is_retried(seeded, moto_server):
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "ecr",
        endpoint_url=moto_server.endpoint,
        region_name="us-east-1",
        config=Config(retries=dict(RETRIES)),
    )
    throttled = {"left": 3, "sent": 0}

    def throttle(request, **_):
        throttled["sent"] += 1
        if throttled["left"]:
            throttled["left"] -= 1
            body = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
            return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body))
        return None

    client.meta.events.register("before-send.ecr.DescribeImages", throttle)
    reg = EcrRegistry("ecr-local", client)
    records = reg.list_images(seeded[0].name)
    assert len(records) == len(seeded[0].manifests)
    assert throttled["left"] == 0 and throttled["sent"] == 4  # 3 throttled + 1 answered
    assert reg.requests.counts["DescribeImages"] == 4


class FlakyAdapter(HTTPAdapter):
    """Answers the first `fail` requests with the given status, then passes through."""

    def __init__(self, fail: int, status: int) -> None:
        super().__init__()
        self.fail, self.status, self.seen = fail, status, 0

    def send(self, request, **kwargs):
        self.seen += 1
        if self.fail:
            self.fail -= 1
            resp = requests.Response()
            resp.status_code, resp.url, resp.request = self.status, request.url, request
            resp.headers["Retry-After"] = "0"
            resp._content = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
            return resp
        return super().send(request, **kwargs)


def test_oci_429_and_503_are_retried(seeded, registry_server):
    for status in (429, 503):
        oci = OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD, backoff=0.01)
        flaky = FlakyAdapter(fail=3, status=status)
        oci.session.mount("http://", flaky)
        assert oci.list_tags(seeded[0].name)
        assert flaky.fail == 0 and flaky.seen >= 4


def test_oci_gives_up_with_a_clear_error(registry_server):
    oci = OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD, backoff=0.01, retries=2)
    oci.session.mount("http://", FlakyAdapter(fail=10, status=503))
    try:
        oci.list_repositories()
    except Exception as exc:
        assert "registry oci-local" in str(exc) and "HTTP 503" in str(exc) and "TOOMANYREQUESTS" in str(exc)
    else:
        raise AssertionError("expected a RegistryError")
