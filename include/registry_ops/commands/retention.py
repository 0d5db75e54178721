"""``registry-ops retention``: ``plan`` (what a policy would do; from ``retention/plan_cli.py``)
and ``apply`` (do it, with the DAG's safety: archive before delete, caps, dry run by default)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from datetime import UTC, datetime

from ..config import load_config

CONFIG_HELP = "config file (default: $REGISTRY_OPS_CONFIG or config/registry-ops.yaml)"


def parse_now(text: str | None) -> datetime:
    """``--now``: ISO-8601 (naive means UTC); default: the current time."""
    if not text:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--now: not an ISO-8601 date/time: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def run_apply(args: argparse.Namespace) -> tuple[int, dict]:
    from .. import snapshots
    from ..clients import s3_client
    from ..inventory_files import read_inventory
    from ..retention import jobs
    from ..retention.archive import ArchiveError
    from ..retention.lease import LeaseHeld

    config = load_config(args.config)
    now = parse_now(args.now)
    if args.from_s3:  # latest.json's snapshot; none (or no bucket) is a SnapshotMissing: exit 2
        inventory = snapshots.load(config, s3_client(config), []).frame
    else:
        try:
            inventory = read_inventory(args.inventory)
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
    except (ArchiveError, LeaseHeld) as exc:  # LeaseHeld: another run is acting on a registry
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
