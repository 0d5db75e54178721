"""``seed_ecr`` holds each seeded image's blobs in its repository as a push would (the default):
``BatchCheckLayerAvailability`` knows them and ``GetDownloadUrlForLayer`` (the ``moto_layers``
shim) serves their bytes, so seeded images can be archived with their layers and restored by
copying blobs. ``layers=False`` seeds the images alone."""

from __future__ import annotations

import uuid

import boto3
import pytest

from devstack.fleet import make_fleet
from devstack.seed import seed_ecr
from include.registry_ops.registries.base import NotFound
from include.registry_ops.registries.ecr import EcrRegistry


def _registry(moto_server) -> EcrRegistry:
    client = boto3.client("ecr", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    return EcrRegistry("ecr-local", client)


def test_seeded_images_hold_their_config_and_layers(moto_server, ecr):
    fleet = make_fleet(
        seed=37, repositories=2, images=16, layer_scale=0.0002, prefix=f"held-{uuid.uuid4().hex[:6]}/"
    )
    seed_ecr(ecr, fleet)
    reg = _registry(moto_server)
    checked = 0
    for repo in fleet:
        for spec in repo.manifests:
            for blob in spec.blobs:  # config first, then the layers, shared base layers too
                assert reg.head_blob(repo.name, blob.digest) == blob.size
                assert reg.get_blob(repo.name, blob.digest) == blob.data
                checked += 1
    assert checked > 40


def test_layers_false_seeds_the_images_alone(moto_server, ecr):
    fleet = make_fleet(
        seed=41, repositories=1, images=6, layer_scale=0.0002, prefix=f"bare-{uuid.uuid4().hex[:6]}/"
    )
    assert seed_ecr(ecr, fleet, layers=False) == len(fleet[0].manifests)
    reg = _registry(moto_server)
    assert {d["imageDigest"] for d in reg.describe(fleet[0].name)} == {m.digest for m in fleet[0].manifests}
    blob = next(m for m in fleet[0].manifests if m.kind == "image").blobs[-1]
    assert reg.head_blob(fleet[0].name, blob.digest) is None
    with pytest.raises(NotFound, match="LayersNotFoundException"):
        reg.get_blob(fleet[0].name, blob.digest)
