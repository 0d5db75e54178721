"""``registry-ops init``: create the storage bucket of the config, once.

Jobs never create buckets (a misspelt name would silently collect snapshots and archives);
this explicit, idempotent step does, so a new deployment states its bucket on purpose.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..config import load_config
from .options import CONFIG_HELP


def run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from .. import storage
    from ..clients import s3_client

    config = load_config(args.config)
    bucket = config.storage.bucket
    created = storage.ensure_bucket(s3_client(config), bucket)
    return 0, {"bucket": bucket, "created": created}


def add_parser(sub: argparse._SubParsersAction) -> None:
    init = sub.add_parser(
        "init",
        help="create the config's storage bucket (storage.bucket) if it does not exist",
        description="Create the S3 bucket named by storage.bucket, with the storage connection. "
        "Idempotent: prints {bucket, created}; created is false when it already existed.",
    )
    init.add_argument("--config", help=CONFIG_HELP)
    init.set_defaults(func=run)
