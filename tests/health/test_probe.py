"""Probes against real services: a distribution registry of this module's own (stopped and
started again on the same port and storage), moto's ECR, and small HTTP servers that answer
503 or never answer."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest
import yaml

from devstack.services import RegistryService, free_port
from include.registry_ops import inventory, schema
from include.registry_ops.config import parse_config
from include.registry_ops.health import probe as probe_mod
from include.registry_ops.health.settings import Canary
from include.registry_ops.registries.oci import OciRegistry
from tests.conftest import BUCKET
from tests.registries.conftest import ecr_adapter
from tests.registries.images import image, push, unique

USER, PASSWORD = "prober", "pr0be-s3cret-pass"
AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NOT_THERE = "sha256:" + "0" * 64


class Oci:
    """A registry whose storage outlives its process: stop() and start() keep port and images."""

    def __init__(self, tmp_path) -> None:
        self.root, self.port = tmp_path / "registry", free_port()
        self.root.mkdir()
        self.server: RegistryService | None = None

    def start(self) -> Oci:
        self.server = RegistryService(self.root, USER, PASSWORD, self.port).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def oci(tmp_path_factory, moto_server):
    registry = Oci(tmp_path_factory.mktemp("probe")).start()
    os.environ["AIRFLOW_CONN_OCI_PROBE"] = registry.server.conn_json()
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def images(oci, moto_server, config_file):
    """One tagged image in each registry: (oci canary, ecr canary)."""
    repo = unique("probe")
    oci_digest = push(OciRegistry("seed", oci.url, USER, PASSWORD), repo, image(f"oci-{repo}"), "v1").digest
    ecr = ecr_adapter(moto_server.endpoint)
    ecr.create_repository(repo)
    ecr_digest = push(ecr, repo, image(f"ecr-{repo}"), "v1").digest
    return Canary(repository=repo, digest=oci_digest), Canary(repository=repo, digest=ecr_digest)


def make_config(images=None, timeout: float = 5.0, registries=None, inventory_prefix: str | None = None):
    regs = registries or [
        {"name": "ecr-p", "kind": "ecr", "conn_id": "aws_default", "region": "us-east-1"},
        {"name": "oci-p", "kind": "oci", "conn_id": "oci_probe"},
    ]
    health: dict = {"timeout_seconds": timeout}
    if images:
        health["canaries"] = {
            "oci-p": images[0].model_dump(),
            "ecr-p": images[1].model_dump(),
        }
    prefixes = {"inventory": inventory_prefix} if inventory_prefix else {}
    return parse_config(
        {"registries": regs, "storage": {"bucket": BUCKET, "prefixes": prefixes}, "health": health}
    )


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["registry"]: r for r in rows}


def test_both_registries_answer_and_serve_their_canary(oci, images, s3, caplog):
    rows = probe_mod.probe_all(make_config(images), s3, AT, "run-good")
    assert [r["registry"] for r in rows] == ["ecr-p", "oci-p"]
    for row in rows:
        assert row["api_ok"] and row["canary_ok"] and row["good"], row
        assert row["error"] is None
        assert row["api_ms"] > 0 and row["canary_ms"] > 0
        assert row["at"] == AT and row["run_id"] == "run-good"
    assert by_name(rows)["oci-p"]["canary_digest"] == images[0].digest
    assert by_name(rows)["ecr-p"]["kind"] == "ecr" and by_name(rows)["oci-p"]["kind"] == "oci"
    assert PASSWORD not in json.dumps(probe_mod.jsonable(rows)) + caplog.text


def test_a_stopped_registry_is_down_and_the_other_stays_good(oci, images, s3, caplog, monkeypatch):
    caplog.set_level(logging.WARNING)
    backoffs: list[int] = []
    monkeypatch.setattr(OciRegistry, "_sleep", lambda self, attempt, retry_after: backoffs.append(attempt))
    oci.stop()
    try:
        rows = by_name(probe_mod.probe_all(make_config(images, timeout=2), s3, AT, "run-down"))
    finally:
        oci.start()
    assert backoffs == []  # one attempt per check: no retries with backoff (counted, not timed)
    down = rows["oci-p"]
    assert down["api_ok"] is False and down["canary_ok"] is False and down["good"] is False
    assert down["api_ms"] is None
    assert down["error"].startswith(f"registry oci-p ({oci.url}): API: GET {oci.url}/v2/: cannot connect")
    assert rows["ecr-p"]["good"] is True and rows["ecr-p"]["error"] is None
    assert PASSWORD not in json.dumps(probe_mod.jsonable(list(rows.values()))) + caplog.text
    # started again: good again (same storage, same port)
    assert by_name(probe_mod.probe_all(make_config(images), s3, AT, "run-back"))["oci-p"]["good"] is True


def test_a_wrong_canary_digest_fails_the_canary_only(oci, images, s3):
    wrong = (
        Canary(repository=images[0].repository, digest=NOT_THERE),
        Canary(repository=images[1].repository, digest=NOT_THERE),
    )
    rows = by_name(probe_mod.probe_all(make_config(wrong), s3, AT, "run-wrong"))
    for name, row in rows.items():
        assert row["api_ok"] is True and row["api_ms"] > 0, name
        assert row["canary_ok"] is False and row["good"] is False, name
        assert f"canary {images[0].repository}@{NOT_THERE}" in row["error"], name
        assert row["canary_digest"] == NOT_THERE


def test_a_manifest_that_hashes_to_another_digest_fails_the_canary(oci, images, s3, monkeypatch):
    """The digest is checked on the bytes the registry returned."""
    from include.registry_ops.registries.base import Manifest

    real = OciRegistry.get_manifest

    def swapped(self, repository, reference):
        m = real(self, repository, reference)
        return Manifest(m.digest, m.media_type, m.raw + b" ")

    monkeypatch.setattr(OciRegistry, "get_manifest", swapped)
    row = by_name(probe_mod.probe_all(make_config(images), s3, AT, "run-swap"))["oci-p"]
    assert row["api_ok"] is True and row["canary_ok"] is False and row["good"] is False
    assert "the manifest hashes to sha256:" in row["error"]


class _Answer(BaseHTTPRequestHandler):
    """``/v2/`` answers ``status`` after ``delay``; anything else ``other`` with ``body``."""

    delay, status, other, body = 0.0, 503, 404, b""

    def do_GET(self) -> None:
        time.sleep(self.delay)
        v2 = self.path == "/v2/"
        body = b"" if v2 else self.body
        self.send_response(self.status if v2 else self.other)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server():
    servers = []

    def start(status: int, delay: float = 0.0, other: int = 404, body: bytes = b"") -> str:
        handler = type("H", (_Answer,), {"status": status, "delay": delay, "other": other, "body": body})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _oci_at(url: str, conn: str) -> dict:
    os.environ[f"AIRFLOW_CONN_{conn.upper()}"] = json.dumps(
        {"conn_type": "http", "host": url, "login": USER, "password": PASSWORD}
    )
    return {"name": conn.replace("_", "-"), "kind": "oci", "conn_id": conn}


def test_a_5xx_and_a_timeout_are_down_with_the_problem_named(http_server, oci, images, s3):
    failing, hanging = http_server(503), http_server(200, delay=3)
    regs = [
        _oci_at(failing, "oci_503"),
        _oci_at(hanging, "oci_hang"),
        {"name": "oci-p", "kind": "oci", "conn_id": "oci_probe"},
    ]
    config = parse_config(
        {
            "registries": regs,
            "storage": {"bucket": BUCKET},
            "health": {"timeout_seconds": 0.5, "canaries": {"oci-p": images[0].model_dump()}},
        }
    )
    start = time.monotonic()
    rows = by_name(probe_mod.probe_all(config, s3, AT, "run-5xx"))
    assert time.monotonic() - start < 2.5  # in parallel, each bounded by the timeout
    assert rows["oci-503"]["api_ok"] is False
    assert rows["oci-503"]["error"] == f"registry oci-503 ({failing}): API: GET {failing}/v2/: HTTP 503"
    assert rows["oci-hang"]["api_ok"] is False
    assert (
        rows["oci-hang"]["error"]
        == f"registry oci-hang ({hanging}): API: GET {hanging}/v2/: no answer within 0.5s"
    )
    for name in ("oci-503", "oci-hang"):  # no canary known: good is api_ok, canary columns null
        assert rows[name]["canary_repository"] is None and rows[name]["canary_ok"] is None
        assert rows[name]["good"] is False
    assert rows["oci-p"]["good"] is True


def test_a_dead_ecr_endpoint_is_down_naming_it(oci, images, s3):
    port = free_port()
    os.environ["AIRFLOW_CONN_AWS_DEAD"] = json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "dead-secret-key",
            "extra": {"region_name": "us-east-1", "endpoint_url": f"http://127.0.0.1:{port}"},
        }
    )
    regs = [
        {"name": "ecr-dead", "kind": "ecr", "conn_id": "aws_dead", "region": "us-east-1"},
        {"name": "oci-p", "kind": "oci", "conn_id": "oci_probe"},
    ]
    config = parse_config(
        {
            "registries": regs,
            "storage": {"bucket": BUCKET},
            "health": {
                "timeout_seconds": 1,
                "canaries": {"oci-p": images[0].model_dump(), "ecr-dead": images[1].model_dump()},
            },
        }
    )
    start = time.monotonic()
    rows = by_name(probe_mod.probe_all(config, s3, AT, "run-ecr-dead"))
    assert time.monotonic() - start < 3  # one attempt per call: botocore's retries are off
    dead = rows["ecr-dead"]
    assert dead["api_ok"] is False and dead["canary_ok"] is False and dead["good"] is False
    endpoint = f"http://127.0.0.1:{port}"
    assert dead["error"].startswith(f"registry ecr-dead ({endpoint}): API: DescribeRegistry at {endpoint}")
    assert "dead-secret-key" not in json.dumps(probe_mod.jsonable(list(rows.values())))
    assert rows["oci-p"]["good"] is True


def test_one_probe_raising_never_stops_the_others(oci, images, s3, monkeypatch):
    """Even a bug of ours in one registry's probe becomes that registry's bad row."""
    real = probe_mod._api_check

    def broken(registry, timeout):
        if registry.kind == "ecr":
            raise KeyError("a bug")
        return real(registry, timeout)

    monkeypatch.setattr(probe_mod, "_api_check", broken)
    rows = by_name(probe_mod.probe_all(make_config(images), s3, AT, "run-bug"))
    assert rows["ecr-p"]["good"] is False and "the probe failed: KeyError" in rows["ecr-p"]["error"]
    assert rows["oci-p"]["good"] is True


def _snapshot_row(
    registry: str,
    kind: str,
    repository: str,
    digest: str,
    tags: list[str],
    created: datetime,
    what: str = "image",
) -> dict:
    return {
        "registry": registry,
        "registry_kind": kind,
        "repository": repository,
        "digest": digest,
        "tags": tags,
        "kind": what,
        "created_at": created,
        "pushed_at": None,
        "parent_digests": [],
        "child_digests": [],
        "snapshot_at": AT,
    }


def test_the_canary_is_the_newest_tagged_image_of_the_latest_inventory(oci, images, s3):
    prefix = f"inv-{uuid.uuid4().hex[:8]}/"
    real = images[0]
    fake = lambda c: "sha256:" + c * 64  # noqa: E731
    rows = [
        _snapshot_row("oci-p", "oci", "old/app", fake("1"), ["v0"], datetime(2026, 1, 1, tzinfo=UTC)),
        _snapshot_row("oci-p", "oci", real.repository, real.digest, ["v1"], datetime(2026, 3, 1, tzinfo=UTC)),
        _snapshot_row("oci-p", "oci", "new/app", fake("2"), [], datetime(2026, 5, 1, tzinfo=UTC)),  # untagged
        _snapshot_row(
            "oci-p",
            "oci",
            "new/app",
            fake("3"),
            ["sha256-x.sig"],
            datetime(2026, 6, 1, tzinfo=UTC),
            "referrer",
        ),
    ]
    table = schema.validate_table(pa.Table.from_pylist(rows, schema=schema.ARROW_SCHEMA))
    inventory.publish_snapshot(s3, BUCKET, prefix, table, [], AT, ["oci-p"])
    config = make_config(inventory_prefix=prefix)
    picked = probe_mod.canaries(config, s3, ["ecr-p", "oci-p"])
    assert picked == {"oci-p": real, "ecr-p": None}
    out = by_name(probe_mod.probe_all(config, s3, AT, "run-inventory"))
    assert (out["oci-p"]["canary_repository"], out["oci-p"]["canary_digest"]) == (
        real.repository,
        real.digest,
    )
    assert out["oci-p"]["canary_ok"] is True and out["oci-p"]["good"] is True
    ecr = out["ecr-p"]  # nothing of ecr-p in the snapshot: no canary, good = api_ok
    assert ecr["canary_repository"] is None and ecr["canary_digest"] is None and ecr["canary_ok"] is None
    assert ecr["good"] is ecr["api_ok"] is True


def test_no_inventory_means_no_canary(oci, s3):
    config = make_config(inventory_prefix=f"none-{uuid.uuid4().hex[:8]}/")
    assert probe_mod.canaries(config, s3, ["oci-p"]) == {"oci-p": None}


def _config_file(tmp_path, canaries: dict) -> str:
    path = tmp_path / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "ecr-p", "kind": "ecr", "conn_id": "aws_default", "region": "us-east-1"},
                    {"name": "oci-p", "kind": "oci", "conn_id": "oci_probe"},
                ],
                "storage": {"bucket": BUCKET, "prefixes": {"health": f"health-{uuid.uuid4().hex[:8]}/"}},
                "health": {"timeout_seconds": 5, "canaries": canaries},
            }
        )
    )
    return str(path)


def test_cli_probe_prints_the_rows_and_stores_them(oci, images, s3, tmp_path, capsys):
    from include.registry_ops.cli import main
    from include.registry_ops.config import load_config
    from include.registry_ops.health import dataset

    path = _config_file(tmp_path, {"oci-p": images[0].model_dump(), "ecr-p": images[1].model_dump()})
    assert main(["health", "probe", "--config", path, "--store", "--run-id", "manual__1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["registry"], r["good"], r["run_id"]) for r in out["rows"]] == [
        ("ecr-p", True, "manual__1"),
        ("oci-p", True, "manual__1"),
    ]
    config = load_config(path)
    at = datetime.fromisoformat(out["rows"][0]["at"])
    assert out["stored"] == dataset.run_key(config, at, "manual__1")
    stored = dataset.read(s3, config, at, at + timedelta(seconds=1))
    assert stored.column("registry").to_pylist() == ["ecr-p", "oci-p"]

    assert main(["health", "probe", "--config", path, "--registry", "oci-p"]) == 0  # printed, not stored
    out = json.loads(capsys.readouterr().out)
    assert [r["registry"] for r in out["rows"]] == ["oci-p"] and out["stored"] is None
    assert main(["health", "probe", "--config", path, "--registry", "nope"]) == 2
    assert "unknown registry 'nope'" in capsys.readouterr().err


def test_cli_probe_exits_1_when_a_registry_is_not_good(oci, images, s3, tmp_path, capsys):
    from include.registry_ops.cli import main

    path = _config_file(tmp_path, {"oci-p": {"repository": images[0].repository, "digest": NOT_THERE}})
    assert main(["health", "probe", "--config", path]) == 1
    rows = {r["registry"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["oci-p"]["canary_ok"] is False and rows["ecr-p"]["good"] is True


def test_a_registry_without_its_connection_is_down_naming_it(oci, images, s3):
    config = parse_config(
        {
            "registries": [
                {"name": "oci-gone", "kind": "oci", "conn_id": "oci_never_defined"},
                {"name": "oci-p", "kind": "oci", "conn_id": "oci_probe"},
            ],
            "storage": {"bucket": BUCKET},
            "health": {"canaries": {"oci-gone": images[0].model_dump(), "oci-p": images[0].model_dump()}},
        }
    )
    rows = by_name(probe_mod.probe_all(config, s3, AT, "run-noconn"))
    gone = rows["oci-gone"]
    assert gone["api_ok"] is False and gone["canary_ok"] is False and gone["good"] is False
    assert "registry oci-gone (connection oci_never_defined): cannot build its client" in gone["error"]
    assert "'oci_never_defined' is not defined" in gone["error"]
    assert rows["oci-p"]["good"] is True


def test_credentials_in_a_registry_error_are_redacted_in_rows_and_logs(http_server, s3, caplog):
    """A registry whose error text quotes a URL with a password: neither the row nor the log has it."""
    caplog.set_level(logging.WARNING)
    body = json.dumps(
        {
            "errors": [
                {
                    "code": "UNKNOWN",
                    "message": "storage http://admin:hunter2-pw@db:5432 failed, password=hunter2-pw",
                }
            ]
        }
    ).encode()
    url = http_server(200, other=500, body=body)
    config = parse_config(
        {
            "registries": [_oci_at(url, "oci_leaky")],
            "storage": {"bucket": BUCKET},
            "health": {
                "timeout_seconds": 2,
                "canaries": {"oci-leaky": {"repository": "app", "digest": NOT_THERE}},
            },
        }
    )
    [row] = probe_mod.probe_all(config, s3, AT, "run-leak")
    assert row["api_ok"] is True and row["canary_ok"] is False
    assert "HTTP 500" in row["error"] and "http://***@db:5432" in row["error"]
    assert "hunter2" not in row["error"] and "hunter2" not in caplog.text


def test_registries_are_probed_in_parallel(http_server, s3):
    """Three registries that each take a second to answer: about a second in all, not three."""
    regs = [_oci_at(http_server(200, delay=1), f"oci_slow{n}") for n in range(3)]
    empty = {"bucket": BUCKET, "prefixes": {"inventory": f"none-{uuid.uuid4().hex[:8]}/"}}
    config = parse_config({"registries": regs, "storage": empty, "health": {"timeout_seconds": 5}})
    probe_mod.probe_all(config, s3, AT, "run-warm-up")  # imports and connection look-ups
    start = time.monotonic()
    rows = probe_mod.probe_all(config, s3, AT, "run-slow")
    assert time.monotonic() - start < 2.5
    assert [r["good"] for r in rows] == [True, True, True]
    assert all(r["api_ms"] >= 1000 for r in rows)


def test_an_unreadable_inventory_only_costs_the_picked_canaries(oci, images, s3, monkeypatch, caplog):
    from botocore.exceptions import ClientError

    def denied(*args, **kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject")

    monkeypatch.setattr(inventory, "latest_snapshot", denied)
    config = make_config()
    config = config.model_copy(
        update={"health": config.health.model_copy(update={"canaries": {"oci-p": images[0]}})}
    )
    assert probe_mod.canaries(config, s3, ["ecr-p", "oci-p"]) == {"oci-p": images[0], "ecr-p": None}
    rows = by_name(probe_mod.probe_all(config, s3, AT, "run-denied"))
    assert rows["oci-p"]["good"] and rows["ecr-p"]["good"] and rows["ecr-p"]["canary_digest"] is None
    assert "AccessDenied" in caplog.text
