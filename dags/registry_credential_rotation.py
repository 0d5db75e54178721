"""
### registry_credential_rotation

Monthly rotation of the credentials CI uses: each `rotation.service_accounts` IAM user's
access key kept in Secrets Manager, and each `rotation.htpasswd` user's password in the
htpasswd file of the deployment's own OCI registry.

* **Schedule**: 04:00 UTC on the first day of every month (`0 4 1 * *`); manual runs with Params.
* **Params**: `dry_run` (plan every step, change nothing), `force` (rotate credentials younger
  than `rotation.min_age_days` too).
* **Tasks**: `key_accounts`, `htpasswd_accounts` (who is configured) → `rotate_key` (mapped
  per IAM user: new key as AWSPENDING, proven with STS GetCallerIdentity, promoted to
  AWSCURRENT, old key deactivated; old keys whose grace (`rotation.grace_days`, default 7)
  is over are deleted) and
  `rotate_htpasswd` (mapped per user: new password as AWSPENDING, new bcrypt line written with
  the old one kept, proven by an authenticated request, promoted, old line removed) → `report`
  (an email of what was done to `notifications.security_recipients`, else `recipients`, none
  on a dry run; fails the run naming each account that failed).
* **Safety**: every step is chosen from the state read back from IAM, Secrets Manager and the
  file, so a retry or a rerun after a crash finishes what was started; AWSCURRENT only ever
  moves to a proven credential; an old key is deactivated only once the current one is proven,
  and deleted only after its grace. Secrets are masked in task logs and never returned as XCom.
* **Failure modes**: one account failing (a key that does not work, a line changed by hand, a
  missing secret) fails its mapped task (retried twice, safely) and the report, the other
  accounts rotate. Details: `docs/dags/registry_credential_rotation.md`; by hand:
  `docs/runbooks/rotate-registry-credentials.md`.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, dag, get_current_context, task

from include.registry_ops.dag_support import config_or_fail as _config
from include.registry_ops.dag_support import dag_defaults

log = logging.getLogger(__name__)
SCHEDULE = "0 4 1 * *"

PARAMS = {
    "dry_run": Param(False, type="boolean", title="Dry run", description="plan every step, change nothing"),
    "force": Param(
        False,
        type="boolean",
        title="Force",
        description="rotate credentials younger than rotation.min_age_days too",
    ),
}


def _rotate(kind: str, user: str) -> dict:
    """One account's rotation; its record (ids and steps, never a secret) or a failure."""
    from datetime import UTC, datetime

    from airflow.sdk.log import mask_secret

    from include.registry_ops.rotation import run

    context = get_current_context()
    context["account"] = user  # type: ignore[typeddict-unknown-key]  (map_index_template)
    params = context["params"]
    rotate = run.rotate_keys if kind == "keys" else run.rotate_htpasswd
    result = rotate(
        _config(),
        datetime.now(UTC),
        force=params["force"],
        dry_run=params["dry_run"],
        users=[user],
        on_secret=mask_secret,
    )
    (record,) = result["accounts"]
    log.info("rotate %s %s: %s %s", kind, user, record["status"], record.get("detail") or "")
    if record["status"] == "error":
        raise RuntimeError(f"{kind} {user}: {record['error']}")
    return record


@dag(
    schedule=CronTriggerTimetable(SCHEDULE, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["registry-ops", "security", "rotation"],
    params=PARAMS,
    **dag_defaults(owner="security", retry_delay=timedelta(minutes=5), pause_after=0),
    max_active_runs=1,
)
def registry_credential_rotation():
    @task
    def key_accounts() -> list[str]:
        """The configured IAM users (a bad config fails here, before anything changes)."""
        return [a.user for a in _config().rotation.service_accounts]

    @task
    def htpasswd_accounts() -> list[str]:
        """The configured htpasswd users."""
        return [h.user for h in _config().rotation.htpasswd]

    @task(map_index_template="{{ account }}")
    def rotate_key(user: str) -> dict:
        """Rotate one IAM user's access key (steps: see include/registry_ops/rotation/keys.py)."""
        return _rotate("keys", user)

    @task(map_index_template="{{ account }}")
    def rotate_htpasswd(user: str) -> dict:
        """Rotate one htpasswd user's password (steps: see include/registry_ops/rotation/htpasswd.py)."""
        return _rotate("htpasswd", user)

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=2)
    def report(key_users: list[str], htpasswd_users: list[str]) -> dict:
        """Email what was done; fail naming each account whose rotation failed."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.notify.send import notify
        from include.registry_ops.rotation import report as rotation_report

        context = get_current_context()
        ti = context["ti"]
        results, failed = [], []
        for kind, task_id, users in (
            ("keys", "rotate_key", key_users),
            ("htpasswd", "rotate_htpasswd", htpasswd_users),
        ):
            records = []
            for index, user in enumerate(users):
                record = ti.xcom_pull(task_ids=task_id, map_indexes=index)
                if record is None:
                    failed.append(f"{kind} {user}")
                    record = {"user": user, "status": "error", "error": "its task failed (see the task log)"}
                records.append(record)
            counts: dict[str, int] = {}
            for r in records:
                counts[r["status"]] = counts.get(r["status"], 0) + 1
            results.append({"kind": kind, "accounts": records, "summary": {"counts": counts}})
        config = _config()
        sent = None
        if not context["params"]["dry_run"]:  # a plan is for whoever asked for it, in the log
            sent = notify(rotation_report.message(config, results), config)["email"]
        log.info("%s", rotation_report.subject(results))
        if failed:  # no retry: the email is out, and the accounts' own tasks were retried
            raise AirflowFailException(f"rotation failed for: {', '.join(failed)}")
        return {"subject": rotation_report.subject(results), "email": sent}

    key_users, htpasswd_users = key_accounts(), htpasswd_accounts()
    keys = rotate_key.expand(user=key_users)
    passwords = rotate_htpasswd.expand(user=htpasswd_users)
    [keys, passwords] >> report(key_users, htpasswd_users)


registry_credential_rotation()
