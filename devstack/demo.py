"""``make demo``: the local stack, a seeded fleet, every DAG run once by Airflow, then the UI.

    python -m devstack.demo [--once] [--port 8080] [--small]

Steps: start moto, the distribution registry and the SMTP sink on 127.0.0.1; seed ECR
(20 repositories, ~1,000 images) and the registry (10 repositories, ~500 images); start
``airflow standalone`` on a fresh SQLite DB under ``.demo/airflow`` (bound to 127.0.0.1, every
user admin: a local demo only; DAGs start paused); then, through the REST API, unpause the DAGs
in order and wait for each run: the scheduler's own run of ``registry_inventory`` and
``registry_scan``, a triggered ``registry_retention`` with ``dry_run: false``, a triggered
``registry_restore`` of one archived image, a ``registry_backup`` (the first one is full) and a
``registry_dr_drill`` that restores the backup into the stack's second registry (``oci-dr``),
checks every digest and cleans up; then a week of pull events for the inventoried fleet
(CloudTrail files and registry notifications from the documented samples, ``seed_events``) and
a ``registry_reports`` run whose email lands in the mailbox. Each run's task log is read back
through the API; the backup's and the drill's results (their tasks' return values) go into the summary as
``backup``, ``dr_drill`` and ``reports``, and ``--once`` fails unless every digest came back
equal and the report passed its checks and was sent.
Then a summary (with the inventory copied to ``.demo/out/``). ``--once`` stops Airflow and the
stack there, exiting 0 only when every run went as expected; otherwise the UI stays up, every
DAG unpaused so the schedules go on, until Ctrl-C (or SIGTERM), which stops Airflow and the
stack.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack.airflow_local import AirflowApi, Standalone, airflow_env

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".demo"
# In order: later DAGs read what the inventory published. "schedule": unpausing makes the
# scheduler start the DAG's latest scheduled run; "trigger": a run with conf through the API.
# Retention runs for real (its `services` policy is enabled) so the restore can follow.
RUNS = (
    ("registry_inventory", "schedule"),
    ("registry_scan", "schedule"),
    ("registry_retention", "trigger"),
    ("registry_restore", "trigger"),
    ("registry_backup", "trigger"),  # the first backup is full: there is no full one yet
    ("registry_dr_drill", "trigger"),  # into the second registry (oci-dr), then cleaned up
    # after pull events are seeded (seed_events): unpausing starts the last scheduled run (the
    # Monday 07:00 weekly report of the 7 days before); a trigger would send a second report
    ("registry_reports", "schedule"),
    # asks Airflow's REST API (connection airflow_api) for DAGs the scheduler paused
    ("registry_watch", "trigger"),
    # probes every registry, stores the rows, evaluates the SLOs (its schedule: every 5 minutes)
    ("registry_health", "trigger"),
)
# A failed gate is the scan working (the seeded reports hold critical CVEs), not a demo failure.
EXPECTED_FAILURES = {"registry_scan": {"gate"}}
# Per DAG, a task whose log (as the UI shows it) must hold a line our code logs there.
LOG_PROBES = {
    "registry_inventory": ("publish", "inventory: snapshot s3://"),
    "registry_scan": ("plan", "unique digests"),
    "registry_retention": ("plan", "planned on s3://"),
    "registry_restore": ("restore", " restored from "),
    "registry_backup": ("publish", "backup: snapshot "),
    "registry_dr_drill": ("drill", "drill: "),
    "registry_reports": ("build", "reports: weekly report "),
    "registry_watch": ("check", "watch: "),
    "registry_health": ("append", "health: "),
}
# The conf each triggered DAG gets (Params; the others run on their defaults).
TRIGGER_CONF = {
    "registry_retention": lambda: {"dry_run": False},
    "registry_restore": lambda: _restore_conf(),
    "registry_backup": dict,
    "registry_dr_drill": dict,  # latest snapshot, dr.target, every repository
    "registry_watch": dict,
    "registry_health": dict,
}
# The task whose return value (XCom) the summary reports, per DAG.
RESULTS = {
    "registry_backup": ("publish",),
    "registry_dr_drill": ("drill",),
    "registry_reports": ("build", "validate", "send"),
}
RUN_TIMEOUT = 1800.0


class Stopped(Exception):
    """SIGINT (Ctrl-C) or SIGTERM: leave through ``finally``, which stops Airflow and the stack."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def _still_stopping(signum: int, _frame: object) -> None:
    _log(f"{signal.Signals(signum).name}: still stopping Airflow and the stack, please wait")


def _log(msg: str) -> None:
    print(f"[demo {datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def seed(stack, small: bool) -> dict[str, int]:
    import boto3

    from devstack.fleet import make_fleet
    from devstack.seed import seed_ecr, seed_oci
    from include.registry_ops.registries.oci import OciRegistry

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
    from devstack.scan_seed import seed_ecr_findings, upload_trivy_reports
    from include.registry_ops import storage
    from include.registry_ops.clients import s3_client
    from include.registry_ops.config import load_config

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
    """Restore the newest image the retention run archived (a tagged one if any); {} when none."""
    from include.registry_ops import storage
    from include.registry_ops.clients import s3_client
    from include.registry_ops.config import load_config
    from include.registry_ops.retention.restore_request import MODE_RESTORE

    config = load_config()
    s3 = s3_client(config)
    prefix = config.storage.prefixes.archive + "images/"
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=config.storage.bucket, Prefix=prefix)
        for o in page.get("Contents", [])
        if o["Key"].endswith(".json")
    ]
    if not keys:
        return {}
    catalog = storage.get_json(s3, config.storage.bucket, sorted(keys)[-1])
    images = catalog.get("images") or []
    image = next((i for i in images if i.get("tags")), images[0] if images else None)
    if not image:
        return {}
    return {
        "mode": MODE_RESTORE,
        "digest": image["digest"],
        "registry": catalog.get("registry", ""),
        "repository": catalog.get("repository", ""),
    }


def run_dags(api: AirflowApi, before: dict[str, Any] | None = None) -> tuple[dict[str, dict], bool]:
    """Each DAG in order through the scheduler; (per DAG: run, state, log check; all as expected).
    ``before[dag_id]()`` runs first where given (the reports' pull events need the inventory)."""
    results: dict[str, dict] = {}
    ok = True
    for dag_id, start in RUNS:
        if before and dag_id in before:
            _log(f"{dag_id}: {before[dag_id]()}")
        api.unpause(dag_id)
        if start == "schedule":  # catchup is off: unpausing makes the latest scheduled run now
            run_id = api.first_run(dag_id, timeout=180)["dag_run_id"]
            _log(f"{dag_id}: unpaused; the scheduler started run {run_id}")
        else:
            conf = TRIGGER_CONF[dag_id]()
            run_id = api.trigger(dag_id, conf)
            _log(f"{dag_id}: unpaused; triggered run {run_id} {json.dumps(conf)}")
        started = time.monotonic()
        run = api.wait_run(dag_id, run_id, timeout=RUN_TIMEOUT)
        tis = api.task_instances(dag_id, run_id)
        failed = sorted({ti["task_id"] for ti in tis if ti["state"] == "failed"})
        expected = bool(failed) and set(failed) <= EXPECTED_FAILURES.get(dag_id, set())
        state = run["state"] + (f" (failed: {', '.join(failed)})" if failed else "")
        if expected:
            state += " - expected: the gate found violations, see the email"
        logs = check_log(api, dag_id, run_id, tis)
        for task_id in RESULTS.get(dag_id, ()):
            results[f"{dag_id}:{task_id}"] = api.xcom(dag_id, run_id, task_id)
        results[dag_id] = {
            "run_id": run_id,
            "logical_date": run.get("logical_date"),
            "state": state,
            "seconds": round(time.monotonic() - started, 1),
            "task_log": logs,
        }
        _log(f"{dag_id}: {state} in {results[dag_id]['seconds']}s; task log: {logs}")
        ok = ok and (run["state"] == "success" or expected) and logs.startswith("ok")
    return results, ok


def demo_config(work: Path) -> Path:
    """The config the demo runs on: the shipped one (or ``$REGISTRY_OPS_CONFIG``) plus the second
    registry the DR drill restores into (``oci-dr``, the stack's ``oci_dr`` connection), left out
    of backups; paths made absolute since the copy lives elsewhere."""
    import yaml

    source = Path(os.environ.get("REGISTRY_OPS_CONFIG") or ROOT / "config" / "registry-ops.yaml")
    doc = yaml.safe_load(source.read_text())
    retention = doc.get("retention") or {}
    if retention.get("policy_file"):
        retention["policy_file"] = str((source.parent / retention["policy_file"]).resolve())
    names = [r["name"] for r in doc["registries"]]
    if not (doc.get("dr") or {}).get("target"):
        if "oci-dr" not in names:
            doc["registries"].append({"name": "oci-dr", "kind": "oci", "conn_id": "oci_dr"})
        doc.setdefault("backup", {}).setdefault("registries", names)
        doc.setdefault("dr", {})["target"] = "oci-dr"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "registry-ops.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def backup_and_drill(runs: dict[str, dict]) -> dict:
    """The summary's ``backup`` and ``dr_drill``: the publish and drill tasks' return values."""
    backup = runs.pop("registry_backup:publish", None) or {}
    drill = runs.pop("registry_dr_drill:drill", None) or {}
    return {
        "backup": {
            k: backup.get(k) for k in ("snapshot", "mode", "manifests", "blobs", "bytes", "puts", "latest")
        },
        "dr_drill": {
            k: drill.get(k)
            for k in (
                "passed",
                "digests_checked",
                "digests_equal",
                "blobs_checked",
                "rto_s",
                "rpo_s",
                "target",
            )
        },
    }


def seed_events(stack) -> str:
    """Pull events of the 7 days before today and 5 more for the inventoried fleet: CloudTrail log
    files for ECR and notification envelopes for the registry, rendered from the documented
    samples (``devstack/events.py``), where ``reports.events`` of the demo config points."""
    from datetime import timedelta

    from devstack.events import S3Target, day_range, write_events
    from include.registry_ops import snapshots
    from include.registry_ops.clients import s3_client
    from include.registry_ops.config import load_config

    config = load_config()
    s3 = s3_client(config)
    inventory = snapshots.load(config, s3, []).frame
    days = day_range(datetime.now(UTC).date() - timedelta(days=14), 14)  # the last Monday's week and on
    written = {"files": 0, "events": 0, "failed": 0}
    for name, kind in (("ecr-local", "ecr"), ("oci-local", "oci")):
        part = inventory[inventory["registry"] == name]
        truth = write_events(
            S3Target(s3, config.storage.bucket),
            part,
            days=days,
            cloudtrail_prefix=config.reports.events.cloudtrail[0].prefix,
            notifications_prefix=config.reports.events.notifications[0].prefix,
            failure_rate=0.004,
            seed=11 if kind == "ecr" else 12,
        )
        for key in written:
            written[key] += len(truth["files"]) if key == "files" else truth[key]
    return (
        f"seeded {written['events']} pull events ({written['failed']} failed) in {written['files']} "
        f"CloudTrail and notification files over {days[0]}..{days[-1]}"
    )


def reports_summary(runs: dict[str, dict], emails: list) -> dict:
    """The summary's ``reports``: what the registry_reports run built, checked and sent."""
    built = runs.pop("registry_reports:build", None) or {}
    validated = runs.pop("registry_reports:validate", None) or {}
    sent = runs.pop("registry_reports:send", None) or {}
    headline = built.get("headline") or {}
    subjects = [str(m["Subject"]) for m in emails if str(m["Subject"]).startswith("Registry report")]
    return {
        "emails": len(subjects),
        "subject": subjects[-1] if subjects else None,
        "recipients": sent.get("recipients"),
        "validation": "passed" if validated.get("success") else "failed",
        "total_usd_month": headline.get("total_usd_month"),
        "pull_success_rate": headline.get("pull_success_rate"),
        "pulls": headline.get("total_pulls"),
        "input_problems": built.get("problems"),
        "html": sent.get("html"),
    }


def check_log(api: AirflowApi, dag_id: str, run_id: str, tis: list[dict]) -> str:
    """The UI's log of one task holds the line our code logged ("ok: ..."), else what is wrong."""
    task_id, expect = LOG_PROBES[dag_id]
    ti = next((t for t in tis if t["task_id"] == task_id and t["map_index"] == -1), None)
    if ti is None or not ti.get("try_number"):
        return f"missing: task {task_id} did not run"
    text = api.task_log(dag_id, run_id, task_id, ti["try_number"])
    if expect not in text:
        return f"missing: {task_id} log ({len(text.splitlines())} lines) lacks {expect!r}: {text[:300]!r}"
    return f"ok: {task_id} try {ti['try_number']}, {len(text.splitlines())} lines, shows {expect!r}"


def summarize(stack, out_dir: Path) -> dict:
    from include.registry_ops import storage
    from include.registry_ops.clients import s3_client
    from include.registry_ops.config import load_config
    from include.registry_ops.inventory import LATEST_NAME

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


def scan_on_push(api: AirflowApi, stack) -> dict[str, Any]:
    """Push a new image to oci-local as a build pipeline would (its Trivy report uploaded first:
    Trivy cannot run here), then follow it: the registry notifies the Registry page's receiver,
    which stores the envelope and records a ``registry_pushed_images`` asset event; the scheduler
    starts ``registry_scan``, which scans just that digest. Times are from the push."""
    from devstack.fleet import make_fleet
    from devstack.scan_seed import upload_trivy_reports
    from devstack.seed import seed_oci
    from include.registry_ops.clients import s3_client
    from include.registry_ops.config import load_config
    from include.registry_ops.registries.oci import OciRegistry

    config = load_config()
    s3 = s3_client(config)
    fleet = make_fleet(seed=int(time.time()) % 100_000 + 1000, repositories=1, images=1, layer_scale=0.01)
    fleet = [r for r in fleet if any(m.kind == "image" for m in r.manifests)][:1]
    digests = {m.digest for r in fleet for m in r.manifests if m.kind == "image"}
    upload_trivy_reports(s3, config.storage.bucket, config.scan.uploads_prefix, "oci-local", fleet)
    pushed_at = datetime.now(UTC)
    start = time.monotonic()
    oci = OciRegistry("demo", stack.registry.url, stack.registry.username, stack.registry.password)
    seed_oci(oci, fleet)
    out = follow_push(api, fleet[0].name, digests, pushed_at, start)
    if "run_id" in out:
        import re

        from include.registry_ops.store import objects

        # what the receiver stored since the registry began notifying it (the seeded files differ)
        stored = objects.list_keys(s3, config.storage.bucket, config.storage.prefixes.events + "oci-local/")
        named = re.compile(r"/dt=\d{4}-\d{2}-\d{2}/[0-9a-f]{64}\.json$")
        out["envelopes_received"] = sum(bool(named.search(o["Key"])) for o in stored)
    return out


ECR_PUSH_QUEUE = "registry-ops-ecr-pushes"


def ecr_push_queue(stack, config_path: Path) -> str:
    """ECR's scan-on-push wiring on moto, before Airflow starts: an SQS queue, an EventBridge rule
    for successful image pushes that targets it, and ``events.ecr`` in the demo's config naming
    it, so that ``registry_scan``'s asset has an ``AssetWatcher`` whose trigger the standalone's
    triggerer runs. Returns the queue URL."""
    import boto3
    import yaml

    from devstack.ecr_events import wire_push_queue

    kw = {"endpoint_url": stack.moto.endpoint, "region_name": "us-east-1"}
    url = wire_push_queue(boto3.client("sqs", **kw), boto3.client("events", **kw), ECR_PUSH_QUEUE)
    doc = yaml.safe_load(config_path.read_text())
    ecr = next(r["name"] for r in doc["registries"] if r["kind"] == "ecr")
    doc.setdefault("events", {})["ecr"] = [{"registry": ecr, "queue_url": url, "poll_seconds": 5}]
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return url


def ecr_scan_on_push(api: AirflowApi, stack) -> dict[str, Any]:
    """Push a new image to moto's ECR, with ECR's basic-scan findings for it (AWS CLI's real
    response), and put the documented "ECR Image Action" push event on EventBridge (moto's ECR
    sends none): the rule moves it to the queue, the ``EcrPushTrigger`` in the standalone's
    triggerer turns it into a ``registry_pushed_images`` asset event, and ``registry_scan``
    scans that digest. Times are from the push."""
    import boto3

    from devstack.ecr_events import documented, put_event
    from devstack.fleet import make_fleet
    from devstack.scan_seed import seed_ecr_findings
    from devstack.seed import seed_ecr

    kw = {"endpoint_url": stack.moto.endpoint, "region_name": "us-east-1"}
    fleet = make_fleet(
        seed=int(time.time()) % 100_000 + 2000, repositories=1, images=1, layer_scale=0.01, prefix="pushed/"
    )
    fleet = [r for r in fleet if any(m.kind == "image" for m in r.manifests)][:1]
    images = [m for r in fleet for m in r.manifests if m.kind == "image"]
    pushed_at = datetime.now(UTC)
    start = time.monotonic()
    seed_ecr(boto3.client("ecr", **kw), fleet)
    seed_ecr_findings(stack.moto.endpoint, fleet)
    events, push = boto3.client("events", **kw), documented("push")
    try:
        for m in images:
            put_event(events, push, **{"repository-name": fleet[0].name, "image-digest": m.digest,
                                       "image-tag": m.tags[0] if m.tags else None})  # fmt: skip
    except RuntimeError as exc:
        return {"ok": False, "error": str(exc)}
    return follow_push(api, fleet[0].name, {m.digest for m in images}, pushed_at, start)


def follow_push(
    api: AirflowApi, repository: str, digests: set[str], pushed_at: datetime, start: float
) -> dict:
    """After a push: the ``registry_pushed_images`` asset event naming the digests (the
    receiver's extra holds ``images``; a trigger's, ``payload.images``), the asset-triggered
    ``registry_scan`` run after it, and that run's scan of the digests."""
    from include.registry_ops.clients import s3_client
    from include.registry_ops.config import load_config
    from include.registry_ops.scan import store as scan_store

    out: dict[str, Any] = {"repository": repository, "digests": sorted(digests)}
    deadline = start + 600
    run_id = None
    while time.monotonic() < deadline and "asset_event_s" not in out:
        try:
            events = api.call("GET", "/assets/events", params={"limit": 50, "order_by": "-timestamp"})
        except RuntimeError as exc:  # standalone's SQLite, busy with the push's writes: ask again
            _log(f"scan on push: {exc}; asking again")
            events = {}
        for event in events.get("asset_events", []):
            extra = event.get("extra") or {}
            payload = extra.get("payload") if isinstance(extra.get("payload"), dict) else {}
            images = extra.get("images")  # the inventory's is a count
            images = images if isinstance(images, list) else payload.get("images")
            images = images if isinstance(images, list) else []
            if digests & {i.get("digest") for i in images if isinstance(i, dict)}:
                out["asset_event_s"] = round(time.monotonic() - start, 1)
                out["source"] = payload.get("source", "registry-page receiver")
        time.sleep(1)
    while time.monotonic() < deadline and run_id is None:
        for run in api.runs("registry_scan"):
            if run.get("run_type") == "asset_triggered" and run.get("run_after", "") >= pushed_at.isoformat():
                run_id = run["dag_run_id"]
                out["scan_run_started_s"] = round(time.monotonic() - start, 1)
        time.sleep(1)
    if run_id is None:
        return {**out, "ok": False, "error": "no asset-triggered registry_scan run within 10 minutes"}
    run = api.wait_run("registry_scan", run_id, timeout=600)
    config = load_config()
    findings, scans, _ = scan_store.previous(s3_client(config), config)  # the published run's state
    scanned = {r["digest"] for r in scans.to_pylist() if r["digest"] in digests and r["status"] == "ok"}
    out.update(
        run_id=run_id,
        state=run["state"],  # the gate may fail it: the uploaded report holds critical CVEs
        findings_stored_s=round(time.monotonic() - start, 1),
        scanned=len(scanned),
        findings=sum(d in digests for d in findings.column("digest").to_pylist()),
        ok=scanned == digests,
    )
    return out


def registry_page(api: AirflowApi, port: int) -> dict[str, Any]:
    """Where the Registry page is, and each section's state as a signed-in user sees it (the
    demo's token; the page refuses requests without one)."""
    base = f"http://127.0.0.1:{port}"
    if "Authorization" not in api.http.headers:
        api._token()
    sections = {}
    from include.registry_ops.page.app import SECTIONS

    for path in [*(f"api/sections/{s.id}" for s in SECTIONS), "api/health"]:
        resp = api.http.get(f"{base}/registry-page/{path}", timeout=60)
        body = resp.json() if resp.ok else {"status": f"HTTP {resp.status_code}"}
        sections[body.get("id", path)] = body.get("status") if body.get("status") != "error" else body
    refused = api.http.get(f"{base}/registry-page/api/sections", headers={"Authorization": ""}, timeout=10)
    return {
        "url": f"{base}/plugin/registry",
        "sections": sections,
        "signed_out_status": refused.status_code,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="stop after one pass with a summary")
    parser.add_argument("--port", type=int, default=8080, help="Airflow UI port (default 8080)")
    parser.add_argument("--small", action="store_true", help="a small fleet (quick smoke run)")
    args = parser.parse_args(argv)
    os.environ.update(airflow_env(ROOT, WORK / "airflow", args.port))
    # registry_watch signs in to the REST API with this (all-admins mode accepts any password)
    os.environ["AIRFLOW_CONN_AIRFLOW_API"] = json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{args.port}", "login": "admin", "password": "demo"}
    )
    airflow_logging = os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")  # tasks log at INFO
    # this process only: no INFO chatter (the SMTP sink's dialogue, connection lookups) on the terminal
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    os.environ["REGISTRY_OPS_CONFIG"] = str(demo_config(WORK))
    signal.signal(signal.SIGINT, _raise_stopped)
    signal.signal(signal.SIGTERM, _raise_stopped)

    from devstack.stack import LocalStack

    started = time.monotonic()
    stack, standalone, summary = LocalStack(WORK), None, None
    ok = False
    try:
        stack.start()
        _log(f"moto {stack.moto.endpoint}, registry {stack.registry.url}, smtp 127.0.0.1:{stack.smtp.port}")
        ecr_push_queue(stack, Path(os.environ["REGISTRY_OPS_CONFIG"]))  # before Airflow parses the DAGs
        pushed = seed(stack, args.small)
        _log(f"seeded {pushed['ecr']} ECR images and {pushed['oci']} registry manifests")
        # from now on the registry's pushes and pulls go to the Registry page's event receiver
        events_token = os.urandom(16).hex()
        events_conn = {"conn_type": "generic", "password": events_token}
        os.environ["AIRFLOW_CONN_REGISTRY_EVENTS"] = json.dumps(events_conn)
        stack.send_events_to(f"http://127.0.0.1:{args.port}/registry-page/api/events/oci-local", events_token)
        shutil.rmtree(WORK / "airflow", ignore_errors=True)  # runs of an earlier demo name a gone moto
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
        standalone = Standalone(WORK / "standalone.log", AIRFLOW__LOGGING__LOGGING_LEVEL=airflow_logging)
        standalone.start()
        api = AirflowApi(f"http://127.0.0.1:{args.port}")
        _log(f"airflow standalone starting (log: {WORK / 'standalone.log'})")
        api.wait_ready(timeout=300, alive=standalone.alive)
        api.wait_dags([dag_id for dag_id, _ in RUNS], timeout=300)
        runs, runs_ok = run_dags(api, before={"registry_reports": lambda: seed_events(stack)})
        time.sleep(5)  # the last task processes exit; then Airflow idles
        on_push = scan_on_push(api, stack)
        _log(f"scan on push: {json.dumps(on_push)}")
        on_ecr_push = ecr_scan_on_push(api, stack)
        _log(f"ECR scan on push: {json.dumps(on_ecr_push)}")
        drilled = backup_and_drill(runs)
        reports = reports_summary(runs, stack.smtp.messages)
        page = registry_page(api, args.port)
        summary = {
            "dag_runs": runs,
            **summarize(stack, WORK / "out"),
            **drilled,
            "reports": reports,
            "registry_page": page,
            "scan_on_push": on_push,
            "ecr_scan_on_push": on_ecr_push,
            "airflow_idle_memory": standalone.memory(),
            "seconds": round(time.monotonic() - started, 1),
        }
        print("\n=== registry-ops demo summary ===")
        print(json.dumps(summary, indent=2, default=str), flush=True)
        dr = summary["dr_drill"]
        every_digest_back = bool(dr["digests_checked"]) and dr["digests_equal"] == dr["digests_checked"]
        report_sent = reports["emails"] >= 1 and reports["validation"] == "passed"
        ok = runs_ok and summary["images"] > 0 and every_digest_back and bool(summary["backup"]["latest"])
        ok = ok and report_sent
        page_ok = all(isinstance(v, str) and v in ("ok", "never_run") for v in page["sections"].values())
        ok = ok and page_ok and page["signed_out_status"] == 401 and on_push["ok"] and on_ecr_push["ok"]
        if args.once:
            return 0 if ok else 1
        _log(f"Airflow UI: http://127.0.0.1:{args.port}  (every DAG unpaused: the schedules go on)")
        _log(f"Registry page: {page['url']}  (Browse > Registry in the UI)")
        _log(f"emails land in {stack.smtp.maildir}; inventory copy in {WORK / 'out'}")
        _log("Ctrl-C to stop")
        while standalone.alive():
            time.sleep(1)
        _log(f"airflow standalone exited on its own (code {standalone.proc.returncode}); see its log")
        return 1
    except Stopped as stop:
        _log(f"{stop}: stopping Airflow and the stack")
        return (0 if ok else 1) if summary else 128 + stop.signum
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        _log(f"error: {exc} {detail.decode(errors='replace')[-2000:] if detail else ''}")
        return 1
    finally:
        signal.signal(signal.SIGINT, _still_stopping)
        signal.signal(signal.SIGTERM, _still_stopping)
        if standalone:
            standalone.stop()
        stack.stop()
        _log("Airflow and the stack stopped")


if __name__ == "__main__":
    sys.exit(main())
