"""Scan steps as the DAG maps them (and ``registry-ops scan run`` chains them in one process).

Each step resolves its clients from connections, does one thing and returns small JSON: S3
keys and counts, never tables (claim-check). ``plan`` -> ``scan_batch`` (mapped) -> ``publish``
-> ``gate``/``check_scans``; ``size_report`` and ``tag_report`` need only the inventory.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from .. import schema, snapshots, storage
from ..clients import ConnectionMissing, build_registry
from ..config import Config
from ..registries.base import RegistryError
from ..store.clients import s3_client
from ..store.runs import ManifestError
from . import acks, gate_state, notify, plan, pushed, results, sizes, store, tagging, uploads
from . import gate as gate_mod
from .scanners.base import Scanner, ScanResult, Target
from .scanners.factory import build_scanner
from .severity import LEVELS

log = logging.getLogger(__name__)
MAX_LISTED = 50


class ScanError(RuntimeError):
    """Nothing to scan from (no inventory snapshot); retrying cannot help."""


class ScanIncomplete(RuntimeError):
    """Some digests could not be scanned; the message names each (up to a limit)."""


def _inventory(s3: Any, config: Config, key: str | list[dict[str, Any]] | None) -> tuple[pd.DataFrame, str]:
    """The run's inventory: ``key`` once planned; at plan time the triggering events' extras
    (or None), of which :mod:`snapshots` takes the newest, refusing a stale or missing one."""
    if isinstance(key, str):
        uri = f"s3://{config.storage.bucket}/{key}"
        return schema.table_to_frame(storage.get_table(s3, config.storage.bucket, key), uri), key
    try:
        snapshot = snapshots.load(config, s3, key or [])
    except snapshots.SnapshotError as exc:
        raise ScanError(str(exc)) from None
    return snapshot.frame, snapshot.location.key


def _images(config: Config, inventory: pd.DataFrame) -> pd.DataFrame:
    return plan.candidates(inventory, config.scan.scan_untagged)


def plan_run(
    config: Config,
    run_at: datetime,
    run_id: str,
    inventory_key: str | list[dict[str, Any]] | None = None,
    inventory: pa.Table | None = None,
    force: bool = False,
    pushed: list[dict[str, Any]] | None = None,
    build: Any = build_registry,
) -> dict[str, Any]:
    """Import fresh pipeline reports, then list the digests to scan and split them in batches.

    ``pushed``: images of ``registry_pushed_images`` events (``pushed.from_extras``). They are
    resolved through their registries and added to the run's inventory; a run triggered by
    pushes alone (no inventory event in ``inventory_key``) scans just them (still skipping a
    digest scanned within the freshness window, unless ``force``)."""
    s3 = s3_client(config)
    bucket = config.storage.bucket
    storage.require_bucket(s3, bucket, config.source)
    run_prefix = store.layout(config).new_run_prefix(s3, run_at)
    only: set[str] | None = None
    on_push: dict[str, Any] | None = None
    if pushed:
        inventory, only, on_push = _with_pushed(s3, config, inventory_key, inventory, pushed, run_at, build)
    if inventory is None:
        frame, inventory_key = _inventory(s3, config, inventory_key)
    else:  # a live listing or a file (CLI): park it so later steps read the same rows
        inventory_key = run_prefix + "inventory.parquet"
        storage.put_table(s3, bucket, inventory_key, inventory)
        frame = schema.table_to_frame(inventory)
    images = _images(config, frame)
    _, prev_scans, pointer = _previous(s3, config)
    state = prev_scans.to_pandas()
    freshness = config.scan.freshness_hours
    imported = uploads.import_reports(
        s3, bucket, config.scan.uploads_prefix, images, state, run_at, freshness
    )
    fresh = set() if force else plan.fresh_digests(state, run_at, freshness) & set(images["digest"])
    skip = fresh | {r.target.digest for r in imported.results}
    if only is not None:  # a push-only run: everything else keeps its last findings
        skip |= set(images["digest"]) - only
    todo = sorted(plan.targets(images, skip), key=lambda t: (t["registry"], t["digest"]))
    parts = store.parts_prefix(config, run_id)
    storage.put_json(s3, bucket, parts + "targets.json", todo)
    imported_keys = _put_results(s3, config, parts + "imported", imported.results)
    batches = [
        {"batch": i, "start": a, "stop": b, "targets_key": parts + "targets.json"}
        for i, (a, b) in enumerate(plan.batches(todo, config.scan.batch_size))
    ]
    out = {
        "run_id": run_id,
        "run_at": run_at.isoformat(),
        "run_prefix": run_prefix,
        "parts_prefix": parts,
        "inventory_key": inventory_key,
        "previous_run": pointer["manifest"] if pointer else None,
        "images": len(images),
        "digests": int(images["digest"].nunique()),
        "fresh": len(fresh),
        "imported": {**imported_keys, "count": len(imported.results)},
        "uploads": {
            "pending": imported.pending[:MAX_LISTED],
            "problems": imported.problems[:MAX_LISTED],
            "skipped": imported.skipped,
        },
        "to_scan": len(todo),
        "batches": batches,
        "pushed": on_push,
    }
    log.info(
        "scan: %d images, %d unique digests: %d fresh, %d imported from uploads, %d to scan in %d batch(es)",
        out["images"],
        out["digests"],
        out["fresh"],
        len(imported.results),
        len(todo),
        len(batches),
    )
    return out


def _with_pushed(
    s3: Any,
    config: Config,
    inventory_key: str | list[dict[str, Any]] | None,
    inventory: pa.Table | None,
    images: list[dict[str, Any]],
    run_at: datetime,
    build: Any,
) -> tuple[pa.Table, set[str] | None, dict[str, Any]]:
    """The run's inventory with the pushed images' rows; the digests a push-only run scans (None
    when an inventory event or a given inventory asks for the whole fleet); a summary."""
    extras = inventory_key if isinstance(inventory_key, list) else []
    whole_fleet = inventory is not None or isinstance(inventory_key, str) or any(e.get("key") for e in extras)
    if inventory is None:
        try:
            _, inventory = snapshots.load_table(config, s3, extras)  # a frame is built once, after the merge
        except snapshots.SnapshotMissing:  # the push came before any inventory: scan it anyway
            if whole_fleet:
                raise ScanError("no inventory snapshot to plan on") from None
            log.info("scan on push: no inventory snapshot yet; the run covers the pushed images only")
        except snapshots.SnapshotError as exc:
            raise ScanError(str(exc)) from None
    resolved = pushed.resolve(config, images, run_at, build)
    summary = {
        "images": len(images),
        "digests": sorted(resolved.digests)[:MAX_LISTED],
        "problems": resolved.problems[:MAX_LISTED],
    }
    log.info(
        "scan on push: %d pushed image(s) resolved to %d digest(s), %d problem(s)%s",
        len(images),
        len(resolved.digests),
        len(resolved.problems),
        "" if whole_fleet else "; this run scans only them",
    )
    return pushed.merge(inventory, resolved.table), None if whole_fleet else resolved.digests, summary


def _previous(s3: Any, config: Config) -> tuple[pa.Table, pa.Table, dict[str, Any] | None]:
    """The last published run (``store.previous``); one this code cannot read (a newer schema
    version) is a ScanError: no retry changes it."""
    try:
        return store.previous(s3, config)
    except ManifestError as exc:
        raise ScanError(f"previous scan run: {exc}") from None


def _put_results(s3: Any, config: Config, stem: str, found: list[ScanResult]) -> dict[str, str]:
    bucket = config.storage.bucket
    keys = {"findings_key": stem + ".findings.parquet", "scans_key": stem + ".scans.parquet"}
    storage.put_table(s3, bucket, keys["findings_key"], results.raw_table(found))
    storage.put_table(s3, bucket, keys["scans_key"], results.scans_table(found))
    return keys


def scan_targets(
    config: Config, targets: list[dict[str, str]], build: Any = build_scanner
) -> tuple[list[ScanResult], int]:
    """Scan targets grouped by registry; a registry whose scanner cannot be built fails its targets."""
    by_registry: dict[str, list[Target]] = defaultdict(list)
    for t in targets:
        by_registry[t["registry"]].append(Target(t["digest"], t["registry"], t["repository"]))
    found: list[ScanResult] = []
    invocations = 0
    for registry, group in sorted(by_registry.items()):
        try:
            scanner: Scanner = build(config, registry)
        except (ValueError, ConnectionMissing, RegistryError) as exc:
            now = datetime.now(UTC)
            found += [ScanResult(t, "none", "error", now, [], f"no scanner: {exc}") for t in group]
            continue
        found += scanner.scan(group)
        invocations += scanner.invocations
    return found, invocations


def scan_batch(
    config: Config, batch: dict[str, Any], parts_prefix: str, build: Any = build_scanner
) -> dict[str, Any]:
    """Scan one slice of the run's targets; park raw findings and scan records in S3.

    ``build(config, registry) -> Scanner`` is injectable for the bench (no Trivy here)."""
    s3 = s3_client(config)
    todo = storage.get_json(s3, config.storage.bucket, batch["targets_key"])[batch["start"] : batch["stop"]]
    found, invocations = scan_targets(config, todo, build)
    keys = _put_results(s3, config, f"{parts_prefix}batch-{batch['batch']:05d}", found)
    errors = [
        {
            "digest": r.target.digest,
            "registry": r.target.registry,
            "repository": r.target.repository,
            "error": r.error,
        }
        for r in found
        if r.status == "error"
    ]
    ok = sum(r.status == "ok" for r in found)
    log.info(
        "scan: batch %d: %d digests, %d ok, %d errors, %d findings",
        batch["batch"],
        len(found),
        ok,
        len(errors),
        sum(len(r.findings) for r in found),
    )
    return {
        **keys,
        "batch": batch["batch"],
        "scanned": len(found),
        "ok": ok,
        "invocations": invocations,
        "errors": errors,
    }


def _concat(s3: Any, bucket: str, keys: list[str], empty: pa.Table) -> pd.DataFrame:
    tables = [storage.get_table(s3, bucket, k) for k in keys]
    return pa.concat_tables([empty, *tables]).to_pandas()


def publish(config: Config, planned: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge this run's results with the previous run into the findings table and new state."""
    s3 = s3_client(config)
    bucket = config.storage.bucket
    inventory, _ = _inventory(s3, config, planned["inventory_key"])
    images = _images(config, inventory)
    prev_findings, prev_scans, _ = _previous(s3, config)
    outputs = [planned["imported"], *parts]
    raw = _concat(s3, bucket, [p["findings_key"] for p in outputs], results.RAW_SCHEMA.empty_table())
    scans = _concat(s3, bucket, [p["scans_key"] for p in outputs], results.SCANS_SCHEMA.empty_table())
    rescanned = set(scans.loc[scans["status"].isin(plan.GOOD), "digest"])
    table = results.merge(images, prev_findings.to_pandas(), raw, rescanned)
    state = results.merge_state(prev_scans.to_pandas(), scans, set(images["digest"]))
    prefix = planned["run_prefix"]
    keys = {
        "findings": prefix + "findings.parquet",
        "scans": prefix + "scans.parquet",
        "manifest": store.layout(config).manifest_key(prefix),
    }
    storage.put_table(s3, bucket, keys["findings"], table)
    storage.put_table(
        s3,
        bucket,
        keys["scans"],
        pa.Table.from_pandas(state, schema=results.SCANS_SCHEMA, preserve_index=False),
    )
    frame = table.select(["digest", "vulnerability_id", "severity"]).to_pandas()
    unique = frame.drop_duplicates(["digest", "vulnerability_id"])
    good = set(state.loc[state["status"].isin(plan.GOOD), "digest"])
    errors = scans[scans["status"] == "error"][["digest", "registry", "repository", "error"]]
    manifest = {
        "run_id": planned["run_id"],
        "run_at": planned["run_at"],
        "bucket": bucket,
        "key": keys["findings"],
        "findings_key": keys["findings"],
        "scans_key": keys["scans"],
        "inventory_key": planned["inventory_key"],
        "run_prefix": prefix,
        "images": planned["images"],
        "digests": planned["digests"],
        "fresh": planned["fresh"],
        "imported": planned["imported"]["count"],
        "scanned": len(scans) - planned["imported"]["count"],
        "scanner_invocations": sum(p["invocations"] for p in parts),
        "ok": len(rescanned),
        "rows": table.num_rows,
        "findings_by_severity": {s: int((frame["severity"] == s).sum()) for s in LEVELS},
        "vulnerabilities_by_severity": {s: int((unique["severity"] == s).sum()) for s in LEVELS},
        "never_scanned": sorted(set(images["digest"]) - good)[:MAX_LISTED],
        "never_scanned_count": len(set(images["digest"]) - good),
        "errors": errors.to_dict("records"),
        "uploads": planned["uploads"],
    }
    manifest = store.layout(config).publish(
        s3,
        prefix,
        manifest,
        named={"findings": keys["findings"], "scans": keys["scans"]},
        extra={"run_at": planned["run_at"]},
    )
    leftovers = [o["Key"] for o in store.list_keys(s3, bucket, planned["parts_prefix"])]
    storage.delete_keys(s3, bucket, leftovers)
    log.info(
        "scan: published s3://%s/%s: %d rows, %d scanner invocations, %d errors",
        bucket,
        keys["findings"],
        table.num_rows,
        manifest["scanner_invocations"],
        len(errors),
    )
    return {**manifest, "errors": manifest["errors"][:MAX_LISTED], "error_count": len(errors)}


def raise_if_incomplete(manifest: dict[str, Any]) -> None:
    """Fail loudly (after publishing) when digests could not be scanned."""
    if manifest["error_count"]:
        lines = [f"{e['registry']}/{e['repository']}@{e['digest']}: {e['error']}" for e in manifest["errors"]]
        more = manifest["error_count"] - len(lines)
        raise ScanIncomplete(
            f"{manifest['error_count']} digest(s) could not be scanned (retried next run; their previous "
            "findings, if any, are kept):\n  "
            + "\n  ".join(lines)
            + (f"\n  ... and {more} more" if more > 0 else "")
        )


def gate(config: Config, manifest: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Evaluate the policy on the published findings against what was reported and acknowledged
    before; writes gate.json next to them and logs the top violating images."""
    s3 = s3_client(config)
    bucket = config.storage.bucket
    inventory, _ = _inventory(s3, config, manifest["inventory_key"])
    findings = storage.get_table(s3, bucket, manifest["findings_key"]).to_pandas()
    now = now or datetime.fromisoformat(manifest["run_at"])
    result = gate_mod.evaluate(findings, _images(config, inventory), config.scan, now.date())
    gate_state.classify(result, gate_state.load(s3, config), acks.load(s3, config), now.date(), now)
    result["key"] = manifest["run_prefix"] + "gate.json"
    result["run_at"] = now.isoformat()
    result["never_scanned_count"] = manifest["never_scanned_count"]
    storage.put_json(s3, bucket, result["key"], result)
    level = (
        logging.ERROR if not result["passed"] else logging.WARNING if result["violations"] else logging.INFO
    )
    log.log(level, "scan: %s\n%s", gate_mod.summary(result), gate_mod.table(result))
    return result


def notify_gate(config: Config, result: dict[str, Any], run: str = "") -> dict[str, Any]:
    """Email (and Slack, if configured) what is new in a failed gate. A Slack failure does not stop
    the email; an email failure raises (and the caller then keeps the violations new)."""
    sent: dict[str, Any] = {"email": [], "slack": False, "slack_error": None}
    try:
        sent["slack"] = notify.send_slack(config, result)
    except (RuntimeError, ConnectionMissing, OSError) as exc:
        sent["slack_error"] = str(exc)
        log.error("scan: Slack notification failed: %s", exc)
    sent["email"] = notify.send_email(config, result, run)
    return sent


def report_gate(config: Config, result: dict[str, Any], run: str = "") -> dict[str, Any] | None:
    """Tell people what is new (nothing is sent without news), then remember every protected
    violation as reported. Saving after sending: a failed email leaves them new for the next run."""
    sent = notify_gate(config, result, run) if result["notify"] else None
    state = gate_state.next_state(result, datetime.fromisoformat(result["run_at"]))
    gate_state.save(s3_client(config), config, state)
    return sent


def acknowledge(
    config: Config,
    registry: str,
    repository: str,
    digest: str,
    reason: str,
    until: date,
    by: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Acknowledge a reported protected violation: its current CVE ids, until a date."""
    now = now or datetime.now(UTC)
    acks.check(digest, reason, until, now.date())
    config.registry(registry)  # an unknown name fails here, naming the configured ones
    s3 = s3_client(config)
    key = acks.key_of(registry, repository, digest)
    reported = gate_state.load(s3, config)
    if key not in reported:
        listed = ", ".join(sorted(reported)[:10]) or "none"
        raise ValueError(
            f"{key} is not a protected violation in the last gate report "
            f"(s3://{config.storage.bucket}/{store.gate_state_key(config)}); nothing to acknowledge. "
            f"Reported: {listed}"
        )
    ack = acks.build(
        registry=registry,
        repository=repository,
        digest=digest,
        cve_ids=reported[key]["cve_ids"],
        reason=reason,
        until=until,
        by=by,
        now=now,
    )
    return {**ack, "key": acks.save(s3, config, ack)}


def list_acks(
    config: Config, include_expired: bool = False, today: date | None = None
) -> list[dict[str, Any]]:
    """Acknowledgements (active ones unless ``include_expired``), each with ``active``."""
    today = today or datetime.now(UTC).date()
    found = acks.load(s3_client(config), config)
    out = [{**a, "active": acks.is_active(a, today)} for _, a in sorted(found.items())]
    return [a for a in out if include_expired or a["active"]]


def unacknowledge(config: Config, registry: str, repository: str, digest: str) -> dict[str, Any]:
    """Remove an image's acknowledgement (ValueError when it has none)."""
    removed = acks.remove(s3_client(config), config, registry, repository, digest)
    if removed is None:
        raise ValueError(f"{acks.key_of(registry, repository, digest)} has no acknowledgement")
    return {"removed": removed}


def size_report(config: Config, planned: dict[str, Any]) -> dict[str, Any]:
    """Images over the size budget with their largest layers; writes sizes.json."""
    s3 = s3_client(config)
    inventory, _ = _inventory(s3, config, planned["inventory_key"])
    images = plan.image_rows(inventory)
    report = sizes.report(
        images,
        config.scan.size_budget_mb,
        config.scan.largest_layers,
        lambda name: build_registry(config.registry(name)),
    )
    key = planned["run_prefix"] + "sizes.json"
    storage.put_json(s3, config.storage.bucket, key, report)
    return {
        "key": key,
        "over_budget": len(report["over_budget"]),
        "errors": report["errors"],
        "manifest_requests": report["manifest_requests"],
    }


def tag_report(config: Config, planned: dict[str, Any]) -> dict[str, Any]:
    """Tag-convention issues per repository; writes tags.json."""
    s3 = s3_client(config)
    inventory, _ = _inventory(s3, config, planned["inventory_key"])
    tagged = inventory[inventory["kind"].isin(["image", "index"])]
    issues: list[dict[str, Any]] = []
    for (registry, repository), group in tagged.groupby(["registry", "repository"], sort=True):
        by_digest = {r.digest: list(r.tags) for r in group.itertuples(index=False) if len(r.tags)}
        issues += tagging.check_repository(registry, repository, by_digest)
    by_rule: dict[str, int] = defaultdict(int)
    for i in issues:
        by_rule[i["rule"]] += 1
    key = planned["run_prefix"] + "tags.json"
    storage.put_json(s3, config.storage.bucket, key, {"issues": issues, "by_rule": dict(by_rule)})
    log.info("scan: tag conventions: %s", dict(by_rule) or "no issues")
    return {"key": key, "issues": len(issues), "by_rule": dict(by_rule)}
