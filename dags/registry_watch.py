"""
### registry_watch

Tells ops (`notifications.ops_recipients`) when the scheduler paused one of our DAGs after
consecutive failed runs (`max_consecutive_failed_dag_runs`, set by `dag_support.dag_defaults`):
Airflow records such a pause only as an event log row and tells nobody.

* **Schedule**: every 15 minutes (`*/15 * * * *` UTC), one run at a time.
* **Inputs**: the config file (`$REGISTRY_OPS_CONFIG`), the HTTP connection
  `notifications.airflow_api_conn_id` (default `airflow_api`: host = the API server's base URL,
  login and password of an Airflow user who may read event logs and DAGs), the S3 connection.
* **Work**: `check` asks `GET /api/v2/eventLogs?event=paused&owner=scheduler` for our DAGs
  (`registry_*`) and emails one notice per pause it has not reported yet.
* **Outputs**: `s3://<bucket>/<reports prefix>alerts/paused-dags.json` (the last event id
  reported), the notices.
* **Failure modes**: a missing connection or a bad config fails at once (no retry); an API or
  SMTP error is retried, and what was not reported is reported by the next check. After 3
  failed runs the watch pauses itself like the others, after 3 failure notices.
  Details: `docs/dags/registry_watch.md`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, dag, task

from include.registry_ops.dag_support import config_or_fail as _config
from include.registry_ops.dag_support import dag_defaults


@dag(
    schedule=CronTriggerTimetable("*/15 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["registry-ops", "alerts"],
    **dag_defaults(owner="platform", retry_delay=timedelta(minutes=2)),
    max_active_runs=1,
)
def registry_watch():
    @task
    def check() -> dict:
        """Report every scheduler pause of our DAGs not reported before."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops import watch
        from include.registry_ops.clients import ConnectionMissing, s3_client

        config = _config()
        try:
            api = watch.api_from_connection(config.notifications.airflow_api_conn_id)
        except (ConnectionMissing, watch.ApiError) as exc:  # no retry defines a connection
            raise AirflowFailException(str(exc)) from None
        return watch.check(config, s3_client(config), api)

    check()


registry_watch()
