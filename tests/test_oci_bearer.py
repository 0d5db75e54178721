"""OCI adapter against the real distribution registry with bearer-token auth (``auth.token``).

A local token server (``devstack.token_auth``) issues RS256 JWTs carrying its self-signed
certificate in ``x5c``; the registry verifies them against that certificate. Only 127.0.0.1.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import shutil
import tarfile

import pytest
import requests

from devstack.services import REGISTRY_BIN
from devstack.token_auth import TokenServer, start_token_stack
from include.registry_ops.registries.base import OCI_MANIFEST, Manifest, RegistryError, digest_of
from include.registry_ops.registries.oci import OciRegistry

pytestmark = pytest.mark.skipif(shutil.which(REGISTRY_BIN) is None, reason=f"{REGISTRY_BIN} not installed")

USER, PASSWORD = "bearer-ops", "b3arer-t0ken-pass"
WRONG_PASSWORD = "not-the-b3arer-pass"


@pytest.fixture(scope="module")
def stack():
    server, registry = start_token_stack(USER, PASSWORD)
    try:
        yield server, registry
    finally:
        try:
            registry.stop()
        finally:
            server.stop()


@pytest.fixture(scope="module")
def token_server(stack):
    return stack[0]


@pytest.fixture(scope="module")
def registry(stack):
    return stack[1]


def _client(registry, name: str = "oci-bearer", password: str = PASSWORD, **kwargs) -> OciRegistry:
    return OciRegistry(name, registry.url, USER, password, retries=0, **kwargs)


def _image(seed: str) -> tuple[bytes, bytes, Manifest]:
    """A minimal valid OCI image: config blob, one gzipped tar layer, and its manifest."""
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w") as tar:
        data = f"hello from {seed}\n".encode()
        info = tarfile.TarInfo(f"etc/{seed}.txt")
        info.size = len(data)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    layer_tar = tar_buf.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-05-01T12:00:00Z",
            "config": {"Labels": {"seed": seed}},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(layer_tar)]},
        },
        sort_keys=True,
    ).encode()
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest_of(layer),
                    "size": len(layer),
                }
            ],
        },
        indent=2,
    ).encode()
    return config, layer, Manifest(digest_of(raw), OCI_MANIFEST, raw)


def _push(oci: OciRegistry, repository: str, tag: str) -> Manifest:
    config, layer, manifest = _image(repository.replace("/", "-") + "-" + tag)
    assert oci.upload_blob(repository, config) == digest_of(config)
    assert oci.upload_blob(repository, layer) == digest_of(layer)
    assert oci.put_manifest(repository, manifest, tag=tag) == manifest.digest
    return manifest


def _secrets(token_server: TokenServer) -> list[str]:
    return [PASSWORD, WRONG_PASSWORD, *token_server.tokens]


def test_registry_demands_tokens_signed_by_the_token_server(token_server, registry):
    resp = requests.get(f"{registry.url}/v2/_catalog", timeout=10)
    assert resp.status_code == 401
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'realm="{token_server.realm}"' in challenge
    assert f'service="{token_server.service}"' in challenge
    assert 'scope="registry:catalog:*"' in challenge

    good = token_server.issue(USER, ["registry:catalog:*"])["token"]
    ok = requests.get(f"{registry.url}/v2/_catalog", headers={"Authorization": f"Bearer {good}"}, timeout=10)
    assert ok.status_code == 200

    # same claims, signed by a key the registry does not trust: refused, so signatures are checked
    forger = TokenServer(USER, PASSWORD, service=token_server.service, issuer=token_server.issuer)
    try:
        forged = forger.issue(USER, ["registry:catalog:*"])["token"]
    finally:
        forger.stop()
    bad = requests.get(
        f"{registry.url}/v2/_catalog", headers={"Authorization": f"Bearer {forged}"}, timeout=10
    )
    assert bad.status_code == 401

    # a pull-only token does not allow a push
    pull = token_server.issue(USER, ["repository:probe/app:pull"])["token"]
    start = requests.post(
        f"{registry.url}/v2/probe/app/blobs/uploads/", headers={"Authorization": f"Bearer {pull}"}, timeout=10
    )
    assert start.status_code == 401
    assert 'error="insufficient_scope"' in start.headers["WWW-Authenticate"]


def test_token_server_refuses_wrong_credentials(token_server):
    params = {"service": token_server.service, "scope": "repository:x/y:pull"}
    assert requests.get(token_server.realm, params=params, timeout=10).status_code == 401
    wrong = requests.get(token_server.realm, params=params, auth=(USER, WRONG_PASSWORD), timeout=10)
    assert wrong.status_code == 401
    body = requests.get(token_server.realm, params=params, auth=(USER, PASSWORD), timeout=10).json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300


def test_push_list_pull_delete_through_bearer_tokens(token_server, registry, caplog):
    caplog.set_level(logging.DEBUG)
    oci = _client(registry)
    issued_before = token_server.issued
    repository = "bearer/app"

    manifest = _push(oci, repository, "v1")
    assert repository in oci.list_repositories()
    assert oci.list_tags(repository) == ["v1"]
    got = oci.get_manifest(repository, "v1")
    assert got.raw == manifest.raw
    assert got.digest == manifest.digest
    assert got.media_type == OCI_MANIFEST
    assert oci.head_manifest(repository, manifest.digest) == manifest.digest
    [record] = oci.list_images(repository)  # reads the config blob too
    assert record["digest"] == manifest.digest
    assert record["tags"] == ["v1"]
    assert record["platform"] == "linux/amd64"

    result = oci.delete_images(repository, [manifest.digest])
    assert result.deleted == [manifest.digest]  # only a 202 lands here
    assert result.failures == {}
    assert oci.head_manifest(repository, manifest.digest) is None
    assert oci.list_tags(repository) == []

    issued = token_server.issued - issued_before
    assert issued > 0
    assert issued == oci.requests.counts["token"]
    # one token per scope: catalog, pull, pull+push and delete on the one repository
    assert issued <= 4
    api_calls = oci.requests.total - oci.requests.counts["token"]
    assert api_calls >= 4 * issued
    # the registry's challenge names the actions in no fixed order ("push,pull" or "pull,push")
    asked = {_scope(s) for scopes in token_server.scopes[issued_before:] for s in scopes}
    assert asked == {
        _scope("registry:catalog:*"),
        _scope(f"repository:{repository}:pull"),
        _scope(f"repository:{repository}:pull,push"),
        _scope(f"repository:{repository}:delete"),
    }
    for secret in _secrets(token_server):
        assert secret not in caplog.text


def test_tokens_are_cached_per_scope(token_server, registry):
    oci = _client(registry, page_size=1)
    repository = "bearer/cached"
    manifest = _push(oci, repository, "v1")
    _push(oci, "bearer/cached-too", "v1")  # two repositories at least: the catalog has pages
    issued_before = token_server.issued
    fetched_before = oci.requests.counts["token"]
    for _ in range(10):
        assert oci.list_tags(repository) == ["v1"]
        assert oci.get_manifest(repository, "v1").raw == manifest.raw
        assert oci.blob_exists(repository, manifest.body["config"]["digest"])
    assert token_server.issued == issued_before  # the pull token of the push is reused
    assert oci.requests.counts["token"] == fetched_before
    catalog_before = oci.requests.counts["catalog"]
    for _ in range(5):
        assert repository in oci.list_repositories()
    assert oci.requests.counts["catalog"] - catalog_before >= 5 * 2  # Link pages followed
    assert token_server.issued == issued_before + 1  # one catalog token for every page of five listings


def test_stale_token_is_replaced_once(token_server, registry):
    oci = _client(registry)
    repository = "bearer/stale"
    _push(oci, repository, "v1")
    scope = f"repository:{repository}:pull"
    oci._tokens[scope] = "expired.or.revoked"  # what a long run sees after expires_in
    issued_before = token_server.issued
    assert oci.list_tags(repository) == ["v1"]
    assert token_server.issued == issued_before + 1
    assert oci._tokens[scope] != "expired.or.revoked"


def test_wrong_password_names_the_registry_and_leaks_nothing(token_server, registry, caplog):
    caplog.set_level(logging.DEBUG)
    good = _client(registry)
    good.list_repositories()  # so a live token exists that must not show up below
    assert token_server.tokens
    issued_before, refused_before = token_server.issued, token_server.refused

    bad = _client(registry, name="oci-bearer-bad", password=WRONG_PASSWORD)
    with pytest.raises(RegistryError) as catalog_err:
        bad.list_repositories()
    with pytest.raises(RegistryError) as push_err:
        bad.upload_blob("bearer/denied", b"never stored")

    assert token_server.issued == issued_before
    assert token_server.refused >= refused_before + 2
    for err in (catalog_err.value, push_err.value):
        message = str(err)
        assert "oci-bearer-bad" in message
        assert "token service" in message
        assert "refused" in message
        assert "401" in message
        for secret in _secrets(token_server):
            assert secret not in message
            assert secret not in repr(err.args)
    for secret in _secrets(token_server):
        assert secret not in caplog.text


def _scope(text: str) -> tuple[str, str, frozenset[str]]:
    """A token scope as (type, name, actions), the actions as a set."""
    kind, name, actions = text.rsplit(":", 2)
    return kind, name, frozenset(actions.split(","))
