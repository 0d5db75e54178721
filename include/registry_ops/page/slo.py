"""SLOs: availability and pull success, fleet-wide (figures) and per registry (tables): SLI,
target, error budget left, the burn rate over each alert window, and the alert episodes open now.

Reads the one object ``registry_health`` writes after each evaluation,
``<storage.prefixes.health>slo/latest.json`` (``health.alerts.persist``): the evaluation is
done there, every 5 minutes, never here, so the page and the emails always agree.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..health import alerts as slo_alerts
from ..health.slo import FLEET, MIN_BAD
from ..store import objects
from ._artefacts import ArtefactError, parse_time, read_json
from .context import PageContext
from .model import Column, Figure, Section, Table, never_run

ID, TITLE = "slo", "SLOs"
DAG = "registry_health"
STALE = timedelta(minutes=20)  # four missed 5-minute runs: the figures are old, say so
LABELS = {"availability": ("Availability", "Probes"), "pull_success": ("Pull success", "Pulls")}

EPISODE_COLUMNS = [
    Column("slo", "SLO"),
    Column("registry", "Registry"),
    Column("alert", "Alert"),
    Column("severity", "Severity", "status"),
    Column("opened_at", "Opened", "time"),
    Column("emailed", "Emailed"),
]


def _span(seconds: int) -> str:
    return slo_alerts.span_text(int(seconds))


def _columns(name: str, alert_list: list[dict[str, Any]]) -> list[Column]:
    columns = [
        Column("registry", "Registry"),
        Column("sli", "SLI", "percent"),
        Column("target", "Target", "percent"),
        Column("good", "Good", "count"),
        Column("total", LABELS[name][1], "count"),
        Column("budget_left", "Error budget left", "percent"),
    ]
    for a in alert_list:
        for which in ("long", "short"):
            label = f"{a['alert']} burn {_span(a[f'{which}_window_s'])}"
            columns.append(Column(f"{a['alert']}_{which}", label, "count"))
    return [*columns, Column("firing", "Firing", "list")]


def _row(scope: str, s: dict[str, Any], target: float) -> dict[str, Any]:
    row = {k: s[k] for k in ("good", "total", "sli", "budget_left")}
    row.update(registry=scope, target=target, firing=[a["alert"] for a in s["alerts"] if a["firing"]])
    for a in s["alerts"]:
        for which in ("long", "short"):
            row[f"{a['alert']}_{which}"] = round(float(a[which]["burn"]), 2)
    return row


def _slo_part(name: str, doc: dict[str, Any]) -> tuple[list[Figure], Table, list[str]]:
    title, unit = LABELS[name]
    target, scopes = float(doc["target"]), doc["scopes"]
    fleet = scopes[FLEET]
    window = _span(doc["window_s"])
    budget = fleet["budget_left"]
    figures = [
        Figure(
            f"{title} (fleet, {window})",
            fleet["sli"],
            "percent",
            alert=fleet["sli"] is not None and fleet["sli"] < target,
        ),
        Figure(f"{title} target", target, "percent"),
        Figure(f"{title} error budget left", budget, "percent", alert=budget is not None and budget <= 0),
    ]
    registries = sorted(s for s in scopes if s != FLEET)
    rows = [_row(s, scopes[s], target) for s in registries]
    columns = _columns(name, fleet["alerts"])
    table = Table(
        name,
        f"{title} per registry (target {target:.2%} over {window})",
        columns,
        [{c.key: r.get(c.key) for c in columns} for r in rows],
        note="Burn rate: the error rate over the window divided by the error budget (1 - target); "
        "an alert fires when both of its windows reach its threshold.",
    )
    notes = []
    for scope in [FLEET, *registries]:
        who = "the fleet" if scope == FLEET else scope
        if scopes[scope]["total"] == 0:
            notes.append(f"{title}: no {unit.lower()} of {who} in the last {window} (no data, no burn).")
        for a in scopes[scope]["alerts"]:
            if a["held_back"]:
                notes.append(
                    f"{title} {a['alert']} alert of {who}: both windows burn over {a['burn_rate']:g}x, "
                    f"but the {_span(a['long_window_s'])} window holds {a['long']['bad']} bad sample(s); "
                    f"at least {MIN_BAD} are needed to alert (low traffic)."
                )
    return figures, table, notes


def _episodes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for e in doc.get("open_episodes") or []:
        emailed = (
            "yes"
            if e.get("notified")
            else ("covered by " + e["covered_by"] if e.get("covered_by") else "sending")
        )
        rows.append(
            {
                "slo": LABELS.get(e["slo"], (e["slo"],))[0],
                "registry": slo_alerts.scope_label(e["scope"]),
                "alert": e["alert"],
                "severity": e["severity"],
                "opened_at": parse_time(e.get("opened_at")),
                "emailed": emailed,
            }
        )
    return rows


def load(ctx: PageContext) -> Section:
    key = slo_alerts.latest_key(ctx.config)
    where = objects.url(ctx.bucket, key)
    doc = read_json(ctx.s3, ctx.bucket, key, required=False)
    if doc is None:
        return never_run(ID, TITLE, DAG, "SLO evaluation")
    if not isinstance(doc, dict):
        raise ArtefactError(f"{where} is not a JSON object")
    try:
        evaluated = parse_time(doc["evaluated_at"])
        parts = [_slo_part(name, doc["slos"][name]) for name in slo_alerts.SLOS]
        episodes = _episodes(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtefactError(f"{where} is not an SLO evaluation ({type(exc).__name__}: {exc})") from None
    if evaluated is None:
        raise ArtefactError(f"{where}: evaluated_at is not a time")
    stale = ctx.now - evaluated > STALE
    figures = [f for p in parts for f in p[0]]
    figures += [
        Figure("Evaluated", evaluated, "time", alert=stale),
        Figure("Open alert episodes", len(episodes), "count", alert=bool(episodes)),
    ]
    notes = [n for p in parts for n in p[2]]
    if stale:
        notes.insert(0, f"The last SLO evaluation is from {evaluated:%Y-%m-%d %H:%M} UTC: is {DAG} running?")
    tables = [p[1] for p in parts]
    tables.append(
        Table(
            "episodes",
            "Open alert episodes",
            EPISODE_COLUMNS,
            episodes,
            note="An episode is emailed once when it opens and closes when its condition stops holding.",
        )
    )
    return Section(ID, TITLE, as_of=evaluated, source=where, figures=figures, tables=tables, notes=notes)
