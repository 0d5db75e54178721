"""What the gate reported before, so a violation that persists is not news every day.

The state (``store.gate_state_key``) holds each protected violation already reported, keyed by
(registry, repository, digest): its CVE ids, when it was first reported, when last seen and
its status. Against it and the acknowledgements, each protected violation of a run is:

- ``acknowledged``: an active acknowledgement covers every CVE id it has now;
- ``new``: it was not in the previous state, or it has CVE ids the state did not have (a new
  critical on a known image is news); both email and fail;
- ``unacknowledged``: reported before, unchanged, not acknowledged; fails, no email again.

It also carries *news* (the reason to email): a new violation, new CVE ids, or an
acknowledgement that ended (expired, removed, or outgrown) since the previous run. The gate
passes when no protected violation is ``new`` or ``unacknowledged``.

The caller saves the next state only **after** the email went out, so a failed email leaves the
violations new and the next run tells people again. An unreadable state is logged and read as
empty: everything is news once, nothing is hidden.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from typing import Any

from .. import storage
from ..config import Config
from . import acks as acks_mod
from . import store

log = logging.getLogger(__name__)
ORDER = {"new": 0, "unacknowledged": 1, "acknowledged": 2, "unprotected": 3}
VERSION = 1


def load(s3: Any, config: Config) -> dict[str, dict[str, Any]]:
    """The previous state's violations by image key ({} before the first report)."""
    bucket, key = config.storage.bucket, store.gate_state_key(config)
    try:
        doc = store.get_json_or_none(s3, bucket, key)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.error(
            "scan: gate state s3://%s/%s is not JSON (%s): every violation counts as new", bucket, key, exc
        )
        return {}
    if doc is None:
        return {}
    violations = doc.get("violations") if isinstance(doc, dict) else None
    if not isinstance(violations, dict):
        log.error(
            "scan: gate state s3://%s/%s has no violations map: every violation counts as new", bucket, key
        )
        return {}
    return violations


def _ids(v: dict[str, Any]) -> list[str]:
    return list(v["critical_ids"]) + list(v["high_ids"])


def _ack_view(ack: dict[str, Any] | None, today: date) -> dict[str, Any] | None:
    if ack is None:
        return None
    view = {k: ack[k] for k in ("reason", "until", "cve_ids") if k in ack}
    return {**view, "by": ack.get("by"), "active": acks_mod.is_active(ack, today)}


def classify(
    result: dict[str, Any],
    previous: dict[str, dict[str, Any]],
    acks: dict[str, dict[str, Any]],
    today: date,
    now: datetime,
) -> dict[str, Any]:
    """Give each violation a status and its news; set the counts, ``passed`` and ``notify``."""
    counts = dict.fromkeys(("new", "unacknowledged", "acknowledged"), 0)
    for v in result["violations"]:
        v.update(status="unprotected", news=[], new_ids=[], first_reported_at=None, ack=None)
        if not v["protected"]:
            continue
        key = acks_mod.key_of(v["registry"], v["repository"], v["digest"])
        ids, prev, ack = _ids(v), previous.get(key), acks.get(key)
        new_ids = sorted(set(ids) - set(prev["cve_ids"])) if prev else []
        if ack is not None and acks_mod.covers(ack, ids, today):
            status = "acknowledged"
        elif prev is None or new_ids:
            status = "new"
        else:
            status = "unacknowledged"
        news = []
        if status == "new":
            news.append("new violation" if prev is None else "new CVE ids: " + ", ".join(new_ids))
        elif status == "unacknowledged" and prev and prev.get("status") == "acknowledged":
            news.append("acknowledgement ended" + (f" (until {ack['until']})" if ack else " (removed)"))
        counts[status] += 1
        v.update(
            status=status,
            news=news,
            new_ids=new_ids,
            first_reported_at=prev["first_reported_at"] if prev else now.isoformat(),
            ack=_ack_view(ack, today),
        )
    result["violations"].sort(
        key=lambda v: (
            ORDER[v["status"]],
            -v["critical"],
            -v["high"],
            v["registry"],
            v["repository"],
            v["digest"],
        )
    )
    result.update(counts)
    result["passed"] = not (counts["new"] or counts["unacknowledged"])
    result["notify"] = any(v["news"] for v in result["violations"])
    return result


def next_state(result: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The state to save once this run's report went out: its protected violations only."""
    violations = {
        acks_mod.key_of(v["registry"], v["repository"], v["digest"]): {
            "registry": v["registry"],
            "repository": v["repository"],
            "digest": v["digest"],
            "newest_tag": v["newest_tag"],
            "cve_ids": sorted(_ids(v)),
            "first_reported_at": v["first_reported_at"],
            "last_seen": now.isoformat(),
            "status": v["status"],
        }
        for v in result["violations"]
        if v["protected"]
    }
    return {
        "version": VERSION,
        "updated_at": now.isoformat(),
        "gate_key": result.get("key"),
        "violations": violations,
    }


def save(s3: Any, config: Config, state: dict[str, Any]) -> str:
    key = store.gate_state_key(config)
    storage.put_json(s3, config.storage.bucket, key, state)
    return key
