"""
### registry_health

Measures availability: every 5 minutes, per registry, does the API answer (OCI `GET /v2/`,
ECR `DescribeRegistry`), can the canary manifest be fetched by digest, and how long each took.
The rows feed the availability SLO and its burn-rate alerts (issue 13).

* **Schedule**: every 5 minutes (`*/5 * * * *` UTC), one run at a time, no catch-up (a probe
  of the past measures nothing).
* **Inputs**: the config file (`$REGISTRY_OPS_CONFIG`: `health.registries`, `health.canaries`,
  `health.timeout_seconds`), the registries' Airflow connections, the S3 connection; registries
  without a configured canary probe the newest tagged image of the latest inventory snapshot.
* **Work**: `probe` probes every registry in parallel (one attempt, bounded by the timeout; a
  dead registry is a row with `good = false` and the error, never a failed task); `append`
  stores the run's rows; `slo` evaluates availability and pull success against their objectives
  and emails each multi-window burn-rate alert once per episode (`docs/slo.md`); `compact`
  merges every finished UTC day's small objects into one.
* **Outputs**: `s3://<bucket>/<health prefix>probes/dt=YYYY-MM-DD/HHMMSSZ-<run id>.parquet`
  (one per run, write-once) and `.../dt=YYYY-MM-DD/compacted-<hash>.parquet` (one per finished
  day). Schema: `include/registry_ops/health/schema.py`. `<health prefix>slo/latest.json` (the
  Registry page's SLOs section) and `<health prefix>alerts/` (one object per alert episode).
* **Failure modes**: a bad config fails at once (no retry); an S3 error is retried, and a retried
  `append` keeps what the first try stored. A compaction deletes the small objects only after
  reading its merged object back with the same rows; readers count each probe once either way.
  Details: `docs/dags/registry_health.md`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

from include.registry_ops.dag_support import config_or_fail as _config
from include.registry_ops.dag_support import dag_defaults


@dag(
    schedule=CronTriggerTimetable("*/5 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["registry-ops", "health", "slo"],
    **dag_defaults(owner="platform", retry_delay=timedelta(seconds=30)),
    max_active_runs=1,
)
def registry_health():
    @task
    def probe() -> dict:
        """Probe every registry (the rows say which are down; this task fails only on S3 or config)."""
        from datetime import UTC, datetime

        from include.registry_ops.clients import s3_client
        from include.registry_ops.health import probe as probes

        config = _config()
        run_id = get_current_context()["dag_run"].run_id
        at = datetime.now(UTC)
        rows = probes.probe_all(config, s3_client(config), at, run_id)
        return {"at": at.isoformat(), "rows": probes.jsonable(rows)}

    @task
    def append(probed: dict) -> dict:
        """Store this run's rows (write-once: a retry keeps what the first try stored)."""
        from datetime import datetime

        from include.registry_ops.clients import s3_client
        from include.registry_ops.health import dataset

        config = _config()
        s3 = s3_client(config)
        run_id = get_current_context()["dag_run"].run_id
        key = dataset.append(s3, config, probed["rows"], run_id, datetime.fromisoformat(probed["at"]))
        down = sorted(r["registry"] for r in probed["rows"] if not r["good"])

        return {"key": key, "registries": len(probed["rows"]), "down": down}

    @task
    def slo(_stored: dict) -> dict:
        """Evaluate the SLOs over what is stored now (this run's rows included), email each
        burn-rate alert once per episode, write `slo/latest.json` for the Registry page. A failed
        email fails this task only (the rows are stored); its retry sends it."""
        from datetime import UTC, datetime

        from include.registry_ops.clients import s3_client
        from include.registry_ops.health import alerts

        config = _config()
        return alerts.run(config, s3_client(config), datetime.now(UTC))

    @task
    def compact() -> dict:
        """Merge every finished UTC day's small objects into one (missed days are caught up)."""
        from include.registry_ops.clients import s3_client
        from include.registry_ops.health import dataset

        config = _config()
        return dataset.compact(s3_client(config), config)

    slo(append(probe()))
    compact()


registry_health()
