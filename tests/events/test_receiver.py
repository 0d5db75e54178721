"""The registry event receiver through the page app (FastAPI TestClient) against moto S3: each
answer and what it leaves in S3: 201 then 200 storing once (also across midnight), 401 wrong or
missing token, 400 not an envelope, 413 oversized with and without Content-Length, 404 unknown
registry, 503 when S3 is down, no token is configured, or the on_stored hook fails (stored once,
the hook called again on the retried delivery). The token never reaches the logs."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from fastapi.testclient import TestClient

from include.registry_ops.config import parse_config
from include.registry_ops.events.receiver import TokenCache, bearer_ok
from include.registry_ops.page.app import create_app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
TOKEN = "evt-7Hq2-receiver-token"
LIMIT = 4096
NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
PUSH = (FIXTURES / "distribution-notification-push-envelope.docs.json").read_bytes()


def make_config(bucket: str, conn_id: str = "registry_events", limit: int = LIMIT):
    return parse_config(
        {
            "registries": [
                {"name": "oci-local", "kind": "oci", "conn_id": "oci_local"},
                {"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default", "region": "us-east-1"},
            ],
            "storage": {"conn_id": "aws_default", "bucket": bucket},
            "events": {"token_conn_id": conn_id, "max_body_bytes": limit},
        },
        "test-config",
    )


class Env:
    """An app on a fresh bucket with a settable clock and a recording (optionally failing) hook."""

    def __init__(self, s3, bucket: str, monkeypatch, hook_failures: int = 0) -> None:
        self.s3, self.bucket, self.now = s3, bucket, NOON
        self.calls: list[tuple[str, dict]] = []
        self.failures = hook_failures
        monkeypatch.setenv(
            "AIRFLOW_CONN_REGISTRY_EVENTS", json.dumps({"conn_type": "generic", "password": TOKEN})
        )
        self.config = make_config(bucket)
        self.client = TestClient(self.app(self.config))

    def app(self, config, s3_factory=None):
        kwargs = {"s3_factory": s3_factory} if s3_factory else {}
        return create_app(config_source=lambda: config, clock=lambda: self.now, on_stored=self.hook, **kwargs)

    def hook(self, registry: str, envelope: dict) -> None:
        self.calls.append((registry, envelope))
        if self.failures:
            self.failures -= 1
            raise RuntimeError("forwarding failed")

    def post(self, body, registry: str = "oci-local", token: str | None = TOKEN, **headers):
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.post(f"/api/events/{registry}", content=body, headers=headers)

    def keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return sorted(o["Key"] for o in listed)


@pytest.fixture
def env(moto_server, s3, monkeypatch):
    bucket = f"events-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    return Env(s3, bucket, monkeypatch)


def test_an_envelope_is_stored_as_posted_once_and_a_replay_stores_nothing(env):
    first = env.post(PUSH, **{"Content-Type": "application/vnd.docker.distribution.events.v1+json"})
    assert first.status_code == 201, first.text
    key = f"events/oci-local/dt=2026-11-28/{hashlib.sha256(PUSH).hexdigest()}.json"
    assert first.json() == {"key": key, "created": True, "events": 3}
    assert env.keys() == [key]
    assert env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read() == PUSH  # the bytes as posted
    stamp = env.s3.head_object(Bucket=env.bucket, Key=key)["LastModified"]

    again = env.post(PUSH)
    assert again.status_code == 200 and again.json() == {"key": key, "created": False, "events": 3}
    assert env.keys() == [key]
    assert env.s3.head_object(Bucket=env.bucket, Key=key)["LastModified"] == stamp  # not rewritten
    assert [r for r, _ in env.calls] == ["oci-local", "oci-local"]  # the hook sees every delivery
    assert env.calls[0][1] == json.loads(PUSH)


def test_a_replay_after_midnight_finds_the_envelope_of_the_day_before(env):
    env.now = NOON.replace(hour=23, minute=59, second=59)
    assert env.post(PUSH).status_code == 201
    env.now = NOON + timedelta(hours=12, seconds=1)  # 00:00:01 the next day
    again = env.post(PUSH)
    assert again.status_code == 200 and "/dt=2026-11-28/" in again.json()["key"]
    assert len(env.keys()) == 1
    other = json.dumps({"events": [{"id": "n", "action": "pull", "target": {}}]}).encode()
    assert env.post(other).json()["key"].startswith("events/oci-local/dt=2026-11-29/")  # new: today


def test_the_day_before_is_asked_only_in_the_first_hour_after_midnight(env, monkeypatch):
    """The HEAD on yesterday's key halved the receiver's throughput when made for every
    delivery; a retry is minutes late, so it is made only in the hour after midnight."""
    from include.registry_ops.events import receiver

    asked: list[str] = []
    real = receiver.objects.exists
    monkeypatch.setattr(receiver.objects, "exists", lambda s3, b, k: asked.append(k) or real(s3, b, k))
    env.now = NOON.replace(hour=23, minute=59, second=59)
    assert env.post(PUSH).status_code == 201 and asked == []
    env.now = NOON + timedelta(hours=12, minutes=59)  # 00:59 the next day: still looks back
    assert env.post(PUSH).status_code == 200 and len(asked) == 1 and "/dt=2026-11-28/" in asked[0]
    env.now = NOON + timedelta(hours=13, minutes=1)  # 01:01: one PUT, no HEAD
    assert env.post(PUSH).status_code == 201 and len(asked) == 1


def test_other_bytes_under_an_envelopes_name_are_not_taken_for_it(env, caplog):
    """A replay is answered 200 only when the stored object holds this very body."""
    key = f"events/oci-local/dt=2026-11-28/{hashlib.sha256(PUSH).hexdigest()}.json"
    env.s3.put_object(Bucket=env.bucket, Key=key, Body=b'{"events": []}')
    resp = env.post(PUSH)
    assert resp.status_code == 503 and env.calls == []
    assert "holds other bytes" in caplog.text
    assert env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read() == b'{"events": []}'  # untouched


def test_another_body_is_another_object(env):
    assert env.post(PUSH).status_code == 201
    pull = (FIXTURES / "distribution-notification-pull.docs.json").read_bytes()  # the documented sample
    assert env.post(pull).status_code == 201
    assert len(env.keys()) == 2


@pytest.mark.parametrize(
    "authorization",
    [None, f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer ", "Bearer"],
)
def test_a_wrong_or_missing_token_gets_401_and_stores_nothing(env, authorization, caplog, capfd):
    headers = {"Authorization": authorization} if authorization is not None else {}
    with caplog.at_level(logging.DEBUG):
        resp = env.client.post("/api/events/oci-local", content=PUSH, headers=headers)
    assert resp.status_code == 401, resp.text
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert env.keys() == [] and env.calls == []
    out, err = capfd.readouterr()
    assert TOKEN[:-1] not in caplog.text + out + err + resp.text


def test_401_comes_before_anything_about_the_body_or_the_registry(env):
    """Without the token nobody learns which registries exist or what size is allowed."""
    assert env.post(b"x" * (LIMIT + 1), token="nope").status_code == 401
    assert env.post(PUSH, registry="nope", token=None).status_code == 401


def test_bearer_ok_never_accepts_an_empty_token():
    assert not bearer_ok("Bearer ", "")
    assert not bearer_ok("Bearer", "")
    assert bearer_ok(f"bearer  {TOKEN} ", TOKEN)


@pytest.mark.parametrize("password", [None, ""])
def test_no_token_configured_is_503_and_never_lets_a_delivery_in(env, monkeypatch, password):
    conn = {"conn_type": "generic", **({"password": password} if password is not None else {})}
    monkeypatch.setenv("AIRFLOW_CONN_REGISTRY_EVENTS", json.dumps(conn))
    client = TestClient(env.app(env.config))
    for authorization in ("Bearer ", "Bearer", None):
        headers = {"Authorization": authorization} if authorization else {}
        resp = client.post("/api/events/oci-local", content=PUSH, headers=headers)
        assert resp.status_code == 503 and "'registry_events'" in resp.json()["detail"]
    monkeypatch.delenv("AIRFLOW_CONN_REGISTRY_EVENTS")
    client = TestClient(env.app(env.config))
    assert client.post("/api/events/oci-local", content=PUSH).status_code == 503
    assert env.keys() == []


def test_the_token_is_looked_up_once_per_ttl():
    looked: list[str] = []
    at = [0.0]

    def lookup(conn_id: str) -> str:
        looked.append(conn_id)
        return f"token-{len(looked)}"

    cache = TokenCache(lookup, ttl=30, clock=lambda: at[0])
    assert cache.get("c") == "token-1"
    at[0] = 29.9
    assert cache.get("c") == "token-1"
    at[0] = 30.0
    assert cache.get("c") == "token-2"  # a rotated token is taken up after the ttl
    assert looked == ["c", "c"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "the body is empty"),
        (b"not json", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b'{"events": [{"id": "a", "action": "pull", "target": {"x": NaN}}]}', "not JSON"),
        (b"[1, 2]", "JSON list; an envelope is an object"),
        (b'{"Records": []}', "no 'events' list"),
        (b'{"events": {"id": "a"}}', "no 'events' list"),
        (b'{"events": []}', "'events' is empty"),
        (b'{"events": ["a"]}', "events[0] is a JSON str"),
        (b'{"events": [{"action": "pull", "target": {}}]}', "events[0].id"),
        (b'{"events": [{"id": "a", "target": {}}]}', "events[0].action"),
        (b'{"events": [{"id": "a", "action": "", "target": {}}]}', "events[0].action"),
        (
            b'{"events": [{"id": "a", "action": "pull", "target": {}}, {"id": "b", "action": "pull"}]}',
            "events[1].target",
        ),
        (b'{"events": [{"id": "a", "action": "pull", "target": "x"}]}', "events[0].target"),
    ],
)
def test_a_body_that_is_not_an_envelope_gets_400_naming_the_problem(env, body, problem):
    resp = env.post(body)
    assert resp.status_code == 400, resp.text
    assert problem in resp.json()["detail"]
    assert env.keys() == [] and env.calls == []


def test_an_envelope_at_the_limit_is_taken(env):
    event = {"id": "a", "action": "pull", "target": {}}
    body = json.dumps({"events": [event], "pad": ""}).encode()
    body = body.replace(b'"pad": ""', b'"pad": "' + b"x" * (LIMIT - len(body)) + b'"')
    assert len(body) == LIMIT
    assert env.post(body).status_code == 201


def test_an_oversized_body_gets_413_with_content_length(env):
    body = PUSH + b" " * (LIMIT + 1 - len(PUSH))  # still a valid envelope: the size alone refuses it
    resp = env.post(body)
    assert resp.status_code == 413 and f"at most {LIMIT}" in resp.json()["detail"]
    assert env.keys() == [] and env.calls == []


def test_an_oversized_body_gets_413_without_content_length(env):
    """A chunked body declares no length: it is counted while read."""
    body = PUSH + b" " * (LIMIT + 1 - len(PUSH))

    def chunks():
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    resp = env.post(chunks())
    assert resp.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in resp.request.headers
    assert resp.status_code == 413, resp.text
    assert env.keys() == [] and env.calls == []
    small = env.post(iter([PUSH[:100], PUSH[100:]]))  # chunked and within the limit: taken
    assert small.status_code == 201


def test_a_content_length_that_is_not_a_number_gets_400(env):
    resp = env.client.post(
        "/api/events/oci-local",
        content=PUSH,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Length": "lots"},
    )
    assert resp.status_code == 400 and "'lots'" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("name", "problem"), [("oci-gone", "not in the config"), ("ecr-local", "of kind 'ecr'")]
)
def test_an_unknown_registry_gets_404_naming_it(env, name, problem):
    resp = env.post(PUSH, registry=name)
    assert resp.status_code == 404
    assert f"registry {name!r} is {problem}" in resp.json()["detail"] and "oci-local" in resp.json()["detail"]
    assert env.keys() == [] and env.calls == []


def test_s3_down_is_503_and_nothing_is_claimed(env, caplog):
    import socket

    with socket.socket() as sock:  # a port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = boto3.client(
        "s3",
        endpoint_url=dead,
        region_name="us-east-1",
        config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    client = TestClient(env.app(env.config, s3_factory=lambda _c: down))
    with caplog.at_level(logging.ERROR):
        resp = client.post(
            "/api/events/oci-local", content=PUSH, headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert resp.status_code == 503 and "deliver it again" in resp.json()["detail"]
    assert env.calls == []  # the hook only hears of stored envelopes
    assert "envelope not stored" in caplog.text and TOKEN not in caplog.text
    assert env.post(PUSH).status_code == 201  # S3 back: the retried delivery is stored


def test_a_missing_bucket_is_503(env):
    gone = make_config(env.bucket + "-gone")
    client = TestClient(env.app(gone))
    resp = client.post("/api/events/oci-local", content=PUSH, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 503 and env.calls == []


def test_a_failing_hook_is_503_and_the_retry_stores_nothing_twice_and_calls_it_again(
    moto_server, s3, monkeypatch
):
    bucket = f"events-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    env = Env(s3, bucket, monkeypatch, hook_failures=1)
    first = env.post(PUSH)
    assert first.status_code == 503 and "stored but its processing failed" in first.json()["detail"]
    assert len(env.keys()) == 1  # stored before the hook ran
    retry = env.post(PUSH)
    assert retry.status_code == 200 and retry.json()["created"] is False
    assert len(env.keys()) == 1 and len(env.calls) == 2


def test_a_broken_config_is_503_without_details(env):
    def broken():
        raise ValueError("test-config: storage.bucket: secret detail")

    client = TestClient(create_app(config_source=broken))
    resp = client.post("/api/events/oci-local", content=PUSH, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 503 and "secret detail" not in resp.text


def test_the_rest_of_the_page_stays_get_only(env):
    for route in ["/", "/api/sections/fleet", "/api/health", "/api/events"]:
        resp = env.client.post(route, content=PUSH, headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status_code in (404, 405), (route, resp.status_code)
    assert env.client.post("/api/sections/fleet").status_code == 405
    assert env.client.get("/api/events/oci-local").status_code == 405
    assert env.keys() == []
