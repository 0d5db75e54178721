"""Access audit: the open findings of the last published audit by severity, which of them are new
since last week (their ``first_seen``, which the audit carries from run to run), the gate's
verdict, and the access keys the audit found too old or unused (ids and ages, never a secret:
the audit reads none).

Reads what ``registry_iam_audit`` wrote under ``<reports>iam-audit/`` (``audit/history.py``):
``latest.json`` names the last audit that was complete and reported, its manifest and its
``findings.parquet``. A newer run that was not published (a registry not audited, the email not
sent) is found by listing the runs after it and named, so the page never shows an old audit as
if it were the newest. A warm load costs the pointer's GET and that one listing.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from ..audit import history
from ..audit.findings import RANK
from ..store import objects
from ..store.runs import MANIFEST_NAME, RunLayout
from ._artefacts import (
    ArtefactError,
    after_run,
    list_after,
    parse_time,
    read_dict,
    read_pointer,
    read_table,
    run_time,
)
from .context import PageContext
from .model import Column, Figure, Section, Table, never_run, redact

ID, TITLE, DAG = "audit", "Access audit", "registry_iam_audit"
NEW_DAYS = 7
KEY_FINDINGS = ("stale-access-key", "unused-access-key")
_AGE = re.compile(r" is (\d+) days old| \((\d+) days; limit")
_RUN = re.compile(r"dt=\d{4}-\d{2}-\d{2}/\d{6}Z/")
_KEPT = ("key", "id", "severity", "registry", "principal", "repository", "subject", "detail", "change")
_KEPT += ("first_seen", "gate", "ack_until")

FINDING_COLUMNS = [
    Column("severity", "Severity", "status"),
    Column("id", "Rule"),
    Column("principal", "Principal"),
    Column("repository", "Resource"),
    Column("registry", "Registry"),
    Column("first_seen", "First seen", "time"),
    Column("since", "New this week", "status"),
    Column("gate", "Gate", "status"),
    Column("ack_until", "Acknowledged until", "date"),
    Column("detail", "Detail"),
    Column("key", "Finding key"),
]
KEY_COLUMNS = [
    Column("principal", "User"),
    Column("subject", "Access key id"),
    Column("id", "Finding"),
    Column("days", "Days (age or idle)", "count"),
    Column("first_seen", "First seen", "time"),
    Column("detail", "Detail"),
]


def load(ctx: PageContext) -> Section:
    layout = history.layout(ctx.config)
    found = read_pointer(ctx.s3, layout)
    published = None if found is None else found[0]
    after = _run_prefix(published, layout) if published else None
    try:
        newer = _newer_runs(ctx, layout, after)
    except ValueError as exc:  # an unreadable manifest of a run that is not shown anyway
        newer = f"A newer audit run could not be read: {exc}"
    if found is None:
        if not newer:
            return never_run(ID, TITLE, DAG, "published access audit")
        return Section(
            ID,
            TITLE,
            status="error",
            message=f"{DAG} ran but no audit was published yet ({layout.url(layout.latest_key)} does not "
            f"exist). {newer}",
        )
    pointer, version = found
    try:
        built = ctx.memo.get(
            ("page.audit", ctx.bucket, layout.latest_key, version), lambda: _read(ctx, layout, pointer)
        )
    except ValueError as exc:  # ArtefactError, ManifestError: named; the pointer's counts still show
        return _counts_only(pointer, layout, f"{type(exc).__name__}: {exc}")
    section = _section(built, ctx)
    if newer:
        section.notes.insert(0, newer)
    return section


def _run_prefix(pointer: dict[str, Any], layout: RunLayout) -> str:
    manifest = pointer.get("manifest")
    if not isinstance(manifest, str) or not manifest.endswith(MANIFEST_NAME):
        raise ArtefactError(f"{layout.url(layout.latest_key)} names no manifest")
    return manifest[: -len(MANIFEST_NAME)]


def _newer_runs(ctx: PageContext, layout: RunLayout, after: str | None) -> str | None:
    """A sentence naming the newest run after the published one and why it is not published
    (its manifest says; none yet: still running or stopped), None when there is none."""
    listed = list_after(ctx.s3, ctx.bucket, layout.root + "dt=", after_run(after) if after else None)
    runs = sorted({m.group(0) for o in listed if (m := _RUN.search(o["Key"]))})
    if not runs:
        return None
    newest = layout.root + runs[-1]
    key = layout.manifest_key(newest)
    marker = next((o for o in listed if o["Key"] == key), None)
    when = run_time(newest)
    head = f"A newer audit ({when:%Y-%m-%d %H:%M} UTC, {layout.url(newest)}) is not shown: "
    if marker is None:
        return head + "it has no manifest yet (still running, or it stopped before publishing)."
    manifest = ctx.memo.get(
        ("page.audit.unpublished", ctx.bucket, key, marker.get("ETag")),
        lambda: read_dict(ctx.s3, ctx.bucket, key),
    )
    errors = [e for e in manifest.get("errors") or [] if isinstance(e, dict)]
    if errors:
        named = "; ".join(f"{e.get('registry')}: {redact(e.get('error'))}" for e in errors)
        return head + f"{len(errors)} registr(y/ies) could not be audited ({named})."
    if not manifest.get("reported"):
        return head + "its report was not emailed, so it is not the baseline yet."
    return head + "it was not published."


def _read(ctx: PageContext, layout: RunLayout, pointer: dict[str, Any]) -> dict[str, Any]:
    manifest = layout.read_manifest(ctx.s3, pointer["manifest"])
    key = pointer.get("findings") or (manifest.get("keys") or {}).get("findings")
    if not isinstance(key, str):
        raise ArtefactError(f"{layout.url(pointer['manifest'])} names no findings table")
    table = read_table(ctx.s3, ctx.bucket, key)
    missing = [c for c in _KEPT if c not in table.column_names]
    if missing:
        raise ArtefactError(f"{objects.url(ctx.bucket, key)}: no column(s) {', '.join(missing)}")
    rows = table.select(list(_KEPT)).to_pylist()
    for r in rows:
        if r["severity"] not in RANK:
            raise ArtefactError(
                f"{objects.url(ctx.bucket, key)}: severity {r['severity']!r} of finding {r['key']}"
            )
        r["first_seen"] = parse_time(r["first_seen"])
    rows.sort(key=lambda r: (RANK[r["severity"]], r["id"], r["registry"], r["principal"] or "", r["key"]))
    return {
        "run_at": parse_time(manifest.get("run_at") or pointer.get("run_at")),
        "registries": [str(r) for r in manifest.get("registries_audited") or []],
        "gate": manifest.get("gate") or {},
        "findings": rows,
        "source": objects.url(ctx.bucket, key),
    }


def _counts_only(pointer: dict[str, Any], layout: RunLayout, error: str) -> Section:
    """The figures the pointer itself carries, when the audit's tables cannot be read."""
    counts = pointer.get("counts") if isinstance(pointer.get("counts"), dict) else {}
    by = counts.get("by_severity") if isinstance(counts.get("by_severity"), dict) else {}
    run_at = parse_time(pointer.get("run_at"))
    return Section(
        ID,
        TITLE,
        status="error",
        message=error,
        as_of=run_at.isoformat() if run_at else None,
        source=layout.url(layout.latest_key),
        figures=[
            Figure("Last audit", run_at, "time"),
            *(Figure(s.capitalize(), by.get(s), "count") for s in RANK),
        ],
    )


def _days(detail: str) -> int | None:
    m = _AGE.search(detail or "")
    return None if m is None else int(m.group(1) or m.group(2))


def _section(built: dict[str, Any], ctx: PageContext) -> Section:
    since: datetime = ctx.now - timedelta(days=NEW_DAYS)
    findings = [
        {**f, "since": "new" if f["first_seen"] and f["first_seen"] >= since else None}
        for f in built["findings"]
    ]
    new = [f for f in findings if f["since"]]
    by = {s: sum(f["severity"] == s for f in findings) for s in RANK}
    gate = built["gate"]
    passed = gate.get("passed")
    figures = [
        Figure("Last audit", built["run_at"], "time"),
        Figure("Open findings", len(findings), "count"),
        *(
            Figure(s.capitalize(), n, "count", alert=s in ("critical", "high") and n > 0)
            for s, n in by.items()
        ),
        Figure("New since last week", len(new), "count", alert=bool(new)),
        Figure(
            "Gate",
            "unknown" if passed is None else "passed" if passed else "failed",
            "status",
            alert=passed is False,
        ),
        Figure("Registries audited", built["registries"], "list"),
    ]
    keys = [{**f, "days": _days(f["detail"])} for f in findings if f["id"] in KEY_FINDINGS]
    tables = [
        Table(
            "findings",
            "Open findings",
            FINDING_COLUMNS,
            [{c.key: f.get(c.key) for c in FINDING_COLUMNS} for f in findings],
            note=f"'New this week': first seen by an audit after {since:%Y-%m-%d %H:%M} UTC.",
        ),
        Table(
            "access_keys",
            "Access keys to rotate or deactivate",
            KEY_COLUMNS,
            [{c.key: f.get(c.key) for c in KEY_COLUMNS} for f in keys],
            note=f"Limits: audit.key_max_age_days {ctx.config.audit.key_max_age_days}, "
            f"audit.key_unused_days {ctx.config.audit.key_unused_days}.",
        ),
    ]
    notes = []
    if new:
        worst = min(new, key=lambda f: RANK[f["severity"]])["severity"]
        notes.append(f"{len(new)} finding(s) new since {since:%Y-%m-%d}, the most severe {worst}.")
    if passed is False:
        notes.append(
            f"The gate failed: {gate.get('new', 0)} new and {gate.get('unacknowledged', 0)} unacknowledged "
            f"finding(s) of {gate.get('fail_severity')} or worse (acknowledge with `registry-ops audit ack`)."
        )
    return Section(
        ID,
        TITLE,
        as_of=built["run_at"].isoformat() if built["run_at"] else None,
        source=built["source"],
        figures=figures,
        tables=tables,
        notes=notes,
    )
