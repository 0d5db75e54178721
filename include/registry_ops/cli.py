"""The ``registry-ops`` command line: the DAGs' operations, outside Airflow.

Credentials come from Airflow connections exactly as in the DAGs; outside a task Airflow
resolves them from ``AIRFLOW_CONN_<ID>`` environment variables or a configured secrets
backend (never from the metastore).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from .config import ConfigError, load_config

log = logging.getLogger("registry_ops")


def cmd_inventory(args: argparse.Namespace) -> tuple[int, dict]:
    from .clients import build_registry
    from .inventory import run_inventory, summarize
    from .inventory_files import file_format, write_inventory

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="registry-ops", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    inv = sub.add_parser("inventory", help="list every image of every configured registry")
    inv.add_argument(
        "--config", help="config file (default: $REGISTRY_OPS_CONFIG or config/registry-ops.yaml)"
    )
    inv.add_argument("--out", required=True, help="output file: .parquet, .csv or .json")
    inv.add_argument("--registry", action="append", help="only this registry (repeatable)")
    inv.set_defaults(func=cmd_inventory)
    return parser


@contextlib.contextmanager
def _logs_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr while working: Airflow's loggers write to stdout, and
    stdout must carry only the command's result (JSON) so it can be piped."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        with _logs_to_stderr():
            code, result = args.func(args)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
