"""Acknowledgements of audit findings, and the gate they let pass: as the scan gate's.

The gate (``registry_iam_audit``, ``registry-ops audit run``) fails while a finding of
``audit.fail_severity`` (default high) or worse is

- ``new``: not in the last audit, or more severe than it was there; or
- ``unacknowledged``: in the last audit too, and no active acknowledgement covers it;

and passes over ``acknowledged`` ones. An acknowledgement is one S3 object per finding
(``iam-audit/acks/<finding key>.json``), written by ``registry-ops audit ack`` rather than kept
in the config file, so the next run applies it without a deploy. It names who gave it and why,
and it is narrow on purpose:

- it covers the one finding it names (by identity, ``history.IDENTITY``), at the severity it
  had when it was given: the same finding grown more severe is news and fails again;
- it ends after ``until`` (inclusive), at most ``MAX_DAYS`` ahead, so an acceptance cannot
  quietly become permanent: an expired acknowledgement covers nothing.

An unreadable acknowledgement is skipped with an error naming its object: it then covers
nothing, and the gate fails rather than passes.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import date, datetime, timedelta
from typing import Any

from ..config import Config
from ..store import objects
from .findings import RANK
from .history import IDENTITY, acks_prefix

log = logging.getLogger(__name__)
MAX_DAYS = 90
FAILING = ("new", "unacknowledged")
_FINDING = re.compile(r"[0-9a-f]{16}")
_FIELDS = ("finding", *IDENTITY, "severity", "reason", "until")


def check_finding(finding: str) -> str:
    """A finding key as the user typed it (ValueError unless 16 hex digits: it names an S3 key)."""
    if not _FINDING.fullmatch(finding):
        raise ValueError(f"--finding {finding!r} is not a finding key (16 hex digits, from the report)")
    return finding


def ack_key(config: Config, finding: str) -> str:
    return f"{acks_prefix(config)}{check_finding(finding)}.json"


def gated(severity: str, fail_severity: str) -> bool:
    """Whether a finding this severe can fail the gate."""
    return RANK[severity] <= RANK[fail_severity]


def check(reason: str, until: date, today: date) -> None:
    """The user's arguments, before anything is looked up (ValueError naming the bad one)."""
    if len(reason.strip()) < 3:
        raise ValueError("--reason: say why this finding is accepted for now (at least 3 characters)")
    if until < today:
        raise ValueError(f"--until {until.isoformat()} is in the past (today is {today.isoformat()})")
    if until > today + timedelta(days=MAX_DAYS):
        raise ValueError(
            f"--until {until.isoformat()} is more than {MAX_DAYS} days ahead: acknowledge again when it ends"
        )


def build(finding: dict[str, Any], reason: str, until: date, by: str, now: datetime) -> dict[str, Any]:
    """A checked acknowledgement of one finding (a row of the findings table)."""
    check(reason, until, now.date())
    return {
        "finding": finding["key"],
        **{k: finding.get(k) for k in IDENTITY},
        "severity": finding["severity"],
        "reason": reason.strip(),
        "until": until.isoformat(),
        "by": by,
        "acked_at": now.isoformat(),
    }


def is_active(ack: dict[str, Any], today: date) -> bool:
    return date.fromisoformat(ack["until"]) >= today


def covers(ack: dict[str, Any], finding: dict[str, Any], today: date) -> bool:
    """Active, the same finding, and not more severe than when it was acknowledged."""
    return (
        is_active(ack, today)
        and all(ack.get(k) == finding.get(k) for k in IDENTITY)
        and RANK[finding["severity"]] >= RANK[ack["severity"]]
    )


def _valid(doc: Any) -> bool:
    if not isinstance(doc, dict) or not all(k in doc for k in _FIELDS):
        return False
    try:
        date.fromisoformat(doc["until"])
    except (TypeError, ValueError):
        return False
    return doc["severity"] in RANK


def load(s3: Any, config: Config) -> dict[str, dict[str, Any]]:
    """Every acknowledgement by finding key (expired ones too: the caller decides)."""
    bucket = config.storage.bucket
    out: dict[str, dict[str, Any]] = {}
    for obj in objects.list_keys(s3, bucket, acks_prefix(config)):
        key = obj["Key"]
        try:
            doc = objects.get_json_or_none(s3, bucket, key)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            log.error(
                "audit: acknowledgement %s is not JSON (%s); it covers nothing", objects.url(bucket, key), exc
            )
            continue
        if doc is None:  # deleted between the listing and the read
            continue
        if not _valid(doc):
            log.error("audit: acknowledgement %s is malformed; it covers nothing", objects.url(bucket, key))
            continue
        out[doc["finding"]] = {**doc, "key": key}
    return out


def save(s3: Any, config: Config, ack: dict[str, Any]) -> str:
    key = ack_key(config, ack["finding"])
    objects.put_json(s3, config.storage.bucket, key, ack)
    return key


def remove(s3: Any, config: Config, finding: str) -> str | None:
    """Delete a finding's acknowledgement; its key, or None when there was none."""
    key = ack_key(config, finding)
    if objects.get_json_or_none(s3, config.storage.bucket, key) is None:
        return None
    s3.delete_object(Bucket=config.storage.bucket, Key=key)
    return key


def classify(
    findings: list[dict[str, Any]], acks: dict[str, dict[str, Any]], fail_severity: str, today: date
) -> dict[str, Any]:
    """Give each finding its ``gate`` status (None below ``fail_severity``) and ``ack_*``
    fields; the gate's counts, the failing findings' keys and ``passed``."""
    counts = dict.fromkeys(("new", "unacknowledged", "acknowledged"), 0)
    failing = []
    for f in findings:
        ack = acks.get(f["key"])
        f.update(
            gate=None,
            ack_reason=ack["reason"] if ack else None,
            ack_until=ack["until"] if ack else None,
            ack_by=ack.get("by") if ack else None,
        )
        if not gated(f["severity"], fail_severity):
            continue
        if ack is not None and covers(ack, f, today):
            status = "acknowledged"
        elif f["change"] in ("new", "escalated"):
            status = "new"
        else:
            status = "unacknowledged"
        f["gate"] = status
        counts[status] += 1
        if status in FAILING:
            failing.append(f["key"])
    return {"fail_severity": fail_severity, **counts, "failing": failing, "passed": not failing}
