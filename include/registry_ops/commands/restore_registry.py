"""``registry-ops restore-registry``: recreate a registry (or some of its repositories) from a
backup snapshot into a configured target of any kind; the JSON summary on stdout, exit 1 naming
what failed, exit 2 (nothing written) for a snapshot, target or selection that cannot be used or
a target holding other content without ``--force``."""

from __future__ import annotations

import argparse
import sys

from ..config import load_config
from .options import CONFIG_HELP


def run(args: argparse.Namespace) -> tuple[int, dict]:
    from ..backup.restore import restore_registry
    from ..backup.store import BackupError
    from ..clients import s3_client
    from ..registries.base import RegistryError

    config = load_config(args.config)
    config.registry(args.target)  # an unknown target fails first, before any read
    try:
        result = restore_registry(
            config,
            s3_client(config),
            args.snapshot,
            args.target,
            repos=args.repos,
            dry_run=args.dry_run,
            force=args.force,
            source_registry=args.registry,
        )
    except (RegistryError, BackupError) as exc:  # the target or the store as a whole
        print(f"error: {exc}", file=sys.stderr)
        return 1, {"error": str(exc), "failures": {"restore": str(exc)}}
    for key, reason in result["failures"].items():
        print(f"failed: {key}: {reason}", file=sys.stderr)
    return (1 if result["failures"] else 0), result


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore-registry",
        help="recreate a registry (or some repositories) from a backup snapshot into a target registry",
    )
    p.add_argument("--snapshot", required=True, help="snapshot id (YYYYMMDDTHHMMSSZ) or 'latest'")
    p.add_argument("--target", required=True, help="registry (config name) to restore into; any kind")
    p.add_argument(
        "--registry", help="restore only this source registry of the snapshot (default: every one it holds)"
    )
    p.add_argument("--repos", metavar="GLOB", help="only repositories matching this glob (e.g. 'team/*')")
    p.add_argument("--dry-run", action="store_true", help="write nothing; say what would be written")
    p.add_argument(
        "--force",
        action="store_true",
        help="restore into repositories that hold other content (the snapshot's tags are moved back; "
        "nothing is deleted)",
    )
    p.add_argument("--config", help=CONFIG_HELP)
    p.set_defaults(func=run)
