"""Scan on push for the distribution registry, end to end without an inventory run.

A real push (an image and a two-platform index) to the real distribution registry, which
notifies a capture endpoint; the envelopes it sent go to ``forward_pushes`` against the real
Airflow API server (``airflow api-server``, signed in through ``/auth/token``), which records
ONE asset event on ``registry_pushed_images``; the event read back through the REST API is what
the scan plans on: exactly the pushed image and the index's two platform children are scanned
(the trivy stand-in replays real reports), their findings stored, and the gate sees them as it
sees any image. No inventory snapshot exists in the run's S3 prefix at any point.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from devstack.fleet import RepoSpec
from devstack.seed import seed_oci
from devstack.services import NotifyEndpoint, RegistryService
from include.registry_ops import storage
from include.registry_ops.airflow_api import ApiError
from include.registry_ops.assets import PUSHED
from include.registry_ops.clients import s3_client
from include.registry_ops.config import load_config
from include.registry_ops.events.push import forward_pushes, pushed_images
from include.registry_ops.registries.oci import OciRegistry
from include.registry_ops.scan import jobs
from include.registry_ops.scan.pushed import from_extras
from tests.events.polling import wait_for
from tests.scan.scanfleet import STAND_IN, TRIVY, ScanFleet, image, index, invocations, stand_in_env

USER, PASSWORD = "pushwatch", "push-Api-pass-7731"
REG_USER, REG_PASSWORD = "pusher", "push-registry-pass-19"
BUCKET = "registry-ops-push-test"
JWT_SECRET = "scan-on-push-test-" + "p" * 48
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "events"


class Sink:
    """An HTTP endpoint on 127.0.0.1 keeping every envelope the registry POSTs to it."""

    def __init__(self) -> None:
        self.envelopes: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.envelopes.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict]:
        return [e for env in list(self.envelopes) for e in env.get("events", [])]

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def notifying():
    """A distribution registry that notifies the sink of every push and pull."""
    sink = Sink()
    server = RegistryService(username=REG_USER, password=REG_PASSWORD, notify=(NotifyEndpoint(sink.url),))
    server.start()
    conn = json.loads(server.conn_json())
    os.environ["AIRFLOW_CONN_OCI_PUSH"] = json.dumps(conn)
    yield server, sink
    server.stop()
    sink.stop()
    os.environ.pop("AIRFLOW_CONN_OCI_PUSH", None)


@pytest.fixture(scope="module")
def pushed(notifying):
    """The push: a tagged image and a tagged two-platform index, both into ``apps/web``."""
    server, sink = notifying
    web = image("push-web", ["1.4.0", "latest"])
    amd, arm = image("push-multi", [], arch="amd64"), image("push-multi", [], arch="arm64")
    multi = index([amd, arm], ["2.0.0"])
    seed_oci(
        OciRegistry("push", server.url, REG_USER, REG_PASSWORD),
        [RepoSpec("apps/web", [web, amd, arm, multi])],
    )
    manifests = {s.digest for s in (web, amd, arm, multi)}

    def all_manifest_pushes():
        seen = {
            e["target"]["digest"]
            for e in sink.events()
            if e.get("action") == "push" and e["target"]["digest"] in manifests
        }
        return seen == manifests

    wait_for("the registry's push notifications", all_manifest_pushes)
    envelopes = [env for env in sink.envelopes if any(e.get("action") == "push" for e in env["events"])]
    return {"web": web, "amd": amd, "arm": arm, "multi": multi, "envelopes": envelopes, "host": server.url}


@pytest.fixture(scope="module")
def airflow(serialized_dags, moto_server, tmp_path_factory):
    """The real API server, with our DAGs serialized (registry_scan registers the asset)."""
    from devstack.api_server import ApiServer

    server = ApiServer(
        tmp_path_factory.mktemp("push-api"),
        {USER: PASSWORD},
        AIRFLOW__API_AUTH__JWT_SECRET=JWT_SECRET,
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def trivy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trivy-push") / "trivy"
    path.write_text(STAND_IN.format(python=sys.executable))
    path.chmod(0o755)
    return path


def _config(tmp_path: Path, trivy: Path, scan_on_push: bool = True) -> tuple[Path, object]:
    tag = f"push-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"registry-ops-{tag}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "oci-push", "kind": "oci", "conn_id": "oci_push", "include": ["apps/*"]}
                ],
                "storage": {
                    "conn_id": "aws_default",
                    "bucket": BUCKET,
                    "prefixes": {"inventory": f"{tag}/inventory/", "reports": f"{tag}/reports/"},
                },
                "notifications": {"recipients": ["secops@example.com"], "sender": "scan@example.com"},
                "scan": {"trivy": {"binary": str(trivy)}, "uploads_prefix": f"{tag}/uploads/"},
                "events": {"scan_on_push": scan_on_push},
            }
        )
    )
    config = load_config(path)
    storage.ensure_bucket(s3_client(config), BUCKET)
    return path, config


@pytest.fixture
def api_conn(airflow, monkeypatch):
    conn = {"conn_type": "http", "host": airflow.base, "login": USER, "password": PASSWORD}
    monkeypatch.setenv("AIRFLOW_CONN_AIRFLOW_API", json.dumps(conn))
    return conn


def _scan_dag_module():
    """dags/registry_scan.py as a module (the DAG file is not a package member)."""
    spec = importlib.util.spec_from_file_location("registry_scan_dag", ROOT / "dags" / "registry_scan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _asset_events(airflow, asset_id: int) -> list[dict]:
    data = airflow.api(USER, "GET", "/assets/events", params={"asset_id": asset_id, "limit": 100})
    return data["asset_events"]


def test_blob_pushes_and_pulls_are_not_images(pushed, notifying):
    server, sink = notifying
    web, multi = pushed["web"], pushed["multi"]
    images = [i for env in pushed["envelopes"] for i in pushed_images("oci-push", env)]
    by_digest = {}
    for i in images:
        by_digest.setdefault(i["digest"], set()).add(i["tag"])
    # the registry also announced every layer and config blob it took: none is an image
    blobs = {b.digest for spec in (web, pushed["amd"], pushed["arm"]) for b in spec.blobs}
    assert blobs & {e["target"]["digest"] for e in sink.events()}, "the registry sent no blob events?"
    assert set(by_digest) == {web.digest, pushed["amd"].digest, pushed["arm"].digest, multi.digest}
    assert by_digest[web.digest] >= {"1.4.0", "latest"} and by_digest[multi.digest] >= {"2.0.0"}
    assert all(i["registry"] == "oci-push" and i["repository"] == "apps/web" for i in images)
    assert all(i["pushed_at"] and i["pushed_at"].endswith("+00:00") for i in images)

    # a pull of the image gives pull events only: no image
    before = len(sink.envelopes)
    OciRegistry("pull", server.url, REG_USER, REG_PASSWORD).get_manifest("apps/web", "latest")
    wait_for("the pull notification", lambda: any(
        e.get("action") == "pull" for env in sink.envelopes[before:] for e in env["events"]))  # fmt: skip
    assert [pushed_images("oci-push", env) for env in sink.envelopes[before:]] == [[]] * len(
        sink.envelopes[before:]
    )


def test_the_documented_envelope_gives_one_image_per_manifest_push():
    envelope = json.loads((FIXTURE / "distribution-notification-push-envelope.docs.json").read_text())
    manifest = envelope["events"][0]["target"]
    assert [e["target"]["mediaType"] for e in envelope["events"]][1:] == [
        "application/vnd.docker.container.image.rootfs.diff+x-gtar"
    ] * 2  # the docs' example: one manifest push, two layer pushes
    assert pushed_images("hub", envelope) == [
        {
            "registry": "hub",
            "repository": "library/test",
            "digest": manifest["digest"],
            "tag": None,
            "pushed_at": "2006-01-02T15:04:05+00:00",
        }
    ]
    again = {"events": envelope["events"] * 2}  # delivered twice in one envelope: once
    assert len(pushed_images("hub", again)) == 1
    pulled = {"events": [{**envelope["events"][0], "action": "pull"}]}
    assert pushed_images("hub", pulled) == []
    # distribution's own test envelope: its manifest's digest is no sha256 digest: no image
    bad = json.loads((FIXTURE / "distribution-notification-push-envelope.event_test.json").read_text())
    assert bad["events"][0]["target"]["digest"] == "sha256:0123456789abcdef0"
    assert pushed_images("hub", bad) == []
    with pytest.raises(ValueError, match="registry hub: not a notification envelope"):
        pushed_images("hub", {"event": []})


def test_a_push_is_scanned_without_an_inventory_run(pushed, airflow, api_conn, trivy, tmp_path, monkeypatch):
    _, config = _config(tmp_path, trivy)
    asset_id = next(a["id"] for a in airflow.api(USER, "GET", "/assets", params={"limit": 1000})["assets"]
                    if a["name"] == PUSHED["name"])  # fmt: skip
    before = {e["id"] for e in _asset_events(airflow, asset_id)}

    recorded = [forward_pushes(config, "oci-push", env) for env in pushed["envelopes"]]
    recorded = [r for r in recorded if r is not None]
    assert recorded, "no envelope gave an asset event"
    new = [e for e in _asset_events(airflow, asset_id) if e["id"] not in before]
    assert sorted(e["id"] for e in new) == sorted(r["id"] for r in recorded)
    web, amd, arm, multi = (pushed[k] for k in ("web", "amd", "arm", "multi"))
    extras = [e["extra"] for e in new]
    assert all(x["source"] == "registry-notifications" for x in extras)
    assert {i["digest"] for x in extras for i in x["images"]} == {
        web.digest,
        amd.digest,
        arm.digest,
        multi.digest,
    }

    # the scan run those events trigger: no inventory snapshot exists for this config
    s3 = s3_client(config)
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=config.storage.prefixes.inventory)["KeyCount"] == 0
    fleet = ScanFleet(pushed["host"].split("://", 1)[1], {})
    ref = f"{fleet.oci_host}/apps/web@"
    fleet.trivy_reports = {
        ref + web.digest: TRIVY / "alpine-39.json.golden",
        ref + amd.digest: TRIVY / "centos-7.json.golden",
        ref + arm.digest: TRIVY / "fluentd-gems.json.golden",
    }
    log = stand_in_env(monkeypatch, fleet, tmp_path)
    # what the DAG's plan task reads from the run's triggering events: these, no inventory event
    dag = _scan_dag_module()
    ctx = {"triggering_asset_events": {dag.PUSHED_ASSET: [SimpleNamespace(extra=x) for x in extras]}}
    images, inventory_key = dag._pushed(ctx), dag._inventory_key(ctx)
    assert inventory_key == [] and {i["digest"] for i in images} == {
        i["digest"] for x in extras for i in x["images"]
    }
    run_at = datetime.now(UTC)
    planned = jobs.plan_run(config, run_at, "push-1", inventory_key=inventory_key, pushed=images)
    targets = storage.get_json(s3, BUCKET, planned["parts_prefix"] + "targets.json")
    assert sorted(t["digest"] for t in targets) == sorted([web.digest, amd.digest, arm.digest])
    assert planned["pushed"]["problems"] == []
    parts = [jobs.scan_batch(config, b, planned["parts_prefix"]) for b in planned["batches"]]
    assert sorted(i["argv"][-1] for i in invocations(log)) == sorted(fleet.trivy_reports)
    manifest = jobs.publish(config, planned, parts)
    assert manifest["error_count"] == 0 and manifest["ok"] == 3
    findings = storage.get_table(s3, BUCKET, manifest["findings_key"]).to_pandas()
    assert set(findings["digest"]) == {web.digest, amd.digest, arm.digest}
    assert set(findings.loc[findings["digest"] == web.digest, "severity"]) >= {"CRITICAL"}

    # the gate treats them like any image: web:latest is protected and has CRITICALs
    result = jobs.gate(config, manifest)
    violating = {v["digest"]: v for v in result["violations"]}
    assert web.digest in violating and violating[web.digest]["protected"] is True
    assert not result["passed"]

    # the same push again (a retried delivery) within the freshness window scans nothing
    again = jobs.plan_run(config, datetime.now(UTC), "push-2", inventory_key=[], pushed=images)
    assert again["to_scan"] == 0 and again["fresh"] == 3

    # an index pushed over manifests already there (only the index's event comes): its children
    only_index = [i for i in images if i["digest"] == multi.digest]
    forced = jobs.plan_run(
        config, datetime.now(UTC), "push-3", inventory_key=[], pushed=only_index, force=True
    )
    targets = storage.get_json(s3, BUCKET, forced["parts_prefix"] + "targets.json")
    assert sorted(t["digest"] for t in targets) == sorted([amd.digest, arm.digest])


def test_scan_on_push_off_records_nothing(pushed, moto_server, trivy, tmp_path, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AIRFLOW_API", json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9"})
    )
    _, config = _config(tmp_path, trivy, scan_on_push=False)
    envelope = next(env for env in pushed["envelopes"] if pushed_images("oci-push", env))
    assert forward_pushes(config, "oci-push", envelope) is None  # the API (port 9) is never asked


def test_a_failed_rest_call_names_the_connection_and_url_not_secrets(
    pushed, airflow, api_conn, trivy, tmp_path, monkeypatch
):
    _, config = _config(tmp_path, trivy)
    envelope = next(env for env in pushed["envelopes"] if pushed_images("oci-push", env))
    wrong = "not-the-Push-pass-44"
    monkeypatch.setenv("AIRFLOW_CONN_AIRFLOW_API", json.dumps({**api_conn, "password": wrong}))
    with pytest.raises(ApiError) as err:
        forward_pushes(config, "oci-push", envelope)
    text = str(err.value)
    assert "'airflow_api'" in text and airflow.base in text and "HTTP 401" in text and wrong not in text

    from devstack.services import free_port

    down = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_AIRFLOW_API", json.dumps({**api_conn, "host": down}))
    with pytest.raises(ApiError) as err:
        forward_pushes(config, "oci-push", envelope)
    assert down in str(err.value) and "ConnectError" in str(err.value) and PASSWORD not in str(err.value)

    monkeypatch.delenv("AIRFLOW_CONN_AIRFLOW_API")
    with pytest.raises(ApiError, match=r"'airflow_api'.*AIRFLOW_CONN_AIRFLOW_API"):
        forward_pushes(config, "oci-push", envelope)


def test_event_extras_of_both_sources_give_their_images():
    image = {
        "registry": "r",
        "repository": "a/b",
        "digest": "sha256:" + "1" * 64,
        "tag": "1.0",
        "pushed_at": None,
    }
    rest = {"source": "registry-notifications", "images": [image], "from_rest_api": True}
    watcher = {"from_trigger": True, "payload": {"source": "ecr-eventbridge", "images": [image]}}
    assert from_extras([rest, watcher]) == [image, image]
    with pytest.raises(ValueError, match="pushed-images event 1: extra has no 'images' list"):
        from_extras([rest, {"source": "by hand"}])
    with pytest.raises(ValueError, match="event 0: an image lacks registry/repository/digest"):
        from_extras([{"images": [{**image, "digest": ""}]}])


def test_a_stale_token_is_renewed_once_and_an_unknown_asset_is_named(airflow, api_conn):
    import jwt

    from include.registry_ops.airflow_api import connect

    api = connect("airflow_api")
    real = api.token()  # the same token, expired: what a long-lived process holds after a while
    header, claims = jwt.get_unverified_header(real), jwt.decode(real, options={"verify_signature": False})
    expired = jwt.encode(
        {**claims, "iat": claims["iat"] - 7200, "nbf": claims["iat"] - 7200, "exp": claims["iat"] - 3600},
        JWT_SECRET,
        algorithm=header["alg"],
        headers={k: v for k, v in header.items() if k not in ("alg", "typ")},
    )
    api._token = expired
    assert api.asset_id(PUSHED["name"], PUSHED["uri"]) > 0  # 401 "Token Expired", renewed, answered
    assert api._token not in (expired, None)
    with pytest.raises(ApiError, match=r"no asset 'registry_nothing'.*registry_scan") as err:
        api.asset_id("registry_nothing", "registry-ops://nothing")
    assert airflow.base in str(err.value)
