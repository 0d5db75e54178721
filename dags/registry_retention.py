"""
### registry_retention

Applies the retention policies (`retention.policy_file`) to each new inventory snapshot:
expired images are archived to S3, read back and verified, and only then deleted.

* **Schedule**: on the Asset `registry_inventory_snapshot` (each new inventory). A run
  triggered by several queued events plans on the one with the newest `snapshot_at`, and
  refuses it when `inventory/latest.json` names a newer one; manual runs plan on `latest.json`.
* **Params**: `dry_run` (default **true**): audit only, nothing archived or deleted. A policy
  that is not `enabled` is a dry run whatever this says.
* **Work**: `plan` runs the planner on the snapshot, applies the caps once for the whole run
  (`max_deletions_per_run`, `max_fraction_per_repository`, policy overrides) and parks one plan
  part per repository in S3; `apply` is mapped over them (archive in packs, verify, delete in
  batches of 100, untag on ECR, a journal after every step); `drift` compares each ECR
  repository's native lifecycle policy with the declared rules (beside `apply`: it never blocks
  deletions and never fails the run; drifted repositories are logged as warnings); `summarize`
  publishes the totals.
* **Outputs**: audit records (JSON lines) under `retention/audit/`, the archive under
  `archive/`, `retention/runs/<run_id>/summary.json` and `drift.json`, and the Asset
  `registry_retention_summary` (images and bytes removed, monthly saving at USD 0.10/GB-month,
  `drifted`: how many repositories drifted).
* **Failure modes**: a bad config or policy file, a missing or stale snapshot fail `plan` at
  once, without retries, and `summarize` says so (no policy file configured at all:
  nothing is planned, with a warning); a failing repository
  fails its own `apply` (retried: the journal makes a retry resume, never delete twice) while
  the others finish; `check` then fails naming it. A repository stopped by a cap is named too
  (a failure only when executing). Details: `docs/dags/registry_retention.md`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Metadata, Param, dag, get_current_context, task

from include.registry_ops.assets import INVENTORY, RETENTION
from include.registry_ops.dag_support import config_or_fail as _config
from include.registry_ops.dag_support import dag_defaults

INVENTORY_ASSET = Asset(**INVENTORY)
RETENTION_ASSET = Asset(**RETENTION)
DRY_RUN = "dry_run"


def _event_extras(ctx) -> list[dict]:
    """Extras of the inventory events that triggered this run (none for manual runs)."""
    events = ctx.get("triggering_asset_events") or {}
    try:
        found = list(events[INVENTORY_ASSET])
    except KeyError:
        return []
    return [dict(e.extra or {}) for e in found]


@dag(
    schedule=[INVENTORY_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["registry-ops", "retention"],
    params={
        DRY_RUN: Param(
            True,
            type="boolean",
            description="Only write the would-be actions to the audit and the log; delete nothing.",
        )
    },
    **dag_defaults(owner="platform", retry_delay=timedelta(minutes=1)),
    max_active_runs=1,
)
def registry_retention():
    @task(multiple_outputs=False)
    def plan() -> dict:
        """Plan on the snapshot, apply the caps, park one plan part per mapped item in S3."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.config import ConfigError
        from include.registry_ops.retention import jobs
        from include.registry_ops.retention.policy import PolicyError
        from include.registry_ops.schema import SchemaError
        from include.registry_ops.snapshots import SnapshotError
        from include.registry_ops.storage import BucketMissing

        ctx = get_current_context()
        run = ctx["dag_run"]
        try:
            return jobs.plan_run(
                _config(), run.run_id, run.run_after, bool(ctx["params"][DRY_RUN]), _event_extras(ctx)
            )
        except (ConfigError, PolicyError, SnapshotError, SchemaError, BucketMissing) as exc:
            # no retry can fix these: a missing or stale snapshot or bucket, a bad file
            raise AirflowFailException(str(exc)) from None

    @task
    def items(planned: dict) -> list[dict]:
        """The mapped items (one per repository; several per item past 512 repositories)."""
        return planned["items"]

    @task(multiple_outputs=False, map_index_template="{{ item_label }}", max_active_tis_per_dag=8)
    def apply(item: dict, planned: dict) -> dict:
        """Apply one repository; raise (and be retried: the journal resumes) if it failed."""
        from datetime import datetime

        from include.registry_ops.retention import jobs

        get_current_context()["item_label"] = item["label"]
        now = datetime.fromisoformat(planned["now"])
        outcome = jobs.apply_item(_config(), planned["run_id"], now, planned["dry_run"], item)
        failures = jobs.item_failures(outcome)
        if failures:
            raise RuntimeError("; ".join(failures))
        return {"item": outcome["item"], "statuses": [r["status"] for r in outcome["results"]]}

    @task(multiple_outputs=False)
    def drift(planned: dict) -> dict:
        """Native ECR lifecycle policies against the declared rules: `drift.json`, warnings."""
        from include.registry_ops.retention.drift import record_drift

        return record_drift(_config(), planned["run_id"])

    @task(outlets=[RETENTION_ASSET], trigger_rule="all_done")
    def summarize(planned: dict | None):
        """Totals from every item's stored result (failed ones too), published on the Asset.

        When `plan` failed there is nothing to add up: fail at once, no retry, saying so (a skip
        would skip `check` too, and a run whose leaves all skipped counts as a success).
        """
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.retention import jobs
        from include.registry_ops.retention.drift import read_drift

        if not planned:
            raise AirflowFailException("plan failed (see its log): no plan, so nothing to summarize")
        config = _config()
        summary = jobs.summarize_run(config, planned)
        found = read_drift(config, planned["run_id"])  # None: the drift task failed or had no policies
        summary["drifted"] = None if found is None else len(found["drifted"])
        yield Metadata(
            RETENTION_ASSET,
            {
                k: summary[k]
                for k in (
                    "run_id",
                    "dry_run",
                    "images_removed",
                    "bytes_removed",
                    "monthly_cost_saved_usd",
                    "would_remove_images",
                    "would_remove_bytes",
                    "would_save_usd_month",
                    "untagged",
                    "repositories_failed",
                    "repositories_stopped",
                    "summary_key",
                    "drifted",
                )
            },
        )
        return summary

    @task
    def check(summary: dict) -> None:
        """Fail naming every failed repository (and capped ones when executing); no retry."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.retention import jobs

        try:
            jobs.raise_if_incomplete(summary)
        except jobs.RetentionIncomplete as exc:
            raise AirflowFailException(str(exc)) from None

    planned = plan()
    applied = apply.partial(planned=planned).expand(item=items(planned))
    summary = summarize(planned)
    [applied, drift(planned)] >> summary
    check(summary)


registry_retention()
