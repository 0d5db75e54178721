"""Scan on push through the real plugin, end to end: nothing stands in for a link of the chain.

One real ``airflow api-server`` loads this repository's plugins folder, so the Registry page app
and its event receiver are mounted at ``/registry-page`` exactly as in production; its
environment holds the token connection (``registry_events``), the Airflow API connection
(``airflow_api``) pointing at the server itself, the config file and moto's S3. A real
distribution registry notifies ``/registry-page/api/events/oci-chain`` with the token; a push
of one image to it becomes, within seconds and with no other help:

1. its envelope in S3 under ``events/oci-chain/dt=<today>/<sha256 of the body>.json``;
2. an asset event of ``registry_pushed_images`` naming that digest, read back through
   ``GET /api/v2/assets/events`` (the plugin's ``on_stored`` hook called ``forward_pushes``);
3. what the scan DAG does with that event (its own readers, then ``plan_run(pushed=...)``):
   exactly that digest scanned (by the trivy stand-in replaying a real report) and its
   findings stored, with no inventory snapshot anywhere.

A second registry sends a wrong token: the server answers it 401, and neither an envelope nor
an asset event comes of its push. Neither token appears in the API server's log.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from devstack.services import NotifyEndpoint, RegistryService
from include.registry_ops import storage
from include.registry_ops.assets import PUSHED
from include.registry_ops.clients import s3_client
from include.registry_ops.config import load_config
from include.registry_ops.registries.base import Manifest
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.scan import jobs
from include.registry_ops.store import objects
from tests.events.polling import wait_for
from tests.scan.scanfleet import STAND_IN, TRIVY, ScanFleet, image, invocations, stand_in_env

USER, PASSWORD = "chainwatch", "chain-Api-pass-5820"
REG_USER, REG_PASSWORD = "chainpusher", "chain-registry-pass-33"
TOKEN = "chain-Events-token-8d2e41"
WRONG = "chain-not-the-token-17c0"
JWT_SECRET = "push-chain-test-" + "c" * 48
GOOD, STRANGER = "oci-chain", "oci-stranger"
REPOSITORY = "apps/chain"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chain(serialized_dags, moto_server, tmp_path_factory):
    """The API server with the plugin, and two registries notifying its receiver."""
    from devstack.api_server import ApiServer

    work = tmp_path_factory.mktemp("push-chain")
    tag = f"chain-{uuid.uuid4().hex[:8]}"
    bucket = f"push-chain-{uuid.uuid4().hex[:8]}"
    trivy = work / "trivy"
    trivy.write_text(STAND_IN.format(python=sys.executable))
    trivy.chmod(0o755)
    config_path = work / "registry-ops.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": GOOD, "kind": "oci", "conn_id": "oci_chain", "include": ["apps/*"]},
                    {"name": STRANGER, "kind": "oci", "conn_id": "oci_stranger", "include": ["apps/*"]},
                ],
                "storage": {
                    "conn_id": "aws_default",
                    "bucket": bucket,
                    "prefixes": {"inventory": f"{tag}/inventory/", "reports": f"{tag}/reports/"},
                },
                "notifications": {"recipients": ["secops@example.com"], "sender": "scan@example.com"},
                "scan": {"trivy": {"binary": str(trivy)}, "uploads_prefix": f"{tag}/uploads/"},
            }
        )
    )
    config = load_config(config_path)
    s3 = s3_client(config)
    storage.ensure_bucket(s3, bucket)

    # registry_scan parsed (serialized_dags): Airflow knows the registry_pushed_images asset
    api = ApiServer(
        work,
        {USER: PASSWORD},
        AIRFLOW__API_AUTH__JWT_SECRET=JWT_SECRET,
        REGISTRY_OPS_CONFIG=str(config_path),
        AIRFLOW_CONN_REGISTRY_EVENTS=json.dumps({"conn_type": "generic", "password": TOKEN}),
    )
    # the receiver's hook calls this very server's REST API (its port is known only now)
    api.env["AIRFLOW_CONN_AIRFLOW_API"] = json.dumps(
        {"conn_type": "http", "host": api.base, "login": USER, "password": PASSWORD}
    )
    api.start()
    receiver = f"{api.base}/registry-page/api/events"
    good = RegistryService(
        username=REG_USER, password=REG_PASSWORD, notify=(NotifyEndpoint(f"{receiver}/{GOOD}", TOKEN),)
    )
    # the stranger notifies with the wrong token once the test has put its blobs in (see there)
    (work / "stranger").mkdir()
    stranger = RegistryService(work / "stranger", username=REG_USER, password=REG_PASSWORD)
    stranger.wrong = NotifyEndpoint(f"{receiver}/{STRANGER}", WRONG)
    started: list[RegistryService] = []
    try:
        for registry in (good, stranger):
            registry.start()
            started.append(registry)
        os.environ["AIRFLOW_CONN_OCI_CHAIN"] = good.conn_json()  # the in-process scan reads it
        yield SimpleNamespace(
            api=api, good=good, stranger=stranger, config=config, s3=s3, bucket=bucket, work=work
        )
    finally:
        for registry in started:
            registry.stop()
        api.stop()
        os.environ.pop("AIRFLOW_CONN_OCI_CHAIN", None)
    log = api.log_path.read_text(errors="replace")
    assert TOKEN not in log and WRONG not in log, "a bearer token in the API server's log"


def _scan_dag_module():
    """dags/registry_scan.py as a module (the DAG file is not a package member)."""
    spec = importlib.util.spec_from_file_location("registry_scan_dag", ROOT / "dags" / "registry_scan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _client(registry: RegistryService) -> OciRegistry:
    return OciRegistry("chain-push", registry.url, REG_USER, REG_PASSWORD)


def _push_blobs(registry: RegistryService, name: str, tag: str):
    spec = image(name, [tag])
    for blob in spec.blobs:
        _client(registry).upload_blob(REPOSITORY, blob.data)
    return spec


def _push_manifest(registry: RegistryService, spec, tag: str) -> None:
    """ONE manifest PUT, by tag: one push event for the image."""
    _client(registry).put_manifest(REPOSITORY, Manifest(spec.digest, spec.media_type, spec.raw), tag)


def _push(registry: RegistryService, name: str, tag: str):
    """One image: its blobs, then its manifest."""
    spec = _push_blobs(registry, name, tag)
    _push_manifest(registry, spec, tag)
    return spec


def _envelopes(chain, registry: str) -> dict[str, dict]:
    """Every stored envelope of ``registry``: key -> envelope."""
    keys = [o["Key"] for o in objects.list_keys(chain.s3, chain.bucket, f"events/{registry}/")]
    return {k: json.loads(chain.s3.get_object(Bucket=chain.bucket, Key=k)["Body"].read()) for k in keys}


def _manifest_push(envelope: dict, digest: str) -> bool:
    return any(e["action"] == "push" and e["target"].get("digest") == digest for e in envelope["events"])


def _pushed_events(chain, digest: str) -> list[dict]:
    """The ``registry_pushed_images`` asset events naming ``digest``, through the REST API."""
    assets = chain.api.api(USER, "GET", "/assets", params={"name_pattern": PUSHED["name"], "limit": 100})
    asset_id = next(a["id"] for a in assets["assets"] if a["name"] == PUSHED["name"])
    data = chain.api.api(
        USER, "GET", "/assets/events", params={"asset_id": asset_id, "order_by": "-timestamp", "limit": 100}
    )
    return [
        e
        for e in data["asset_events"]
        if any(i.get("digest") == digest for i in (e.get("extra") or {}).get("images", []))
    ]


def test_a_push_is_stored_recorded_and_scanned_through_the_plugin(chain, tmp_path, monkeypatch):
    started = time.monotonic()
    spec = _push(chain.good, f"chain-{uuid.uuid4().hex[:6]}", "1.0.0")
    pushed_at = datetime.now(UTC)

    # 1. the envelope, stored by the plugin's receiver under the day of receipt
    found = wait_for(
        "the push's envelope in S3",
        lambda: {k: v for k, v in _envelopes(chain, GOOD).items() if _manifest_push(v, spec.digest)},
    )
    assert len(found) == 1, f"one envelope per body, however often delivered: {sorted(found)}"
    key = next(iter(found))
    assert key.startswith(f"events/{GOOD}/dt={pushed_at.date().isoformat()}/")

    # 2. the asset event the plugin's on_stored hook recorded through the REST API
    events = wait_for("the registry_pushed_images asset event", lambda: _pushed_events(chain, spec.digest))
    elapsed = time.monotonic() - started
    assert elapsed < 15, f"push to asset event took {elapsed:.1f} s"
    for event in events:  # a delivery retried after a slow answer records the same image again
        assert event["extra"]["source"] == "registry-notifications"
        assert [
            {k: i[k] for k in ("registry", "repository", "digest", "tag")} for i in event["extra"]["images"]
        ] == [{"registry": GOOD, "repository": REPOSITORY, "digest": spec.digest, "tag": "1.0.0"}]

    # 3. the scan run those events trigger, through the DAG's own readers: no inventory exists
    config = chain.config
    inventory = objects.list_keys(chain.s3, chain.bucket, config.storage.prefixes.inventory)
    assert inventory == []
    fleet = ScanFleet(chain.good.url.split("://", 1)[1], {})
    reference = f"{fleet.oci_host}/{REPOSITORY}@{spec.digest}"
    fleet.trivy_reports = {reference: TRIVY / "alpine-39.json.golden"}
    log = stand_in_env(monkeypatch, fleet, tmp_path)
    dag = _scan_dag_module()
    ctx = {"triggering_asset_events": {dag.PUSHED_ASSET: [SimpleNamespace(extra=e["extra"]) for e in events]}}
    images, inventory_key = dag._pushed(ctx), dag._inventory_key(ctx)
    assert inventory_key == [] and {i["digest"] for i in images} == {spec.digest}
    planned = jobs.plan_run(config, datetime.now(UTC), "chain-1", inventory_key=inventory_key, pushed=images)
    targets = storage.get_json(chain.s3, chain.bucket, planned["parts_prefix"] + "targets.json")
    assert [t["digest"] for t in targets] == [spec.digest] and planned["pushed"]["problems"] == []
    parts = [jobs.scan_batch(config, b, planned["parts_prefix"]) for b in planned["batches"]]
    assert [i["argv"][-1] for i in invocations(log)] == [reference]
    manifest = jobs.publish(config, planned, parts)
    assert manifest["error_count"] == 0 and manifest["ok"] == 1
    findings = storage.get_table(chain.s3, chain.bucket, manifest["findings_key"]).to_pandas()
    assert set(findings["digest"]) == {spec.digest} and "CRITICAL" in set(findings["severity"])


def test_a_wrong_token_stores_nothing_and_records_nothing(chain):
    """The refused delivery is the image's manifest push: the registry retries its oldest event
    forever, so its blobs go in before it notifies anyone (restarted with the endpoint, same data)."""
    stranger = chain.stranger
    spec = _push_blobs(stranger, f"stranger-{uuid.uuid4().hex[:6]}", "6.6.6")
    stranger.stop()
    stranger.notify = (stranger.wrong,)
    stranger.start()
    _push_manifest(stranger, spec, "6.6.6")
    refused = f"path=/registry-page/api/events/{STRANGER} query= status_code=401"

    # the registry delivered and the server refused: only after that is "nothing" meaningful
    wait_for("the stranger's delivery refused with 401", lambda: refused in chain.api.log_tail(400_000))
    assert f"registry events: '{STRANGER}' from 127.0.0.1 refused: 401 a wrong bearer token" in (
        chain.api.log_tail(400_000)
    )
    assert _envelopes(chain, STRANGER) == {}
    assert not any(_manifest_push(env, spec.digest) for env in _envelopes(chain, GOOD).values())
    assert _pushed_events(chain, spec.digest) == []
