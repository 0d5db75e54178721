"""``registry-ops tag``: give one pushed digest the fleet's tags (version, commit, timestamp, latest)."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import load_config
from .options import CONFIG_HELP


def run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from ..clients import build_registry
    from ..registries.base import RegistryError
    from ..scan import retag

    config = load_config(args.config)
    registry = build_registry(config.registry(args.registry))
    try:
        result = retag.apply(
            registry,
            args.repository,
            args.source,
            commit=args.commit,
            version=args.version,
            timestamp=args.timestamp,
            latest=not args.no_latest,
            dry_run=args.dry_run,
        )
    except RegistryError as exc:
        return 1, {"error": str(exc)}
    return 0, result


def add_parser(sub: argparse._SubParsersAction) -> None:
    tag = sub.add_parser(
        "tag",
        help="tag a pushed image with version, commit, timestamp and latest (registry API, no daemon)",
        description="Put the manifest of SOURCE again under each tag of the scheme: --version (semver "
        "release), --commit (7-40 hex), a YYYYMMDD-HHMMSS timestamp (now unless given) and latest (only "
        "for a release at least as new as every release in the repository).",
    )
    tag.add_argument("--config", help=CONFIG_HELP)
    tag.add_argument("--registry", required=True, help="registry name from the config file")
    tag.add_argument("--repository", required=True)
    tag.add_argument("--source", required=True, help="the pushed image: a digest (sha256:...) or a tag")
    tag.add_argument("--commit", required=True, help="commit SHA, 7 to 40 lowercase hex characters")
    tag.add_argument("--version", help="semver version; omit for a CI build (commit + timestamp only)")
    tag.add_argument("--timestamp", help="YYYYMMDD-HHMMSS (default: now, UTC)")
    tag.add_argument("--no-latest", action="store_true", help="never move latest")
    tag.add_argument("--dry-run", action="store_true", help="show the tags without applying them")
    tag.set_defaults(func=run)
