"""
### registry_inventory

Lists every image of every configured registry (ECR and OCI) into one table, one row per
(registry, repository, digest), and publishes it as a dated Parquet snapshot in S3.

* **Schedule**: daily (`@daily`), and on demand.
* **Inputs**: the config file (`$REGISTRY_OPS_CONFIG`), the registries' Airflow connections,
  the S3 connection.
* **Work**: `list_repositories` is mapped over registries, `list_batch` over batches of
  repositories (`inventory.batch_size`), so the listing spreads over Celery workers.
  OCI registries list incrementally: the previous snapshot is the cache (one HEAD per tag, a
  GET only for a digest not seen before), with a full listing every `inventory.full_every_days`
  or when triggered with **full_listing** on.
* **Outputs**: `s3://<bucket>/<inventory prefix>dt=YYYY-MM-DD/HHMMSSZ/inventory.parquet`, its
  `manifest.json` (counts, errors), `latest.json`, and the Asset `registry_inventory_snapshot`
  (extra: key, counts, completeness) that scan and retention DAGs schedule on.
* **Failure modes**: a bad config fails `registries` with the file, key and problem; a dead
  registry or repository is left out of the snapshot, named in the manifest, and fails
  `check_complete` after the snapshot is published, so the other registries still land.

Schema: `include/registry_ops/schema.py`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Metadata, Param, dag, get_current_context, task

from include.registry_ops.assets import INVENTORY
from include.registry_ops.dag_support import config_or_fail as _config
from include.registry_ops.dag_support import dag_defaults

INVENTORY_ASSET = Asset(**INVENTORY)


def _run() -> tuple[str, object]:
    ctx = get_current_context()
    return ctx["dag_run"].run_id, ctx["dag_run"].run_after


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["registry-ops", "inventory"],
    **dag_defaults(owner="platform", retry_delay=timedelta(minutes=1), deadline="registry_inventory"),
    max_active_runs=1,
    params={
        "full_listing": Param(
            False,
            type="boolean",
            description="list every OCI manifest and config again instead of trusting the previous "
            "snapshot's cache (it also runs by itself every inventory.full_every_days)",
        )
    },
)
def registry_inventory():
    @task
    def registries() -> list[str]:
        """Validate the config and check the bucket exists; the registries to list.

        A missing bucket fails at once (no retry can create it: `registry-ops init` does)."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops import inventory_jobs
        from include.registry_ops.storage import BucketMissing

        try:
            return inventory_jobs.start(_config())
        except BucketMissing as exc:
            raise AirflowFailException(str(exc)) from None

    @task(map_index_template="{{ registry_label }}")
    def list_repositories(registry: str) -> dict:
        """Repository names of one registry, in batches (errors returned, not raised)."""
        from include.registry_ops import inventory_jobs

        ctx = get_current_context()
        ctx["registry_label"] = registry
        return inventory_jobs.repository_batches(_config(), registry, bool(ctx["params"]["full_listing"]))

    @task
    def plan(registries: list[dict]) -> list[dict]:
        """Flatten every registry's batches into one list to map over."""
        return [b for r in registries for b in r["batches"]]

    @task(map_index_template="{{ batch_label }}", max_active_tis_per_dag=16)
    def list_batch(batch: dict) -> dict:
        """List one batch of repositories into a partial table in S3."""
        from include.registry_ops import inventory_jobs

        get_current_context()["batch_label"] = f"{batch['registry']}#{batch['batch']}"
        run_id, _ = _run()
        return inventory_jobs.list_batch_to_s3(_config(), batch, run_id)

    @task(outlets=[INVENTORY_ASSET])
    def publish(registries: list[dict], parts: list[dict]):
        """Write the snapshot, named by when the listing ran, and announce it on the Asset."""
        from include.registry_ops import inventory_jobs

        manifest = inventory_jobs.publish(_config(), list(registries), list(parts))
        yield Metadata(
            INVENTORY_ASSET,
            {
                k: manifest[k]
                for k in (
                    "bucket",
                    "key",
                    "snapshot_at",
                    "images",
                    "registries",
                    "complete",
                    "registries_failed",
                )
            },
        )
        return manifest

    @task
    def check_complete(manifest: dict) -> None:
        """Fail the run, naming each registry or repository that could not be listed.

        No retry: the listing is over; the next scheduled run lists again.
        """
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops import inventory_jobs

        try:
            inventory_jobs.raise_if_incomplete(manifest)
        except inventory_jobs.InventoryIncomplete as exc:
            raise AirflowFailException(str(exc)) from None

    regs = list_repositories.expand(registry=registries())
    parts = list_batch.expand(batch=plan(regs))
    check_complete(publish(regs, parts))


registry_inventory()
