"""``registry-ops archive``: ``verify`` the retention archive (catalogs, packs, blobs, digest
index), ``reindex`` (rebuild the digest index from the catalogs) and ``list`` what it holds."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import Config
from .options import CONFIG_HELP, with_s3


def _with_store(func: Any) -> Any:
    """Run ``func(args, config, store)`` over the archive (S3 errors as :func:`options.with_s3`)."""

    @with_s3
    def run(args: argparse.Namespace, config: Config, s3: Any) -> tuple[int, Any]:
        from ..retention.archive import ArchiveStore

        return func(args, config, ArchiveStore(s3, config.storage.bucket, config.storage.prefixes.archive))

    return run


@_with_store
def run_verify(args: argparse.Namespace, config: Config, store: Any) -> tuple[int, dict]:
    from ..retention.archive_verify import verify_archive

    summary = verify_archive(store, args.registry, args.repository)
    if (args.registry or args.repository) and not summary["catalogs"]:
        where = "/".join(p for p in (args.registry, args.repository) if p)
        raise ValueError(f"no archive catalogs for {where} under {store.url(store.catalog_prefix())}")
    for d in summary["damaged"]:
        print(f"damaged: {d['problem']} ({len(d['images_affected'])} images affected)", file=sys.stderr)
    return (1 if summary["damaged"] else 0), summary


@_with_store
def run_reindex(args: argparse.Namespace, config: Config, store: Any) -> tuple[int, dict]:
    result = store.reindex()
    for problem in [*result["damaged_catalogs"].values(), *result["left_pending"].values()]:
        print(f"not indexed: {problem}", file=sys.stderr)
    return (1 if result["damaged_catalogs"] or result["left_pending"] else 0), result


@_with_store
def run_list(args: argparse.Namespace, config: Config, store: Any) -> tuple[int, list]:
    from ..retention.jobs import recent_archives

    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, not {args.limit}")
    return 0, recent_archives(config, args.registry, args.repository, args.limit)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="the retention archive: verify it, rebuild its index, list it")
    asub = p.add_subparsers(dest="archive_command", required=True)
    verify = asub.add_parser(
        "verify", help="check every catalog, pack, blob and the digest index; exit 1 when damaged"
    )
    listing = asub.add_parser("list", help="the newest archived images (what a restore can bring back)")
    for q in (verify, listing):
        q.add_argument("--registry", help="only this registry's archives")
        q.add_argument("--repository", help="only this repository's archives")
    listing.add_argument("--limit", type=int, default=20, help="at most this many images (default 20)")
    reindex = asub.add_parser("reindex", help="rebuild the digest index from the catalogs")
    for q in (verify, listing, reindex):
        q.add_argument("--config", help=CONFIG_HELP)
    verify.set_defaults(func=run_verify)
    listing.set_defaults(func=run_list)
    reindex.set_defaults(func=run_reindex)
