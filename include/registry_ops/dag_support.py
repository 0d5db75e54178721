"""Small helpers every DAG file shares; Airflow is imported only when they run (in a task) or
when a DAG file calls them."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

# Consecutive failed runs after which the scheduler pauses a DAG (registry_watch reports the
# pause to ops). 3: a daily DAG broken for three days stops hammering registries and S3, and
# ops have had three failure notices and a pause notice by then.
PAUSE_AFTER_FAILED_RUNS = 3


def config_or_fail() -> Any:
    """The validated config; a bad file fails the task at once (retrying cannot fix it)."""
    from airflow.sdk.exceptions import AirflowFailException

    from .config import ConfigError, load_config

    try:
        return load_config()
    except ConfigError as exc:
        raise AirflowFailException(str(exc)) from None


def dag_defaults(
    owner: str,
    retry_delay: timedelta,
    *,
    retries: int = 2,
    pause_after: int = PAUSE_AFTER_FAILED_RUNS,
    quiet: tuple[str, ...] = (),
    deadline: str | None = None,
) -> dict[str, Any]:
    """The ``@dag`` keyword arguments every DAG of ours shares
    (``@dag(..., **dag_defaults(owner=..., retry_delay=...))``):

    * ``default_args``: ``owner``, ``retries``, ``retry_delay`` and ``on_failure_callback``, one
      failure notice to ops per failed run (``notify.failure.FailureNotice``; after the last try
      only, never on retry: ``on_retry_callback`` stays unset). Tasks in ``quiet`` fail with a
      verdict they have already emailed themselves (the gates): no notice for that verdict.
    * ``max_consecutive_failed_dag_runs``: ``pause_after`` (0: never paused, for DAGs that fail
      by design while findings stand, run only on request, or must keep trying monthly).
    * ``deadline``: the ``DeadlineAlert`` for this key of ``notifications.deadlines``.
    """
    from .notify.failure import FailureNotice

    default_args = {"owner": owner, "retries": retries, "retry_delay": retry_delay}
    out: dict[str, Any] = {
        "default_args": {**default_args, "on_failure_callback": FailureNotice(quiet)},
        "max_consecutive_failed_dag_runs": pause_after,
    }
    if deadline is not None:
        out["deadline"] = deadline_alert(deadline)
    return out


def deadline_interval(dag_id: str) -> Any:
    """``notifications.deadlines.<dag_id>`` from the config file; its default when the file
    cannot be read or is invalid (the DAG must still parse; the reason is logged)."""
    from .config import ConfigError, DeadlineConfig, load_config

    try:
        deadlines = load_config().notifications.deadlines
    except ConfigError as exc:
        deadlines = DeadlineConfig()
        log.warning(
            "deadline of %s: config not usable, default %s applies: %s",
            dag_id,
            getattr(deadlines, dag_id),
            exc,
        )
    return getattr(deadlines, dag_id)


def _human(interval: Any) -> str:
    minutes = int(interval.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (mins, "m")) if n) or "0m"


def deadline_alert(dag_id: str) -> Any:
    """A ``DeadlineAlert``: the run must finish within ``notifications.deadlines.<dag_id>`` of
    being queued, else ``notify.failure.deadline_missed`` emails ops (from the triggerer)."""
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    from .notify.failure import deadline_missed

    interval = deadline_interval(dag_id)
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback(deadline_missed, kwargs={"dag_id": dag_id, "interval": _human(interval)}),
        name=f"{dag_id} not finished within {_human(interval)}",
    )
