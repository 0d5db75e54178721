"""Options several subcommands share, written once: ``--config``'s help, ``--now``'s parser and
the S3 error handling of the subcommands that work on the bucket."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Config

CONFIG_HELP = "config file (default: $REGISTRY_OPS_CONFIG or config/registry-ops.yaml)"


def parse_now(text: str | None) -> datetime:
    """``--now``: ISO-8601 (``Z`` or an offset; naive means UTC); default: the current time."""
    if not text:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--now: not an ISO-8601 date/time: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def with_s3(
    func: Callable[[argparse.Namespace, Config, Any], tuple[int, Any]],
) -> Callable[..., tuple[int, Any]]:
    """A subcommand run as ``func(args, config, s3)`` with the storage connection's S3 client;
    S3 failures become a clear error: a missing bucket is the user's (exit 2, via ValueError),
    the rest exit 1 with the reason."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> tuple[int, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        from ..clients import s3_client
        from ..config import load_config
        from ..registries.ecr import aws_problem
        from ..store.objects import error_code

        config = load_config(args.config)
        bucket = config.storage.bucket
        try:
            return func(args, config, s3_client(config))
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and error_code(exc) == "NoSuchBucket":
                raise ValueError(f"{config.source}: storage.bucket {bucket!r} does not exist") from None
            print(f"error: S3 bucket {bucket}: {aws_problem(exc)}", file=sys.stderr)
            return 1, {"error": f"S3 bucket {bucket}: {aws_problem(exc)}"}

    return run


def text_table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """Rows as aligned text columns (the ``--format table`` of every subcommand); None is ``-``."""
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    widths[-1] = 0  # the last column is not padded
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()  # noqa: E731
    return [line(columns), *(line(row) for row in cells)]


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)
