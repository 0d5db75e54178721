"""Vulnerabilities: critical and high per repository and per image, the gate's violators with
their CVE ids, the allowlist and the acknowledgements with their end dates (expired ones
marked), and the trend of critical and high over the scan runs kept in S3.

Sources (``scan/store.py``): ``scan/latest.json`` names the newest run's ``findings.parquet``
and manifest; the gate wrote ``gate.json`` beside them (its violators with status, CVE ids and
acknowledgement, and the allowlist it applied); acknowledgements are one object each under
``scan/gate/acks/``; the trend is the run manifests' ``vulnerabilities_by_severity`` (unique
vulnerability ids per digest): every run of the last 30 days and one a week before, the run
folders listed in one request (delimiter ``Z/``) and the manifests read by a pool of GETs.

The per-image and violators tables carry their first :data:`IMAGE_ROWS` rows (worst, failing
first) and ``total``; only those rows are converted for the page.

Counts per repository and image are the findings' unique vulnerability ids before the allowlist
(what is there); the violators table shows the gate's counts after it (what fails). The
findings, gate and trend are computed once per pointer version; acknowledgements change without
a run (``registry-ops scan ack``), so each request lists them (one request) and reads them again
only when that listing changed.

A gate report, run manifest or acknowledgement that cannot be read is named in the notes and
the rest of the section still shows; unreadable findings fail the section, naming the object.

The memo is process-wide and keys are the same in every bucket (``reports/scan/latest.json``, an
ack's key and ETag): every memo key names the bucket, or a copy of one bucket's runs in another
would be shown with the first bucket's notes and object names.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..scan import store
from ..scan.gate import COUNTED
from ..store import objects
from ..store.runs import MANIFEST_NAME
from . import _read
from .context import PageContext
from .model import Chart, Column, Figure, Section, Series, Table, never_run

ID, TITLE, DAG = "vulns", "Vulnerabilities", "registry_scan"
FINDING_COLUMNS = ("registry", "repository", "digest", "vulnerability_id", "severity")
IMAGE_ROWS = 200  # rows of the per-image and violators tables sent (worst / failing first)
WINDOW = timedelta(days=365)
DAILY = timedelta(days=30)  # the trend: every run of the last 30 days, one a week before
REPO_COLUMNS = [
    Column("registry", "Registry"),
    Column("repository", "Repository"),
    Column("images", "Images affected", "count"),
    Column("critical", "Critical", "count"),
    Column("high", "High", "count"),
]
IMAGE_COLUMNS = [
    Column("registry", "Registry"),
    Column("repository", "Repository"),
    Column("digest", "Digest", "digest"),
    Column("critical", "Critical", "count"),
    Column("high", "High", "count"),
]
VIOLATOR_COLUMNS = [
    Column("status", "Status", "status"),
    Column("registry", "Registry"),
    Column("repository", "Repository"),
    Column("newest_tag", "Newest tag"),
    Column("digest", "Digest", "digest"),
    Column("protected", "Protected"),
    Column("critical", "Critical", "count"),
    Column("high", "High", "count"),
    Column("cve_ids", "CVE ids", "list"),
    Column("first_reported_at", "First reported", "time"),
    Column("ack_until", "Acknowledged until", "date"),
]
ALLOW_COLUMNS = [
    Column("status", "Status", "status"),
    Column("id", "Vulnerability"),
    Column("expires", "Expires", "date"),
    Column("repositories", "Repositories", "list"),
    Column("reason", "Reason"),
]
ACK_COLUMNS = [
    Column("status", "Status", "status"),
    Column("registry", "Registry"),
    Column("repository", "Repository"),
    Column("digest", "Digest", "digest"),
    Column("cve_ids", "CVE ids", "list"),
    Column("until", "Until", "date"),
    Column("by", "By"),
    Column("reason", "Reason"),
]


def load(ctx: PageContext) -> Section:
    layout = store.layout(ctx.config)
    found = _read.read_pointer(ctx.s3, layout)
    if found is None:
        return never_run(ID, TITLE, DAG, "scan findings")
    pointer, version = found
    with ThreadPoolExecutor(1, thread_name_prefix="page-vulns") as pool:
        acks_read = pool.submit(_acks, ctx)  # meanwhile: they change without a run
        built = ctx.memo.get(
            ("page.vulns", ctx.bucket, layout.latest_key, version, ctx.now.date()),
            lambda: _build(ctx, pointer),
        )
        acks, ack_notes = acks_read.result()
    today = ctx.now.date()
    allow = [
        {**e, "status": "expired" if _day(e["expires"]) < today else "active"} for e in built["allowlist"]
    ]
    ack_rows = [{**a, "status": "expired" if _day(a["until"]) < today else "active"} for a in acks]
    expired = sum(r["status"] == "expired" for r in allow)
    gate = built["gate"]
    figures = [
        Figure("Critical (unique per image)", built["critical"], "count", alert=built["critical"] > 0),
        Figure("High (unique per image)", built["high"], "count"),
        Figure("Images with critical", built["images_critical"], "count"),
        Figure("Scanned at", built["run_at"], "time"),
    ]
    if gate is not None:
        failing = int(gate.get("new", 0)) + int(gate.get("unacknowledged", 0))
        figures += [
            Figure(
                "Gate", "passed" if gate.get("passed") else "failed", "status", alert=not gate.get("passed")
            ),
            Figure("Failing violations", failing, "count", alert=failing > 0),
            Figure("Never scanned", gate.get("never_scanned_count"), "count"),
        ]
    figures += [
        Figure("Expired allowlist entries", expired, "count", alert=expired > 0),
        Figure("Expired acknowledgements", sum(r["status"] == "expired" for r in ack_rows), "count"),
    ]
    return Section(
        ID,
        TITLE,
        as_of=built["run_at"],
        source=objects.url(ctx.bucket, pointer["findings"]),
        figures=figures,
        tables=[
            Table(
                "violators",
                "Gate violators",
                VIOLATOR_COLUMNS,
                built["violators"],
                total=built["violators_total"],
                note=f"the first {IMAGE_ROWS}, failing first"
                if built["violators_total"] > IMAGE_ROWS
                else None,
            ),
            Table("repositories", "Critical and high per repository", REPO_COLUMNS, built["repos"]),
            Table(
                "images",
                "Critical and high per image",
                IMAGE_COLUMNS,
                built["images"],
                total=built["images_total"],
                note=f"the {IMAGE_ROWS} worst images" if built["images_total"] > IMAGE_ROWS else None,
            ),
            Table("allowlist", "Allowlist (as the gate applied it)", ALLOW_COLUMNS, allow),
            Table("acks", "Acknowledgements", ACK_COLUMNS, ack_rows),
        ],
        charts=[built["trend"]],
        notes=built["notes"] + ack_notes,
    )


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# -- the run: findings, gate, trend ----------------------------------------------------------------
def _build(ctx: PageContext, pointer: dict[str, Any]) -> dict[str, Any]:
    key = pointer.get("findings")
    if not isinstance(key, str):
        raise _read.ArtefactError(
            f"{objects.url(ctx.bucket, store.layout(ctx.config).latest_key)} names no findings"
        )
    try:
        body = objects.get_bytes(ctx.s3, ctx.bucket, key)
        if body is None:
            raise FileNotFoundError("the object does not exist")
        table = pq.read_table(io.BytesIO(body), columns=list(FINDING_COLUMNS))
    except Exception as exc:  # ArrowInvalid (garbage), a column missing, ClientError
        raise _read.ArtefactError(
            f"{objects.url(ctx.bucket, key)}: cannot read the scan findings: {exc}"
        ) from None
    with ThreadPoolExecutor(2, thread_name_prefix="page-vulns") as pool:  # S3 reads meanwhile
        gate_read, trend_read = pool.submit(_gate, ctx, pointer), pool.submit(_trend, ctx)
        images, repos = _counts(table)
        (gate, gate_notes), (trend, trend_notes) = gate_read.result(), trend_read.result()
    violations = gate["violations"] if gate else []
    return {
        "run_at": pointer.get("run_at"),
        "images": _plain(images.head(IMAGE_ROWS)),
        "images_total": len(images),
        "repos": _plain(repos),
        "critical": int(images["critical"].sum()),
        "high": int(images["high"].sum()),
        "images_critical": int((images["critical"] > 0).sum()),
        "gate": {k: v for k, v in gate.items() if k != "violations"} if gate else None,
        "violators": _violators(violations[:IMAGE_ROWS]),
        "violators_total": len(violations),
        "allowlist": _allowlist(gate),
        "trend": trend,
        "notes": gate_notes + trend_notes,
    }


def _plain(frame: pd.DataFrame) -> list[dict[str, Any]]:
    as_int = {"critical": int, "high": int, "images": int}
    return [{k: as_int.get(k, str)(v) for k, v in r.items()} for r in frame.to_dict("records")]


def _counts(table: pa.Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per image, per repository) unique CRITICAL and HIGH ids, worst first (grouped by Arrow:
    a year's fleet has hundreds of thousands of findings)."""
    counted = table.filter(pc.is_in(table["severity"], value_set=pa.array(COUNTED)))
    unique = counted.group_by(list(FINDING_COLUMNS)).aggregate([])
    image_key = ["registry", "repository", "digest"]

    def per(keys: list[str]) -> pd.DataFrame:
        ids = unique.group_by([*keys, "vulnerability_id", "severity"]).aggregate([])
        frame = ids.group_by([*keys, "severity"]).aggregate([("vulnerability_id", "count")]).to_pandas()
        wide = frame.pivot_table(
            index=keys, columns="severity", values="vulnerability_id_count", fill_value=0, aggfunc="sum"
        )
        for sev in COUNTED:
            if sev not in wide.columns:
                wide[sev] = 0
        return wide.rename(columns={"CRITICAL": "critical", "HIGH": "high"})[
            ["critical", "high"]
        ].reset_index()

    if not counted.num_rows:
        empty = pd.DataFrame({"critical": [], "high": [], "images": []}, dtype="int64")
        return empty, empty
    images = per(image_key).sort_values(
        ["critical", "high", *image_key], ascending=[False, False, True, True, True]
    )
    affected = (
        (
            unique.group_by(image_key)
            .aggregate([])
            .group_by(["registry", "repository"])
            .aggregate([("digest", "count")])
        )
        .to_pandas()
        .rename(columns={"digest_count": "images"})
    )
    repos = (
        per(["registry", "repository"])
        .merge(affected, on=["registry", "repository"])
        .sort_values(["critical", "high", "registry", "repository"], ascending=[False, False, True, True])
    )
    return images, repos


def _gate(ctx: PageContext, pointer: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    manifest = str(pointer.get("manifest", ""))
    key = manifest[: -len(MANIFEST_NAME)] + "gate.json"
    body = objects.get_bytes(ctx.s3, ctx.bucket, key)
    if body is None:
        return None, [
            f"{objects.url(ctx.bucket, key)} does not exist: the gate was not evaluated on this run"
        ]
    try:
        doc = _read.json_of(ctx.bucket, key, body)
        if not isinstance(doc, dict) or not isinstance(doc.get("violations"), list):
            raise _read.ArtefactError(
                f"{objects.url(ctx.bucket, key)}: not a gate report (no violations list)"
            )
    except _read.ArtefactError as exc:
        return None, [str(exc)]
    return doc, []


def _violators(violations: list[Any]) -> list[dict[str, Any]]:
    out = []
    for v in violations:
        if not isinstance(v, dict):
            continue
        ack = v.get("ack") or {}
        out.append(
            {
                "status": v.get("status", "protected" if v.get("protected") else "unprotected"),
                "registry": v.get("registry"),
                "repository": v.get("repository"),
                "newest_tag": v.get("newest_tag"),
                "digest": v.get("digest"),
                "protected": "yes" if v.get("protected") else "no",
                "critical": v.get("critical"),
                "high": v.get("high"),
                "cve_ids": list(v.get("critical_ids") or []) + list(v.get("high_ids") or []),
                "first_reported_at": v.get("first_reported_at"),
                "ack_until": ack.get("until") if isinstance(ack, dict) else None,
            }
        )
    return out


def _allowlist(gate: dict[str, Any] | None) -> list[dict[str, Any]]:
    if gate is None:
        return []
    entries = list(gate.get("allowlist_active") or []) + list(gate.get("allowlist_expired") or [])
    return [
        {
            "id": e.get("id"),
            "expires": e.get("expires"),
            "repositories": list(e.get("repositories") or []),
            "reason": e.get("reason"),
        }
        for e in entries
        if isinstance(e, dict) and e.get("expires")
    ]


def _trend(ctx: PageContext) -> tuple[Chart, list[str]]:
    """Critical and high (unique per digest) over the last year: every run of the last 30 days
    and the newest run of each week before (a run manifest is one GET; a year of daily runs read
    one by one costs seconds, and a year's trend needs no daily points)."""
    runs = store.base(ctx.config) + "runs/"
    since = f"{runs}dt={(ctx.now - WINDOW):%Y-%m-%d}/"
    # one entry per run folder (``.../HHMMSSZ/``), not six objects each: a year in one request
    pages = ctx.s3.get_paginator("list_objects_v2").paginate(
        Bucket=ctx.bucket, Prefix=runs, StartAfter=since, Delimiter="Z/"
    )
    keys = [p["Prefix"] + MANIFEST_NAME for page in pages for p in page.get("CommonPrefixes", [])]
    points: list[tuple[str, int | None, int | None]] = []
    notes: list[str] = []
    for key, body in objects.get_many(ctx.s3, ctx.bucket, _sampled(sorted(keys), ctx.now - DAILY)).items():
        if body is None:
            continue
        try:
            doc = _read.json_of(ctx.bucket, key, body)
            counts = doc["vulnerabilities_by_severity"]
            points.append((str(doc["run_at"]), int(counts.get("CRITICAL", 0)), int(counts.get("HIGH", 0))))
        except (_read.ArtefactError, KeyError, TypeError, ValueError, AttributeError) as exc:
            notes.append(f"{objects.url(ctx.bucket, key)}: left out of the trend ({exc})")
    points.sort(key=lambda p: datetime.fromisoformat(p[0]))
    chart = Chart(
        "trend",
        "Critical and high vulnerabilities per scan run",
        [p[0] for p in points],
        [Series("critical", [p[1] for p in points]), Series("high", [p[2] for p in points])],
    )
    return chart, notes


def _sampled(keys: list[str], daily_from: datetime) -> list[str]:
    """Of run manifest keys (``.../dt=YYYY-MM-DD/HHMMSSZ/manifest.json``, sorted), those on or
    after ``daily_from``'s day and the newest of each ISO week before it."""
    recent = f"dt={daily_from:%Y-%m-%d}/"
    weekly: dict[tuple[int, int], str] = {}
    out = []
    for key in keys:
        day = key.rsplit("/dt=", 1)[-1][:10]
        try:
            week = date.fromisoformat(day).isocalendar()[:2]
        except ValueError:
            continue  # not a dated run folder
        if "dt=" + day + "/" >= recent:
            out.append(key)
        else:
            weekly[week] = key  # sorted: the last one seen is the week's newest
    return sorted(weekly.values()) + out


# -- acknowledgements ------------------------------------------------------------------------------
def _acks(ctx: PageContext) -> tuple[list[dict[str, Any]], list[str]]:
    listed = tuple(
        (o["Key"], o.get("ETag", ""))
        for o in objects.list_keys(ctx.s3, ctx.bucket, store.acks_prefix(ctx.config))
    )
    return ctx.memo.get(
        ("page.vulns.acks", ctx.bucket, listed), lambda: _read_acks(ctx, [k for k, _ in listed])
    )


def _read_acks(ctx: PageContext, keys: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    rows, notes = [], []
    for key, body in sorted(objects.get_many(ctx.s3, ctx.bucket, keys).items()):
        if body is None:  # removed between the listing and the read
            continue
        try:
            doc = _read.json_of(ctx.bucket, key, body)
            row = {
                "registry": str(doc["registry"]),
                "repository": str(doc["repository"]),
                "digest": str(doc["digest"]),
                "cve_ids": [str(c) for c in doc["cve_ids"]],
                "until": _day(doc["until"]).isoformat(),
                "by": doc.get("by"),
                "reason": doc.get("reason"),
            }
        except (_read.ArtefactError, KeyError, TypeError, ValueError) as exc:
            notes.append(f"{objects.url(ctx.bucket, key)}: not an acknowledgement ({exc}); it covers nothing")
            continue
        rows.append(row)
    return rows, notes
