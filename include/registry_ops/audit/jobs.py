"""The steps of ``registry_iam_audit`` (and ``registry-ops audit run``, which chains them).

Each takes the config and returns small JSON (keys and counts, never tables)::

    audit_step  audit every registry, compare with the baseline, classify for the gate, write
                access.parquet, findings.parquet and changes.json into the run's folder
    report      email the security recipients (new findings first, changes, matrix as CSV)
    publish     the run's manifest; then ``latest.json`` (the next baseline), only when every
                registry was audited and the report went out
    gate        AuditGateFailed (one line naming the findings) on new or unacknowledged
                findings of ``audit.fail_severity`` or worse
    check       AuditIncomplete naming each registry that could not be audited

Why ``latest`` waits for the report: it is the baseline "new" is measured against, so a run
whose email failed (or a CLI run without ``--notify``) leaves its findings new for the next
run, which tells people again. A run missing a registry is not a baseline either: its
findings there would read as resolved.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any

from ..config import Config
from ..notify import NotifyError, send_email
from ..store import objects
from ..store.clients import s3_client
from . import acks, history, report
from .findings import RANK
from .run import ClientFactory, audit, default_clients

log = logging.getLogger(__name__)
NAMED = 5  # findings named in the gate's one line


class AuditGateFailed(RuntimeError):
    """Findings of the gate's severity are new or unacknowledged (the message names them)."""


class AuditIncomplete(RuntimeError):
    """A registry could not be audited (the message names each and why)."""


def _errors(result: Any) -> list[dict[str, str]]:
    return [{"registry": e["registry"], "error": report.redact(e["error"])} for e in result.errors]


def _short(f: dict[str, Any]) -> dict[str, Any]:
    keys = ("key", "id", "severity", "registry", "principal", "repository", "gate")
    return {k: f.get(k) for k in keys}


def audit_step(
    config: Config, run_at: datetime, clients_for: ClientFactory = default_clients
) -> dict[str, Any]:
    """Audit, compare, classify, write the run's tables; the run's summary (small JSON)."""
    run_at = run_at.astimezone(UTC)
    s3 = s3_client(config)
    objects.require_bucket(s3, config.storage.bucket, config.source)
    result = audit(config, run_at, clients_for)
    errors = _errors(result)
    audited = [r["registry"] for r in result.registries]
    baseline, unreadable = history.load_baseline(s3, config)
    if unreadable:
        log.error("audit: %s; every finding counts as new", unreadable)
    access = history.access_records(result, run_at)
    findings = history.finding_records([f.as_dict() for f in result.findings], run_at)
    changes = history.diff(access, findings, baseline, audited, run_at)
    changes["baseline_error"] = unreadable
    gate = acks.classify(findings, acks.load(s3, config), config.audit.fail_severity, run_at.date())
    run_prefix = history.layout(config).new_run_prefix(s3, run_at)
    keys = history.write_run(s3, config, run_prefix, access, findings, changes)
    by_severity = {s: sum(f["severity"] == s for f in findings) for s in RANK}
    by_key = {f["key"]: f for f in findings}
    summary = {
        "run_at": run_at.isoformat(),
        "bucket": config.storage.bucket,
        "run_prefix": run_prefix,
        "keys": keys,
        "registries": result.registries,
        "registries_audited": audited,
        "errors": errors,
        "complete": not errors,
        "baseline": changes["baseline"],
        "counts": {
            "access_rows": len(access),
            "findings": len(findings),
            "by_severity": by_severity,
            **history.counts(changes),
        },
        "gate": {**gate, "failing": [_short(by_key[k]) for k in gate["failing"]]},
    }
    log.info("audit: %s", one_line(summary))
    return summary


def one_line(summary: dict[str, Any]) -> str:
    c, g = summary["counts"], summary["gate"]
    text = (
        f"IAM audit {summary['run_at'][:10]}: {c['findings']} finding(s), {c['findings_new']} new, "
        f"{c['findings_resolved']} resolved; grants +{c['grants_gained']}/-{c['grants_lost']}; gate "
        f"({g['fail_severity']} or worse) {'passed' if g['passed'] else 'failed'}: {g['new']} new, "
        f"{g['unacknowledged']} unacknowledged, {g['acknowledged']} acknowledged"
    )
    failing = g["failing"]
    if failing:
        shown = "; ".join(
            f"{f['severity']} {f['id']} {f['principal'] or '-'} {f['repository'] or '-'} "
            f"({f['registry']}, {f['gate']}, key {f['key']})"
            for f in failing[:NAMED]
        )
        text += f"; failing: {shown}" + (f"; and {len(failing) - NAMED} more" if len(failing) > NAMED else "")
    return text


def report_step(config: Config, summary: dict[str, Any]) -> dict[str, Any]:
    """Email the run's report to the security recipients; ``{"email": ... | None}`` (None: no
    recipient configured). A failed send raises ``NotifyError`` (and the run is no baseline)."""
    s3, bucket, keys = s3_client(config), config.storage.bucket, summary["keys"]
    access = objects.get_table(s3, bucket, keys["access"]).to_pylist()
    findings = objects.get_table(s3, bucket, keys["findings"]).to_pylist()
    changes = objects.get_json(s3, bucket, keys["changes"])
    msg = report.message(config, summary, findings, changes, access)
    if not msg.recipients:
        log.warning("audit: report not emailed: notifications.security_recipients and recipients are empty")
        return {"email": None}
    sent = send_email(msg, config.notifications.smtp_conn_id)
    log.info("audit: report emailed to %d recipient(s)", len(sent.recipients))
    return {"email": sent.as_dict()}


def publish(config: Config, summary: dict[str, Any], reported: dict[str, Any] | None) -> dict[str, Any]:
    """The run's manifest, then ``latest.json`` when the run is complete and was reported."""
    s3, lay = s3_client(config), history.layout(config)
    manifest = {
        **{k: summary[k] for k in ("run_at", "run_prefix", "keys", "registries", "registries_audited")},
        **{k: summary[k] for k in ("errors", "complete", "baseline", "counts")},
        "gate": {k: v for k, v in summary["gate"].items() if k != "failing"},
        "failing": [f["key"] for f in summary["gate"]["failing"]],
        "reported": reported is not None,
        "recipients": ((reported or {}).get("email") or {}).get("recipients", []),
    }
    key = lay.manifest_key(summary["run_prefix"])
    baseline = summary["complete"] and reported is not None
    if baseline:
        extra = {"run_at": summary["run_at"], "counts": summary["counts"]}
        lay.publish(s3, summary["run_prefix"], manifest, named=summary["keys"], extra=extra)
    else:
        stamped = {**manifest, "kind": lay.kind, "schema_version": lay.version}
        objects.put_json(s3, lay.bucket, key, stamped)
        why = "a registry was not audited" if not summary["complete"] else "it was not reported"
        log.warning("audit: %s written; latest.json not moved (%s)", lay.url(key), why)
    return {"manifest": key, "latest": baseline}


def gate(summary: dict[str, Any]) -> None:
    if not summary["gate"]["passed"]:
        raise AuditGateFailed(one_line(summary))


def check(summary: dict[str, Any]) -> None:
    if summary["errors"]:
        named = "; ".join(f"{e['registry']}: {e['error']}" for e in summary["errors"])
        raise AuditIncomplete(f"{len(summary['errors'])} registr(y/ies) not audited: {named}")


def run(
    config: Config,
    now: datetime | None = None,
    notify: bool = False,
    clients_for: ClientFactory = default_clients,
) -> dict[str, Any]:
    """The DAG's steps in one process: audit -> report (with ``notify``) -> publish. The caller
    decides what the gate, the errors and ``email_error`` mean. A failed email is returned, not
    raised: the run is then published as no baseline, like one without ``notify``."""
    summary = audit_step(config, now or datetime.now(UTC), clients_for)
    reported, email_error = None, None
    if notify:
        try:
            reported = report_step(config, summary)
        except NotifyError as exc:
            email_error = str(exc)
            log.error("audit: %s", exc)
    published = publish(config, summary, reported)
    return {**summary, "reported": reported, "email_error": email_error, "published": published}


# -- acknowledgements -------------------------------------------------------------------------------
def _latest_findings(config: Config) -> tuple[list[dict[str, Any]], str]:
    s3, lay = s3_client(config), history.layout(config)
    found = lay.latest(s3)
    if found is None:
        raise ValueError(f"no audit published yet ({lay.url(lay.latest_key)}): nothing to acknowledge")
    _, manifest = found
    key = manifest["keys"]["findings"]
    return objects.get_table(s3, lay.bucket, key).to_pylist(), lay.url(key)


def acknowledge(
    config: Config, finding: str, reason: str, until: date, by: str, now: datetime | None = None
) -> dict[str, Any]:
    """Acknowledge a finding of the last published audit (by its key) until a date."""
    now = now or datetime.now(UTC)
    acks.check_finding(finding)
    acks.check(reason, until, now.date())
    findings, where = _latest_findings(config)
    row = next((f for f in findings if f["key"] == finding), None)
    if row is None:
        raise ValueError(f"--finding {finding!r} is not a finding of the last audit ({where})")
    fail = config.audit.fail_severity
    if not acks.gated(row["severity"], fail):
        raise ValueError(
            f"--finding {finding}: a {row['severity']} {row['id']} finding never fails the gate "
            f"(audit.fail_severity {fail}); nothing to acknowledge"
        )
    ack = acks.build(row, reason, until, by, now)
    return {**ack, "key": acks.save(s3_client(config), config, ack)}


def list_acks(
    config: Config, include_expired: bool = False, today: date | None = None
) -> list[dict[str, Any]]:
    today = today or datetime.now(UTC).date()
    found = acks.load(s3_client(config), config)
    out = [{**a, "active": acks.is_active(a, today)} for _, a in sorted(found.items())]
    return [a for a in out if include_expired or a["active"]]


def unacknowledge(config: Config, finding: str) -> dict[str, Any]:
    removed = acks.remove(s3_client(config), config, finding)
    if removed is None:
        raise ValueError(f"--finding {finding!r} has no acknowledgement")
    return {"removed": removed}
