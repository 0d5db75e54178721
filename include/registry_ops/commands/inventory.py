"""``registry-ops inventory``: the inventory DAG's listing, outside Airflow."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from ..config import load_config
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
    listing = run_inventory(config, build_registry, datetime.now(UTC))
    write_inventory(listing.table, args.out)
    summary = summarize(listing.table)
    summary.update(out=str(args.out), repositories=listing.repositories, errors=listing.errors)
    for err in listing.errors:
        print(f"error: registry {err['registry']}/{err['repository']}: {err['error']}", file=sys.stderr)
    return (1 if listing.errors else 0), summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    inv = sub.add_parser("inventory", help="list every image of every configured registry")
    inv.add_argument("--config", help=CONFIG_HELP)
    inv.add_argument("--out", required=True, help="output file: .parquet, .csv or .json")
    inv.add_argument("--registry", action="append", help="only this registry (repeatable)")
    inv.set_defaults(func=run)
