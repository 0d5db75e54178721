"""
### registry_iam_audit

Weekly access audit of the ECR registries: who can pull, push, delete and administer each
repository, checked against the declared access model, stored with the run date, compared
with the last audit, emailed to security, and failing on findings nobody has accepted.

* **Schedule**: Mondays at 05:00 UTC (`0 5 * * 1`), and on demand.
* **Inputs**: the config file (`$REGISTRY_OPS_CONFIG`, sections `audit:` and `notifications:`),
  the access model it names, each audited registry's AWS connection (read-only IAM and ECR
  calls: `docs/access-audit.md` lists them), the last audit (`latest.json`) and the
  acknowledgements under `iam-audit/acks/`.
* **Tasks**: `audit` (every registry; access matrix, findings, the diff against the last
  audit, gate status; writes `access.parquet`, `findings.parquet`, `changes.json`) ->
  `report` (HTML and text email to `notifications.security_recipients`, default
  `recipients`: new findings first, then grants gained/lost/changed and findings resolved;
  the matrix attached as CSV) -> `publish` (the run's `manifest.json`, then `latest.json`,
  written last and only when every registry was audited and the report went out) -> `gate`
  and `check`.
* **Outputs**: `s3://<bucket>/<reports prefix>iam-audit/dt=YYYY-MM-DD/HHMMSSZ/` and
  `iam-audit/latest.json`.
* **Gate**: fails (one line naming the findings and their keys) while a finding of
  `audit.fail_severity` (high) or worse is new (or more severe than last week) or stands
  unacknowledged. `registry-ops audit ack --finding KEY --reason ... --until ...` accepts one
  for up to 90 days; an expired acknowledgement covers nothing.
* **Failure modes**: a bad config or access model fails `audit` at once (no retry); a registry
  that cannot be audited (a missing IAM permission is named) is left out, the others are
  reported, `latest` does not move and `check` fails naming it; a failed email fails `report`
  (retried), and the run is then no baseline. Never auto-paused
  (`max_consecutive_failed_dag_runs=0`). Details: `docs/dags/registry_iam_audit.md`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

from include.registry_ops.dag_support import config_or_fail as _config
from include.registry_ops.dag_support import dag_defaults


@dag(
    schedule=CronTriggerTimetable("0 5 * * 1", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["registry-ops", "audit", "security"],
    **dag_defaults(owner="platform", retry_delay=timedelta(minutes=2), pause_after=0, quiet=("gate",)),
    max_active_runs=1,
)
def registry_iam_audit():
    @task
    def audit() -> dict:
        """Audit every registry, compare with the last audit, write the run's tables."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.audit.jobs import audit_step
        from include.registry_ops.config import ConfigError
        from include.registry_ops.storage import BucketMissing
        from include.registry_ops.store.runs import ManifestError

        run = get_current_context()["dag_run"]
        try:
            return audit_step(_config(), run.run_after)
        except (ConfigError, BucketMissing, ManifestError) as exc:  # no retry fixes these
            raise AirflowFailException(str(exc)) from None

    @task
    def report(summary: dict) -> dict:
        """Email the security recipients: new findings first, the change, the matrix (CSV)."""
        from include.registry_ops.audit.jobs import report_step

        return report_step(_config(), summary)

    @task
    def publish(summary: dict, reported: dict) -> dict:
        """The run's manifest, then latest.json (the next baseline) when complete."""
        from include.registry_ops.audit.jobs import publish as publish_run

        return publish_run(_config(), summary, reported)

    @task
    def gate(summary: dict, published: dict) -> None:
        """Fail on new or unacknowledged findings of audit.fail_severity or worse."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.audit.jobs import AuditGateFailed
        from include.registry_ops.audit.jobs import gate as gate_run

        try:
            gate_run(summary)
        except AuditGateFailed as exc:  # one line: a traceback would bury the names
            raise AirflowFailException(str(exc)) from None

    @task
    def check(summary: dict, published: dict) -> None:
        """Fail naming each registry that could not be audited."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.audit.jobs import AuditIncomplete
        from include.registry_ops.audit.jobs import check as check_run

        try:
            check_run(summary)
        except AuditIncomplete as exc:
            raise AirflowFailException(str(exc)) from None

    summary = audit()
    published = publish(summary, report(summary))
    gate(summary, published)
    check(summary, published)


registry_iam_audit()
