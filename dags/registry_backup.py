"""
### registry_backup

A versioned backup snapshot of every registry in `backup.registries` (default: all): repository
settings, registry-level settings, tags, every manifest (index children and referrers too) and
config blob, and every layer in full mode, content-addressed in the one blob store the retention
archive uses (`storage.prefixes.archive`).

* **Schedule**: on the Asset `registry_inventory_snapshot` (daily, after the inventory), and
  on demand.
* **Modes**: `full` (layers too) when the last full snapshot is `backup.full_every_days` old
  (default 7) or there is none; else `metadata`.
* **Work**: `plan` (snapshot id, mode, what each registry may reuse), `back_up` mapped over the
  registries (read what is new since the previous snapshot, pack it, store layers, write the
  catalog; every object written is read back, nothing stored is sent twice), `publish` (the
  snapshot's manifest listing every object and its sha256; `latest` moves only when nothing
  failed and every object is listed in the store), `prune` (backup retention:
  `keep_daily`/`keep_monthly`, never an object a kept snapshot or an archive catalog needs, nor
  one younger than `prune_grace_hours`) and `check`.
* **Outputs**: `s3://<bucket>/<backup prefix>dt=YYYY-MM-DD/HHMMSSZ/manifest.json`, `latest.json`;
  packs, blobs and catalogs under the archive prefix. Server-side encryption: SSE-KMS with
  `backup.kms_key_id`, else SSE-S3.
* **Failure modes**: a bad config or a missing bucket fails `plan` at once; a registry that
  cannot be listed fails its `back_up` (retried); a repository or image that fails is named
  and the rest is backed up. The snapshot is then published with `complete: false` but is not
  `latest`, and `check` fails naming every failure. An unchanged fleet costs two PUTs
  (manifest and pointer). Details: `docs/dags/registry_backup.md`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task

from include.registry_ops.assets import INVENTORY
from include.registry_ops.dag_support import config_or_fail as _config
from include.registry_ops.dag_support import dag_defaults

INVENTORY_ASSET = Asset(**INVENTORY)


@dag(
    schedule=[INVENTORY_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["registry-ops", "backup"],
    **dag_defaults(owner="platform", retry_delay=timedelta(minutes=1), deadline="registry_backup"),
    max_active_runs=1,
)
def registry_backup():
    @task
    def plan() -> dict:
        """The snapshot's id (when the run was queued), its mode and what may be reused."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.backup.run import plan_backup
        from include.registry_ops.clients import s3_client

        config = _config()
        run = get_current_context()["dag_run"]
        try:
            return plan_backup(config, s3_client(config), run.run_after, run_id=run.run_id)
        except ValueError as exc:  # a missing bucket, an unknown registry: no retry fixes these
            raise AirflowFailException(str(exc)) from None

    @task
    def registries(planned: dict) -> list[str]:
        return planned["registries"]

    @task(map_index_template="{{ registry_label }}", max_active_tis_per_dag=4)
    def back_up(registry: str, planned: dict) -> dict:
        """One registry into its catalog; raises (and is retried) when it cannot be listed."""
        from include.registry_ops.backup.run import backup_registry
        from include.registry_ops.clients import build_registry, s3_client

        get_current_context()["registry_label"] = registry
        config = _config()
        return backup_registry(config, s3_client(config), build_registry(config.registry(registry)), planned)

    @task(trigger_rule="all_done")
    def publish(planned: dict, parts: list) -> dict:
        """The snapshot's manifest; `latest` only when complete (a registry whose step failed
        is named in the failures)."""
        from include.registry_ops.backup.run import publish_snapshot
        from include.registry_ops.clients import s3_client

        config = _config()
        return publish_snapshot(config, s3_client(config), planned, [p for p in parts if p])

    @task
    def prune(summary: dict) -> dict:
        """Backup retention; nothing is deleted when a reference cannot be read."""
        from datetime import datetime

        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.backup.prune import PruneRefused
        from include.registry_ops.backup.prune import prune as run_prune
        from include.registry_ops.clients import s3_client

        config = _config()
        try:
            return run_prune(config, s3_client(config), datetime.fromisoformat(summary["taken_at"]))
        except PruneRefused as exc:
            raise AirflowFailException(str(exc)) from None

    @task
    def check(summary: dict) -> None:
        """Fail the run naming every failure when the snapshot did not become latest."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.backup.run import BackupIncomplete, raise_if_incomplete

        try:
            raise_if_incomplete(summary)
        except BackupIncomplete as exc:
            raise AirflowFailException(str(exc)) from None

    planned = plan()
    parts = back_up.partial(planned=planned).expand(registry=registries(planned))
    summary = publish(planned, parts)
    prune(summary)
    check(summary)


registry_backup()
