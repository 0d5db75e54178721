"""``registry-ops backup``: ``run`` a backup snapshot, ``list`` the snapshots, ``verify`` one
(every object read and hashed), ``prune`` by backup retention; the ``registry_backup`` DAG's
work outside Airflow. Summaries are JSON on stdout; a partial failure exits 1."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from ..config import Config
from .options import CONFIG_HELP, parse_now, with_s3


@with_s3
def run_run(args: argparse.Namespace, config: Config, s3: Any) -> tuple[int, dict]:
    from ..backup.run import backup_set, plan_backup, run_backup
    from ..clients import build_registry

    now = parse_now(args.now)
    names = args.registry or backup_set(config)
    if args.dry_run:
        plan = plan_backup(config, s3, now, args.mode, names)
        previous = {
            n: {"snapshot": p["snapshot"], "catalog": p["catalog"]["key"]}
            for n, p in plan["previous"].items()
        }
        return 0, {**plan, "previous": previous, "dry_run": True}
    registries = {name: build_registry(config.registry(name)) for name in names}
    summary = run_backup(config, s3, registries, now, args.mode)
    for key, problem in sorted(summary["failures"].items()):
        print(f"error: {key}: {problem}", file=sys.stderr)
    return (0 if summary["latest"] else 1), summary


@with_s3
def run_list(args: argparse.Namespace, config: Config, s3: Any) -> tuple[int, list]:
    from ..backup.store import SnapshotStore

    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, not {args.limit}")
    store = SnapshotStore.from_config(config, s3)
    out = []
    for snap in store.list_snapshots()[: args.limit]:
        manifest = store.layout.read_manifest(s3, snap["key"])
        regs = manifest.get("registries") or {}
        out.append(
            {
                **snap,
                "mode": manifest.get("mode"),
                "complete": manifest.get("complete"),
                "registries": sorted(regs),
                "manifests": sum(e.get("manifests", 0) for e in regs.values()),
                "bytes": sum(e.get("bytes", 0) for e in regs.values()),
                "failures": len(manifest.get("failures") or {}),
            }
        )
    return 0, out


@with_s3
def run_verify(args: argparse.Namespace, config: Config, s3: Any) -> tuple[int, dict]:
    from ..backup.store import SnapshotStore
    from ..backup.verify import verify_snapshot

    store = SnapshotStore.from_config(config, s3)
    summary = verify_snapshot(store, args.snapshot)
    for d in summary["damaged"]:
        print(f"damaged: {d['problem']} ({d['images_total']} images need it)", file=sys.stderr)
    if args.quarantine and summary["damaged"]:
        from ..backup.verify import quarantine

        summary["quarantined"] = quarantine(store, summary["damaged"], datetime.now(UTC))
        for q in summary["quarantined"]:
            print(f"quarantined: {store.url(q['key'])} -> {store.url(q['moved_to'])}", file=sys.stderr)
    return (0 if summary["ok"] else 1), summary


@with_s3
def run_prune(args: argparse.Namespace, config: Config, s3: Any) -> tuple[int, dict]:
    from ..backup.prune import PruneRefused, prune

    try:
        summary = prune(config, s3, parse_now(args.now), dry_run=args.dry_run)
    except PruneRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1, {"error": str(exc), "dry_run": args.dry_run}
    for err in summary["errors"]:
        print(f"error: not deleted: {err}", file=sys.stderr)
    return (1 if summary["errors"] else 0), summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="backup snapshots of the registries: run, list, verify, prune")
    bsub = p.add_subparsers(dest="backup_command", required=True)
    run = bsub.add_parser("run", help="take a snapshot; exit 1 when something failed (it is not latest)")
    run.add_argument(
        "--mode",
        choices=("auto", "metadata", "full"),
        default="auto",
        help="full also stores layer blobs; auto: full every backup.full_every_days (default auto)",
    )
    run.add_argument("--registry", action="append", help="only this registry (repeatable; others carried)")
    run.add_argument("--dry-run", action="store_true", help="print the plan (mode, reuse); write nothing")
    listing = bsub.add_parser("list", help="the snapshots, newest first")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    verify = bsub.add_parser("verify", help="read and hash every object of a snapshot; exit 1 when damaged")
    verify.add_argument("snapshot", nargs="?", default="latest", help="snapshot id or 'latest' (default)")
    verify.add_argument(
        "--quarantine",
        action="store_true",
        help="move each damaged object to <backup prefix>quarantine/ so the next backup stores it "
        "again from the registry (a damaged object is otherwise reused: the store is write-once)",
    )
    prune = bsub.add_parser("prune", help="delete snapshots and objects backup retention no longer keeps")
    prune.add_argument("--dry-run", action="store_true", help="report what would be deleted; delete nothing")
    for q in (run, prune):
        q.add_argument("--now", help="the time to act as of (ISO-8601; default: now)")
    for q in (run, listing, verify, prune):
        q.add_argument("--config", help=CONFIG_HELP)
    run.set_defaults(func=run_run)
    listing.set_defaults(func=run_list)
    verify.set_defaults(func=run_verify)
    prune.set_defaults(func=run_prune)
