"""What a retention run did: the per-run journal (for crash-safe reruns), the audit trail (one
record per action, JSON lines in S3 and in the task log) and the run summary.

Keys (prefixes from the ``retention:`` config section; ``<run_id>`` cleaned by
``store.runs.clean_run_id``, the runs laid out by :func:`run_layout`)::

    <runs_prefix><run_id>/journal/<registry>/<repository>.json     journal, rewritten at checkpoints
    <runs_prefix><run_id>/summary.json                             the run's summary (its manifest)
    <runs_prefix>latest.json                                       the last summary written
    <audit_prefix>dt=YYYY-MM-DD/run=<run_id>/<registry>/<repository>.jsonl   audit records

The journal is the state a rerun needs: which digests this run archived (and the catalog holding
each) and which it deleted, each deletion with its full audit record, so the record of a deletion
exists in S3 with the journal entry even when the audit object is never written. It is written
after every archive pack and, between delete batches, at most every ``checkpoint_seconds``;
deletes it missed are safe to meet again: archive writes are idempotent and "already deleted"
counts as deleted. Its ``status`` is ``done`` only when every image of the repository finished
(deleted, skipped, gone, ...); a run with failed images stays ``incomplete`` and a rerun with the
same run id (or an Airflow retry) finishes exactly those, without archiving again what is archived.

Logging: per-image records go to the audit object and to DEBUG; INFO gets one line per
repository and the run's totals. When S3 cannot take a journal or an audit object, the records it
would have held are logged at ERROR, so a deletion is never without a record somewhere.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..store import objects
from ..store.runs import RunLayout, clean_run_id

log = logging.getLogger(__name__)

GIB = 1024**3
# Results an audit record can carry; "would_*" only in dry runs.
RESULTS = (
    "deleted",
    "already_deleted",
    "untagged",
    "would_delete",
    "would_untag",
    "stopped",
    "skipped",
    "gone",
    "unsupported",
    "failed",
)


RUN_KIND = "registry-ops/retention-run"
RUN_SCHEMA_VERSION = 1  # the fields of the stored summary (``jobs.publish_summary``)
SUMMARY_NAME = "summary.json"
safe_run_id = clean_run_id  # the name the tests and older callers use; one rule (store.runs)


def run_layout(bucket: str, runs_prefix: str) -> RunLayout:
    """Retention's runs, keyed by run id (a rerun finds its journal by id), with ``summary.json``
    as each run's manifest and ``latest.json`` naming the last summary written."""
    return RunLayout(bucket, runs_prefix, RUN_KIND, RUN_SCHEMA_VERSION, manifest_name=SUMMARY_NAME)


def journal_key(runs_prefix: str, run_id: str, registry: str, repository: str) -> str:
    return f"{runs_prefix}{clean_run_id(run_id)}/journal/{registry}/{repository}.json"


def audit_key(audit_prefix: str, run_date: datetime, run_id: str, registry: str, repository: str) -> str:
    return f"{audit_prefix}dt={run_date:%Y-%m-%d}/run={clean_run_id(run_id)}/{registry}/{repository}.jsonl"


@dataclass
class Journal:
    """Progress of one repository in one run, persisted in S3."""

    s3: Any
    bucket: str
    key: str
    status: str = "new"  # new | running | incomplete | done
    archived: dict[str, str] = field(default_factory=dict)  # digest -> catalog key
    # digest -> the deletion's audit record (its "result": deleted | already_deleted)
    deleted: dict[str, dict[str, Any]] = field(default_factory=dict)
    untagged: dict[str, list[str]] = field(default_factory=dict)  # digest -> tags removed
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # final, once status is done
    attempts: int = 0
    saved_at: float = field(default=0.0, repr=False)  # monotonic time of the last save
    unsaved: set[str] = field(default_factory=set, repr=False)  # deletions not yet in S3

    @classmethod
    def load(cls, s3: Any, bucket: str, key: str) -> Journal:
        state = objects.get_json_or_none(s3, bucket, key)
        if state is None:
            return cls(s3, bucket, key)
        return cls(
            s3,
            bucket,
            key,
            status=state["status"],
            archived=state["archived"],
            deleted={
                d: v if isinstance(v, dict) else {"result": v}  # journals before records were kept
                for d, v in state["deleted"].items()
            },
            untagged=state["untagged"],
            outcomes=state.get("outcomes", {}),
            attempts=state.get("attempts", 0),
        )

    def save(self) -> None:
        state = {
            "status": self.status,
            "archived": self.archived,
            "deleted": self.deleted,
            "untagged": self.untagged,
            "outcomes": self.outcomes,
            "attempts": self.attempts,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.key,
            Body=json.dumps(state, sort_keys=True, default=str).encode(),
            ContentType="application/json",
        )
        self.saved_at = time.monotonic()
        self.unsaved.clear()

    def record_deletion(self, digest: str, record: dict[str, Any]) -> None:
        """Note a deletion with its audit record (persisted at the next save) and log it (DEBUG)."""
        self.deleted[digest] = record
        self.unsaved.add(digest)
        if log.isEnabledFor(logging.DEBUG):  # dumps is most of the cost of a deletion's bookkeeping
            log.debug("retention audit: %s", json.dumps(record, sort_keys=True, default=str))

    def log_unsaved(self, why: str) -> None:
        """S3 did not take the journal: put the deletions it would have recorded in the log."""
        for digest in sorted(self.unsaved):
            log.error(
                "retention audit (not in S3: %s): %s",
                why,
                json.dumps(self.deleted[digest], sort_keys=True, default=str),
            )

    def checkpoint(self, min_interval: float) -> None:
        """Save unless the last save is younger than ``min_interval`` seconds."""
        if time.monotonic() - self.saved_at >= min_interval:
            self.save()


@functools.lru_cache(maxsize=16)
def _iso(at: datetime) -> str:
    """``at.isoformat()``, once per time: a batch's records share theirs (``record(at=...)``)."""
    return at.isoformat()


def record(
    row: dict[str, Any],
    result: str,
    *,
    run_id: str,
    dry_run: bool,
    detail: str | None = None,
    archive_key: str | None = None,
    tags_removed: list[str] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One audit record: when, which image, which rule and why, the archive key and the result."""
    size = row.get("size_bytes")
    return {
        "at": _iso(at or datetime.now(UTC)),
        "run_id": run_id,
        "registry": row["registry"],
        "repository": row["repository"],
        "digest": row["digest"],
        "tags": list(row.get("tags") or []),
        "action": row["action"],
        "tags_removed": tags_removed if tags_removed is not None else None,
        "policy": row.get("policy"),
        "rule": None if row.get("rule_priority") is None else int(row["rule_priority"]),
        "reason": row.get("reason"),
        "size_bytes": None if size is None else int(size),
        "dry_run": dry_run,
        "archive_key": archive_key,
        "result": result,
        "detail": detail,
    }


def write_audit(s3: Any, bucket: str, key: str, records: list[dict[str, Any]]) -> None:
    """Write the records as JSON lines (one object, rewritten whole on a rerun); each is logged
    at DEBUG (INFO gets one line per repository: 50,000 deletions must not flood the log)."""
    lines = [json.dumps(r, sort_keys=True, default=str) for r in records]
    if log.isEnabledFor(logging.DEBUG):
        for line in lines:
            log.debug("retention audit: %s", line)
    body = "".join(line + "\n" for line in lines).encode()
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")


def read_audit(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    return parse_audit(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def parse_audit(body: bytes) -> list[dict[str, Any]]:
    """An audit object's records (JSON lines, as :func:`write_audit` writes them); ValueError
    (or UnicodeDecodeError) when it is not that."""
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


REMOVED = ("deleted", "already_deleted")  # the results that took an image out of its registry


def removed_by_audit(results: list[Any]) -> dict[str, int]:
    """Audit object key -> images it records as removed, for the results of a summary that
    removed any (the objects that hold a run's deletions)."""
    return {
        r["audit_key"]: sum(int(r.get(k) or 0) for k in REMOVED)
        for r in results
        if isinstance(r, dict) and r.get("audit_key") and any(int(r.get(k) or 0) for k in REMOVED)
    }


def summarize(results: list[dict[str, Any]], usd_per_gb_month: float, dry_run: bool) -> dict[str, Any]:
    """Run totals for the log and the Asset extra; savings at ``usd_per_gb_month`` per GiB-month.

    Bytes are the images' ``size_bytes`` (ECR's ``imageSizeInBytes``, which counts shared layers
    in every image), so the saving is an upper bound: layers still used by kept images stay.
    """
    keys = (
        "deleted",
        "already_deleted",
        "bytes_deleted",
        "untagged",
        "would_delete",
        "would_delete_bytes",
        "would_untag",
        "skipped",
        "gone",
        "unsupported",
        "failed",
    )
    totals = {k: sum(int(r.get(k, 0)) for r in results) for k in keys}
    removed = totals["deleted"] + totals["already_deleted"]
    bytes_removed = totals["bytes_deleted"]
    failed = sorted(f"{r['registry']}/{r['repository']}" for r in results if r["status"] == "failed")
    stopped = sorted(f"{r['registry']}/{r['repository']}" for r in results if r["status"] == "stopped")
    return {
        "dry_run": dry_run,
        "repositories": len(results),
        "images_removed": removed,
        "bytes_removed": bytes_removed,
        "monthly_cost_saved_usd": round(bytes_removed / GIB * usd_per_gb_month, 2),
        "would_remove_images": totals["would_delete"],
        "would_remove_bytes": totals["would_delete_bytes"],
        "would_save_usd_month": round(totals["would_delete_bytes"] / GIB * usd_per_gb_month, 2),
        "untagged": totals["untagged"],
        "would_untag": totals["would_untag"],
        "skipped": totals["skipped"],
        "gone": totals["gone"],
        "unsupported": totals["unsupported"],
        "images_failed": totals["failed"],
        "repositories_failed": failed,
        "repositories_stopped": stopped,
        "messages": [r["message"] for r in results if r.get("message")],
        "usd_per_gb_month": usd_per_gb_month,
    }
