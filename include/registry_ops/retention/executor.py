"""Apply a retention plan safely: archive (verified) before delete, caps, dry runs, a journal.

Input is the planner's DataFrame (one row per image of each planned repository; see the
contract in ``planner.py``). Per repository, in this order:

1. **Caps** (:func:`stops`, computed on the whole plan before anything runs): a repository whose
   deletions exceed ``max_fraction_per_repository`` of its images, its policy's ``max_deletions``,
   or what is left of ``max_deletions_per_run`` is stopped with a message; the others go on.
2. **Dry run** (the run's flag, or a row's ``dry_run`` from a policy not yet enabled): audit
   records ``would_delete`` / ``would_untag`` only; no registry or archive call at all.
3. **Fresh look**: the images are read again just before acting. Where the registry's manifest
   reads name the tags (``capabilities.reads_report_tags``, ECR's ``BatchGetImage``, 100 ids a
   call), the reads archiving needs anyway carry each image's existence and tags, so nothing is
   listed again; elsewhere :meth:`~..registries.base.Registry.tag_map` (the distribution API: the
   tags list and a HEAD per tag). An image tagged since the plan is skipped; one already gone is
   noted.
4. **Archive** up to ``archive_batch`` images at a time (``archive.archive_images``: read,
   write once, read back, verify); an image that is not archived is never deleted.
5. **Delete** archived images ``delete_batch`` at a time through ``delete_images``, indexes
   first (ECR refuses to delete a child of a live index: such refusals, typed
   ``refused_by_index``, are retried once after the indexes went; ``gone`` ones were already
   deleted). Before each batch the run's registry lease (``lease.py``) is checked: a run that
   lost it stops.
6. **Untag** through ``delete_tags``. Where removing a manifest's last tag deletes it
   (``capabilities.untag_keeps_manifest`` False: ECR) an image's last tag is never removed (the
   image would go unarchived); elsewhere (the distribution registry, a layout) the tags go and
   the manifest stays, untagged.

A journal (``audit.Journal``) is saved after each pack, at most every ``checkpoint_seconds``
between delete batches (0: after every batch) and at the end, so a rerun with the same run id
resumes: archived images are not archived again and journaled deletes are not sent again, and
images that failed (a registry that went away, a blob that could not be read) are tried again;
a repository counts as done only when none failed. Deletes the journal missed (a crash inside the
checkpoint interval) are safe too: ECR's fresh look finds those archived images gone, the
distribution registry answers 404 (``gone``); both count as deleted. Each deletion's audit record is kept
in the journal; one audit record per action goes to S3 at the end (DEBUG in the log; INFO gets a
line per repository). When S3 fails, what it did not take is logged at ERROR.

Caps: the config's caps are the ceiling; a policy's ``max_fraction`` / ``max_deletions`` can only
tighten them (:func:`stops`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from ..registries.base import DeleteResult, ImageRead, Registry
from . import audit
from .archive import ArchiveStore, archive_images
from .planner import RESULT_COLUMNS

log = logging.getLogger(__name__)

ACTIONS = ("expire", "untag", "transition")
PLAN_COLUMNS = RESULT_COLUMNS  # the planner's output is the executor's input
KIND_ORDER = {"index": 0, "referrer": 1, "image": 2}
DELETE_BATCH = 100  # ECR's BatchDeleteImage takes at most 100 ids
UNTAG_BATCH = 100
LAST_TAG = (
    "removing these tags would remove the image's last tag, and this registry deletes an image with "
    "its last tag (it would go unarchived); left for an expire rule"
)
TRANSITION = (
    "transition (ECR archive storage class) is not executed by registry-ops; attach the rule as an "
    "ECR lifecycle policy, or use expire, which archives to S3 first"
)


class PlanError(ValueError):
    """The plan does not follow the planner contract."""


@dataclass(frozen=True)
class Limits:
    """The run's safety caps (``retention.max_deletions_per_run`` and ``max_fraction_per_repository``)."""

    max_deletions_per_run: int = 500
    max_fraction: float = 0.5


@dataclass(frozen=True)
class RunContext:
    """Everything a run needs besides the registries: where things go and how it behaves."""

    s3: Any
    bucket: str
    store: ArchiveStore
    run_id: str
    now: datetime
    runs_prefix: str = "retention/runs/"
    audit_prefix: str = "retention/audit/"
    dry_run: bool = True
    archive_layers: bool = False  # default for policies that do not say
    archive_batch: int = 1000
    delete_batch: int = DELETE_BATCH
    checkpoint_seconds: float = 2.0  # journal saves between delete batches at most this often
    # raises (lease.LeaseLost) when the run no longer holds its registry lease: checked before
    # every delete; None when the caller holds no lease (tests of single repositories, dry runs)
    lease_check: Callable[[], None] | None = None

    def check_lease(self) -> None:
        if self.lease_check is not None:
            self.lease_check()

    @classmethod
    def from_config(
        cls,
        config: Any,
        s3: Any,
        run_id: str,
        now: datetime,
        dry_run: bool,
        lease_check: Callable[[], None] | None = None,
    ) -> RunContext:
        ret = config.retention
        return cls(
            lease_check=lease_check,
            s3=s3,
            bucket=config.storage.bucket,
            store=ArchiveStore(s3, config.storage.bucket, config.storage.prefixes.archive),
            run_id=run_id,
            now=now,
            runs_prefix=ret.runs_prefix,
            audit_prefix=ret.audit_prefix,
            dry_run=dry_run,
            archive_layers=ret.archive_layers,
            archive_batch=ret.archive_batch,
            delete_batch=ret.delete_batch,
            checkpoint_seconds=ret.checkpoint_seconds,
        )


# -- plan helpers ---------------------------------------------------------------------------------
def validate_plan(plan: pd.DataFrame) -> None:
    missing = [c for c in PLAN_COLUMNS if c not in plan.columns]
    if missing:
        raise PlanError(f"plan is missing column(s): {', '.join(missing)}")
    bad = set(plan["action"].dropna()) - {"keep", *ACTIONS}
    if bad:
        raise PlanError(f"plan column 'action' has unknown value(s): {sorted(bad)}")


def _live(rows: pd.DataFrame) -> pd.Series:
    return ~rows["dry_run"].fillna(True).astype(bool)


def plan_run_id(plan: pd.DataFrame) -> str:
    """A run id derived from the plan's actions, so rerunning the same plan resumes its journal."""
    acts = plan[plan["action"].isin(ACTIONS)].sort_values(["registry", "repository", "digest"])
    h = hashlib.sha256()
    for row in acts[["registry", "repository", "digest", "action"]].itertuples(index=False):
        h.update("\t".join(row).encode() + b"\n")
    return "plan-" + h.hexdigest()[:16]


def stops(plan: pd.DataFrame, limits: Limits, policies: Any = None) -> dict[tuple[str, str], str]:
    """Repositories the caps stop, each with its message (repositories in sorted order share the
    run's budget; one that does not fit is stopped and the next ones are still considered).

    Counted: expire rows of enabled policies (a dry-run policy never deletes). The same counts
    apply in a dry run, so it shows what executing would do.
    """
    out: dict[tuple[str, str], str] = {}
    left = limits.max_deletions_per_run
    expire = plan[(plan["action"] == "expire") & _live(plan)]
    counts = expire.groupby(["registry", "repository"]).size()
    totals = plan.groupby(["registry", "repository"]).size()
    for (registry, repository), n in sorted(counts.items()):
        total = int(totals[(registry, repository)])
        max_n, max_f = policies.safety(repository, registry) if policies is not None else (None, None)
        cap_f, source = limits.max_fraction, "retention.max_fraction_per_repository"
        if max_f is not None and max_f < cap_f:  # a policy can only tighten the config's cap
            cap_f, source = max_f, "policy max_fraction"
        where = f"{registry}/{repository}"
        if n / total > cap_f:
            out[(registry, repository)] = (
                f"{where}: stopped, nothing deleted: the plan deletes {n} of {total} images "
                f"({n / total:.0%}), over the cap of {cap_f:.0%} of a repository ({source})"
            )
        elif max_n is not None and n > max_n:
            out[(registry, repository)] = (
                f"{where}: stopped, nothing deleted: the plan deletes {n} images, over the policy's "
                f"max_deletions of {max_n}"
            )
        elif n > left:
            out[(registry, repository)] = (
                f"{where}: stopped, nothing deleted: the plan deletes {n} images but only {left} of the "
                f"run's {limits.max_deletions_per_run} (retention.max_deletions_per_run) are left"
            )
        else:
            left -= int(n)
    return out


def archive_layers_for(policies: Any, registry: str, repository: str, default: bool) -> bool:
    """A policy's ``archive_layers`` when it sets one, else the config default."""
    resolved = policies.resolve(repository, registry) if policies is not None else None
    value = getattr(resolved, "archive_layers", None)
    return default if value is None else bool(value)


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Plan rows as plain dicts: lists for tags, bool dry_run, int-or-None numbers."""
    cols = {c: frame[c].tolist() for c in PLAN_COLUMNS}
    for c in ("size_bytes", "rule_priority"):
        cols[c] = [None if v is None or v is pd.NA or v != v else int(v) for v in cols[c]]
    cols["dry_run"] = [True if v is None or v is pd.NA or v != v else bool(v) for v in cols["dry_run"]]
    for c in ("tags", "untag_tags"):
        cols[c] = [list(v) if v is not None and not isinstance(v, float) else [] for v in cols[c]]
    return [dict(zip(PLAN_COLUMNS, values, strict=True)) for values in zip(*cols.values(), strict=True)]


# -- registry operations, through the interface ----------------------------------------------------
def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def current_tags(registry: Registry, repository: str) -> tuple[dict[str, set[str]], bool]:
    """Tags per digest right now, and whether every digest is listed (:meth:`Registry.tag_map`)."""
    return registry.tag_map(repository)


def _delete(registry: Registry, repository: str, digests: list[str]) -> DeleteResult:
    """One delete batch (a seam of its own: the crash tests wrap it)."""
    return registry.delete_images(repository, digests)


# -- one repository -------------------------------------------------------------------------------
def _tally(
    registry: str, repository: str, records: list[dict[str, Any]], status: str, message: str | None
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "registry": registry,
        "repository": repository,
        "status": status,
        "message": message,
        **dict.fromkeys(audit.RESULTS, 0),
        "bytes_deleted": 0,
        "would_delete_bytes": 0,
    }
    for r in records:
        res[r["result"]] += 1
        size = r.get("size_bytes") or 0
        if r["result"] in ("deleted", "already_deleted"):
            res["bytes_deleted"] += size
        elif r["result"] == "would_delete":
            res["would_delete_bytes"] += size
    return res


def apply_repository(
    run: RunContext,
    registry: Registry | None,
    rows: pd.DataFrame,
    *,
    stop: str | None = None,
    archive_layers: bool | None = None,
) -> dict[str, Any]:
    """Apply one repository's plan rows; returns its result (counts, status, message, keys).

    Never raises for registry, archive or S3 trouble: the repository's result is ``failed``, the
    journal and audit (or, when S3 failed, the log) hold what was done, and a rerun finishes the job.
    """
    reg_name, repo = str(rows["registry"].iat[0]), str(rows["repository"].iat[0])
    acts = [r for r in _rows(rows) if r["action"] in ACTIONS]
    key = audit.audit_key(run.audit_prefix, run.now, run.run_id, reg_name, repo)
    status, message = "done", None
    layers = run.archive_layers if archive_layers is None else archive_layers
    if not acts:
        return {**_tally(reg_name, repo, [], "done", None), "audit_key": None}
    if stop:
        log.warning("retention: %s", stop)
        records = [
            audit.record(r, "stopped", run_id=run.run_id, dry_run=run.dry_run or r["dry_run"], detail=stop)
            for r in acts
        ]
        status, message = "stopped", stop
    else:
        dry = [r for r in acts if run.dry_run or r["dry_run"]]
        live = [r for r in acts if not (run.dry_run or r["dry_run"])]
        records = [_would(r, run.run_id) for r in dry]
        if live:
            if registry is None:
                raise ValueError(f"{reg_name}/{repo}: a registry is needed to execute the plan")
            live_records, error = _apply_live(run, registry, repo, live, layers)
            records += live_records
            if error:
                status, message = "failed", f"{reg_name}/{repo}: {error}"
    failed = [r for r in records if r["result"] == "failed"]
    if failed and status == "done":
        status = "failed"
        message = f"{reg_name}/{repo}: {len(failed)} image(s) failed; first: {failed[0]['detail']}"
    try:
        audit.write_audit(run.s3, run.bucket, key, records)
    except Exception as exc:  # S3 trouble: the log must hold what the audit object would have
        problem = f"audit not written to s3://{run.bucket}/{key}: {type(exc).__name__}: {exc}"
        for r in records:
            if r["result"] not in ("would_delete", "would_untag", "stopped"):
                log.error("retention audit (not in S3): %s", json.dumps(r, sort_keys=True, default=str))
        status = "failed"
        message = f"{reg_name}/{repo}: {problem}" + (f"; {message}" if message else "")
        key = None
    result = {**_tally(reg_name, repo, records, status, message), "audit_key": key}
    _log_repository(result)
    return result


def _log_repository(result: dict[str, Any]) -> None:
    """The one INFO line of a repository (per-image records are DEBUG)."""
    counts = {k: result[k] for k in audit.RESULTS if result.get(k)}
    line = f"retention: {result['registry']}/{result['repository']}: {result['status']} {counts}"
    if result["status"] == "failed":
        log.error("%s: %s", line, result["message"])
    elif result["status"] == "stopped":
        log.warning("%s", line)
    else:
        log.info("%s", line)


def _would(row: dict[str, Any], run_id: str) -> dict[str, Any]:
    if row["action"] == "expire":
        return audit.record(
            row, "would_delete", run_id=run_id, dry_run=True, detail="dry run: nothing deleted"
        )
    if row["action"] == "untag":
        return audit.record(
            row, "would_untag", run_id=run_id, dry_run=True, tags_removed=row["untag_tags"], detail="dry run"
        )
    return audit.record(row, "unsupported", run_id=run_id, dry_run=True, detail=TRANSITION)


def _apply_live(
    run: RunContext, registry: Registry, repo: str, rows: list[dict[str, Any]], archive_layers: bool
) -> tuple[list[dict[str, Any]], str | None]:
    """Execute the rows with the journal; returns the audit records and a fatal error, if any.

    A journal marked ``done`` (every image finished) is answered from; any other journal is
    resumed: what it archived is not archived again, what it deleted is not deleted again, and
    everything else (failures included) is tried again.
    """
    reg_name = registry.name
    journal = audit.Journal.load(
        run.s3, run.bucket, audit.journal_key(run.runs_prefix, run.run_id, reg_name, repo)
    )
    if journal.status == "done":
        log.info("retention: %s/%s already done in run %s (journal)", reg_name, repo, run.run_id)
        at = datetime.now(UTC)
        return [_from_outcome(r, journal.outcomes, run.run_id, at) for r in rows], None
    if journal.status != "new":
        log.info(
            "retention: %s/%s: resuming run %s (attempt %d; %d archived, %d deleted so far)",
            reg_name,
            repo,
            run.run_id,
            journal.attempts + 1,
            len(journal.archived),
            len(journal.deleted),
        )
    journal.status, journal.attempts = "running", journal.attempts + 1
    outcomes: dict[str, tuple[str, str | None]] = {}  # "<action>:<digest>" -> (result, detail)
    error = None
    try:
        _run_steps(run, registry, repo, rows, archive_layers, journal, outcomes)
    except Exception as exc:  # one repository's trouble must not stop the others
        log.error("retention: %s/%s stopped: %s: %s", reg_name, repo, type(exc).__name__, exc)
        log.debug("retention: %s/%s traceback", reg_name, repo, exc_info=True)
        error = f"{type(exc).__name__}: {exc}"
    final = {f"{r['action']}:{r['digest']}": _outcome(r, journal, outcomes, error) for r in rows}
    finished = error is None and all(o["result"] != "failed" for o in final.values())
    journal.status, journal.outcomes = ("done" if finished else "incomplete"), final
    try:
        journal.save()
    except Exception as exc:  # S3 trouble: the deletions it did not take go to the log
        problem = f"journal not saved to s3://{run.bucket}/{journal.key}: {type(exc).__name__}: {exc}"
        journal.log_unsaved(problem)
        error = f"{error}; {problem}" if error else problem
    at = datetime.now(UTC)
    return [_from_outcome(r, final, run.run_id, at) for r in rows], error


def _outcome(
    row: dict[str, Any],
    journal: audit.Journal,
    outcomes: dict[str, tuple[str, str | None]],
    error: str | None,
) -> dict[str, Any]:
    d, action = row["digest"], row["action"]
    archive_key = journal.archived.get(d)
    if action == "expire" and d in journal.deleted:
        result = journal.deleted[d]["result"]
        detail = "archived, verified, deleted" if result == "deleted" else "archived; it was already gone"
        return {"result": result, "detail": detail, "archive_key": archive_key}
    if action == "untag" and d in journal.untagged:
        return {
            "result": "untagged",
            "detail": None,
            "archive_key": None,
            "tags_removed": journal.untagged[d],
        }
    if f"{action}:{d}" in outcomes:
        result, detail = outcomes[f"{action}:{d}"]
        return {"result": result, "detail": detail, "archive_key": archive_key}
    where = f"archived ({archive_key}) but not deleted" if archive_key else "not done"
    return {"result": "failed", "detail": f"{where}: {error or 'not processed'}", "archive_key": archive_key}


def _from_outcome(
    row: dict[str, Any], outcomes: dict[str, dict[str, Any]], run_id: str, at: datetime | None = None
) -> dict[str, Any]:
    o = outcomes.get(f"{row['action']}:{row['digest']}") or {"result": "failed", "detail": "no outcome"}
    return audit.record(
        row,
        o["result"],
        run_id=run_id,
        dry_run=False,
        detail=o.get("detail"),
        archive_key=o.get("archive_key"),
        tags_removed=o.get("tags_removed"),
        at=at,
    )


def _fresh(
    chunk: list[dict[str, Any]],
    seen: ImageRead | None,
    current: dict[str, set[str]],
    complete: bool,
    journal: audit.Journal,
    outcomes: dict[str, tuple[str, str | None]],
    run_id: str,
) -> list[dict[str, Any]]:
    """The rows still to act on after the fresh look (``seen``: reads that name tags; else ``current``)."""
    todo: list[dict[str, Any]] = []
    for r in chunk:
        d = r["digest"]
        if seen is not None:
            if d in seen.failures:
                outcomes[f"expire:{d}"] = ("failed", f"could not be read before deleting: {seen.failures[d]}")
                continue
            gone = d in seen.gone
            now_tags = (seen.tags or {}).get(d, set())
        else:
            now_tags = current.get(d)
            gone = now_tags is None and complete
        if gone:
            if d in journal.archived:  # archived by this run, gone now: the crashed attempt deleted it
                journal.record_deletion(
                    d,
                    audit.record(
                        r,
                        "already_deleted",
                        run_id=run_id,
                        dry_run=False,
                        archive_key=journal.archived[d],
                        detail="archived; it was already gone",
                    ),
                )
            else:
                outcomes[f"expire:{d}"] = (
                    "gone",
                    "not in the registry any more: nothing to archive or delete",
                )
            continue
        new = sorted((now_tags or set()) - set(r["tags"]))
        if new:
            outcomes[f"expire:{d}"] = ("skipped", f"tagged since the plan ({', '.join(new)}): left alone")
            continue
        todo.append(r)
    return todo


def _run_steps(
    run: RunContext,
    registry: Registry,
    repo: str,
    rows: list[dict[str, Any]],
    archive_layers: bool,
    journal: audit.Journal,
    outcomes: dict[str, tuple[str, str | None]],
) -> None:
    reads_tags = registry.capabilities.reads_report_tags
    current: dict[str, set[str]] = {}
    complete = True
    if not reads_tags:  # e.g. the distribution API: tags list and a HEAD per tag
        current, complete = current_tags(registry, repo)
    by_digest = {r["digest"]: r for r in rows if r["action"] == "expire"}
    expire = sorted(by_digest.values(), key=lambda r: (KIND_ORDER.get(r["kind"], 3), r["digest"]))
    pending = [r for r in expire if r["digest"] not in journal.deleted]

    referenced: list[str] = []
    for chunk in _chunks(pending, run.archive_batch):
        seen = registry.read_images(repo, [r["digest"] for r in chunk]) if reads_tags else None
        todo = _fresh(chunk, seen, current, complete, journal, outcomes, run.run_id)
        need = [r for r in todo if r["digest"] not in journal.archived]
        if need:
            got = archive_images(
                run.store,
                registry,
                repo,
                need,
                archive_layers=archive_layers,
                run_id=run.run_id,
                now=datetime.now(UTC),
                prefetched=seen,
            )
            journal.archived.update(got.archived)
            journal.save()
            for d in got.gone:
                outcomes[f"expire:{d}"] = (
                    "gone",
                    "not in the registry any more: nothing to archive or delete",
                )
            for d, why in got.failures.items():
                outcomes[f"expire:{d}"] = ("failed", f"not archived, so not deleted: {why}")
            log.debug(
                "retention: %s/%s: archived %d image(s) to %s",
                registry.name,
                repo,
                len(got.archived),
                got.catalog,
            )
        # Only images whose archive was written, read back and verified (their catalog entry is in
        # the journal) may be deleted; an image that failed to archive stays in the registry.
        deletable = [
            r["digest"]
            for r in todo
            if r["digest"] in journal.archived and r["digest"] not in journal.deleted
        ]
        for batch in _chunks(deletable, run.delete_batch):
            run.check_lease()  # a run that lost its registry lease deletes nothing more
            referenced += _delete_batch(
                registry, repo, batch, journal, outcomes, by_digest, run.run_id, retry=True
            )
            journal.checkpoint(run.checkpoint_seconds)
    if referenced:  # children of indexes deleted meanwhile: the registry accepts them now
        run.check_lease()
        _delete_batch(registry, repo, referenced, journal, outcomes, by_digest, run.run_id, retry=False)
        journal.save()
    untag_rows = [r for r in rows if r["action"] == "untag"]
    if untag_rows and reads_tags:  # the last-tag check needs every tag: list them (rare: untag rules)
        current, complete = current_tags(registry, repo)
    if untag_rows:
        run.check_lease()
    _untag(registry, repo, untag_rows, current, complete, journal, outcomes, run.checkpoint_seconds)
    for r in rows:
        if r["action"] == "transition":
            outcomes[f"transition:{r['digest']}"] = ("unsupported", TRANSITION)


def _delete_batch(
    registry: Registry,
    repo: str,
    digests: list[str],
    journal: audit.Journal,
    outcomes: dict[str, tuple[str, str | None]],
    rows: dict[str, dict[str, Any]],
    run_id: str,
    *,
    retry: bool,
) -> list[str]:
    """Delete one batch, journaling each deletion with its audit record; returns refusals worth
    one more try."""

    def done(d: str, result: str, detail: str) -> None:
        record = audit.record(
            rows[d],
            result,
            run_id=run_id,
            dry_run=False,
            archive_key=journal.archived[d],
            detail=detail,
            at=at,
        )
        journal.record_deletion(d, record)

    res = _delete(registry, repo, digests)
    at = datetime.now(UTC)  # the batch's answer: one time for its records (a clock read each cost more)
    for d in res.deleted:
        done(d, "deleted", "archived, verified, deleted")
    again = []
    for d, why in res.failures.items():
        if d in res.gone:
            done(d, "already_deleted", "archived; it was already gone")
        elif retry and d in res.refused_by_index:
            again.append(d)
        else:
            outcomes[f"expire:{d}"] = ("failed", f"archived ({journal.archived[d]}) but not deleted: {why}")
    log.debug(
        "retention: %s/%s: deleted %d, %d refused", registry.name, repo, len(res.deleted), len(res.failures)
    )
    return again


def _untag(
    registry: Registry,
    repo: str,
    rows: list[dict[str, Any]],
    current: dict[str, set[str]],
    complete: bool,
    journal: audit.Journal,
    outcomes: dict[str, tuple[str, str | None]],
    checkpoint_seconds: float,
) -> None:
    if not rows:
        return
    keeps_manifest = registry.capabilities.untag_keeps_manifest
    owner: dict[str, str] = {}  # tag -> digest
    for r in rows:
        d = r["digest"]
        if d in journal.untagged:
            continue
        now_tags = current.get(d)
        if now_tags is None and complete:
            outcomes[f"untag:{d}"] = ("gone", "not in the registry any more")
            continue
        remove = sorted(set(r["untag_tags"]) & (now_tags or set()))
        if not remove:
            outcomes[f"untag:{d}"] = ("skipped", "none of the tags to remove point at this image any more")
        elif not keeps_manifest and not (now_tags or set()) - set(remove):
            outcomes[f"untag:{d}"] = ("skipped", LAST_TAG)
        else:
            owner.update(dict.fromkeys(remove, d))
    for batch in _chunks(sorted(owner), UNTAG_BATCH):
        res = registry.delete_tags(repo, batch)
        for tag in batch:
            if tag in res.deleted or tag in res.gone:  # a tag already gone: the goal is met
                journal.untagged.setdefault(owner[tag], []).append(tag)
            elif tag in res.failures:
                outcomes[f"untag:{owner[tag]}"] = ("failed", f"tag {tag}: {res.failures[tag]}")
        journal.checkpoint(checkpoint_seconds)


# -- a whole plan ---------------------------------------------------------------------------------
def failed_result(registry: str, repository: str, message: str) -> dict[str, Any]:
    return {**_tally(registry, repository, [], "failed", message), "audit_key": None}


def execute(
    plan: pd.DataFrame,
    run: RunContext,
    registry_for: Callable[[str], Registry],
    *,
    limits: Limits,
    policies: Any = None,
    stop_reasons: dict[tuple[str, str], str] | None = None,
    workers: int = 4,
) -> list[dict[str, Any]]:
    """Apply a plan, repositories in parallel; one result per repository with actions.

    ``stop_reasons`` are the caps' verdicts when computed earlier for the whole run (the DAG
    computes them once, then maps over repositories); otherwise :func:`stops` runs here.
    """
    validate_plan(plan)
    halted = stops(plan, limits, policies) if stop_reasons is None else stop_reasons
    groups = [
        (key, rows)
        for key, rows in plan.groupby(["registry", "repository"], sort=True)
        if rows["action"].isin(ACTIONS).any()
    ]
    cache: dict[str, Registry] = {}
    broken: dict[str, str] = {}
    if not run.dry_run:  # one adapter per registry, built before the threads share it
        for registry in sorted({k[0] for k, _ in groups}):
            try:
                cache[registry] = registry_for(registry)
            except Exception as exc:  # each of its repositories reports it
                broken[registry] = f"{type(exc).__name__}: {exc}"

    def one(item: tuple[tuple[str, str], pd.DataFrame]) -> dict[str, Any]:
        (registry, repository), rows = item
        stop = halted.get((registry, repository))
        acts = rows[rows["action"].isin(ACTIONS)]
        needs_registry = not run.dry_run and stop is None and bool(_live(acts).any())
        if needs_registry and registry in broken:
            return failed_result(registry, repository, f"{registry}/{repository}: {broken[registry]}")
        try:
            layers = archive_layers_for(policies, registry, repository, run.archive_layers)
            reg = cache[registry] if needs_registry else None
            return apply_repository(run, reg, rows, stop=stop, archive_layers=layers)
        except Exception as exc:  # reported per repository; the others go on
            log.exception("retention: %s/%s failed", registry, repository)
            return failed_result(
                registry, repository, f"{registry}/{repository}: {type(exc).__name__}: {exc}"
            )

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(one, groups))
