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
from typing import Any

from .config import ConfigError

log = logging.getLogger(__name__)

# Subcommand modules under ``commands/``; each present one adds its parsers.
COMMANDS = (
    "archive",
    "audit",
    "backup",
    "drill",
    "health",
    "init",
    "inventory",
    "restore",
    "restore_registry",
    "report",
    "retention",
    "rotate",
    "scan",
    "tag",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="registry-ops", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log progress to stderr (-v: a line per repository; -vv: per image, with the audit records)",
    )
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


# Loggers whose level -v sets: ours, and Airflow's (its hooks log at INFO on every connection).
LOGGERS = ("", "airflow", "include.registry_ops", "botocore", "urllib3")


def _structlog_levels() -> list[Any]:
    """Airflow's per-logger level tables for its structlog loggers (one per vendored copy)."""
    names = ("airflow._shared.logging.structlog", "airflow.sdk._shared.logging.structlog")
    return [
        m.PER_LOGGER_LEVELS for n in names if (m := sys.modules.get(n)) and hasattr(m, "PER_LOGGER_LEVELS")
    ]


@contextlib.contextmanager
def configured_logging(verbosity: int) -> Iterator[None]:
    """:func:`configure_logging` for the command's duration, then the previous levels and streams
    back (``main`` also runs in-process, e.g. from tests: it must not leave the process's logging
    at WARNING behind it)."""
    with contextlib.suppress(ImportError):
        import airflow  # noqa: F401  (its set-up at import must be in what is put back)
    root = logging.getLogger()
    before = {name: logging.getLogger(name).level for name in LOGGERS}
    handlers = [(h, h.level, getattr(h, "stream", None)) for h in root.handlers]
    structlog_before = {id(t): (t, t.get("")) for t in _structlog_levels()}
    configure_logging(verbosity)
    try:
        yield
    finally:
        for table, level in structlog_before.values():
            if level is not None:
                table[""] = level
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
        for handler in root.handlers[:]:  # basicConfig's, bound to this command's stderr
            if all(handler is not h for h, _, _ in handlers):
                root.removeHandler(handler)
        for handler, level, stream in handlers:
            handler.setLevel(level)
            if stream is not None and isinstance(handler, logging.StreamHandler):
                handler.setStream(stream)


def configure_logging(verbosity: int) -> None:
    """WARNING by default, INFO with -v, DEBUG with -vv, whatever Airflow configured.

    Importing Airflow installs its own logging set-up (root at INFO on stdout), which made
    ``logging.basicConfig`` a no-op and ``-v`` meaningless: so Airflow is imported first and the
    levels are set on top of its configuration, handlers included.
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    with contextlib.suppress(ImportError):
        import airflow  # noqa: F401  (its logging set-up runs at import: ours must come after)
    for table in _structlog_levels():  # Airflow's structlog loggers (its hooks) filter by these
        table[""] = level
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for name in LOGGERS:
        logging.getLogger(name).setLevel(level)
    for handler in root.handlers:
        handler.setLevel(level)
        # stdout carries only the command's result: a handler Airflow pointed at stdout goes to stderr
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
            sys.stdout,
            sys.__stdout__,
        ):
            handler.setStream(sys.stderr)
    if verbosity < 2:  # botocore and urllib3 are chatty at DEBUG and never useful at INFO
        logging.getLogger("botocore").setLevel(max(level, logging.WARNING))
        logging.getLogger("urllib3").setLevel(max(level, logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with configured_logging(args.verbose), _logs_to_stderr():
            code, result = args.func(args)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result if isinstance(result, str) else json.dumps(result, indent=2, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
