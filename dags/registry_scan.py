"""
### registry_scan

Vulnerability scan of every image in the fleet, one scan per unique digest, plus the size
budget and tag-convention reports, and a policy gate that fails (and emails) when images under
protected tags are too vulnerable.

* **Schedule**: daily at 04:00 UTC, whenever `registry_inventory` publishes a new snapshot
  (`registry_inventory_snapshot` Asset) **and** on every push (`registry_pushed_images` Asset:
  the event receiver records it through the REST API for OCI registries, an `AssetWatcher` on
  the SQS queue of each `events.ecr[]` entry for ECR). A run triggered by pushes alone scans just
  the pushed digests (indexes resolved to their platform children), with no inventory run;
  see `docs/scan-on-push.md`.
* **Inputs**: the inventory snapshot (the triggering event's, else `latest.json`), the config
  file (`$REGISTRY_OPS_CONFIG`, section `scan:`), the registries' connections (credentials go
  to Trivy as `TRIVY_USERNAME`/`TRIVY_PASSWORD` environment variables only), Trivy JSON
  reports uploaded by pipelines under `scan.uploads_prefix`, the previous run's state.
* **Work**: `plan` imports fresh uploaded reports and lists the digests to scan: image
  manifests only (platform children of indexes, never the index; no referrers), each unique
  digest once, skipping those scanned within `scan.freshness_hours` (24 h). `scan_batch` is
  mapped over batches of `scan.batch_size` digests: Trivy (CLI or server) for OCI registries,
  ECR's own scanning (basic or Inspector) for ECR, per `scan.scanners`. A run with no new
  images maps no batch at all.
* **Outputs** (under `s3://<bucket>/<reports prefix>scan/`): `runs/dt=.../findings.parquet`
  (one table for every scanner: registry, repository, digest, vulnerability id, package,
  installed and fixed version, severity, source, first seen), `scans.parquet` (state),
  `manifest.json`, `gate.json`, `sizes.json`, `tags.json`, `latest.json`; the Asset
  `registry_scan_findings` (extra: keys and counts).
* **Gate**: per image, unique CRITICAL > `max_critical` (0) or HIGH > `max_high` (3) after the
  allowlist (entries with reason and expiry; expired ones stop suppressing and are reported).
  Only images under protected tags (`latest`, semver releases) can fail it: those that are
  **new** (not reported before, or with new CVE ids) or **unacknowledged**. Ops acknowledge a
  reported one with `registry-ops scan ack` (its current CVE ids, until a date); it is still
  listed every run. Email (and Slack if `scan.slack_webhook_conn_id` is set) goes to
  `notifications.recipients` only when something is new. The task log shows a table of the
  top violating images with their CVE ids. The DAG is never auto-paused
  (`max_consecutive_failed_dag_runs=0`).
* **Failure modes**: no inventory or a bad config fails `plan` at once; a digest that cannot
  be scanned is retried next run, keeps its previous findings and fails `check_scans` after
  publishing; the gate and `check_scans` do not retry (the data will not change).

Severity mapping (ECR INFORMATIONAL/UNDEFINED and Inspector UNTRIAGED become UNKNOWN):
`include/registry_ops/scan/severity.py`; details in `docs/dags/registry_scan.md`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Metadata,
    Param,
    TriggerRule,
    dag,
    get_current_context,
    task,
)

from include.registry_ops.assets import INVENTORY, PUSHED, SCAN_FINDINGS
from include.registry_ops.dag_support import config_or_fail as _config
from include.registry_ops.dag_support import dag_defaults
from include.registry_ops.events.sqs_watch import push_watchers

INVENTORY_ASSET = Asset(**INVENTORY)
# ECR pushes arrive through AssetWatchers (EventBridge -> SQS) when events.ecr is configured;
# OCI pushes through the event receiver's REST call. Either way one event per batch of pushes.
PUSHED_ASSET = Asset(**PUSHED, watchers=push_watchers())
FINDINGS_ASSET = Asset(**SCAN_FINDINGS)
FORCE = "force_rescan"


def _inventory_key(context) -> list[dict]:
    """Extras of every inventory event that triggered this run (none: a timed or manual run).

    All of them, in no particular order: `plan` takes the one with the newest `snapshot_at`
    and refuses it when `latest.json` names a newer one (`include/registry_ops/snapshots.py`).
    """
    return _extras(context, INVENTORY_ASSET)


def _extras(context, asset: Asset) -> list[dict]:
    events = (context.get("triggering_asset_events") or {}).get(asset) or []
    return [dict(e.extra or {}) for e in events]


def _pushed(context) -> list[dict]:
    """Images of the push events that triggered this run (none: not triggered by a push)."""
    from include.registry_ops.scan.pushed import from_extras

    return from_extras(_extras(context, PUSHED_ASSET))


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 4 * * *", timezone="UTC"),
        assets=INVENTORY_ASSET | PUSHED_ASSET,
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["registry-ops", "scan", "security"],
    **dag_defaults(owner="platform", retry_delay=timedelta(minutes=2), pause_after=0, quiet=("gate",)),
    params={FORCE: Param(False, type="boolean", description="ignore the freshness window: rescan all")},
    max_active_runs=1,
)
def registry_scan():
    @task(multiple_outputs=False)
    def plan() -> dict:
        """Import uploaded reports; list the unique, stale digests; split them into batches."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.scan import jobs
        from include.registry_ops.storage import BucketMissing

        ctx = get_current_context()
        run = ctx["dag_run"]
        try:
            return jobs.plan_run(
                _config(),
                run.run_after,
                run.run_id,
                inventory_key=_inventory_key(ctx),
                force=bool(ctx["params"][FORCE]),
                pushed=_pushed(ctx),
            )
        except (jobs.ScanError, BucketMissing, ValueError) as exc:  # no retry can fix these
            raise AirflowFailException(str(exc)) from None

    @task
    def batches(planned: dict) -> list[dict]:
        return planned["batches"]

    @task(multiple_outputs=False, map_index_template="{{ batch_label }}", max_active_tis_per_dag=16)
    def scan_batch(batch: dict, planned: dict) -> dict:
        """Scan one batch of digests (one result per digest; failures recorded, not raised)."""
        from include.registry_ops.scan import jobs

        get_current_context()["batch_label"] = f"batch {batch['batch']} ({batch['stop'] - batch['start']})"
        return jobs.scan_batch(_config(), batch, planned["parts_prefix"])

    @task(outlets=[FINDINGS_ASSET], trigger_rule=TriggerRule.NONE_FAILED)
    def publish(planned: dict, parts: list[dict]):
        """Merge with the previous run, write the findings table and state, announce the Asset."""
        from include.registry_ops.scan import jobs

        manifest = jobs.publish(_config(), planned, list(parts or []))
        keys = ("bucket", "key", "scans_key", "run_at", "images", "digests", "fresh", "imported", "scanned")
        extra = {k: manifest[k] for k in keys}
        extra.update(
            scanner_invocations=manifest["scanner_invocations"],
            vulnerabilities_by_severity=manifest["vulnerabilities_by_severity"],
            errors=manifest["error_count"],
        )
        yield Metadata(FINDINGS_ASSET, extra)
        return manifest

    @task(multiple_outputs=False)
    def gate(manifest: dict) -> dict:
        """Fail when protected images violate the policy and are new or unacknowledged; email only
        what is new. The log lists the top violating images with their CVE ids."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.scan import gate as gate_mod
        from include.registry_ops.scan import jobs

        config = _config()
        result = jobs.gate(config, manifest)
        run = get_current_context()["dag_run"].run_id
        jobs.report_gate(config, result, f"DAG run {run}; report s3://{manifest['bucket']}/{result['key']}.")
        if not result["passed"]:
            # one line: the table of images is already in the log, a traceback would bury it
            raise AirflowFailException(gate_mod.summary(result)) from None
        keys = ("key", "passed", "protected_violations", "new", "unacknowledged", "acknowledged")
        return {k: result[k] for k in keys}

    @task
    def check_scans(manifest: dict) -> None:
        """Fail the run, naming each digest that could not be scanned (it is retried next run)."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.scan import jobs

        try:
            jobs.raise_if_incomplete(manifest)
        except jobs.ScanIncomplete as exc:
            raise AirflowFailException(str(exc)) from None

    @task(multiple_outputs=False)
    def size_budget(planned: dict) -> dict:
        """Images over the compressed-size budget, with their largest layers."""
        from include.registry_ops.scan import jobs

        return jobs.size_report(_config(), planned)

    @task(multiple_outputs=False)
    def tag_conventions(planned: dict) -> dict:
        """Tags outside the scheme, `latest` not on the newest release, releases without a commit tag."""
        from include.registry_ops.scan import jobs

        return jobs.tag_report(_config(), planned)

    planned = plan()
    parts = scan_batch.partial(planned=planned).expand(batch=batches(planned))
    manifest = publish(planned, parts)
    gate(manifest)
    check_scans(manifest)
    size_budget(planned)
    tag_conventions(planned)


registry_scan()
