"""``registry-ops rotate``: rotate the CI service accounts' IAM access keys kept in Secrets
Manager (``rotate keys``) and the htpasswd passwords of the deployment's own OCI registries
(``rotate htpasswd``), as the ``registry_credential_rotation`` DAG does.

Each run reads the state back and takes the next safe step until settled, so rerunning after a
crash finishes the rotation. ``--dry-run`` prints the steps it would take and changes nothing.
Output: JSON with each account's status (rotated, current, waiting, planned, error), its keys
(ids, never secrets) and the steps taken. Exit 0, 1 (an account failed: the others were still
rotated), 2 (bad config or arguments)."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import load_config
from .options import CONFIG_HELP, parse_now


def _run(args: argparse.Namespace, kind: str) -> tuple[int, Any]:
    from ..rotation import run

    config = load_config(args.config)
    rotate = run.rotate_keys if kind == "keys" else run.rotate_htpasswd
    result = rotate(config, parse_now(args.now), force=args.force, dry_run=args.dry_run, users=args.user)
    return (1 if result["summary"]["errors"] else 0), result


def add_parser(sub: argparse._SubParsersAction) -> None:
    rotate = sub.add_parser("rotate", help="rotate CI access keys (Secrets Manager) and htpasswd passwords")
    rotate_sub = rotate.add_subparsers(dest="rotate_command", required=True)
    for kind, help_text in (
        ("keys", "the access keys of rotation.service_accounts (IAM user -> secret)"),
        ("htpasswd", "the passwords of rotation.htpasswd users (htpasswd file -> secret)"),
    ):
        p = rotate_sub.add_parser(kind, help=help_text, description=__doc__)
        p.add_argument("--config", help=CONFIG_HELP)
        p.add_argument("--dry-run", action="store_true", help="print the steps it would take; change nothing")
        p.add_argument(
            "--force",
            action="store_true",
            help="rotate even a credential younger than rotation.min_age_days",
        )
        p.add_argument(
            "--user", action="append", help="only this account (IAM or htpasswd user name); repeatable"
        )
        p.add_argument("--now", help="ISO-8601 time grace periods and ages are measured at (default: now)")
        p.set_defaults(func=lambda a, kind=kind: _run(a, kind))
