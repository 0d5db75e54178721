"""The ``registry-ops`` command line: the DAGs' operations, outside Airflow.

Credentials come from Airflow connections exactly as in the DAGs; outside a task Airflow
resolves them from ``AIRFLOW_CONN_<ID>`` environment variables or a configured secrets
backend (never from the metastore).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from .config import ConfigError

log = logging.getLogger("registry_ops")

# Subcommand modules under ``commands/``; each present one adds its parsers.
COMMANDS = ("archive", "init", "inventory", "retention", "restore", "scan", "tag")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="registry-ops", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = f"{__package__}.commands.{name}"
        if importlib.util.find_spec(module):
            importlib.import_module(module).add_parser(sub)
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
    print(result if isinstance(result, str) else json.dumps(result, indent=2, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
