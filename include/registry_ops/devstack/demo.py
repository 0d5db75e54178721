"""``make demo``: the local stack, a seeded fleet, every DAG run once, then the Airflow UI.

    python -m include.registry_ops.devstack.demo [--once] [--port 8080] [--small]

Steps: start moto, the distribution registry and the SMTP sink on 127.0.0.1; seed ECR
(20 repositories, ~1,000 images) and the registry (10 repositories, ~500 images); migrate a
SQLite Airflow DB under ``.demo/airflow``; run every DAG once with ``dag.test()``; copy the
inventory snapshot to ``.demo/out/``; print a summary. Without ``--once`` it then starts
``airflow standalone`` (bound to 127.0.0.1, every user admin: a local demo only), where the
runs just made are visible and the schedules go on, and stays up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
WORK = ROOT / ".demo"
# Order matters: later DAGs read what the inventory published. Runs are (dag_id, conf):
# retention runs for real here (its `services` policy is enabled) so the restore can follow.
DAG_ORDER = ("registry_inventory", "registry_scan", "registry_retention", "registry_restore")
# A failed gate is the scan working (the seeded reports hold critical CVEs), not a demo failure.
EXPECTED_FAILURES = {"registry_scan": {"gate"}}


def _airflow_env(port: int) -> None:
    os.environ.update(
        AIRFLOW_HOME=str(WORK / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        REGISTRY_OPS_CONFIG=os.environ.get("REGISTRY_OPS_CONFIG", str(ROOT / "config" / "registry-ops.yaml")),
        GX_ANALYTICS_ENABLED="false",
        PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        # `airflow standalone` starts its components as `airflow ...`: the venv's bin first
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )


def _log(msg: str) -> None:
    print(f"[demo {datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def seed(stack, small: bool) -> dict[str, int]:
    import boto3

    from ..registries.oci import OciRegistry
    from .fleet import make_fleet
    from .seed import seed_ecr, seed_oci

    scale = (0.01, 6, 300, 4, 120) if small else (1.0, 20, 1000, 10, 500)
    layer_scale, ecr_repos, ecr_images, oci_repos, oci_images = scale
    ecr_fleet = make_fleet(seed=7, repositories=ecr_repos, images=ecr_images, layer_scale=layer_scale)
    oci_fleet = make_fleet(seed=8, repositories=oci_repos, images=oci_images, layer_scale=layer_scale)
    ecr = boto3.client("ecr", endpoint_url=stack.moto.endpoint, region_name="us-east-1")
    pushed = {"ecr": seed_ecr(ecr, ecr_fleet)}
    pushed["ecs_pinned"] = pin_in_ecs(stack, ecr_fleet)
    oci = OciRegistry("seed", stack.registry.url, stack.registry.username, stack.registry.password)
    pushed["oci"] = seed_oci(oci, oci_fleet)
    pushed.update(seed_scans(stack, ecr_fleet, oci_fleet))
    return pushed


def pin_in_ecs(stack, fleet) -> int:
    """An ECS task definition still running an old CI build: retention must keep that image."""
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID

    repo = next(r for r in fleet if r.name.startswith("platform/"))
    old = min(
        (m for m in repo.manifests if m.kind == "image" and m.tags and not any("." in t for t in m.tags)),
        key=lambda m: m.pushed_at,
    )
    image = f"{DEFAULT_ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/{repo.name}@{old.digest}"
    ecs = boto3.client("ecs", endpoint_url=stack.moto.endpoint, region_name="us-east-1")
    ecs.register_task_definition(
        family="legacy-billing-job", containerDefinitions=[{"name": "job", "image": image, "memory": 256}]
    )
    _log(f"ECS task definition legacy-billing-job runs {repo.name}@{old.digest[:19]}... (tags {old.tags})")
    return 1


def seed_scans(stack, ecr_fleet, oci_fleet) -> dict[str, int]:
    """Real Trivy reports as pipeline uploads for OCI images, real ECR findings in moto."""
    from .. import storage
    from ..clients import s3_client
    from ..config import load_config
    from .scan_seed import seed_ecr_findings, upload_trivy_reports

    config = load_config()
    s3 = s3_client(config)
    storage.ensure_bucket(s3, config.storage.bucket)
    oci_name = next(r.name for r in config.registries if r.kind == "oci")
    return {
        "trivy_reports": upload_trivy_reports(
            s3, config.storage.bucket, config.scan.uploads_prefix, oci_name, oci_fleet
        ),
        "ecr_findings": seed_ecr_findings(stack.moto.endpoint, ecr_fleet),
    }


def _restore_conf() -> dict:
    """The newest image the retention run archived, to restore (empty: nothing archived)."""
    from .. import storage
    from ..clients import s3_client
    from ..config import load_config

    config = load_config()
    s3 = s3_client(config)
    prefix = config.storage.prefixes.archive + "images/"
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=config.storage.bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    if not keys:
        return {}
    catalog = storage.get_json(s3, config.storage.bucket, sorted(keys)[-1])
    images = catalog.get("images") or []
    image = next((i for i in images if i.get("tags")), images[0] if images else None)
    if not image:
        return {}
    return {
        "digest": image["digest"],
        "registry": catalog.get("registry", ""),
        "repository": catalog.get("repository", ""),
    }


def run_dags() -> tuple[dict[str, str], bool]:
    """Run every DAG once; (state per DAG, whether every run went as expected)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    order = [d for d in DAG_ORDER if d in bag.dags] + sorted(set(bag.dags) - set(DAG_ORDER))
    states: dict[str, str] = {}
    ok = True
    for dag_id in order:
        conf = {"dry_run": False} if dag_id == "registry_retention" else {}
        if dag_id == "registry_restore":
            conf = _restore_conf()
        _log(f"running {dag_id} {json.dumps(conf) if conf else ''}...")
        run = bag.dags[dag_id].test(run_conf=conf or None)
        failed = sorted({ti.task_id for ti in run.get_task_instances() if ti.state == "failed"})
        expected = bool(failed) and set(failed) <= EXPECTED_FAILURES.get(dag_id, set())
        states[dag_id] = str(run.state) + (f" (failed: {', '.join(failed)})" if failed else "")
        if expected:
            states[dag_id] += " - expected: the gate found violations, see the email"
        _log(f"{dag_id}: {states[dag_id]}")
        ok = ok and (str(run.state) == "success" or expected)
    return states, ok


def summarize(stack, out_dir: Path) -> dict:
    from .. import storage
    from ..clients import s3_client
    from ..config import load_config
    from ..inventory import LATEST_NAME

    config = load_config()
    s3 = s3_client(config)
    bucket, prefix = config.storage.bucket, config.storage.prefixes.inventory
    pointer = storage.get_json(s3, bucket, prefix + LATEST_NAME)
    manifest = storage.get_json(s3, bucket, pointer["manifest"])
    out_dir.mkdir(parents=True, exist_ok=True)
    local = out_dir / "inventory.parquet"
    local.write_bytes(s3.get_object(Bucket=bucket, Key=pointer["key"])["Body"].read())
    return {
        "snapshot": f"s3://{bucket}/{pointer['key']} (moto at {stack.moto.endpoint})",
        "local_copy": str(local),
        "images": manifest["images"],
        "registries": manifest["registries"],
        "complete": manifest["complete"],
        "errors": manifest["errors"],
        "mail_dir": str(stack.smtp.maildir),
        "emails_received": len(stack.smtp.messages),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="exit after one pass with a summary")
    parser.add_argument("--port", type=int, default=8080, help="Airflow UI port (default 8080)")
    parser.add_argument("--small", action="store_true", help="a small fleet (quick smoke run)")
    args = parser.parse_args(argv)
    _airflow_env(args.port)

    from .stack import LocalStack

    started = time.monotonic()
    stack = LocalStack(WORK).start()
    standalone = None
    try:
        _log(f"moto {stack.moto.endpoint}, registry {stack.registry.url}, smtp 127.0.0.1:{stack.smtp.port}")
        pushed = seed(stack, args.small)
        _log(f"seeded {pushed['ecr']} ECR images and {pushed['oci']} registry manifests")
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
        states, runs_ok = run_dags()
        summary = {"dag_runs": states, **summarize(stack, WORK / "out")}
        summary["seconds"] = round(time.monotonic() - started, 1)
        print("\n=== registry-ops demo summary ===")
        print(json.dumps(summary, indent=2, default=str))
        ok = runs_ok and summary["images"] > 0
        if args.once:
            return 0 if ok else 1
        log_file = open(WORK / "standalone.log", "ab")  # noqa: SIM115 - lives as long as the process
        standalone = subprocess.Popen(
            [sys.executable, "-m", "airflow", "standalone"], stdout=log_file, stderr=subprocess.STDOUT
        )
        _log(f"Airflow UI: http://127.0.0.1:{args.port}  (log: {WORK / 'standalone.log'})")
        _log(f"emails land in {stack.smtp.maildir}; inventory copy in {WORK / 'out'}")
        _log("Ctrl-C to stop")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while standalone.poll() is None:
            time.sleep(1)
        _log(f"airflow standalone exited with {standalone.returncode}")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if standalone and standalone.poll() is None:
            standalone.terminate()
            try:
                standalone.wait(20)
            except subprocess.TimeoutExpired:
                standalone.kill()
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
