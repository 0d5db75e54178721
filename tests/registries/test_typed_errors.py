"""Every adapter raises a typed error (NotFound, Unauthorized, Denied, Throttled, Unavailable,
Invalid, Unsupported) from the real service's answer where it can be produced, else from a
fault injected in front of the real service (botocore's before-send hook, a requests transport
adapter, a failing file-system call), in the style of tests/test_faults.py. The message format
and ``.problem`` text stay as they were."""

from __future__ import annotations

import errno
import os

import boto3
import pytest
import requests
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from requests.adapters import HTTPAdapter

from include.registry_ops.registries.base import (
    Denied,
    Invalid,
    NotFound,
    RegistryError,
    RepositorySettings,
    Throttled,
    Unauthorized,
    Unavailable,
    Unsupported,
    digest_of,
)
from include.registry_ops.registries.ecr import EcrRegistry
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.registries.ocilayout import OciLayoutRegistry
from tests.conftest import OCI_PASSWORD, OCI_USER
from tests.registries.images import image, push, unique


# -- ECR -------------------------------------------------------------------------------------------
class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_):
        yield self._body


def _ecr_answering(moto_server, status: int, code: str) -> EcrRegistry:
    """An adapter whose DescribeRepositories always gets this AWS error (no retries)."""
    client = boto3.client(
        "ecr",
        endpoint_url=moto_server.endpoint,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )

    def fail(request, **_):
        body = f'{{"__type":"{code}","message":"injected {code}"}}'.encode()
        return AWSResponse(request.url, status, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body))

    client.meta.events.register("before-send.ecr.DescribeRepositories", fail)
    return EcrRegistry("ecr-local", client)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "UnrecognizedClientException", Unauthorized),
        (400, "AccessDeniedException", Denied),
        (400, "ThrottlingException", Throttled),
        (503, "ServiceUnavailableException", Unavailable),
        (500, "ServerException", Unavailable),
        (400, "InvalidParameterException", Invalid),
        (403, "SomethingNewException", Denied),  # an unknown code falls back to the HTTP status
        (400, "SomethingNewException", RegistryError),
    ],
)
def test_ecr_error_codes_become_types(moto_server, status, code, cls):
    reg = _ecr_answering(moto_server, status, code)
    with pytest.raises(RegistryError) as err:
        reg.list_repositories()
    assert type(err.value) is cls
    assert err.value.problem == f"describe_repositories failed: {code}: injected {code}"
    assert str(err.value) == f"registry ecr-local: {err.value.problem}"


def test_ecr_not_found_and_invalid_from_moto(moto_server):
    client = boto3.client("ecr", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    reg = EcrRegistry("ecr-local", client)
    with pytest.raises(NotFound) as err:
        reg.list_images("no/such-repo")
    assert "RepositoryNotFoundException" in err.value.problem  # the text callers read today
    with pytest.raises(NotFound):
        reg.describe_repository("no/such-repo")
    repository = unique("typed/ecr")
    reg.create_repository(repository)
    with pytest.raises(NotFound):
        reg.get_manifest(repository, "no-tag")
    with pytest.raises(NotFound):
        reg.get_manifest(repository, digest_of(b"no image"))
    with pytest.raises(Invalid):
        reg.apply_repository_settings(repository, RepositorySettings(tag_mutability="SOMETIMES"))
    with pytest.raises(Invalid):  # botocore refuses it before sending (ParamValidationError)
        reg.create_repository("")


def test_ecr_dead_endpoint_is_unavailable():
    client = boto3.client(
        "ecr",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(Unavailable) as err:
        EcrRegistry("ecr-dead", client).list_repositories()
    assert "registry ecr-dead" in str(err.value)


# -- distribution ----------------------------------------------------------------------------------
class Answering(HTTPAdapter):
    """Answers matching requests with a fixed status and distribution error, passes the rest."""

    def __init__(self, status: int, code: str, method: str | None = None) -> None:
        super().__init__()
        self.status, self.code, self.method = status, code, method
        self.answered = 0

    def send(self, request, **kwargs):
        if self.method is None or request.method == self.method:
            self.answered += 1
            resp = requests.Response()
            resp.status_code, resp.url, resp.request = self.status, request.url, request
            resp.headers["Retry-After"] = "0"
            resp._content = f'{{"errors":[{{"code":"{self.code}","message":"injected"}}]}}'.encode()
            return resp
        return super().send(request, **kwargs)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (403, "DENIED", Denied),
        (429, "TOOMANYREQUESTS", Throttled),
        (503, "UNAVAILABLE", Unavailable),
        (502, "", Unavailable),
        (405, "UNSUPPORTED", Unsupported),
        (400, "NAME_INVALID", Invalid),
        (404, "NAME_UNKNOWN", NotFound),
    ],
)
def test_oci_status_and_codes_become_types(registry_server, status, code, cls):
    oci = OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD, retries=1, backoff=0.01)
    oci.session.mount("http://", Answering(status, code))
    with pytest.raises(RegistryError) as err:
        oci.list_repositories()
    assert type(err.value) is cls
    assert f"HTTP {status}" in err.value.problem
    assert str(err.value).startswith("registry oci-local: GET /v2/_catalog")


def test_oci_real_answers(registry_server, seeded):
    bad = OciRegistry("oci-local", registry_server.url, OCI_USER, "wrong-password", retries=0)
    with pytest.raises(Unauthorized) as err:
        bad.list_repositories()
    assert "401" in err.value.problem
    oci = OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD, retries=0)
    with pytest.raises(NotFound):
        oci.get_manifest(seeded[0].name, "no-such-tag")
    with pytest.raises(NotFound):
        oci.open_blob(seeded[0].name, digest_of(b"no such blob"))
    repository = unique("typed/oci")
    orphan = image("orphan")  # its blobs were never pushed: the registry refuses the manifest
    with pytest.raises(Invalid) as err:
        oci.put_manifest(repository, orphan.manifest, "v1")
    assert "MANIFEST_BLOB_UNKNOWN" in err.value.problem
    dead = OciRegistry("oci-dead", "http://127.0.0.1:9", retries=0, timeout=1)
    with pytest.raises(Unavailable):
        dead.list_repositories()


def test_oci_delete_tag_refused_before_anything_changes_when_deletes_are_disabled(registry_server):
    """405 on DELETE (storage.delete.enabled: false): the tag must still point at the image."""
    oci = OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD, retries=0)
    repository = unique("typed/oci-nodelete")
    m = push(oci, repository, image("keep-tag"), "v1")
    answering = Answering(405, "UNSUPPORTED", method="DELETE")
    oci.session.mount("http://", answering)
    with pytest.raises(Unsupported):
        oci.delete_tag(repository, "v1")
    assert answering.answered == 1
    assert oci.head_manifest(repository, "v1") == m.digest
    assert oci.list_tags(repository) == ["v1"]


def test_oci_delete_tag_puts_the_tag_back_when_the_final_delete_fails(registry_server):
    oci = OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD, retries=0)
    repository = unique("typed/oci-putback")
    m = push(oci, repository, image("put-back"), "v1")

    class SecondDeleteFails(HTTPAdapter):
        deletes = 0

        def send(self, request, **kwargs):
            if request.method == "DELETE":
                SecondDeleteFails.deletes += 1
                if SecondDeleteFails.deletes == 2:
                    resp = requests.Response()
                    resp.status_code, resp.url, resp.request = 503, request.url, request
                    resp._content = b"{}"
                    return resp
            return super().send(request, **kwargs)

    oci.session.mount("http://", SecondDeleteFails())
    with pytest.raises(Unavailable) as err:
        oci.delete_tag(repository, "v1")
    assert "put back" in err.value.problem
    assert oci.head_manifest(repository, "v1") == m.digest


# -- OCI layout ------------------------------------------------------------------------------------
def test_layout_errors(tmp_path, monkeypatch):
    reg = OciLayoutRegistry("layout-local", tmp_path)
    with pytest.raises(NotFound):
        reg.list_tags("no/such-repo")
    repository = "typed/layout"
    push(reg, repository, image("layout-errors"), "v1")
    with pytest.raises(NotFound):
        reg.get_manifest(repository, "v2")
    with pytest.raises(Invalid):
        reg.list_tags("../escape")
    with pytest.raises(Invalid):
        reg.create_repository("team/blobs/x")  # would nest inside a layout's blobs/

    (tmp_path / repository / "index.json").write_text("{not json")
    with pytest.raises(Invalid) as err:
        reg.list_tags(repository)
    assert "index.json" in err.value.problem

    other = "typed/layout-2"
    reg.create_repository(other)

    def refuse(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / other / "index.json"))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(Denied) as err:
        push(reg, other, image("denied"), "v1")
    assert "permission denied" in err.value.problem

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(Unavailable):
        push(reg, other, image("no-space"), "v1")

    gone = OciLayoutRegistry("layout-gone", tmp_path / "not-mounted")
    with pytest.raises(Unavailable) as err:
        gone.list_repositories()
    assert "not mounted" in err.value.problem


def test_oci_delete_tag_leaves_a_tag_that_moved_meanwhile(registry_server):
    """Someone pushes the tag while it is being deleted: their push wins, nothing is lost."""
    oci = OciRegistry("oci-local", registry_server.url, OCI_USER, OCI_PASSWORD, retries=0)
    other = OciRegistry("oci-other", registry_server.url, OCI_USER, OCI_PASSWORD, retries=0)
    repository = unique("typed/oci-moved")
    push(oci, repository, image("first"), "v1")
    newer = image("pushed-meanwhile")

    class PushDuringProbe(HTTPAdapter):
        def send(self, request, **kwargs):
            if request.method == "DELETE":  # the probe: the other client pushes now
                push(other, repository, newer, "v1")
            return super().send(request, **kwargs)

    oci.session.mount("http://", PushDuringProbe())
    with pytest.raises(Invalid) as err:
        oci.delete_tag(repository, "v1")
    assert "moved" in err.value.problem
    assert other.head_manifest(repository, "v1") == newer.manifest.digest
