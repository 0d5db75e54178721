"""``registry-ops inventory``: the inventory DAG's listing, outside Airflow."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from ..config import Config, load_config
from ..registries.base import Registry
from .options import CONFIG_HELP


def run(args: argparse.Namespace) -> tuple[int, dict]:
    from ..clients import build_registry
    from ..inventory import run_inventory, summarize
    from ..inventory_files import file_format, write_inventory

    file_format(args.out)  # refuse an unknown extension before listing anything
    config = load_config(args.config)
    if args.registry:
        for name in args.registry:
            config.registry(name)
        config = config.model_copy(
            update={"registries": [r for r in config.registries if r.name in args.registry]}
        )
    now = datetime.now(UTC)
    modes: dict[str, str] = {}
    prepare = _incremental(config, now, modes) if args.incremental else None
    listing = run_inventory(config, build_registry, now, prepare)
    write_inventory(listing.table, args.out)
    summary = summarize(listing.table)
    summary.update(out=str(args.out), repositories=listing.repositories, errors=listing.errors)
    if args.incremental:
        summary["listing"] = modes
    for err in listing.errors:
        print(f"error: registry {err['registry']}/{err['repository']}: {err['error']}", file=sys.stderr)
    return (1 if listing.errors else 0), summary


def _incremental(
    config: Config, now: datetime, modes: dict[str, str]
) -> Callable[[Registry, list[str]], None]:
    """Give each OCI registry the latest snapshot's cache, as the DAG does (read only: the
    command publishes nothing, so the cache stays the DAG's)."""
    from ..inventory_cache import attach, listing_mode
    from ..store.clients import s3_client

    s3 = s3_client(config)

    def give(registry: Registry, repositories: list[str]) -> None:
        mode = listing_mode(config, s3, registry.name, now)
        modes[registry.name] = mode["why"]
        attach(registry, s3, config.storage.bucket, mode, repositories)

    return give


def add_parser(sub: argparse._SubParsersAction) -> None:
    inv = sub.add_parser("inventory", help="list every image of every configured registry")
    inv.add_argument("--config", help=CONFIG_HELP)
    inv.add_argument("--out", required=True, help="output file: .parquet, .csv or .json")
    inv.add_argument("--registry", action="append", help="only this registry (repeatable)")
    inv.add_argument(
        "--incremental",
        action="store_true",
        help="OCI registries: use the latest snapshot's cache (one HEAD per known tag, a GET only for "
        "new digests), unless a full listing is due; without it every manifest and config is read",
    )
    inv.set_defaults(func=run)
