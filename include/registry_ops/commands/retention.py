"""``registry-ops retention``: ``plan`` (what a policy would do; from ``retention/plan_cli.py``),
``apply`` (do it, with the DAG's safety: archive before delete, caps, dry run by default) and
``drift`` (do the ECR repositories' native lifecycle policies still match the declared rules?)."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from ..config import load_config
from .options import CONFIG_HELP, parse_now


def run_apply(args: argparse.Namespace) -> tuple[int, dict]:
    from .. import snapshots
    from ..clients import s3_client
    from ..inventory_files import read_inventory
    from ..retention import jobs
    from ..retention.archive import ArchiveError
    from ..retention.lease import LeaseHeld
    from ..retention.pull_sources import PullSourceError

    config = load_config(args.config)
    now = parse_now(args.now)
    if args.from_s3:  # latest.json's snapshot; none (or no bucket) is a SnapshotMissing: exit 2
        inventory = snapshots.load(config, s3_client(config), [], lists="arrow").frame
    else:  # list columns stay Arrow: the planner and the executor read them so
        try:
            inventory = read_inventory(args.inventory, lists="arrow")
        except OSError as exc:
            raise ValueError(f"{args.inventory}: cannot read inventory: {exc.strerror or exc}") from None
    try:
        summary = jobs.apply_plan(
            config,
            inventory,
            now,
            dry_run=args.dry_run,
            policy_file=args.policy,
            run_id=args.run_id,
            enable=tuple(args.enable_policy or ()),
            notify=args.notify,
        )
    # LeaseHeld: another run is acting on a registry; PullSourceError: a retention.pulls source
    except (ArchiveError, LeaseHeld, PullSourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1, {"error": str(exc)}
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    for message in summary["messages"]:
        print(f"{'error' if 'stopped' not in message else 'stopped'}: {message}", file=sys.stderr)
    if summary.get("summary_error"):
        print(f"error: {summary['summary_error']}", file=sys.stderr)
    if (summary.get("notification") or {}).get("error"):  # reported, never fails the run
        print(f"warning: {summary['notification']['error']}", file=sys.stderr)
    incomplete = summary["repositories_failed"] or (summary["repositories_stopped"] and not args.dry_run)
    return (1 if incomplete or summary.get("summary_error") else 0), summary


def run_drift(args: argparse.Namespace) -> tuple[int, dict | str]:
    """Exit 1 when a repository drifted or a registry could not be read (both named on stderr)."""
    from ..retention import jobs
    from ..retention.drift import fleet_drift, table

    config = load_config(args.config)
    report = fleet_drift(config, jobs.load_policy_set(config, args.policy), args.registry)
    for name in report["drifted"]:
        print(f"drift: {name}", file=sys.stderr)
    for error in report["errors"]:
        print(f"error: {error}", file=sys.stderr)
    code = 1 if report["drifted"] or report["errors"] else 0
    return code, table(report) if args.format == "table" else report


def add_drift_parser(rsub: argparse._SubParsersAction) -> None:
    dp = rsub.add_parser(
        "drift",
        help="compare each ECR repository's native lifecycle policy with the declared rules; exit 1 "
        "when one differs or is missing",
        description="Prints each repository's status: in_sync, differs (with the differences), missing "
        "(declared rules, no native policy), unmanaged (a native policy, no declared one), none, and "
        "not_expressible where the rules use extensions ECR cannot run. Exit 1 when a repository "
        "differs, or is missing a native policy its rules could have (missing with not_expressible does "
        "not count), or a registry could not be read; 2 for bad input. ECR registries only: the "
        "distribution registry has no native lifecycle.",
    )
    dp.add_argument("--policy", help="policy file (default: retention.policy_file of the config)")
    dp.add_argument("--registry", help="one ECR registry of the config (default: every ECR registry)")
    dp.add_argument(
        "--format", choices=("json", "table"), default="json", help="output format (default json)"
    )
    dp.add_argument("--config", help=CONFIG_HELP)
    dp.set_defaults(func=run_drift)


def add_parser(sub: argparse._SubParsersAction) -> None:
    ret = sub.add_parser("retention", help="retention policies: plan what they do, apply them safely")
    rsub = ret.add_subparsers(dest="retention_command", required=True)
    if importlib.util.find_spec(f"{__package__.rsplit('.', 1)[0]}.retention.plan_cli"):
        from ..retention.plan_cli import add_plan_parser

        add_plan_parser(rsub)
    ap = rsub.add_parser(
        "apply",
        help="apply retention policies: archive to S3, verify, then delete (dry run unless --execute)",
    )
    ap.add_argument("--policy", help="policy file (default: retention.policy_file of the config)")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--inventory", help="inventory file: .parquet, .csv or .json")
    source.add_argument("--from-s3", action="store_true", help="the newest inventory snapshot in S3")
    ap.add_argument("--now", help="evaluate ages at this ISO-8601 time (default: now)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run", dest="dry_run", action="store_true", default=True, help="only audit (the default)"
    )
    mode.add_argument("--execute", dest="dry_run", action="store_false", help="archive, verify and delete")
    ap.add_argument("--run-id", help="journal to resume (default: derived from the plan's actions)")
    ap.add_argument(
        "--enable-policy",
        action="append",
        metavar="NAME",
        help="execute this policy although the policy file does not enable it (repeatable; a plain "
        "ECR lifecycle file's one policy is named after the file's stem); see also "
        "retention.enable_policies in the config",
    )
    ap.add_argument(
        "--notify",
        action="store_true",
        help="email the summary (notifications.recipients; Slack too if configured) when an executed "
        "run removed images or left repositories failed or stopped; a dry run sends nothing",
    )
    ap.add_argument("--config", help=CONFIG_HELP)
    ap.set_defaults(func=run_apply)
    add_drift_parser(rsub)
