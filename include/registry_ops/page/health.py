"""Health: each DAG of ours, its last success and last run, and whether it is paused, and by
whom: a DAG the scheduler paused after ``max_consecutive_failed_dag_runs`` failures is named as
such, since nothing runs until someone unpauses it.

Read from Airflow's REST API (``/api/v2``) with the viewer's own token, so the section shows
what Airflow lets that user see and needs no credentials of its own. Our DAGs are the ones
tagged ``registry-ops``. The calls run concurrently: ten DAGs cost one round trip's time.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx

from .model import Column, Figure, Section, Table, rows_of

TAG = "registry-ops"
SECTION, TITLE = "health", "Health"
COLUMNS = [
    Column("dag_id", "DAG"),
    Column("state", "State", "status"),
    Column("last_success", "Last success", "time"),
    Column("last_run", "Last run", "time"),
    Column("last_run_state", "Last run state", "status"),
    Column("next_run", "Next run", "time"),
    Column("paused", "Paused"),
    Column("note", "Note"),
]


_NEWEST = {"order_by": "-when", "limit": 100}
PREFIX = "registry_"  # our DAG ids (the tag is what lists them; the prefix narrows the run queries)
RECENT = 200


class AirflowApiError(RuntimeError):
    """Airflow's REST API refused or failed a call the section needs (the message says which)."""


async def _get(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    resp = await client.get(path, params=params)
    if resp.status_code >= 400:
        raise AirflowApiError(f"Airflow API GET {path}: HTTP {resp.status_code} {resp.text[:200]}")
    return resp.json()


async def _runs(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    return (await _get(client, path, **params)).get("dag_runs") or []


async def _newest_runs(client: httpx.AsyncClient, dag_ids: list[str]) -> dict[str, tuple[Any, Any]]:
    """Per DAG, its last run and its last successful run. One request for the newest runs of all
    our DAGs answers most (a DAG whose last run succeeded needs nothing more); only the others
    cost a request or two each, a few at a time: the API server serves these calls itself, and
    thirty at once made it queue every other request for half a minute on a loaded machine."""
    recent = await _runs(
        client, "/api/v2/dags/~/dagRuns", dag_id_prefix_pattern=PREFIX, order_by="-run_after", limit=RECENT
    )
    last: dict[str, Any] = {}
    for run in recent:
        last.setdefault(run["dag_id"], run)
    gate = asyncio.Semaphore(4)

    async def one(dag_id: str) -> tuple[str, tuple[Any, Any]]:
        async with gate:
            run = last.get(dag_id)
            if run is None:  # older than the page of recent runs, or never ran
                run = next(
                    iter(
                        await _runs(client, f"/api/v2/dags/{dag_id}/dagRuns", order_by="-run_after", limit=1)
                    ),
                    None,
                )
            if run is None or run.get("state") == "success":
                return dag_id, (run, run)
            path = f"/api/v2/dags/{dag_id}/dagRuns"
            ok = await _runs(client, path, state="success", order_by="-end_date", limit=1)
            return dag_id, (run, ok[0] if ok else None)

    return dict(await asyncio.gather(*(one(d) for d in dag_ids)))


async def _scheduler_pauses(client: httpx.AsyncClient, dags: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest scheduler pause event per DAG (one request, and none when nothing is paused)."""
    if not any(d.get("is_paused") for d in dags):
        return {}
    events = await _get(
        client,
        "/api/v2/eventLogs",
        dag_id_prefix_pattern=PREFIX,
        event="paused",
        owner="scheduler",
        **_NEWEST,
    )
    newest: dict[str, Any] = {}
    for event in events.get("event_logs") or []:
        newest.setdefault(event.get("dag_id"), event)
    return newest


def _dag_row(dag: dict[str, Any], run: Any, ok: Any, pause: Any) -> dict[str, Any]:
    dag_id = dag["dag_id"]
    # the scheduler's pause log, and the run that made it: still failed (a user who unpaused and
    # paused again since is not "the scheduler")
    by_scheduler = bool(dag.get("is_paused") and pause and run and run.get("state") == "failed")
    failures = dag.get("max_consecutive_failed_dag_runs") or 0
    if by_scheduler:
        after = f"{failures} consecutive failed runs" if failures else "consecutive failed runs"
        note = f"paused by the scheduler on {pause['when']} after {after}"
        state = "failed"
    elif dag.get("is_paused"):
        note, state = "paused", "paused"
    elif run and run.get("state") == "failed":
        note, state = "last run failed", "failed"
    else:
        note, state = "", "ok" if ok else "never_run"
    return {
        "dag_id": dag_id,
        "state": state,
        "last_success": ok and (ok.get("end_date") or ok.get("run_after")),
        "last_run": run and run.get("run_after"),
        "last_run_state": run and run.get("state"),
        "next_run": dag.get("next_dagrun_run_after"),
        "paused": "by the scheduler" if by_scheduler else ("yes" if dag.get("is_paused") else "no"),
        "note": note,
        "has_import_errors": dag.get("has_import_errors"),
    }


async def load(client: httpx.AsyncClient, now: datetime) -> Section:
    """The Health section from Airflow's API (``client`` carries the base URL and the token)."""
    listing = await _get(client, "/api/v2/dags", tags=TAG, limit=100, order_by="dag_id")
    dags = listing.get("dags") or []
    if not dags:
        return Section(
            SECTION,
            TITLE,
            status="never_run",
            message=f"Airflow knows no DAG tagged {TAG!r}: is the dags folder deployed and parsed?",
        )
    runs, pauses = await asyncio.gather(
        _newest_runs(client, [d["dag_id"] for d in dags]), _scheduler_pauses(client, dags)
    )
    rows = [_dag_row(d, *runs[d["dag_id"]], pauses.get(d["dag_id"])) for d in dags]
    by_scheduler = [r["dag_id"] for r in rows if r["paused"] == "by the scheduler"]
    failed = [r["dag_id"] for r in rows if r["state"] == "failed"]
    broken = [r["dag_id"] for r in rows if r.get("has_import_errors")]
    section = Section(SECTION, TITLE, as_of=now.isoformat())
    section.figures = [
        Figure("DAGs", len(rows), "count"),
        Figure("Failing", len(failed), "count", alert=bool(failed)),
        Figure("Paused by the scheduler", len(by_scheduler), "count", alert=bool(by_scheduler)),
        Figure("Import errors", len(broken), "count", alert=bool(broken)),
    ]
    section.tables = [Table("dags", "Our DAGs", COLUMNS, rows_of(rows, COLUMNS))]
    if by_scheduler:
        section.notes.append(
            "The scheduler paused " + ", ".join(by_scheduler) + " after consecutive failures: "
            "fix the cause, then unpause it in the DAG list."
        )
    return section
