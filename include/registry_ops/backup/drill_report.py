"""The DR drill's report: one JSON document, its HTML rendering, where both are kept in S3, the
email that carries them, and the summary the DAG, the command line and the demo print.

Kept under ``<storage.prefixes.reports>dr-drill/`` as a dated run (``store.runs.RunLayout``, kind
``dr-drill``): ``dt=YYYY-MM-DD/HHMMSSZ/report.json`` and ``report.html``, the run's manifest,
and ``latest.json`` pointing at the newest drill (passed or not: the newest drill is what
auditors ask for). The email is the HTML report with a text alternative and the JSON attached;
a failed send is logged and kept in the summary (``notification``), never fails the drill: the
report is in S3 and the drill's own result does not change.

A drill passes when every digest came back equal (manifests and blobs, and every tag points at
its digest), the restore raised nothing, and both objectives are met: RTO (the restore's wall
time) within ``dr.rto_seconds`` and RPO (the snapshot's age) within ``dr.rpo_seconds``.
"""

from __future__ import annotations

import html
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import notify as notifier
from ..config import Config
from ..store import objects
from ..store.runs import RunLayout, clean_run_id

if TYPE_CHECKING:
    from .drill import DrillPlan, Verification

log = logging.getLogger(__name__)
KIND = "dr-drill"
SCHEMA_VERSION = 1
FOLDER = "dr-drill/"
MAX_NAMED = 200  # digests named in an exception message or the HTML; the JSON names them all


def layout(config: Config) -> RunLayout:
    return RunLayout(config.storage.bucket, config.storage.prefixes.reports + FOLDER, KIND, SCHEMA_VERSION)


def _objective(seconds: float, objective: int) -> dict[str, Any]:
    return {"seconds": seconds, "objective": objective, "met": seconds <= objective}


def build_report(
    config: Config,
    plan: DrillPlan,
    *,
    restores: list[dict[str, Any]],
    restore_failures: list[dict[str, Any]],
    verification: Verification,
    rto_s: float,
    rpo_s: float,
    now: datetime,
    started_at: datetime,
) -> dict[str, Any]:
    """The report document (JSON-ready); ``passed`` and ``problems`` say whether and why not."""
    v = verification
    objectives = {
        "rto": _objective(rto_s, config.dr.rto_seconds),
        "rpo": _objective(rpo_s, config.dr.rpo_seconds),
    }
    failures = list(restore_failures) + list(v.failures)
    missing = sorted({f["digest"] for f in v.failures if f["kind"] in ("manifest", "blob")})
    problems = []
    if missing:
        problems.append(f"{len(missing)} digest(s) did not come back equal")
    bad_tags = [f for f in v.failures if f["kind"] == "tag"]
    if bad_tags:
        problems.append(f"{len(bad_tags)} tag(s) do not point at their digest")
    if restore_failures:
        first = restore_failures[0]["problem"]
        problems.append(f"the restore reported {len(restore_failures)} failure(s), the first: {first}")
    for key, label in (("rto", "RTO (restore wall time)"), ("rpo", "RPO (snapshot age)")):
        o = objectives[key]
        if not o["met"]:
            problems.append(f"{label} {o['seconds']:.0f} s exceeds the objective {o['objective']} s")
    rate = round(v.digests_checked / v.seconds, 1) if v.seconds else None
    return {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "passed": not problems,
        "problems": problems,
        "now": now.isoformat(),
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "snapshot": plan.snapshot,
        "taken_at": plan.taken_at,
        "mode": plan.mode,
        "target": plan.target,
        "target_kind": plan.target_kind,
        "scratch_prefix": plan.scratch_prefix,
        "sample": {
            "requested": plan.sample if plan.sample is not None else "all",
            "seed": plan.seed,
            "repositories": len(plan.selections),
            "of": plan.repositories_in_snapshot,
        },
        "rto_s": rto_s,
        "rpo_s": rpo_s,
        "objectives": objectives,
        "digests_checked": v.digests_checked,
        "digests_equal": v.digests_equal,
        "blobs_checked": v.blobs_checked,
        "verification": {
            "manifests_checked": v.manifests_checked,
            "manifests_equal": v.manifests_equal,
            "blobs_checked": v.blobs_checked,
            "blobs_equal": v.blobs_equal,
            "tags_checked": v.tags_checked,
            "tags_equal": v.tags_equal,
            "bytes_checked": v.bytes_checked,
            "seconds": v.seconds,
            "digests_per_second": rate,
        },
        "digests_missing": missing,
        "repositories": v.repositories,
        "restore": restores,
        "failures": failures,
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The drill in a few numbers (the demo's ``dr_drill``), the first ``MAX_NAMED`` failures (the
    report holds every one), where the report is."""
    return {
        "passed": report["passed"],
        "snapshot": report["snapshot"],
        "target": report["target"],
        "digests_checked": report["digests_checked"],
        "digests_equal": report["digests_equal"],
        "blobs_checked": report["blobs_checked"],
        "rto_s": report["rto_s"],
        "rpo_s": report["rpo_s"],
        "rto_met": report["objectives"]["rto"]["met"],
        "rpo_met": report["objectives"]["rpo"]["met"],
        "problems": report["problems"],
        "failures": report["failures"][:MAX_NAMED],
        "failures_total": len(report["failures"]),
        "report": report.get("location"),
        "notification": report.get("notification"),
    }


def failure_message(report: dict[str, Any]) -> str:
    """Why the drill failed, naming each digest that did not come back (up to ``MAX_NAMED``; the
    report names them all). Takes the report or its :func:`summary`."""
    head = f"DR drill of snapshot {report['snapshot']} into {report['target']} failed: " + "; ".join(
        report["problems"]
    )
    named = [
        f"{f['digest']} ({f['kind']} of {f['registry']}/{f['repository']}: {f['problem']})"
        for f in report["failures"]
        if f["kind"] in ("manifest", "blob")
    ]
    named += [
        f"tag {f['tag']} -> {f['digest']} ({f['registry']}/{f['repository']}: {f['problem']})"
        for f in report["failures"]
        if f["kind"] == "tag"
    ]
    if not named:
        return head
    total = report.get("failures_total", len(report["failures"]))
    cut = len(named) > MAX_NAMED or total > len(report["failures"])  # a summary holds the first ones
    more = f"; and more ({total} failures in all, every one in the report)" if cut else ""
    return f"{head}. Did not come back: " + "; ".join(named[:MAX_NAMED]) + more


# -- rendering -------------------------------------------------------------------------------------
def _hours(seconds: float) -> str:
    return f"{seconds:,.0f} s ({seconds / 3600:,.2f} h)"


def _status(report: dict[str, Any]) -> str:
    return "PASSED" if report["passed"] else "FAILED"


def subject(report: dict[str, Any]) -> str:
    v = report
    return (
        f"[registry-ops] DR drill {_status(report)}: snapshot {v['snapshot']} into {v['target']}, "
        f"{v['digests_equal']}/{v['digests_checked']} digests equal, RTO {v['rto_s']:.0f} s, "
        f"RPO {v['rpo_s'] / 3600:.1f} h"
    )


def render_text(report: dict[str, Any]) -> str:
    r, o, v = report, report["objectives"], report["verification"]
    lines = [
        f"DR drill {_status(r)}",
        f"snapshot {r['snapshot']} (taken {r['taken_at']}, mode {r['mode']}) restored into "
        f"{r['target']} ({r['target_kind']}) under {r['scratch_prefix']}",
        f"repositories: {r['sample']['repositories']} of {r['sample']['of']} "
        f"(sample {r['sample']['requested']}, seed {r['sample']['seed']})",
        f"RTO {_hours(o['rto']['seconds'])}, objective {o['rto']['objective']} s: "
        + ("met" if o["rto"]["met"] else "MISSED"),
        f"RPO {_hours(o['rpo']['seconds'])}, objective {o['rpo']['objective']} s: "
        + ("met" if o["rpo"]["met"] else "MISSED"),
        f"digests equal {r['digests_equal']} of {r['digests_checked']} "
        f"(manifests {v['manifests_equal']}/{v['manifests_checked']}, blobs {v['blobs_equal']}/"
        f"{v['blobs_checked']}), tags {v['tags_equal']}/{v['tags_checked']}, "
        f"{v['bytes_checked']:,} bytes read back",
    ]
    if r["problems"]:
        lines += ["", "Problems:"] + [f"  - {p}" for p in r["problems"]]
    if r["failures"]:
        lines += ["", "Did not come back (first ones; all in the attached JSON):"]
        lines += [
            f"  - {f.get('digest') or ''} {f['kind']} {f['registry']}/{f.get('repository', '')}"
            f"{' tag ' + f['tag'] if f.get('tag') else ''}: {f['problem']}"
            for f in r["failures"][:MAX_NAMED]
        ]
    if r.get("location"):
        lines += ["", f"Report: {r['location']['html']}"]
    return "\n".join(lines) + "\n"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page (no scripts, no remote assets): status, objectives, figures, the
    repositories and the failures (first ``MAX_NAMED``; the JSON holds every one)."""
    r, o, v = report, report["objectives"], report["verification"]
    colour = "#1a7f37" if r["passed"] else "#cf222e"
    figures = _table(
        ["", "value"],
        [
            ["snapshot", f"{r['snapshot']} (taken {r['taken_at']}, mode {r['mode']})"],
            ["target", f"{r['target']} ({r['target_kind']}), scratch prefix {r['scratch_prefix']}"],
            [
                "repositories",
                f"{r['sample']['repositories']} of {r['sample']['of']} (sample {r['sample']['requested']})",
            ],
            ["digests equal", f"{r['digests_equal']} of {r['digests_checked']}"],
            ["manifests equal", f"{v['manifests_equal']} of {v['manifests_checked']}"],
            ["blobs equal", f"{v['blobs_equal']} of {v['blobs_checked']}"],
            ["tags equal", f"{v['tags_equal']} of {v['tags_checked']}"],
            ["bytes read back", f"{v['bytes_checked']:,}"],
            ["verification", f"{v['seconds']} s, {v['digests_per_second']} digests/s"],
        ],
    )
    objectives = _table(
        ["objective", "measured", "target", "result"],
        [
            ["RTO (restore wall time)", _hours(o["rto"]["seconds"]), f"{o['rto']['objective']} s",
             "met" if o["rto"]["met"] else "MISSED"],
            ["RPO (snapshot age)", _hours(o["rpo"]["seconds"]), f"{o['rpo']['objective']} s",
             "met" if o["rpo"]["met"] else "MISSED"],
        ],
    )  # fmt: skip
    repos = _table(
        ["registry", "repository", "restored as", "manifests", "blobs", "tags", "failures"],
        [
            [x["registry"], x["repository"], x["target_repository"], x["manifests"], x["blobs"], x["tags"],
             x["failures"]]
            for x in r["repositories"]
        ],
    )  # fmt: skip
    failures = ""
    if r["failures"]:
        failures = f"<h2>Did not come back ({len(r['failures'])})</h2>" + _table(
            ["kind", "digest", "tag", "registry", "repository", "problem"],
            [
                [f["kind"], f.get("digest") or "", f.get("tag") or "", f["registry"], f.get("repository", ""),
                 f["problem"]]
                for f in r["failures"][:MAX_NAMED]
            ],
        )  # fmt: skip
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in r["problems"])
    title = html.escape(f"DR drill {_status(r)}: snapshot {r['snapshot']} into {r['target']}")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>"
        f"<h1 style='color:{colour}'>{title}</h1>"
        + (
            f"<ul>{problems}</ul>"
            if problems
            else "<p>Every digest came back equal; both objectives met.</p>"
        )
        + "<h2>Objectives</h2>"
        + objectives
        + "<h2>Figures</h2>"
        + figures
        + "<h2>Repositories</h2>"
        + repos
        + failures
        + f"<p>Drill ran {html.escape(r['started_at'])} to {html.escape(r['finished_at'])}.</p></body></html>"
    )


# -- S3 and email ----------------------------------------------------------------------------------
def write_report(config: Config, s3: Any, report: dict[str, Any]) -> dict[str, str]:
    """``report.json`` and ``report.html`` in the drill's dated folder, then its manifest and the
    ``latest`` pointer; returns the objects' ``s3://`` URLs."""
    runs = layout(config)
    prefix = runs.run_prefix(datetime.fromisoformat(report["now"]))
    json_key, html_key = prefix + "report.json", prefix + "report.html"
    objects.require_bucket(s3, config.storage.bucket, config.source)
    objects.put_json(s3, config.storage.bucket, json_key, report)
    s3.put_object(
        Bucket=config.storage.bucket,
        Key=html_key,
        Body=render_html(report).encode(),
        ContentType="text/html; charset=utf-8",
    )
    runs.publish(
        s3,
        prefix,
        {
            k: report[k]
            for k in ("passed", "snapshot", "target", "digests_checked", "digests_equal", "rto_s", "rpo_s")
        },
        named={"report_json": json_key, "report_html": html_key},
        extra={"passed": report["passed"], "snapshot": report["snapshot"]},
    )
    return {
        "json": runs.url(json_key),
        "html": runs.url(html_key),
        "manifest": runs.url(runs.manifest_key(prefix)),
    }


def message(report: dict[str, Any]) -> notifier.Message:
    """The email: the HTML report, its text form, and the JSON report attached."""
    name = f"dr-drill-{clean_run_id(report['snapshot'])}.json"
    data = json.dumps(report, indent=2, sort_keys=True, default=str).encode()
    return notifier.Message(
        subject=subject(report),
        text=render_text(report),
        html=render_html(report),
        attachments=(notifier.Attachment(name, data, "application/json"),),
        chat_text=subject(report),
    )


def email_report(config: Config, report: dict[str, Any]) -> dict[str, Any] | None:
    """Send the report (``dr.email``); a failure is logged and returned as ``{"error": ...}``."""
    if not config.dr.email:
        return None
    try:
        return notifier.notify(message(report), config)
    except (notifier.NotifyError, ValueError) as exc:
        log.error("DR drill report not emailed (it is in S3): %s", exc)
        return {"error": str(exc)}
