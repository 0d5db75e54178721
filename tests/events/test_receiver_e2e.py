"""The receiver end to end: the page app served by uvicorn on 127.0.0.1, the real distribution
registry (devstack ``RegistryService``) configured to notify it, a real push and pull through the
registry API. The envelopes land in moto S3 within seconds, named by their body's hash; the
reports' ingestion reads the pull from them; a registry sending a wrong token gets 401 and nothing
of it is stored; a chunked body over the limit is refused while it is still arriving. Neither
token appears in our logs or the registries'."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import uvicorn

from devstack.services import NotifyEndpoint, RegistryService, free_port
from include.registry_ops.config import parse_config
from include.registry_ops.page.app import create_app
from include.registry_ops.registries.base import OCI_MANIFEST, Manifest
from include.registry_ops.registries.oci import OciRegistry

TOKEN = "e2e-Receiver-token-5b1f"
WRONG = "e2e-not-the-token-93aa"
USER, PASSWORD = "pusher", "e2e-registry-pass"
LIMIT = 64 * 1024
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


def _wait(what: str, check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


class Served:
    """The page app on uvicorn in a thread, with the hook's calls recorded."""

    def __init__(self, config) -> None:
        self.calls: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        app = create_app(config_source=lambda: config, on_stored=self.hook)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def hook(self, registry: str, envelope: dict) -> None:
        with self._lock:
            self.calls.append((registry, envelope))

    def start(self) -> Served:
        self.thread.start()
        _wait("uvicorn started", lambda: self.server.started, 15)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def rig(moto_server, s3):
    """A bucket, the receiver, and two registries notifying it: one with the token, one without."""
    bucket = f"events-e2e-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    os.environ["AIRFLOW_CONN_REGISTRY_EVENTS"] = json.dumps({"conn_type": "generic", "password": TOKEN})
    good = RegistryService(username=USER, password=PASSWORD)
    bad = RegistryService(username=USER, password=PASSWORD)
    config = parse_config(
        {
            "registries": [
                {"name": "oci-local", "kind": "oci", "conn_id": "oci_events_e2e", "url": good.url},
                {"name": "oci-other", "kind": "oci", "conn_id": "oci_events_e2e_other", "url": bad.url},
            ],
            "storage": {"conn_id": "aws_default", "bucket": bucket},
            "events": {"max_body_bytes": LIMIT},
            "reports": {
                "events": {"notifications": [{"prefix": "events/oci-local/", "registry": "oci-local"}]}
            },
        },
        "e2e-config",
    )
    served = Served(config).start()
    endpoint = f"{served.url}/api/events/oci-local"
    good.notify = (NotifyEndpoint(endpoint, TOKEN),)
    bad.notify = (NotifyEndpoint(endpoint, WRONG),)
    good.start()
    bad.start()
    try:
        yield {"s3": s3, "bucket": bucket, "config": config, "served": served, "good": good, "bad": bad}
    finally:
        logs = {}
        for reg in (good, bad):
            logs[reg.url] = (reg.root / "registry.log").read_text(errors="replace")
            reg.stop()
        served.stop()
        del os.environ["AIRFLOW_CONN_REGISTRY_EVENTS"]
        for text in logs.values():  # the registries never log the headers they send (log level warn)
            assert TOKEN not in text and WRONG not in text


def push_image(registry: RegistryService, repository: str, tag: str) -> str:
    """A small OCI image pushed through the registry API (blobs, then the manifest by tag)."""
    client = OciRegistry("push", registry.url, USER, PASSWORD)
    layer = os.urandom(2048)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    blobs = []
    for data, media_type in ((config, "application/vnd.oci.image.config.v1+json"), (layer, LAYER_TYPE)):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        client.put_blob(repository, data, digest, len(data))
        blobs.append({"mediaType": media_type, "digest": digest, "size": len(data)})
    raw = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blobs[0], "layers": blobs[1:]}
    ).encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    client.put_manifest(repository, Manifest(digest, OCI_MANIFEST, raw), tag)
    return digest


def stored(rig) -> dict[str, bytes]:
    listed = rig["s3"].list_objects_v2(Bucket=rig["bucket"], Prefix="events/").get("Contents", [])
    return {o["Key"]: rig["s3"].get_object(Bucket=rig["bucket"], Key=o["Key"])["Body"].read() for o in listed}


def stored_events(rig) -> list[dict]:
    return [e for body in stored(rig).values() for e in json.loads(body)["events"]]


def manifest_event(events: list[dict], action: str, digest: str) -> dict | None:
    return next(
        (
            e
            for e in events
            if e["action"] == action
            and e["target"].get("digest") == digest
            and e["target"].get("mediaType") == OCI_MANIFEST
        ),
        None,
    )


def test_a_push_and_a_pull_reach_s3_as_envelopes_within_seconds(rig, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    digest = push_image(rig["good"], "e2e/app", "v1")
    client = OciRegistry("pull", rig["good"].url, USER, PASSWORD)
    assert client.get_manifest("e2e/app", "v1").digest == digest  # a pull, by tag

    _wait("the push's manifest event", lambda: manifest_event(stored_events(rig), "push", digest))
    pull = _wait("the pull's manifest event", lambda: manifest_event(stored_events(rig), "pull", digest))
    elapsed = time.monotonic() - started
    assert elapsed < 20
    assert pull["target"]["repository"] == "e2e/app" and pull["actor"]["name"] == USER

    today = datetime.now(UTC).date().isoformat()
    for key, body in stored(rig).items():
        assert key == f"events/oci-local/dt={today}/{hashlib.sha256(body).hexdigest()}.json"
        assert json.loads(body)["events"]  # stored as posted: an envelope
    pushed = [e for _, env in rig["served"].calls for e in env["events"] if e["action"] == "push"]
    assert any(e["target"].get("digest") == digest for e in pushed)  # the hook heard of it
    assert {r for r, _ in rig["served"].calls} == {"oci-local"}

    out, err = capfd.readouterr()
    assert TOKEN not in caplog.text + out + err


def test_a_redelivered_envelope_stores_nothing_twice(rig):
    """What the registry does after a lost answer: the same body again."""
    import httpx

    _wait("an envelope", lambda: stored(rig))
    before = stored(rig)
    key, body = next(iter(before.items()))
    resp = httpx.post(
        f"{rig['served'].url}/api/events/oci-local",
        content=body,
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/vnd.docker.distribution.events.v1+json",
        },
    )
    assert resp.status_code == 200 and resp.json()["key"] == key and resp.json()["created"] is False
    assert set(stored(rig)) >= set(before) and stored(rig)[key] == body


def test_the_reports_ingestion_reads_the_pulls_the_receiver_stored(rig):
    from include.registry_ops.reports.ingest import ingest, read_events

    digest = push_image(rig["good"], "e2e/reported", "r1")
    client = OciRegistry("pull", rig["good"].url, USER, PASSWORD)
    client.get_manifest("e2e/reported", "r1")
    client.get_manifest("e2e/reported", digest)  # by digest too: two pulls
    _wait(
        "two pulls stored",
        lambda: (
            sum(
                1
                for e in stored_events(rig)
                if e["action"] == "pull"
                and e["target"].get("digest") == digest
                and e["target"].get("mediaType") == OCI_MANIFEST
            )
            == 2
        ),
    )

    now = datetime.now(UTC)
    result = ingest(rig["config"], rig["s3"], now=now)
    assert result["problems"] == [], result["problems"]
    frame = read_events(rig["config"], rig["s3"], now.date(), now.date() + timedelta(days=1))
    mine = frame[frame["digest"] == digest]
    assert len(mine) == 2
    assert set(mine["registry"]) == {"oci-local"} and set(mine["repository"]) == {"e2e/reported"}
    assert set(mine["principal"]) == {USER} and not mine["failed"].any()
    assert sorted(mine["tag"].fillna("-")) == ["-", "r1"]
    # blob pulls and pushes are in the envelopes too, and are not counted as pulls
    assert ingest(rig["config"], rig["s3"], now=now)["events"] == 0  # read once


def test_a_registry_with_a_wrong_token_gets_401_and_nothing_of_it_is_stored(rig, caplog, capfd):
    caplog.set_level(logging.WARNING, logger="include.registry_ops.events.receiver")
    digest = push_image(rig["bad"], "e2e/wrong", "w1")
    _wait(
        "a refused delivery",
        lambda: any("401 a wrong bearer token" in r.getMessage() for r in caplog.records),
    )
    _wait(
        "the registry seeing the 401",
        lambda: "401" in (rig["bad"].root / "registry.log").read_text(errors="replace"),
    )
    time.sleep(1.0)  # more retries come and go
    bodies = stored(rig).values()
    assert not any(b"e2e/wrong" in b or digest.encode() in b for b in bodies)
    out, err = capfd.readouterr()
    assert WRONG not in caplog.text + out + err and TOKEN not in caplog.text + out + err


def test_a_chunked_body_over_the_limit_is_refused_while_it_arrives(rig):
    """The body's end never comes: only counting while reading can answer (413) at all."""
    with socket.create_connection(("127.0.0.1", rig["served"].port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/events/oci-local HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 4096
        for _ in range(LIMIT // len(chunk) + 2):
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        sock.settimeout(10)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(rig):
    """Content-Length says 10 MiB and 100 bytes come: the answer cannot wait for the rest."""
    with socket.create_connection(("127.0.0.1", rig["served"].port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/events/oci-local HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + f"Content-Type: application/json\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n".encode()
            + b"{" * 100
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
