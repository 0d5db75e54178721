"""``registry-ops drill``: the disaster-recovery drill outside Airflow.

``drill run`` restores a backup snapshot into the scratch target, proves every restored image
bit-exact, measures RTO and RPO, writes and emails the report and removes what it restored
(``backup/drill.py``). Exit 0: the drill passed; 1: it failed (a digest did not come back, an
objective was missed, the cleanup left something), the JSON summary on stdout naming why; 2:
bad input (snapshot, sample, target, an occupied scratch prefix), nothing written.

``drill clean`` removes every repository under the scratch prefix of the target: what a drill
that died before its cleanup left, when a person decides so (a drill never removes what it did
not create itself).
"""

from __future__ import annotations

import argparse
import sys

from ..config import load_config
from .options import CONFIG_HELP, parse_now


def run(args: argparse.Namespace) -> tuple[int, dict]:
    from ..backup import drill
    from ..backup.drill_report import failure_message
    from ..clients import s3_client
    from ..registries.base import RegistryError
    from ..store.blobs import BlobError

    config = load_config(args.config)
    now = parse_now(args.now)
    reports: list[dict] = []
    try:
        summary = drill.run_drill(
            config,
            s3_client(config),
            snapshot=args.snapshot,
            sample=args.sample,
            target=args.target,
            now=now,
            notify=not args.no_email,
            on_report=reports.append,
        )
    except (RegistryError, BlobError) as exc:  # the scratch repositories were removed before this
        print(f"error: {exc}", file=sys.stderr)
        return 1, {"error": str(exc)}
    failed_cleanup = summary["cleanup"]["failed"]
    if not summary["passed"]:
        print(f"error: {failure_message(reports[0])}", file=sys.stderr)
    if failed_cleanup:
        print(f"error: scratch repositories not removed: {failed_cleanup}", file=sys.stderr)
    return (0 if summary["passed"] and not failed_cleanup else 1), summary


def clean(args: argparse.Namespace) -> tuple[int, dict]:
    from ..backup import drill

    result = drill.clean_prefix(load_config(args.config), args.target)
    return (1 if result["failed"] else 0), result


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "drill", help="disaster-recovery drill: restore a backup into a scratch target and prove it"
    )
    verbs = p.add_subparsers(dest="verb", required=True)
    r = verbs.add_parser("run", help="restore a snapshot into the scratch target, verify, report, clean up")
    r.add_argument(
        "--snapshot", default="latest", help="snapshot id (YYYYMMDDTHHMMSSZ) or 'latest' (default)"
    )
    r.add_argument(
        "--sample", help="'all' or N repositories, chosen deterministically per snapshot (default: dr.sample)"
    )
    r.add_argument("--target", help="registry (config name) to restore into (default: dr.target)")
    r.add_argument("--now", help="the time RPO is measured at, ISO-8601 (default: now)")
    r.add_argument(
        "--no-email", action="store_true", help="do not email the report (it is still written to S3)"
    )
    r.add_argument("--config", help=CONFIG_HELP)
    r.set_defaults(func=run)
    c = verbs.add_parser("clean", help="remove every repository under the scratch prefix of the target")
    c.add_argument("--target", help="registry (config name) to clean (default: dr.target)")
    c.add_argument("--config", help=CONFIG_HELP)
    c.set_defaults(func=clean)
