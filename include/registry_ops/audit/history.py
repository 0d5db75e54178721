"""The access audit's history in S3, and what changed since the last audit.

Runs of ``registry_iam_audit`` (and ``registry-ops audit run``) under
``<storage.prefixes.reports>iam-audit/``, a :class:`~..store.runs.RunLayout` of kind
``iam-audit``::

    dt=YYYY-MM-DD/HHMMSSZ/access.parquet    the access matrix (ACCESS_SCHEMA)
    dt=.../findings.parquet                 the findings, with their change and gate status (FINDINGS_SCHEMA)
    dt=.../changes.json                     the diff against the baseline (:func:`diff`)
    dt=.../manifest.json                    counts and keys, written after the objects
    latest.json                             the baseline of the next audit, written last
    acks/<finding key>.json                 acknowledgements (``acks.py``)

The baseline is the run ``latest.json`` names: the last audit that was complete and reported
(``jobs.publish``), so an audit nobody was told about is compared against again.

Identities are what make a change a change, not a rewording: a grant is (registry, principal,
repository, capability) with a state (``allow``, or ``conditional`` under a Condition); a
finding is (id, registry, principal, repository, policy, statement, subject), ``subject``
being the access key id of the key findings (a user's two stale keys are two findings). Its
``key`` (16 hex digits of the identity's sha256) names it in the email, the tables and
``registry-ops audit ack``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
from botocore.exceptions import BotoCoreError, ClientError

from ..config import Config
from ..store import objects
from ..store.runs import ManifestError, RunLayout, SchemaVersionError
from .catalog import CAPABILITIES
from .findings import RANK

log = logging.getLogger(__name__)

KIND = "iam-audit"
SCHEMA_VERSION = 1
ACCESS, FINDINGS, CHANGES = "access.parquet", "findings.parquet", "changes.json"
ACKS = "acks/"
STATES = ("allow", "conditional")
IDENTITY = ("id", "registry", "principal", "repository", "policy", "statement", "subject")
_KEY_ID = re.compile(r"^access key (\S+) of ")
_KEY_FINDINGS = ("stale-access-key", "unused-access-key")
_TS = pa.timestamp("us", tz="UTC")

ACCESS_SCHEMA = pa.schema(
    [
        pa.field("registry", pa.string(), nullable=False),
        pa.field("account", pa.string()),
        pa.field("principal", pa.string(), nullable=False),
        pa.field("principal_type", pa.string()),  # user, role, external, service, everyone
        pa.field("repository", pa.string(), nullable=False),
        *(pa.field(c, pa.string()) for c in CAPABILITIES),  # "allow", "conditional" or null
        pa.field("audited_at", _TS, nullable=False),
    ]
)
FINDINGS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("registry", pa.string(), nullable=False),
        pa.field("principal", pa.string()),
        pa.field("repository", pa.string()),
        pa.field("policy", pa.string()),
        pa.field("statement", pa.string()),
        pa.field("subject", pa.string()),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("change", pa.string(), nullable=False),  # new, escalated, known
        pa.field("previous_severity", pa.string()),
        pa.field("first_seen", _TS, nullable=False),
        pa.field("gate", pa.string()),  # new, unacknowledged, acknowledged; null below fail_severity
        pa.field("ack_reason", pa.string()),
        pa.field("ack_until", pa.string()),
        pa.field("ack_by", pa.string()),
        pa.field("audited_at", _TS, nullable=False),
    ]
)


def root(config: Config) -> str:
    return f"{config.storage.prefixes.reports}iam-audit/"


def layout(config: Config) -> RunLayout:
    return RunLayout(config.storage.bucket, root(config), KIND, SCHEMA_VERSION)


def acks_prefix(config: Config) -> str:
    return root(config) + ACKS


# -- rows -------------------------------------------------------------------------------------------
def access_records(result: Any, at: datetime) -> list[dict[str, Any]]:
    """One row per principal x repository with any capability (the audit's access rows, wide)."""
    kinds = {(reg, r.arn): r.kind for reg, m in result.matrices.items() for r in m.scope.rows}
    accounts = {r["registry"]: r["account"] for r in result.registries}
    out = []
    for a in result.access:
        row = {
            "registry": a["registry"],
            "account": accounts.get(a["registry"]),
            "principal": a["principal"],
            "principal_type": kinds.get((a["registry"], a["principal"])),
            "repository": a["repository"],
        }
        for c in CAPABILITIES:
            row[c] = "allow" if c in a["capabilities"] else "conditional" if c in a["conditional"] else None
        row["audited_at"] = at
        out.append(row)
    return sorted(out, key=lambda r: (r["registry"], r["principal"], r["repository"]))


def subject(f: dict[str, Any]) -> str | None:
    """The access key a key finding is about (its detail names it first)."""
    if f["id"] not in _KEY_FINDINGS:
        return None
    m = _KEY_ID.match(f["detail"])
    return m.group(1) if m else None


def finding_key(f: dict[str, Any]) -> str:
    ident = json.dumps([f.get(k) for k in IDENTITY], separators=(",", ":"))
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def finding_records(findings: list[dict[str, Any]], at: datetime) -> list[dict[str, Any]]:
    """The audit's findings with ``subject`` and ``key``; one per key (the most severe kept)."""
    out: dict[str, dict[str, Any]] = {}
    for f in findings:
        row = {**f, "subject": subject(f), "audited_at": at}
        row["key"] = finding_key(row)
        seen = out.get(row["key"])
        if seen is None or RANK[row["severity"]] < RANK[seen["severity"]]:
            out[row["key"]] = row
    return sorted(out.values(), key=order)


def order(f: dict[str, Any]) -> tuple:
    return (
        RANK[f["severity"]],
        f["id"],
        f["registry"],
        f["principal"] or "",
        f["repository"] or "",
        f["key"],
    )


# -- the baseline -----------------------------------------------------------------------------------
@dataclass
class Baseline:
    manifest: str
    run_at: str
    registries: list[str]
    access: list[dict[str, Any]]
    findings: list[dict[str, Any]]


def load_baseline(s3: Any, config: Config) -> tuple[Baseline | None, str | None]:
    """(the last published audit, None) or (None, why it cannot be read). An unreadable
    baseline makes every finding new once (nothing is hidden); a newer schema version is an
    error (this code would misread it)."""
    lay = layout(config)
    try:
        found = lay.latest(s3)
    except SchemaVersionError:
        raise
    except ManifestError as exc:
        return None, str(exc)
    if found is None:
        return None, None
    _, manifest = found
    where = lay.url(lay.latest_key)
    try:
        tables = {}
        for role in ("access", "findings"):
            where = lay.url(manifest["keys"][role])
            tables[role] = objects.get_table(s3, lay.bucket, manifest["keys"][role]).to_pylist()
        return Baseline(
            manifest=lay.manifest_key(manifest["run_prefix"]),
            run_at=manifest["run_at"],
            registries=list(manifest["registries_audited"]),
            access=tables["access"],
            findings=tables["findings"],
        ), None
    except (KeyError, TypeError, ValueError, pa.ArrowException, ClientError, BotoCoreError) as exc:
        return None, f"the last audit cannot be read ({where}): {type(exc).__name__}: {exc}"


# -- the diff ---------------------------------------------------------------------------------------
def grants(access: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """(registry, principal, repository, capability) -> the grant (with its state)."""
    out = {}
    for r in access:
        for c in CAPABILITIES:
            if r.get(c) in STATES:
                out[(r["registry"], r["principal"], r["repository"], c)] = {
                    "registry": r["registry"],
                    "principal": r["principal"],
                    "principal_type": r.get("principal_type"),
                    "repository": r["repository"],
                    "capability": c,
                    "state": r[c],
                }
    return out


def _public(f: dict[str, Any]) -> dict[str, Any]:
    return {k: f.get(k) for k in ("key", *IDENTITY, "severity", "detail")}


def diff(
    access: list[dict[str, Any]],
    findings: list[dict[str, Any]],
    baseline: Baseline | None,
    audited: list[str],
    at: datetime,
) -> dict[str, Any]:
    """What changed since ``baseline``, over the registries both audits read; sets each
    finding's ``change``, ``previous_severity`` and ``first_seen``.

    A finding is ``new`` when the baseline does not have it (its registry included), or
    ``escalated`` when it is more severe than it was; else ``known``. A finding of the baseline
    is ``resolved`` only when its registry was audited now (a registry that failed resolves
    nothing). Grants of a registry the baseline did not read are not listed as gained."""
    base_regs = set(baseline.registries) if baseline else set()
    compared = sorted(set(audited) & base_regs)
    previous = {f["key"]: f for f in baseline.findings} if baseline else {}
    for f in findings:
        p = previous.get(f["key"])
        if p is None:
            f.update(change="new", previous_severity=None, first_seen=at)
        elif RANK[f["severity"]] < RANK[p["severity"]]:
            f.update(change="escalated", previous_severity=p["severity"], first_seen=p["first_seen"])
        else:
            f.update(change="known", previous_severity=None, first_seen=p["first_seen"])
    now_keys = {f["key"] for f in findings}
    resolved = [
        _public(p) for p in previous.values() if p["registry"] in compared and p["key"] not in now_keys
    ]
    before = {k: g for k, g in grants(baseline.access).items() if k[0] in compared} if baseline else {}
    after = {k: g for k, g in grants(access).items() if k[0] in compared}
    changed = [
        {**after[k], "from": before[k]["state"], "to": after[k]["state"]}
        for k in sorted(set(before) & set(after))
        if before[k]["state"] != after[k]["state"]
    ]
    for c in changed:
        del c["state"]
    return {
        "baseline": {"manifest": baseline.manifest, "run_at": baseline.run_at} if baseline else None,
        "compared": compared,
        "new_registries": sorted(set(audited) - base_regs),
        "not_compared": sorted(base_regs - set(audited)),
        "grants": {
            "gained": [after[k] for k in sorted(set(after) - set(before))],
            "lost": [before[k] for k in sorted(set(before) - set(after))],
            "changed": changed,
        },
        "findings": {
            "new": [_public(f) for f in findings if f["change"] == "new"],
            "escalated": [
                {**_public(f), "previous_severity": f["previous_severity"]}
                for f in findings
                if f["change"] == "escalated"
            ],
            "resolved": sorted(resolved, key=order),
        },
    }


def counts(changes: dict[str, Any]) -> dict[str, int]:
    g, f = changes["grants"], changes["findings"]
    return {
        "grants_gained": len(g["gained"]),
        "grants_lost": len(g["lost"]),
        "grants_changed": len(g["changed"]),
        "findings_new": len(f["new"]),
        "findings_escalated": len(f["escalated"]),
        "findings_resolved": len(f["resolved"]),
    }


# -- writing ----------------------------------------------------------------------------------------
def write_run(
    s3: Any,
    config: Config,
    run_prefix: str,
    access: list[dict[str, Any]],
    findings: list[dict[str, Any]],
    changes: dict[str, Any],
) -> dict[str, str]:
    """The run's objects (not its manifest, not the pointer); role -> key."""
    bucket = config.storage.bucket
    keys = {"access": run_prefix + ACCESS, "findings": run_prefix + FINDINGS, "changes": run_prefix + CHANGES}
    cols = ACCESS_SCHEMA.names
    objects.put_table(
        s3,
        bucket,
        keys["access"],
        pa.Table.from_pylist([{c: r[c] for c in cols} for r in access], ACCESS_SCHEMA),
    )
    cols = FINDINGS_SCHEMA.names
    objects.put_table(
        s3,
        bucket,
        keys["findings"],
        pa.Table.from_pylist([{c: f.get(c) for c in cols} for f in findings], FINDINGS_SCHEMA),
    )
    objects.put_json(s3, bucket, keys["changes"], changes)
    return keys
