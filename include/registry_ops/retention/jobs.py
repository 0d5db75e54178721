"""Retention steps as the DAGs map them, and the command line runs them in one process.

Each DAG step resolves its clients from connections, does one step and returns small JSON;
plans, plan parts and per-item results travel through S3 (claim-check), never through XCom::

    <runs_prefix><run_id>/plan.parquet           the whole plan (for people and tools)
    <runs_prefix><run_id>/items/<n>.parquet      the plan rows of one mapped item
    <runs_prefix><run_id>/results/<n>.json       what that item did (written on every attempt)
    <runs_prefix><run_id>/summary.json           the run's totals (also the RETENTION Asset extra)
    <runs_prefix>latest.json                     names the last summary written (``store.runs``)
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from .. import snapshots, storage
from ..clients import build_registry
from ..config import Config, ConfigError
from ..registries.base import Registry
from ..store.clients import s3_client
from ..store.runs import RunLayout
from . import audit, pull_sources
from .executor import ACTIONS, Limits, RunContext, execute, plan_run_id, stops, validate_plan
from .restore import locate, restore_image, write_restore_audit

log = logging.getLogger(__name__)

LIST_COLUMNS = ("tags", "untag_tags")
MAX_ITEMS = 512  # mapped tasks per run (Airflow's max_map_length defaults to 1,024)


class RetentionIncomplete(RuntimeError):
    """Some repositories failed or were stopped by a cap; the message names each."""


# -- inputs ---------------------------------------------------------------------------------------
def _relative(config: Config, value: str) -> Path:
    path = Path(value)
    if not path.is_absolute() and config.source != "<memory>":
        path = Path(config.source).parent / path
    return path


def policy_path(config: Config) -> Path:
    if not config.retention.policy_file:
        raise ConfigError(f"{config.source}: retention.policy_file is not set (the policies to apply)")
    return _relative(config, config.retention.policy_file)


def load_policy_set(config: Config, path: str | Path | None = None, enable: tuple[str, ...] = ()) -> Any:
    """The policy file (``--policy`` or ``retention.policy_file``); PolicyError when invalid.

    Policies named in ``retention.enable_policies`` (and ``enable``: ``--enable-policy``) execute
    although the file does not enable them: a plain ECR lifecycle file has no ``enabled`` field.
    A policy cap looser than the config's is reported: the config's caps are the ceiling.
    """
    from .policy import load_policies

    policies = load_policies(path or policy_path(config))
    names = (*config.retention.enable_policies, *enable)
    if names:
        policies = policies.with_enabled(names)
    for level in [policies.model.defaults, *policies.model.policies]:
        name = getattr(level, "name", "defaults")
        if (
            level.max_fraction is not None
            and level.max_fraction > config.retention.max_fraction_per_repository
        ):
            log.warning(
                "retention: %s: policy %r max_fraction %s is above retention.max_fraction_per_repository %s "
                "of %s: the config's cap applies (a policy can only tighten it)",
                policies.source,
                name,
                level.max_fraction,
                config.retention.max_fraction_per_repository,
                config.source,
            )
    return policies


def in_use_refs(config: Config) -> set[str] | None:
    """References the planner must keep, or None when no source is configured.

    Sources: ``retention.in_use_file`` (Kubernetes and anything else, one reference per line)
    and, per ``retention.in_use_discovery``, ECS and Lambda in the account and region of each
    ECR registry (through that registry's connection). A discovery call that fails raises
    ``InUseError``: without knowing what runs, nothing may be deleted.
    """
    from ..clients import aws_client
    from .in_use import InUse, ecs_references, lambda_references, user_references

    found, sources = InUse(), []
    if config.retention.in_use_file:
        path = _relative(config, config.retention.in_use_file)
        try:
            found.merge(user_references(path))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read retention.in_use_file: {exc.strerror or exc}") from None
        sources.append(str(path))
    accounts = sorted({(r.conn_id, r.region) for r in config.registries if r.kind == "ecr"}, key=str)
    for conn_id, region in accounts:
        where = f"{conn_id}/{region or 'default region'}"
        if "ecs" in config.retention.in_use_discovery:
            found.merge(ecs_references(aws_client("ecs", conn_id, region)))
            sources.append(f"ECS {where}")
        if "lambda" in config.retention.in_use_discovery:
            found.merge(lambda_references(aws_client("lambda", conn_id, region)))
            sources.append(f"Lambda {where}")
    if not sources:
        return None
    log.info("retention: %d image reference(s) in use, from %s", len(found.refs), ", ".join(sources))
    return found.refs


def limits_of(config: Config) -> Limits:
    return Limits(config.retention.max_deletions_per_run, config.retention.max_fraction_per_repository)


def make_plan(inventory: pd.DataFrame, policies: Any, now: datetime, in_use: set[str] | None) -> pd.DataFrame:
    from .planner import plan

    result = plan(inventory, policies, now, in_use)
    validate_plan(result)
    return result


def _to_table(plan: pd.DataFrame) -> pa.Table:
    """Plan rows as Arrow, list columns typed list<string> even when every list is empty."""
    frame = plan.reset_index(drop=True)
    lists = {
        c: pa.array([[] if v is None else list(v) for v in frame[c]], type=pa.list_(pa.string()))
        for c in LIST_COLUMNS
    }
    table = pa.Table.from_pandas(frame.drop(columns=list(LIST_COLUMNS)), preserve_index=False)
    for name, arr in lists.items():
        table = table.append_column(name, arr)
    return table


def _from_table(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas()
    for col in LIST_COLUMNS:
        frame[col] = frame[col].map(lambda v: [] if v is None else list(v))
    return frame


def _run_layout(config: Config) -> RunLayout:
    return audit.run_layout(config.storage.bucket, config.retention.runs_prefix)


def _run_key(config: Config, run_id: str, name: str) -> str:
    return _run_layout(config).id_prefix(run_id) + name


def _publish_summary(config: Config, s3: Any, summary: dict[str, Any], results: list[Any]) -> str:
    """The run's ``summary.json`` (its manifest, with the per-repository results), then
    ``<runs_prefix>latest.json`` naming it; returns the summary's key."""
    layout = _run_layout(config)
    run = layout.id_prefix(summary["run_id"])
    extra = {k: summary[k] for k in ("run_id", "now", "dry_run")}
    whole = {**summary, "results": results}
    _update_history(s3, layout, layout.manifest_key(run), whole)
    layout.publish(s3, run, whole, extra=extra)
    return layout.manifest_key(run)


def _update_history(s3: Any, layout: RunLayout, key: str, summary: dict[str, Any]) -> None:
    """The year's history (``history.py``) with this run in, before the pointer moves. Never fails
    the run: it is a cache, and the next publish rebuilds what this one could not write."""
    from . import history

    try:
        now = datetime.fromisoformat(str(summary["now"]))
        history.update(s3, layout, key, summary, now if now.tzinfo else now.replace(tzinfo=UTC))
    except Exception as exc:  # S3 trouble or a bug here: the summary and pointer still go out
        log.warning("retention: history of runs not updated (%s); the next run rebuilds it", exc)


# -- the DAG's steps --------------------------------------------------------------------------------
def plan_run(
    config: Config, run_id: str, now: datetime, dry_run: bool, extras: list[dict[str, Any]]
) -> dict[str, Any]:
    """Plan on the snapshot, apply the caps once for the whole run, park one part per item.

    With no ``retention.policy_file`` configured there is nothing to apply: an empty plan (the
    run succeeds, saying so) rather than a daily failure on fleets without retention.
    """
    if not config.retention.policy_file:
        log.warning("retention: %s: retention.policy_file is not set; nothing to apply", config.source)
        return {
            "run_id": run_id,
            "now": now.isoformat(),
            "dry_run": dry_run,
            "snapshot": None,
            "plan_key": None,
            "actions": {},
            "items": [],
        }
    s3 = s3_client(config)
    # the newest event's snapshot, never a stale one; list columns stay Arrow, as the planner
    # reads them (Python lists: ~400 MB at 1M images)
    snapshot = snapshots.load(config, s3, extras, lists="arrow")
    policies = load_policy_set(config)
    frame = pull_sources.merge_configured(config, s3, snapshot.frame, now, policies)  # retention.pulls
    plan = make_plan(frame, policies, now, in_use_refs(config))
    halted = stops(plan, limits_of(config), policies)
    # One executing run per registry: the run's leases, taken before anything is parked; its
    # mapped items renew them and the last step gives them back (``release_leases``).
    leases = [
        lease.registry for lease in take_leases(config, s3, live_registries(plan, dry_run), run_id, run_id)
    ]
    for warning in dry_run_warnings(plan, dry_run):
        log.warning("retention: %s", warning)
    out = config.storage.bucket
    storage.put_table(s3, out, _run_key(config, run_id, "plan.parquet"), _to_table(plan))
    acts = plan[plan["action"].isin(ACTIONS)]
    repos = sorted({(r, p) for r, p in zip(acts["registry"], acts["repository"], strict=True)})
    per_item = max(1, -(-len(repos) // MAX_ITEMS))
    items = []
    for n in range(0, len(repos), per_item):
        group = repos[n : n + per_item]
        part = plan[
            pd.Series(list(zip(plan["registry"], plan["repository"], strict=True)), index=plan.index).isin(
                group
            )
        ]
        item_key = _run_key(config, run_id, f"items/{len(items):05d}.parquet")
        storage.put_table(s3, out, item_key, _to_table(part))
        items.append(
            {
                "item": len(items),
                "key": item_key,
                "label": group[0][0] + "/" + group[0][1] + (f" +{len(group) - 1}" if len(group) > 1 else ""),
                "stops": [[r, p, halted[(r, p)]] for r, p in group if (r, p) in halted],
            }
        )
    counts = {a: int(n) for a, n in plan["action"].value_counts().items()}
    log.info(
        "retention: run %s planned on %s at %s: %d images, %s; %d repositories with actions; "
        "%d stopped by caps; dry run: %s",
        run_id,
        snapshot.location.describe(),
        now.isoformat(),
        len(plan),
        counts,
        len(repos),
        len(halted),
        dry_run,
    )
    for message in halted.values():
        log.warning("retention: %s", message)
    return {
        "run_id": run_id,
        "now": now.isoformat(),
        "dry_run": dry_run,
        "snapshot": snapshot.location.as_dict(),
        "plan_key": _run_key(config, run_id, "plan.parquet"),
        "actions": counts,
        "leases": leases,
        "items": items,
    }


def live_registries(plan: pd.DataFrame, dry_run: bool) -> list[str]:
    """Registries the plan would change: the ones a lease must cover (none in a dry run)."""
    if dry_run:
        return []
    live = plan[plan["action"].isin(ACTIONS) & ~plan["dry_run"].fillna(True).astype(bool)]
    return sorted(set(live["registry"]))


def take_leases(config: Config, s3: Any, registries: list[str], holder: str, run_id: str) -> list[Any]:
    """One executing run per registry: the leases of ``registries`` for ``holder``, all or none
    (``lease.LeaseHeld`` names who holds one). The DAG's holder is its Airflow run id, so its
    mapped tasks share the leases its ``plan`` task took."""
    from .lease import acquire_all

    ret = config.retention
    return acquire_all(
        s3, config.storage.bucket, ret.runs_prefix, registries, holder, run_id, ret.lease_seconds
    )


def release_leases(config: Config, registries: list[str], holder: str, run_id: str) -> None:
    """Give the run's leases back (the DAG's last step; a lease already taken over is left alone)."""
    from .lease import Lease

    s3 = s3_client(config)
    ret = config.retention
    for name in registries:
        lease = Lease(s3, config.storage.bucket, ret.runs_prefix, name, holder, run_id, ret.lease_seconds)
        current = lease.read()
        if current and current[0].get("holder") == holder:
            lease.etag = current[1]
            lease.release()


def _execute_leased(
    config: Config,
    s3: Any,
    plan: pd.DataFrame,
    run_id: str,
    now: datetime,
    dry_run: bool,
    leases: list[Any],
    policies: Any,
    halted: dict[tuple[str, str], str] | None,
) -> list[dict[str, Any]]:
    """Execute a plan while a keeper renews the run's leases (checked before every delete)."""
    from .lease import LeaseKeeper

    with LeaseKeeper(leases) as keeper:
        run = RunContext.from_config(config, s3, run_id, now, dry_run, lease_check=keeper.check)
        return execute(
            plan,
            run,
            lambda name: build_registry(config.registry(name)),
            limits=limits_of(config),
            policies=policies,
            stop_reasons=halted,
        )


def apply_item(
    config: Config,
    run_id: str,
    now: datetime,
    dry_run: bool,
    item: dict[str, Any],
    holder: str | None = None,
) -> dict[str, Any]:
    """Apply one item's repositories; the result goes to S3 whatever happens (then returned).

    An executing item holds (takes or renews) the leases of its registries for ``holder`` (the
    DAG run) while it works and checks them before every delete."""

    s3 = s3_client(config)
    plan = _from_table(storage.get_table(s3, config.storage.bucket, item["key"]))
    leases = take_leases(config, s3, live_registries(plan, dry_run), holder or run_id, run_id)
    policies = load_policy_set(config)
    halted = {(r, p): message for r, p, message in item["stops"]}
    results = _execute_leased(config, s3, plan, run_id, now, dry_run, leases, policies, halted)
    storage.put_json(
        s3, config.storage.bucket, _run_key(config, run_id, f"results/{item['item']:05d}.json"), results
    )
    return {"item": item["item"], "results": results}


def item_failures(outcome: dict[str, Any]) -> list[str]:
    return [r["message"] for r in outcome["results"] if r["status"] == "failed"]


def summarize_run(config: Config, planned: dict[str, Any]) -> dict[str, Any]:
    """Totals over every item's stored result; an item without one counts as failed."""
    s3 = s3_client(config)
    run_id = planned["run_id"]
    release_leases(config, planned.get("leases", []), run_id, run_id)  # every item has finished
    results: list[dict[str, Any]] = []
    for item in planned["items"]:
        key = _run_key(config, run_id, f"results/{item['item']:05d}.json")
        try:
            results.extend(storage.get_json(s3, config.storage.bucket, key))
        except s3.exceptions.NoSuchKey:
            results.append(
                {
                    **dict.fromkeys(audit.RESULTS, 0),
                    "registry": item["label"].split("/", 1)[0],
                    "repository": item["label"].split("/", 1)[1],
                    "status": "failed",
                    "message": f"{item['label']}: no result stored (its task never finished)",
                }
            )
    summary = audit.summarize(results, config.retention.usd_per_gb_month, planned["dry_run"])
    summary.update(
        run_id=run_id, snapshot=planned["snapshot"], plan_key=planned["plan_key"], now=planned["now"]
    )
    if not planned["dry_run"]:
        summary["archive_index"] = compact_archive_index(config, s3)
    summary["summary_key"] = _publish_summary(config, s3, summary, results)
    _log_totals(summary)
    from .report_mail import send_summary  # an executed run that changed something: tell people

    summary["notification"] = send_summary(config, summary, results)  # never raises
    return summary


def raise_if_incomplete(summary: dict[str, Any]) -> None:
    """Fail (after the summary is published) naming failed repositories, and capped ones unless a dry run."""
    problems = list(summary["repositories_failed"])
    if not summary["dry_run"]:
        problems += summary["repositories_stopped"]
    if problems:
        lines = [m for m in summary["messages"] if any(m.startswith(p + ":") for p in problems)] or problems
        raise RetentionIncomplete(
            f"retention run {summary['run_id']}: {len(problems)} repositories not completed:\n  "
            + "\n  ".join(lines)
        )


# -- the command line -------------------------------------------------------------------------------
def dry_run_warnings(plan: pd.DataFrame, dry_run: bool) -> list[str]:
    """What an executing run will not do because policies are dry runs (said on stderr and in the
    summary: an ``--execute`` that deletes nothing must not look like success)."""
    if dry_run:
        return []
    acts = plan[plan["action"].isin(ACTIONS)]
    idle = acts[acts["dry_run"].fillna(True).astype(bool)]
    if idle.empty:
        return []
    counts = idle.groupby("policy").size()
    names = ", ".join(f"{p!r} ({n} action(s))" for p, n in counts.items())
    how = (
        "set `enabled: true` in the policy file, list the policy in retention.enable_policies of the "
        "config, or pass --enable-policy NAME (a plain ECR lifecycle file's policy is named after the file)"
    )
    if len(idle) == len(acts):
        return [
            "--execute, but every policy with actions is a dry run, so nothing is changed: "
            f"{names}; to act, {how}"
        ]
    return [f"policies that are dry runs were only audited: {names}; to act, {how}"]


def apply_plan(
    config: Config,
    inventory: pd.DataFrame,
    now: datetime,
    *,
    dry_run: bool,
    policy_file: str | Path | None = None,
    run_id: str | None = None,
    enable: tuple[str, ...] = (),
    notify: bool = False,
) -> dict[str, Any]:
    """Plan and apply in one process (``registry-ops retention apply``); returns the summary.

    An executing run holds a lease on each registry it changes (``lease.py``): a second run at
    the same time is refused with ``LeaseHeld`` naming the holder. An S3 failure while writing the
    summary still returns it (``summary_error``), so the caller can print what happened. With
    ``notify``, an executed run that changed something emails its summary (``report_mail``).
    """
    from .lease import cli_holder

    s3 = s3_client(config)
    storage.require_bucket(s3, config.storage.bucket, config.source)
    policies = load_policy_set(config, policy_file, enable)
    inventory = pull_sources.merge_configured(config, s3, inventory, now, policies)  # retention.pulls
    plan = make_plan(inventory, policies, now, in_use_refs(config))
    run_id = run_id or plan_run_id(plan)
    warnings = dry_run_warnings(plan, dry_run)
    for warning in warnings:
        log.warning("retention: %s", warning)
    leases = take_leases(config, s3, live_registries(plan, dry_run), cli_holder(), run_id)
    try:
        results = _execute_leased(config, s3, plan, run_id, now, dry_run, leases, policies, None)
    finally:
        for lease in leases:
            try:
                lease.release()
            except Exception as exc:  # it expires on its own
                log.warning("retention: releasing the lease on %s failed: %s", lease.registry, exc)
    summary = audit.summarize(results, config.retention.usd_per_gb_month, dry_run)
    summary.update(run_id=run_id, now=now.isoformat(), warnings=warnings)
    if not dry_run:
        summary["archive_index"] = compact_archive_index(config, s3)
    _log_totals(summary)
    key = _run_key(config, run_id, audit.SUMMARY_NAME)
    try:
        summary["summary_key"] = _publish_summary(config, s3, summary, results)
    except Exception as exc:  # S3 trouble: the caller still prints the summary, and fails
        summary["summary_key"] = None
        summary["summary_error"] = f"summary not written to s3://{config.storage.bucket}/{key}: {exc}"
        log.error("retention: %s", summary["summary_error"])
    if notify:
        from .report_mail import send_summary

        summary["notification"] = send_summary(config, summary, results)  # never raises
    return summary


def compact_archive_index(config: Config, s3: Any) -> dict[str, Any] | None:
    """Merge this run's catalogs into the archive's digest index (restores by digest then cost a
    constant number of requests). Never fails the run: until it succeeds, lookups also read the
    pending deltas, or scan the catalogs with a warning; the next run compacts again."""
    from botocore.exceptions import BotoCoreError, ClientError

    from .archive import ArchiveError, ArchiveStore

    try:
        return ArchiveStore(s3, config.storage.bucket, config.storage.prefixes.archive).compact_index()
    except (ArchiveError, ClientError, BotoCoreError, OSError) as exc:
        log.warning("retention: archive index: compaction failed (%s); the next run compacts", exc)
        return None


def _log_totals(summary: dict[str, Any]) -> None:
    log.info(
        "retention: run %s%s: removed %d images, %.1f MiB, saving about $%.2f/month; would remove %d; "
        "untagged %d; failed %s; stopped %s",
        summary["run_id"],
        " (dry run)" if summary["dry_run"] else "",
        summary["images_removed"],
        summary["bytes_removed"] / 2**20,
        summary["monthly_cost_saved_usd"],
        summary["would_remove_images"],
        summary["untagged"],
        summary["repositories_failed"] or "none",
        summary["repositories_stopped"] or "none",
    )


def recent_archives(
    config: Config, registry: str | None = None, repository: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The newest archived images (digest, tags, where, when): what a restore can bring back.
    A damaged catalog is skipped with a WARNING naming it (``registry-ops archive verify``)."""
    from .archive import ArchiveError, ArchiveStore

    store = ArchiveStore(s3_client(config), config.storage.bucket, config.storage.prefixes.archive)
    out: list[dict[str, Any]] = []
    for key in store.catalog_keys(registry, repository):
        try:
            doc = store.read_catalog(key)
        except ArchiveError as exc:
            log.warning("archive: skipping a damaged catalog: %s", exc)
            continue
        for e in doc["images"]:
            out.append(
                {k: e[k] for k in ("registry", "repository", "digest", "tags", "archived_at", "restorable")}
            )
        if len(out) >= limit:
            break
    return sorted(out, key=lambda e: e["archived_at"], reverse=True)[:limit]


def restore(
    config: Config,
    *,
    registry: str | None,
    repository: str | None,
    digest: str | None,
    tag: str | None,
    to_repository: str | None = None,
    move_tags: bool = False,
    to_registry: str | None = None,
) -> dict[str, Any]:
    """Find an archived image and put it back (the restore DAG and ``registry-ops restore``):
    into the registry it was archived from, or into ``to_registry`` (any configured kind)."""
    if registry:
        config.registry(registry)  # an unknown name fails here, naming the configured ones
    target_config = config.registry(to_registry) if to_registry else None  # likewise, before any read
    s3 = s3_client(config)
    from .archive import ArchiveStore

    store = ArchiveStore(s3, config.storage.bucket, config.storage.prefixes.archive)
    entry = locate(store, registry, repository, digest=digest, tag=tag)
    adapter = build_registry(target_config or config.registry(entry["registry"]))
    source = adapter if adapter.name == entry["registry"] else _source_registry(config, entry["registry"])
    result = restore_image(
        store, adapter, entry, to_repository=to_repository, move_tags=move_tags, source=source
    )
    result["audit_key"] = write_restore_audit(
        s3, config.storage.bucket, config.retention.audit_prefix, result
    )
    log.info(
        "restore: %s/%s@%s restored from %s/%s (tags %s; left on other images %s)",
        result["registry"],
        result["repository"],
        result["digest"],
        result["from_registry"],
        result["from_repository"],
        result["tags_restored"],
        result["tags_left_on_other_images"],
    )
    return result


def _source_registry(config: Config, name: str) -> Registry | None:
    """The registry an image was archived from, for blobs the archive lacks; None when it is not
    configured any more (a provider left behind) or cannot be set up."""
    try:
        return build_registry(config.registry(name))
    except Exception as exc:  # the archive may still hold every blob: the restore decides
        log.warning("restore: registry %s (archived from) not usable for missing blobs: %s", name, exc)
        return None
