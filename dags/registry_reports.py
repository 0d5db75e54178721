"""
### registry_reports

The storage-cost and pull report stakeholders read in their inbox: what the fleet stores and
costs per registry, repository and team, how that moved, what retention saved, and how the
registries were pulled (success rate against the target, worst repositories, images nobody
pulls). Checked with Great Expectations before anyone gets it.

* **Schedule**: weekly on Mondays at 07:00 UTC (the 7 days before) and monthly on the 1st at
  07:30 UTC (the month before): `MultipleCronTriggerTimetable("0 7 * * 1", "30 7 1 * *")`.
  Manual runs take the `window` Param (`week`, `month`, or `YYYY-MM-DD..YYYY-MM-DD`).
* **Inputs**: the config file (`$REGISTRY_OPS_CONFIG`: `reports:` prices, teams, target, event
  sources; `notifications:` stakeholder and ops recipients), the newest inventory snapshot and
  earlier ones (trend), CloudTrail log files and distribution notifications in S3, the retention
  runs (savings), the archive and backup listing (their S3 cost).
* **Tasks**: `ingest` (only files not read before, into `reports/events/day=.../`) -> `build`
  (every table; `reports/usage/<period>/dt=.../`) -> `validate` (one GX suite per table; results
  and data docs beside the report) -> `send` (HTML with inline charts and CSVs to the
  stakeholders, once per run) -> `publish` (`latest.json`: the next report's baseline).
* **Failure modes**: a failed expectation fails `validate` without retry: stakeholders get
  nothing, ops (`notifications.ops_recipients`) get an alert naming each failed expectation with
  sample rows. Unreadable event files do not fail the run: they are counted and named in the
  report's data-quality section. A bad config or a missing bucket fails at once; S3 or SMTP
  trouble is retried; a retry after the email went out does not send it again.
  Details: `docs/dags/registry_reports.md`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import MultipleCronTriggerTimetable, Param, dag, get_current_context, task

from include.registry_ops.dag_support import config_or_fail as _config
from include.registry_ops.dag_support import dag_defaults

WINDOW_PATTERN = r"^(auto|week|month|\d{4}-\d{2}-\d{2}\.\.\d{4}-\d{2}-\d{2})$"


@dag(
    schedule=MultipleCronTriggerTimetable("0 7 * * 1", "30 7 1 * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["registry-ops", "reports", "cost"],
    **dag_defaults(owner="platform", retry_delay=timedelta(minutes=2), quiet=("validate",)),
    max_active_runs=1,
    params={
        "window": Param(
            "auto",
            type="string",
            pattern=WINDOW_PATTERN,
            title="Window",
            description="'auto' (as scheduled), 'week' (the 7 days before), 'month' (the month before), "
            "or 'YYYY-MM-DD..YYYY-MM-DD' (both days included)",
        )
    },
)
def registry_reports():
    @task
    def ingest() -> dict:
        """Read the event files that arrived since the last run into the events dataset."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.config import ConfigError
        from include.registry_ops.reports.jobs import ingest_step
        from include.registry_ops.storage import BucketMissing

        try:
            return ingest_step(_config(), get_current_context()["dag_run"].run_after)
        except (ConfigError, BucketMissing) as exc:
            raise AirflowFailException(str(exc)) from None

    @task
    def build(ingested: dict) -> dict:
        """Every report table for the window, stored under reports/usage/."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.config import ConfigError
        from include.registry_ops.reports.jobs import build_step
        from include.registry_ops.snapshots import SnapshotError

        context = get_current_context()
        try:
            return build_step(_config(), context["params"]["window"], context["dag_run"].run_after)
        except (ConfigError, SnapshotError, ValueError) as exc:
            raise AirflowFailException(str(exc)) from None

    @task
    def validate(built: dict) -> dict:
        """Great Expectations suites; on failure ops are alerted and nothing is sent."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.reports.jobs import ReportInvalid, validate_step

        try:
            return validate_step(_config(), built)
        except ReportInvalid as exc:  # the data is wrong: a retry builds nothing new
            raise AirflowFailException(str(exc)) from None

    @task
    def send(built: dict, validated: dict) -> dict:
        """The HTML email with its charts and CSVs, to the stakeholders (once per run)."""
        from include.registry_ops.reports.jobs import send_step

        return send_step(_config(), built, validated)

    @task
    def publish(built: dict, sent: dict) -> dict:
        """The run's manifest, then latest.json (the next report's baseline)."""
        from include.registry_ops.reports.jobs import publish_step

        return publish_step(_config(), built, sent)

    built = build(ingest())
    publish(built, send(built, validate(built)))


registry_reports()
