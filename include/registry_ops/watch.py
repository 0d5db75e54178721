"""registry_watch: tell ops when the scheduler paused one of our DAGs after consecutive failed
runs (``max_consecutive_failed_dag_runs``), once per pause.

Airflow records such a pause as an event log row (``event="paused"``, ``owner="scheduler"``,
``DagRun._check_last_n_dagruns_failed``) and tells nobody. Tasks have no ORM access, so the
watch asks Airflow's REST API (``GET /api/v2/eventLogs``) through the HTTP connection
``notifications.airflow_api_conn_id`` (default ``airflow_api``: host = the API server's base
URL, login and password of an Airflow user allowed to read event logs and DAGs; the password
buys a JWT from ``POST /auth/token``). Event log ids only grow, so the state is one number: the
highest event id already handled, kept in ``<reports prefix>alerts/paused-dags.json``. Each new
pause is reported, then recorded before the next one, so a failed send is retried next check
and nothing sent is sent twice. The first check ever reports only pauses of the last day.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from .airflow_api import AirflowClient, connect
from .airflow_api import ApiError as ApiError
from .config import Config
from .notify.failure import dag_url, send_notice

log = logging.getLogger(__name__)

OUR_DAGS = "registry_"  # every DAG of ours is named registry_<what> (tests/test_dag_integrity.py)
STATE_KEY = "alerts/paused-dags.json"  # under storage.prefixes.reports
FIRST_LOOKBACK = timedelta(days=1)
PAGE = 100


class AirflowApi(AirflowClient):
    """The few REST calls the watch needs (the client itself is ``airflow_api``'s)."""

    def pause_events(self) -> list[dict[str, Any]]:
        """The scheduler's pauses of our DAGs, newest first (one page: a watch every 15 minutes
        never has more than a handful new)."""
        data = self.get(
            "/api/v2/eventLogs",
            event="paused",
            owner="scheduler",
            dag_id_prefix_pattern=OUR_DAGS,
            order_by="-event_log_id",
            limit=PAGE,
        )
        return [e for e in data["event_logs"] if (e.get("dag_id") or "").startswith(OUR_DAGS)]

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self.get(f"/api/v2/dags/{quote(dag_id)}")


def api_from_connection(conn_id: str) -> AirflowApi:
    """An :class:`AirflowApi` for the HTTP connection ``conn_id`` (see ``airflow_api.connect``)."""
    return connect(conn_id, AirflowApi)


def _when(event: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["when"]).replace("Z", "+00:00"))


def notice(event: Mapping[str, Any], dag: Mapping[str, Any]) -> tuple[str, str]:
    """Subject and HTML body for one pause."""
    dag_id = str(event["dag_id"])
    runs = dag.get("max_consecutive_failed_dag_runs") or "its last"
    subject = f"[registry-ops] PAUSED {dag_id}: the scheduler paused it after {runs} failed runs"
    link = html.escape(dag_url(dag_id), quote=True)
    now = "yes" if dag.get("is_paused") else "no (someone unpaused it since)"
    rows = [
        ("DAG", dag_id),
        ("Paused at", _when(event).isoformat()),
        ("Consecutive failed runs", str(runs)),
        ("Still paused", now),
    ]
    cells = "".join(
        f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
    )
    body = (
        f"<p>The scheduler paused <b>{html.escape(dag_id)}</b>: its last {html.escape(str(runs))} runs "
        "failed. It runs no more until someone unpauses it.</p>"
        f"<table>{cells}</table>"
        "<p>The failure notices of those runs say what failed. Fix the cause, then unpause the DAG: "
        f'<a href="{link}">{link}</a></p>'
    )
    return subject, body


def check(config: Config, s3: Any, api: AirflowApi, now: datetime | None = None) -> dict[str, Any]:
    """Report every pause not reported before; returns what was seen and reported."""
    from .store import objects

    now = now or datetime.now(UTC)
    bucket, key = config.storage.bucket, f"{config.storage.prefixes.reports}{STATE_KEY}"
    state = objects.get_json_or_none(s3, bucket, key) or {}
    last = state.get("last_event_id")
    events = sorted(api.pause_events(), key=lambda e: int(e["event_log_id"]))
    if last is None:  # first check ever: only what is recent is news
        new = [e for e in events if _when(e) >= now - FIRST_LOOKBACK]
        last = max((int(e["event_log_id"]) for e in events if e not in new), default=0)
    else:
        new = [e for e in events if int(e["event_log_id"]) > int(last)]
    reported = []
    for event in new:
        subject, body = notice(event, api.dag(str(event["dag_id"])))
        send_notice(config, subject, body)
        last = int(event["event_log_id"])
        reported.append({"dag_id": event["dag_id"], "event_log_id": last, "when": str(event["when"])})
        objects.put_json(s3, bucket, key, {"last_event_id": last, "updated_at": now.isoformat()})
    if not new and state.get("last_event_id") != last:
        objects.put_json(s3, bucket, key, {"last_event_id": last, "updated_at": now.isoformat()})
    log.info("watch: %d pause event(s) seen, %d reported", len(events), len(reported))
    return {"seen": len(events), "reported": reported, "last_event_id": last}
