"""Push to findings bench: how long after an image's manifest PUT its envelope is in S3, its
asset event is visible through Airflow's REST API, and its findings are stored.

Run from the repository root (not a pytest test)::

    .venv/bin/python bench/push_to_findings.py          # 5 pushes
    .venv/bin/python bench/push_to_findings.py -n 10

The chain is the production one, every link real and local (127.0.0.1):

- **S3**: moto's server (``moto_server``) in a child process;
- **Airflow**: a migrated SQLite metadata DB in a temp ``AIRFLOW_HOME``, the DAGs serialized
  (``registry_scan`` registers ``registry_pushed_images``), and ``airflow api-server``
  (``devstack/api_server.py``) loading this repository's plugins folder: the Registry page app
  and its receiver at ``/registry-page/api/events/<registry>``, whose ``on_stored`` hook
  records the asset event through the REST API of that same server;
- **the registry**: Debian's distribution registry, notifying the receiver with the token;
- **the scan** (this process): the DAG's own readers of the triggering events
  (``dags/registry_scan.py`` ``_pushed``/``_inventory_key``), then ``jobs.plan_run(pushed=...)``,
  every batch's ``scan_batch`` and ``publish``, as the DAG's tasks run them. Trivy cannot run
  here: the scanner runs the tests' trivy stand-in (a real subprocess replaying a real Trivy
  report for the reference it is given, ``tests/scan/scanfleet.py``).

Per push (N small distinct images one after another, blobs uploaded first), times from the start
of the manifest PUT to:

- **(a)** the envelope with that manifest's push event listed and read in S3
  (``events/<registry>/dt=<day>/``), polled every ``POLL`` seconds in its own thread;
- **(b)** an asset event of ``registry_pushed_images`` naming the digest answered by
  ``GET /api/v2/assets/events``, polled likewise in another thread;
- **(c)** the findings stored: the push-only plan and scan started in-process when (b) is seen.

Median and max of each; the polls make (a) and (b) up to ``POLL`` late. The **baseline** is the
same plan + scan + publish of the same digest started directly in-process (the image given by
hand, no event path), under prefixes of its own so it has as many earlier runs to read and the
digest is not fresh there; (c) is printed as a ratio to it. A first push before the measured
ones warms the server (imports, the token lookup, the config read) and is shown apart.

NOT measured here: the Airflow scheduler's pick-up of the asset event (asset event -> DAG run
queued -> tasks started). No scheduler runs in this bench; that latency is the demo's to
measure (``devstack/demo.py`` with the whole stack running).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import _local
from _report import WIDTH, note

_HOME = tempfile.mkdtemp(prefix="airflow-home-push-bench-")
ROOT = _local.prepare(
    AIRFLOW_HOME=_HOME,
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__DAGS_FOLDER=str(Path(__file__).resolve().parents[1] / "dags"),
    AIRFLOW__CORE__UNIT_TEST_MODE="False",
    GX_ANALYTICS_ENABLED="false",
)

import requests  # noqa: E402
import yaml  # noqa: E402

from devstack.api_server import ApiServer  # noqa: E402
from devstack.services import NotifyEndpoint, RegistryService, moto_process  # noqa: E402
from include.registry_ops.registries.base import Manifest  # noqa: E402
from include.registry_ops.registries.oci import OciRegistry  # noqa: E402
from tests.scan.scanfleet import STAND_IN, TRIVY, image  # noqa: E402

POLL = 0.05  # seconds between two looks at S3 / the REST API
TOKEN = "bench-push-events-token"
USER, PASSWORD = "benchwatch", "bench-Api-pass-4410"
REG_USER, REG_PASSWORD = "benchpusher", "bench-registry-pass-88"
BUCKET = "push-findings-bench"
REGISTRY = "oci-bench"
REPOSITORY = "apps/bench"
PUSHED_NAME = "registry_pushed_images"
REPORTS = [
    TRIVY / f"{name}.json.golden"
    for name in ("alpine-39", "centos-7", "debian-buster", "ubuntu-1804", "amazon-2")
]


# The figures go to the original stdout; everything else written to fd 1 (Airflow's and the
# scan's log lines) is sent to stderr, so `python bench/push_to_findings.py > report.txt` is clean.
REPORT = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)


def out(line: str = "") -> None:
    print(line, file=REPORT, flush=True)


def title(text: str) -> None:
    out()
    out("=" * WIDTH)
    out(text)
    out("=" * WIDTH)


def row(label: str, value: Any, comment: str = "") -> None:
    text = f"  {label:<58} {value!s:>17}"
    out(f"{text}   {comment}" if comment else text)


# -- the services ----------------------------------------------------------------------------------
def write_configs(work: Path, trivy: Path) -> tuple[Path, Path]:
    """The chain's config (the API server reads it too) and the baseline's: the same registry,
    its own S3 prefixes (its own earlier runs, nothing fresh from the chain's scans)."""

    def config(name: str, tag: str) -> Path:
        path = work / name
        path.write_text(
            yaml.safe_dump(
                {
                    "registries": [
                        {"name": REGISTRY, "kind": "oci", "conn_id": "oci_bench", "include": ["apps/*"]}
                    ],
                    "storage": {
                        "conn_id": "aws_default",
                        "bucket": BUCKET,
                        "prefixes": {"inventory": f"{tag}/inventory/", "reports": f"{tag}/reports/"},
                    },
                    "notifications": {"recipients": ["secops@example.com"], "sender": "scan@example.com"},
                    "scan": {"trivy": {"binary": str(trivy)}, "uploads_prefix": f"{tag}/uploads/"},
                }
            )
        )
        return path

    return config("registry-ops.yaml", "chain"), config("registry-ops-baseline.yaml", "baseline")


def airflow(*args: str) -> float:
    """``airflow <args>`` in the bench's AIRFLOW_HOME; its wall time."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
        timeout=600,
    )
    return time.perf_counter() - started


def scan_dag_module() -> Any:
    """dags/registry_scan.py as a module (the DAG file is not a package member)."""
    spec = importlib.util.spec_from_file_location("registry_scan_dag", ROOT / "dags" / "registry_scan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the watchers ----------------------------------------------------------------------------------
class Rest:
    """GETs on the API server with one token (asking ``/auth/token`` per poll would be the
    bench's own load on the server it measures)."""

    def __init__(self, api: ApiServer) -> None:
        self.base = f"{api.base}/api/v2"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {api.token(USER)}"

    def get(self, path: str, **params: Any) -> Any:
        resp = self.http.get(self.base + path, params=params, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def asset_id(self) -> int:
        assets = self.get("/assets", name_pattern=PUSHED_NAME, limit=100)["assets"]
        return next(a["id"] for a in assets if a["name"] == PUSHED_NAME)

    def pushed_events(self, asset_id: int, digest: str) -> list[dict[str, Any]]:
        data = self.get("/assets/events", asset_id=asset_id, order_by="-timestamp", limit=20)
        return [
            e
            for e in data["asset_events"]
            if any(i.get("digest") == digest for i in (e.get("extra") or {}).get("images", []))
        ]


class S3Envelopes:
    """New envelope objects of the registry, each read once."""

    def __init__(self, s3: Any) -> None:
        self.s3, self.read = s3, set()

    def with_push(self, digest: str) -> str | None:
        from include.registry_ops.store import objects

        for obj in objects.list_keys(self.s3, BUCKET, f"events/{REGISTRY}/"):
            key = obj["Key"]
            if key in self.read:
                continue
            self.read.add(key)
            envelope = json.loads(objects.get_bytes(self.s3, BUCKET, key))
            if any(e["action"] == "push" and e["target"].get("digest") == digest for e in envelope["events"]):
                return key
        return None


def poll(check: Callable[[], Any], timeout: float = 120.0) -> tuple[float, Any]:
    """``(perf_counter when check() first answered, its answer)``; RuntimeError past timeout."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        found = check()
        if found:
            return time.perf_counter(), found
        time.sleep(POLL)
    raise RuntimeError(f"not within {timeout:.0f} s")


# -- one push --------------------------------------------------------------------------------------
def scan(config: Any, images: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    """The DAG's plan, every batch, publish: the published manifest."""
    from include.registry_ops.scan import jobs

    planned = jobs.plan_run(config, datetime.now(UTC), run_id, inventory_key=[], pushed=images)
    parts = [jobs.scan_batch(config, b, planned["parts_prefix"]) for b in planned["batches"]]
    return jobs.publish(config, planned, parts)


def check_findings(config: Any, s3: Any, manifest: dict[str, Any], digest: str, what: str) -> int:
    """The run scanned just the digest and stored its findings (else the figure is void)."""
    from include.registry_ops import storage

    if manifest["error_count"] or manifest["ok"] != 1:
        raise RuntimeError(f"{what}: scan of {digest}: {manifest['ok']} ok, {manifest['error_count']} errors")
    findings = storage.get_table(s3, BUCKET, manifest["findings_key"]).to_pandas()
    if set(findings["digest"]) != {digest}:
        raise RuntimeError(f"{what}: findings of {sorted(set(findings['digest']))}, not {digest}")
    return len(findings)


def one_push(ctx: SimpleNamespace, n: int, label: str) -> dict[str, float]:
    spec = image(f"bench-{label}-{uuid.uuid4().hex[:8]}", [f"1.0.{n}"])
    host = ctx.registry.url.split("://", 1)[1]
    reference = f"{host}/{REPOSITORY}@{spec.digest}"
    ctx.trivy_map[reference] = str(REPORTS[n % len(REPORTS)])
    Path(os.environ["TRIVY_FAKE_MAP"]).write_text(json.dumps(ctx.trivy_map))
    client = OciRegistry("bench-push", ctx.registry.url, REG_USER, REG_PASSWORD)
    for blob in spec.blobs:  # blob events come and go before the clock starts
        client.upload_blob(REPOSITORY, blob.data)
    poll(lambda: ctx.envelopes.with_push(spec.blobs[-1].digest))  # the blobs' envelopes are in

    with ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        stored: Future = pool.submit(poll, lambda: ctx.envelopes.with_push(spec.digest))
        recorded: Future = pool.submit(poll, lambda: ctx.rest.pushed_events(ctx.asset_id, spec.digest))
        client.put_manifest(REPOSITORY, Manifest(spec.digest, spec.media_type, spec.raw), f"1.0.{n}")
        t_put = time.perf_counter()
        t_a, _ = stored.result()
        t_b, events = recorded.result()
    dag = ctx.dag
    triggering = {
        "triggering_asset_events": {dag.PUSHED_ASSET: [SimpleNamespace(extra=e["extra"]) for e in events]}
    }
    images, inventory_key = dag._pushed(triggering), dag._inventory_key(triggering)
    if inventory_key or {i["digest"] for i in images} != {spec.digest}:
        raise RuntimeError(f"push {label}: the events name {images}, inventory {inventory_key}")
    manifest = scan(ctx.config, images, f"chain-{label}")
    t_c = time.perf_counter()
    rows = check_findings(ctx.config, ctx.s3, manifest, spec.digest, f"push {label}")

    direct = [
        {
            "registry": REGISTRY,
            "repository": REPOSITORY,
            "digest": spec.digest,
            "tag": f"1.0.{n}",
            "pushed_at": datetime.now(UTC).isoformat(),
        }
    ]
    started = time.perf_counter()
    base = scan(ctx.baseline, direct, f"baseline-{label}")
    baseline = time.perf_counter() - started
    check_findings(ctx.baseline, ctx.s3, base, spec.digest, f"baseline {label}")
    recorded_all = ctx.rest.pushed_events(ctx.asset_id, spec.digest)  # a late retry's too
    return {
        "put": t_put - t0,
        "a": t_a - t0,
        "b": t_b - t0,
        "c": t_c - t0,
        "scan": t_c - t_b,
        "baseline": baseline,
        "events": len(recorded_all),
        "findings": rows,
    }


# -- main ------------------------------------------------------------------------------------------
def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=5, help="measured pushes (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 pushes (make bench ARGS=--quick)")
    args = parser.parse_args()
    if args.quick:
        args.n = min(args.n, 2)

    work = Path(tempfile.mkdtemp(prefix="push-bench-"))
    trivy = work / "trivy"
    trivy.write_text(STAND_IN.format(python=sys.executable))
    trivy.chmod(0o755)
    chain_path, baseline_path = write_configs(work, trivy)
    moto, endpoint = moto_process()
    api = registry = None
    try:
        os.environ.update(
            AIRFLOW_CONN_AWS_DEFAULT=json.dumps(
                {
                    "conn_type": "aws",
                    "login": "testing",
                    "password": "testing",
                    "extra": {"region_name": "us-east-1", "endpoint_url": endpoint},
                }
            ),
            REGISTRY_OPS_CONFIG=str(chain_path),
        )
        from include.registry_ops.clients import s3_client
        from include.registry_ops.config import load_config

        config, baseline = load_config(chain_path), load_config(baseline_path)
        s3 = s3_client(config)
        s3.create_bucket(Bucket=BUCKET)
        note(f"airflow db migrate: {airflow('db', 'migrate'):.1f} s")
        note(f"airflow dags reserialize: {airflow('dags', 'reserialize'):.1f} s")
        api = ApiServer(
            work,
            {USER: PASSWORD},
            AIRFLOW__API_AUTH__JWT_SECRET="push-to-findings-bench-" + uuid.uuid4().hex * 2,
            AIRFLOW_CONN_REGISTRY_EVENTS=json.dumps({"conn_type": "generic", "password": TOKEN}),
        )
        api.env["AIRFLOW_CONN_AIRFLOW_API"] = json.dumps(
            {"conn_type": "http", "host": api.base, "login": USER, "password": PASSWORD}
        )
        started = time.perf_counter()
        api.start()
        note(f"airflow api-server answering: {time.perf_counter() - started:.1f} s")
        receiver = f"{api.base}/registry-page/api/events/{REGISTRY}"
        registry = RegistryService(
            username=REG_USER, password=REG_PASSWORD, notify=(NotifyEndpoint(receiver, TOKEN),)
        ).start()
        os.environ["AIRFLOW_CONN_OCI_BENCH"] = registry.conn_json()
        host = registry.url.split("://", 1)[1]
        os.environ.update(
            TRIVY_FAKE_MAP=str(work / "trivy-map.json"),
            TRIVY_FAKE_LOG=str(work / "trivy-log.jsonl"),
            TRIVY_FAKE_EXPECT=json.dumps(
                {"timeout": "600s", "insecure_hosts": [host], "server": None, "auth_hosts": [host]}
            ),
        )
        rest = Rest(api)
        ctx = SimpleNamespace(
            registry=registry,
            rest=rest,
            asset_id=rest.asset_id(),
            envelopes=S3Envelopes(s3),
            dag=scan_dag_module(),
            config=config,
            baseline=baseline,
            s3=s3,
            trivy_map={},
        )

        title(f"Push to findings: {args.n} pushes in a row (the plugin's receiver in airflow api-server)")
        note("warm-up push (a cold server: imports, token lookup, config read)")
        warm = one_push(ctx, 0, "warm-up")
        row("warm-up push: (a) envelope in S3", ms(warm["a"]))
        row("warm-up push: (b) asset event via REST", ms(warm["b"]))
        row("warm-up push: (c) findings stored", ms(warm["c"]))
        runs = []
        for i in range(1, args.n + 1):
            note(f"push {i}/{args.n}")
            runs.append(one_push(ctx, i, str(i)))
        out()
        out(
            f"  {'push':<6}{'PUT':>9}{'(a) S3':>10}{'(b) REST':>10}{'(c) found':>11}{'scan':>9}"
            f"{'baseline':>10}{'events':>8}{'findings':>10}"
        )
        for i, r in enumerate(runs, 1):
            out(
                f"  {i:<6}{ms(r['put']):>9}{ms(r['a']):>10}{ms(r['b']):>10}{ms(r['c']):>11}"
                f"{ms(r['scan']):>9}{ms(r['baseline']):>10}{r['events']:>8}{r['findings']:>10}"
            )
        out()
        for key, label in (
            ("a", "(a) PUT -> envelope stored in S3"),
            ("b", "(b) PUT -> asset event visible via REST"),
            ("c", "(c) PUT -> findings stored"),
            ("scan", "push-only plan+scan+publish (from (b))"),
            ("baseline", "baseline: direct plan+scan+publish"),
        ):
            values = [r[key] for r in runs]
            row(f"{label}: median / max", f"{ms(statistics.median(values))} / {ms(max(values))}")
        ratio = statistics.median([r["c"] for r in runs]) / statistics.median([r["baseline"] for r in runs])
        row("(c) / baseline (medians)", f"{ratio:.2f}x", "the whole chain against the scan alone")
        gap = statistics.median([r["b"] for r in runs])
        row("event path before the scan starts (median (b))", ms(gap), f"poll interval {POLL * 1000:.0f} ms")
        many = [i for i, r in enumerate(runs, 1) if r["events"] != 1]
        row("pushes with more than one asset event", len(many), "a delivery retried after a slow answer")
        out("  NOT in these figures: the Airflow scheduler's pick-up of the asset event (asset event ->")
        out("  DAG run -> tasks); no scheduler runs in this bench, the demo measures it.")
        out()
    finally:
        if registry is not None:
            registry.stop()
        if api is not None:
            api.stop()
        moto.terminate()
        moto.wait(10)


if __name__ == "__main__":
    main()
