"""
### registry_dr_drill

The quarterly disaster-recovery drill: restores a backup snapshot (`registry_backup`) into a
scratch target, proves every restored image bit-exact and pullable, measures RTO and RPO
against the config's objectives, reports, and removes what it restored.

* **Schedule**: 06:00 UTC on the first day of January, April, July and October
  (`0 6 1 1,4,7,10 *`); manual runs with Params.
* **Params**: `snapshot` (`latest` or an id `YYYYMMDDTHHMMSSZ`), `sample` (`all` or a number
  of repositories, chosen deterministically from the snapshot id, so a rerun checks the same
  ones; null: `dr.sample`), `target` (a configured registry; null: `dr.target`).
* **Tasks**: `prepare` (setup: snapshot, sample, scratch names
  `<dr.scratch_prefix><source registry>/<repo>`; refuses a target already holding repositories
  under the prefix) → `drill` (restore, timed: RTO; every manifest fetched back from the target
  by digest and hashed, every blob fetched back and hashed, every tag resolved; RPO = now minus
  the snapshot's `taken_at`; report JSON + HTML to S3, emailed) → `verdict` (fails naming each
  digest that did not come back, or the objective missed) and `cleanup` (teardown: removes the
  scratch repositories of this drill, and only those, whatever happened).
* **Outputs**: `s3://<bucket>/<reports prefix>dr-drill/dt=.../report.json`, `report.html`,
  `manifest.json`, `latest.json`; an email to `notifications.recipients` (HTML report, JSON
  attached) when `dr.email`.
* **Failure modes**: bad Params, an unknown snapshot or target, an occupied scratch prefix fail
  `prepare` at once, nothing written. A digest that did not come back, a missed RTO or RPO
  objective fail `verdict` without retry, naming each digest; `cleanup` still runs, and a
  cleanup that leaves something fails the run too. Details: `docs/dags/registry_dr_drill.md`.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, setup, task, teardown

from include.registry_ops.backup.settings import DRILL_SCHEDULE as SCHEDULE
from include.registry_ops.dag_support import config_or_fail as _config
from include.registry_ops.dag_support import dag_defaults

log = logging.getLogger(__name__)

PARAMS = {
    "snapshot": Param(
        "latest",
        type="string",
        pattern=r"^(latest|\d{8}T\d{6}Z)$",
        title="Snapshot",
        description="'latest' or a snapshot id (YYYYMMDDTHHMMSSZ)",
    ),
    "sample": Param(
        None,
        type=["null", "integer", "string"],
        title="Sample",
        description="'all' or a number of repositories (chosen from the snapshot id); empty: dr.sample",
    ),
    "target": Param(
        None,
        type=["null", "string"],
        title="Target",
        description="registry (config name) to restore into; empty: dr.target",
    ),
}


@dag(
    schedule=CronTriggerTimetable(SCHEDULE, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["registry-ops", "backup", "dr"],
    params=PARAMS,
    **dag_defaults(owner="platform", retry_delay=timedelta(minutes=5)),
    max_active_runs=1,
)
def registry_dr_drill():
    @setup
    @task(multiple_outputs=False)
    def prepare() -> dict:
        """The drill's plan; bad input or an occupied scratch prefix fails at once, nothing written."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.backup import drill
        from include.registry_ops.clients import s3_client

        config, params = _config(), get_current_context()["params"]
        try:
            plan = drill.prepare(
                config, s3_client(config), params["snapshot"], params["sample"], params["target"]
            )
        except drill.DrillError as exc:
            raise AirflowFailException(str(exc)) from None
        log.info(
            "drill: snapshot %s (taken %s) into %s: %d of %d repositories",
            plan.snapshot,
            plan.taken_at,
            plan.target,
            len(plan.selections),
            plan.repositories_in_snapshot,
        )
        return plan.as_dict()

    @task(multiple_outputs=False)
    def drill(plan: dict) -> dict:
        """Restore, verify, measure, write and email the report; the summary (``verdict`` judges)."""
        from datetime import UTC, datetime

        from include.registry_ops.backup import drill as dr
        from include.registry_ops.backup import drill_report
        from include.registry_ops.clients import s3_client

        config = _config()
        s3 = s3_client(config)
        report = dr.execute(config, s3, dr.DrillPlan.from_dict(plan), datetime.now(UTC))
        report["location"] = drill_report.write_report(config, s3, report)
        report["notification"] = drill_report.email_report(config, report)
        log.info("drill: %s; report %s", drill_report.subject(report), report["location"]["html"])
        return drill_report.summary(report)

    @task(multiple_outputs=False)
    def verdict(summary: dict) -> dict:
        """Fail (no retry) naming each digest that did not come back, or the objective missed.

        A task of its own, downstream of ``drill`` and not of ``cleanup``: a teardown with
        ``on_failure_fail_dagrun`` makes the tasks upstream of it no longer leaves, so a failure
        there would not fail the run; this leaf does."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.backup import drill_report

        if not summary["passed"]:
            raise AirflowFailException(drill_report.failure_message(summary))
        return summary

    @teardown(on_failure_fail_dagrun=True)
    @task(multiple_outputs=False)
    def cleanup(plan: dict) -> dict:
        """Remove this drill's scratch repositories (only those), whatever happened before."""
        from include.registry_ops.backup import drill as dr
        from include.registry_ops.clients import s3_client

        config = _config()
        out = dr.cleanup(config, s3_client(config), dr.DrillPlan.from_dict(plan))
        if out["failed"]:
            raise RuntimeError(f"scratch repositories not removed from {plan['target']}: {out['failed']}")
        return out

    plan = prepare()
    summary = drill(plan)
    summary >> cleanup(plan)
    verdict(summary)


registry_dr_drill()
