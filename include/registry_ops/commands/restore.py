"""``registry-ops restore``: put an archived image back (same digest, bit for bit, its tags),
into the registry it was archived from or, with ``--to-registry``, into another configured one
of any kind (an OCI image layout directory too)."""

from __future__ import annotations

import argparse
import sys

from ..config import load_config
from .options import CONFIG_HELP


def run(args: argparse.Namespace) -> tuple[int, dict]:
    from ..registries.base import RegistryError
    from ..retention import jobs
    from ..retention.archive import ArchiveError

    config = load_config(args.config)
    try:
        result = jobs.restore(
            config,
            registry=args.registry,
            repository=args.repository,
            digest=args.digest,
            tag=args.tag,
            to_registry=args.to_registry,
            to_repository=args.to_repository,
            move_tags=args.move_tags,
        )
    except (RegistryError, ArchiveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1, {"error": str(exc)}
    for tag, digest in result["tags_left_on_other_images"].items():
        print(f"note: tag {tag} now points at {digest}; left there (--move-tags moves it)", file=sys.stderr)
    return 0, result


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore an archived image (by digest, or repository and tag)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--digest", help="sha256:... of the archived image")
    what.add_argument("--tag", help="the newest archived image that had this tag (needs --repository)")
    p.add_argument("--registry", help="registry name from the config (default: wherever it was archived)")
    p.add_argument("--repository", help="repository it was archived from")
    p.add_argument(
        "--to-registry",
        help="restore into this configured registry instead (any kind, e.g. an ocilayout directory)",
    )
    p.add_argument("--to-repository", help="restore into this repository instead")
    p.add_argument("--move-tags", action="store_true", help="move tags that now point at other images")
    p.add_argument("--config", help=CONFIG_HELP)
    p.set_defaults(func=run)
