"""Backups and drills: the last backup snapshot (complete or not) and the RPO (the age of the last
complete one against ``dr.rpo_seconds``), the recent snapshots, the last DR drill with its RTO
and the digests it proved bit-exact, and when the next drill is due.

Reads what ``registry_backup`` and ``registry_dr_drill`` wrote: the snapshots' manifests under
``storage.prefixes.backup`` (``backup/store.py``; ``latest.json`` names the last *complete*
one, so a newer incomplete snapshot is only found by listing) and the drill's report under
``<reports>dr-drill/`` (``backup/drill_report.py``). A warm load costs one listing of the backup
prefix (a few dozen keys: prune keeps ``keep_daily`` + ``keep_monthly`` snapshots) and one GET
of the drill's pointer; manifests and reports are read once per version (the memo).

The next drill date is computed from the drill DAG's own cron expression
(``backup.settings.DRILL_SCHEDULE``, which the DAG schedules itself with), evaluated with
croniter, as Airflow's ``CronTriggerTimetable`` does, in UTC (the DAG's timezone).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from croniter import croniter

from ..backup import drill_report
from ..backup.settings import DRILL_SCHEDULE
from ..backup.store import KIND as BACKUP_KIND
from ..backup.store import SCHEMA_VERSION as BACKUP_VERSION
from ..store import objects
from ..store.runs import MANIFEST_NAME, RunLayout
from ._artefacts import ArtefactError, Part, assemble, attempt, parse_time, read_dict, read_pointer
from .context import PageContext
from .model import Column, Figure, Section, Table, never_run, redact

ID, TITLE = "backups", "Backups and drills"
BACKUP_DAG, DRILL_DAG = "registry_backup", "registry_dr_drill"
RECENT = 10  # snapshots in the table (their manifests are read once each, in parallel)
FAILURES_SHOWN = 50  # drill failures listed (the report in S3 holds every one)
_MANIFEST = re.compile(r"^dt=(\d{4})-(\d{2})-(\d{2})/(\d{6})Z/" + re.escape(MANIFEST_NAME) + "$")

SNAPSHOT_COLUMNS = [
    Column("snapshot", "Snapshot"),
    Column("taken_at", "Taken", "time"),
    Column("mode", "Mode"),
    Column("status", "Status", "status"),
    Column("registries", "Registries", "list"),
    Column("repositories", "Repositories", "count"),
    Column("manifests", "Manifests", "count"),
    Column("objects", "Objects", "count"),
    Column("bytes", "Bytes", "bytes"),
    Column("failures", "Failures", "count"),
]
DRILL_REPO_COLUMNS = [
    Column("registry", "Registry"),
    Column("repository", "Repository"),
    Column("target_repository", "Restored as"),
    Column("manifests", "Manifests", "count"),
    Column("blobs", "Blobs", "count"),
    Column("tags", "Tags", "count"),
    Column("failures", "Failures", "count"),
]
DRILL_FAILURE_COLUMNS = [
    Column("kind", "Kind"),
    Column("digest", "Digest", "digest"),
    Column("tag", "Tag"),
    Column("registry", "Registry"),
    Column("repository", "Repository"),
    Column("problem", "Problem"),
]


def load(ctx: PageContext) -> Section:
    snapshots = attempt("backup snapshots", lambda: _snapshots(ctx))
    drills = attempt("DR drill", lambda: _drill(ctx))
    schedule = attempt("next drill date", lambda: _next_drill(ctx.now))
    nothing = never_run(ID, TITLE, BACKUP_DAG, "backup snapshot")
    nothing.notes = [n for p in (drills, schedule) for n in p.notes]
    if snapshots.never_run and drills.never_run:
        return nothing
    return assemble(ID, TITLE, [snapshots, drills, schedule], None)


# -- snapshots -------------------------------------------------------------------------------------
def _backup_layout(ctx: PageContext) -> RunLayout:
    return RunLayout(ctx.bucket, ctx.config.storage.prefixes.backup, BACKUP_KIND, BACKUP_VERSION)


def _snapshots(ctx: PageContext) -> Part:
    layout = _backup_layout(ctx)
    listed = objects.list_keys(ctx.s3, ctx.bucket, layout.root)  # the one request of a warm load
    manifests = sorted(
        (o for o in listed if _MANIFEST.match(o["Key"][len(layout.root) :])),
        key=lambda o: o["Key"],
        reverse=True,
    )[:RECENT]
    pointer = next((o for o in listed if o["Key"] == layout.latest_key), None)
    if not manifests and pointer is None:
        return Part(never_run=True)
    version = (
        tuple((o["Key"], o.get("ETag"), str(o.get("LastModified"))) for o in manifests),
        None if pointer is None else (pointer.get("ETag"), str(pointer.get("LastModified"))),
    )
    built = ctx.memo.get(
        ("page.backups.snapshots", ctx.bucket, layout.root, version),
        lambda: _read_snapshots(ctx, layout, [o["Key"] for o in manifests], pointer is not None),
    )
    return _snapshot_part(ctx, layout, built)


def _read_snapshots(
    ctx: PageContext, layout: RunLayout, keys: list[str], has_pointer: bool
) -> dict[str, Any]:
    """The pointer and one summary row per manifest (never the manifests: their object maps are
    large); a manifest that cannot be read is a row naming the problem."""
    pointer = None
    if has_pointer:
        pointer = layout.check(read_dict(ctx.s3, ctx.bucket, layout.latest_key), layout.latest_key)

    def one(key: str) -> dict[str, Any]:
        try:
            return _row(layout.check(read_dict(ctx.s3, ctx.bucket, key), key), key, layout.url(key), pointer)
        except ValueError as exc:  # ArtefactError, ManifestError: both name the object
            return {"key": key, "error": str(exc)}

    with ThreadPoolExecutor(max(1, min(8, len(keys))), thread_name_prefix="page-backups") as pool:
        rows = list(pool.map(one, keys))
    return {"pointer": pointer, "rows": rows}


def _row(manifest: dict[str, Any], key: str, where: str, pointer: dict[str, Any] | None) -> dict[str, Any]:
    regs = manifest.get("registries")
    if not isinstance(regs, dict):
        raise ArtefactError(f"{where}: 'registries' is not a mapping")
    failures = manifest.get("failures") or {}
    complete = bool(manifest.get("complete")) and not failures

    def total(field: str) -> int:
        return sum(int(e.get(field) or 0) for e in regs.values() if isinstance(e, dict))

    return {
        "key": key,
        "snapshot": manifest.get("snapshot"),
        "taken_at": parse_time(manifest.get("taken_at")),
        "mode": manifest.get("mode"),
        "complete": complete,
        "status": "complete" if complete else "incomplete",
        "latest": pointer is not None and pointer.get("manifest") == key,
        "registries": sorted(regs),
        "repositories": total("repositories"),
        "manifests": total("manifests"),
        "objects": len(manifest.get("objects") or {}),
        "bytes": total("bytes"),
        "failures": len(failures),
        "failure_names": sorted(failures)[:5],
    }


def _snapshot_part(ctx: PageContext, layout: RunLayout, built: dict[str, Any]) -> Part:
    pointer, rows = built["pointer"], built["rows"]
    good = [r for r in rows if "error" not in r]
    notes = [f"Snapshot manifest unreadable: {r['error']}" for r in rows if "error" in r]
    objective = ctx.config.dr.rpo_seconds
    last_complete = parse_time((pointer or {}).get("taken_at"))
    rpo = (ctx.now - last_complete).total_seconds() if last_complete else None
    figures = []
    if good:
        last = good[0]
        figures += [
            Figure("Last snapshot", last["taken_at"], "time"),
            Figure("Mode", last["mode"]),
            Figure("Complete", "yes" if last["complete"] else "no", "status", alert=not last["complete"]),
            Figure("Objects", last["objects"], "count"),
            Figure("Bytes", last["bytes"], "bytes"),
            Figure("Registries", last["registries"], "list"),
        ]
        if not last["complete"]:
            names = ", ".join(last["failure_names"])
            notes.append(
                f"The last snapshot {last['snapshot']} is incomplete ({last['failures']} failure(s): "
                f"{names}); it did not become latest. {BACKUP_DAG}'s check task names every failure."
            )
    elif rows:
        raise ArtefactError("; ".join(r["error"] for r in rows))
    figures += [
        Figure(
            "RPO (age of the last complete snapshot)", rpo, "seconds", alert=rpo is None or rpo > objective
        ),
        Figure("RPO objective", objective, "seconds"),
        Figure("Last full snapshot", parse_time((pointer or {}).get("last_full_at")), "time"),
    ]
    if rpo is None:
        notes.append(f"No backup snapshot is complete yet: {layout.url(layout.latest_key)} does not exist.")
    elif rpo > objective:
        notes.append(
            f"The last complete snapshot is {rpo / 3600:.1f} h old: more than the RPO objective "
            f"(dr.rpo_seconds {objective} s)."
        )
    table = Table(
        "snapshots",
        "Recent snapshots",
        SNAPSHOT_COLUMNS,
        [{c.key: r[c.key] for c in SNAPSHOT_COLUMNS} for r in good],
        note=f"The newest {RECENT}; latest.json names the last complete one.",
    )
    newest = good[0] if good else None
    return Part(
        figures=figures,
        tables=[table],
        notes=notes,
        as_of=newest["taken_at"] if newest else last_complete,
        source=layout.url(newest["key"]) if newest else layout.url(layout.latest_key),
    )


# -- drills ----------------------------------------------------------------------------------------
def _drill(ctx: PageContext) -> Part:
    layout = drill_report.layout(ctx.config)
    found = read_pointer(ctx.s3, layout)
    if found is None:
        return Part(
            never_run=True,
            figures=[Figure("Last DR drill", "never run", "status", alert=True)],
            notes=[f"{DRILL_DAG} has not run yet: no drill report in S3 ({layout.url(layout.latest_key)})."],
        )
    pointer, version = found
    report, key = ctx.memo.get(
        ("page.backups.drill", ctx.bucket, layout.latest_key, version),
        lambda: _read_drill(ctx, layout, pointer),
    )
    return _drill_part(report, layout.url(key))


def _read_drill(ctx: PageContext, layout: RunLayout, pointer: dict[str, Any]) -> tuple[dict[str, Any], str]:
    key = pointer.get("report_json")
    if not isinstance(key, str):
        raise ArtefactError(f"{layout.url(layout.latest_key)} names no report_json")
    report = read_dict(ctx.s3, ctx.bucket, key)
    try:
        objectives = report["objectives"]
        kept = {
            "passed": bool(report["passed"]),
            "problems": [redact(str(p)) for p in report.get("problems") or []],
            "finished_at": parse_time(report.get("finished_at") or report.get("now")),
            "snapshot": report["snapshot"],
            "taken_at": parse_time(report.get("taken_at")),
            "target": report.get("target"),
            "rto_s": float(objectives["rto"]["seconds"]),
            "rto_objective": int(objectives["rto"]["objective"]),
            "rto_met": bool(objectives["rto"]["met"]),
            "rpo_s": float(objectives["rpo"]["seconds"]),
            "digests_checked": int(report["digests_checked"]),
            "digests_equal": int(report["digests_equal"]),
            "repositories": [
                {c.key: r.get(c.key) for c in DRILL_REPO_COLUMNS} for r in report.get("repositories") or []
            ],
            "failures": [
                {c.key: redact(f.get(c.key)) for c in DRILL_FAILURE_COLUMNS}
                for f in (report.get("failures") or [])[:FAILURES_SHOWN]
            ],
            "failures_total": len(report.get("failures") or []),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtefactError(
            f"{objects.url(ctx.bucket, key)} is not a drill report ({type(exc).__name__}: {exc})"
        ) from None
    return kept, key


def _drill_part(r: dict[str, Any], source: str) -> Part:
    figures = [
        Figure("Last DR drill", r["finished_at"], "time"),
        Figure("Drill result", "passed" if r["passed"] else "failed", "status", alert=not r["passed"]),
        Figure("RTO measured", r["rto_s"], "seconds", alert=not r["rto_met"]),
        Figure("RTO objective", r["rto_objective"], "seconds"),
        Figure("Digests checked", r["digests_checked"], "count"),
        Figure(
            "Digests bit-exact", r["digests_equal"], "count", alert=r["digests_equal"] < r["digests_checked"]
        ),
        Figure("Snapshot drilled", r["snapshot"]),
    ]
    tables = [
        Table(
            "drill_repositories", "Last drill: repositories restored", DRILL_REPO_COLUMNS, r["repositories"]
        )
    ]
    if r["failures"]:
        tables.append(
            Table(
                "drill_failures",
                "Last drill: what did not come back",
                DRILL_FAILURE_COLUMNS,
                r["failures"],
                total=r["failures_total"],
                note=f"The first {FAILURES_SHOWN}; the report in S3 names every one.",
            )
        )
    notes = [f"Drill problem: {p}" for p in r["problems"]]
    return Part(figures=figures, tables=tables, notes=notes, as_of=r["finished_at"], source=source)


# -- the next drill --------------------------------------------------------------------------------
def drill_schedule() -> str:
    """The drill DAG's cron expression (the DAG schedules itself with the same constant)."""
    return DRILL_SCHEDULE


def next_run(expression: str, now: datetime) -> datetime:
    """The first time after ``now`` the cron ``expression`` fires (UTC)."""
    return croniter(expression, now).get_next(datetime)


def _next_drill(now: datetime, schedule: Callable[[], str] = drill_schedule) -> Part:
    expression = schedule()
    due = next_run(expression, now)
    return Part(
        extra=True,
        figures=[Figure("Next drill", due, "time")],
        notes=[f"Next {DRILL_DAG} run {due:%Y-%m-%d %H:%M} UTC (schedule {expression!r}), unless paused."],
    )
