"""Retention apply bench: "keep the newest 10" on moto, archiving every expired image.

Run from the repository root (not a pytest test)::

    .venv/bin/python bench/retention_apply.py            # 50 repositories x ~1,000 images
    .venv/bin/python bench/retention_apply.py --quick    # 5 repositories x ~1,000 images

What it does, all on a moto server started here (ECR with AWS-like paging, and S3):

1. seeds the fleet (``make_fleet`` with a tiny ``layer_scale``; ``seed_ecr``);
2. lists it (``EcrRegistry``: ``describe_repositories``, ``describe_images``) and plans it with
   the real planner (one policy: ``imageCountMoreThan 10``, expire, enabled, nothing protected);
3. applies the plan with the real executor (fresh look and archive from the same
   ``batch_get_image`` reads, archive packs to S3 with read-back verification,
   ``batch_delete_image``; caps lifted for the bench), and checks the result;
4. unless ``--no-baseline``: seeds a second copy of the fleet and times the same listing and
   planning followed by bare deletes (no fresh look, no archive): the "without archive" peer.

Printed: ECR requests by operation against the least the brief counts (1 ``describe_repositories``
page, ceil(n/1000) ``describe_images`` per repository, ceil(n/100) ``batch_get_image`` and
ceil(n/100) ``batch_delete_image`` per repository for its n expired images), S3 requests by
operation against the unique digests archived, and wall times. Every figure is measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import _local
from _report import S3Counter, ceil_div, note, out, row, title

ROOT = _local.prepare()

import boto3  # noqa: E402
import pandas as pd  # noqa: E402
from botocore.config import Config as BotoConfig  # noqa: E402

from devstack.fleet import make_fleet  # noqa: E402
from devstack.seed import seed_ecr  # noqa: E402
from devstack.services import MotoService  # noqa: E402
from include.registry_ops import schema  # noqa: E402
from include.registry_ops.clients import RETRIES  # noqa: E402
from include.registry_ops.inventory import list_batch  # noqa: E402
from include.registry_ops.registries.ecr import BATCH, PAGE, EcrRegistry  # noqa: E402
from include.registry_ops.retention.archive import ArchiveStore  # noqa: E402
from include.registry_ops.retention.executor import Limits, RunContext, execute  # noqa: E402
from include.registry_ops.retention.planner import plan as make_plan  # noqa: E402
from include.registry_ops.retention.policy import parse_policies  # noqa: E402

REGION = "us-east-1"
BUCKET = "retention-bench"
NOW = datetime(2026, 11, 27, tzinfo=UTC)
KEEP = 10
POLICY = {
    "policies": [
        {
            "name": "keep-newest-10",
            "enabled": True,
            "protect_tags": [],
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"keep the newest {KEEP}",
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEEP},
                    "action": {"type": "expire"},
                }
            ],
        }
    ]
}


def ops_table(counts: Counter[str], least: dict[str, int], comments: dict[str, str]) -> None:
    """Requests by operation; with ``least``, the least per operation beside them."""
    head = f"{'least':>8}   " if least else ""
    out(f"  {'requests by operation':<50} {'actual':>14}   {head}note")
    for op in sorted(set(counts) | set(least), key=lambda o: (-counts.get(o, 0), o)):
        lo = (f"{least[op]:,}" if op in least else "").rjust(8) + "   " if least else ""
        out(f"    {op:<48} {counts.get(op, 0):>14,}   {lo}{comments.get(op, '')}")
    total = f"   {sum(least.values()):>8,}" if least else ""
    out(f"    {'total':<48} {sum(counts.values()):>14,}{total}")


def ecr_client(endpoint: str) -> Any:
    return boto3.client(
        "ecr",
        endpoint_url=endpoint,
        region_name=REGION,
        config=BotoConfig(retries=RETRIES, max_pool_connections=32),
    )


def list_and_plan(reg: EcrRegistry, policies: Any) -> tuple[pd.DataFrame, float, float]:
    t0 = time.perf_counter()
    repos = reg.list_repositories()
    inventory = schema.table_to_frame(list_batch(reg, repos, NOW).table)
    t1 = time.perf_counter()
    planned = make_plan(inventory, policies, NOW)
    return planned, t1 - t0, time.perf_counter() - t1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 repositories instead of 50")
    parser.add_argument("--no-baseline", action="store_true", help="skip the delete-only baseline")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="repositories applied in parallel (default 1: moto runs in this process, so more threads "
        "only contend for the GIL here; against real registries parallel repositories help)",
    )
    args = parser.parse_args(argv)
    repos, per_repo = (5, 996) if args.quick else (50, 996)  # 996: make_fleet overshoots by <= 4

    title("registry-ops retention apply bench" + ("  (--quick)" if args.quick else ""))
    row("date (UTC)", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
    row("nproc (usable CPUs)", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?")
    row("python", platform.python_version())
    for pkg in ("moto", "boto3", "pandas", "pyarrow"):
        row(pkg, metadata.version(pkg))
    out(f"  fleet: {repos} repositories x ~{per_repo} images (make_fleet seed=7, layer_scale=0.0001);")
    out(f"  policy: keep the newest {KEEP} (imageCountMoreThan {KEEP}, expire);")
    out(f"  repositories applied {args.workers} at a time")

    moto = MotoService().start()
    try:
        policies = parse_policies(POLICY)
        note(f"seeding {repos} x ~{per_repo} ...")
        fleet = make_fleet(
            seed=7, repositories=repos, images=repos * per_repo, layer_scale=0.0001, prefix="bench/"
        )
        t = time.perf_counter()
        seeded = seed_ecr(ecr_client(moto.endpoint), fleet, REGION)
        t_seed = time.perf_counter() - t
        del fleet

        note("listing and planning ...")
        list_reg = EcrRegistry("ecr-bench", ecr_client(moto.endpoint))
        planned, t_list, t_plan = list_and_plan(list_reg, policies)
        expire = planned[planned["action"] == "expire"]
        n_by_repo = planned.groupby("repository").size()
        x_by_repo = expire.groupby("repository").size()
        kinds = Counter(expire["kind"])

        s3 = boto3.client(
            "s3",
            endpoint_url=moto.endpoint,
            region_name=REGION,
            config=BotoConfig(retries=RETRIES, max_pool_connections=32, s3={"addressing_style": "path"}),
        )
        s3.create_bucket(Bucket=BUCKET)
        s3_counts = S3Counter(s3)
        apply_reg = EcrRegistry("ecr-bench", ecr_client(moto.endpoint))
        run = RunContext(
            s3=s3,
            bucket=BUCKET,
            store=ArchiveStore(s3, BUCKET, "archive/"),
            run_id="bench",
            now=NOW,
            dry_run=False,
        )
        note(f"applying: {len(expire):,} images to archive and delete ...")
        t = time.perf_counter()
        results = execute(
            planned,
            run,
            lambda _: apply_reg,
            limits=Limits(max_deletions_per_run=10**9, max_fraction=1.0),
            policies=policies,
            workers=args.workers,
        )
        t_apply = time.perf_counter() - t
        ecr_counts = Counter(list_reg.requests.counts)
        listing_counts = Counter(ecr_counts)
        ecr_counts += Counter(apply_reg.requests.counts)
        s3_apply = Counter(s3_counts.counts)

        # check the outcome: every expired image deleted and archived, every kept one still there
        status = Counter(r["status"] for r in results)
        deleted = sum(r["deleted"] + r["already_deleted"] for r in results)
        check_reg = EcrRegistry("ecr-bench", ecr_client(moto.endpoint))
        left = {r: len(check_reg.describe(r)) for r in n_by_repo.index}
        keep_by_repo = n_by_repo - x_by_repo.reindex(n_by_repo.index, fill_value=0)
        wrong = [r for r in left if left[r] != keep_by_repo[r]]
        catalogs = run.store.catalog_keys("ecr-bench")
        archived = sum(len(run.store.read_catalog(k)["images"]) for k in catalogs)
        packs = {run.store.read_catalog(k)["pack"] for k in catalogs}
        unique_digests = expire["digest"].nunique()

        scope = f"{len(n_by_repo)} repositories, {len(planned):,} images, {len(expire):,} expired"
        title(f"1. apply on moto: {scope}")
        row("seeding (seed_ecr into moto's backend)", f"{t_seed:,.2f} s", f"{seeded:,} images")
        row("listing (describe_repositories + describe_images)", f"{t_list:,.2f} s")
        row("planning (planner.plan)", f"{t_plan:,.2f} s")
        row(
            "apply (fresh look + archive + verify + delete)",
            f"{t_apply:,.2f} s",
            f"{len(expire) / t_apply:,.0f} images/s",
        )
        row("list + plan + apply", f"{t_list + t_plan + t_apply:,.2f} s")
        row("expired by kind", "", ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())))
        row("repositories by status", "", ", ".join(f"{k} {v}" for k, v in sorted(status.items())))
        row(
            "images deleted / planned",
            f"{deleted:,} / {len(expire):,}",
            "OK" if deleted == len(expire) else "MISMATCH",
        )
        row(
            "images archived (catalog entries)",
            f"{archived:,}",
            f"{len(catalogs)} catalogs, {len(packs)} packs",
        )
        row(
            "repositories left with exactly the kept images",
            f"{len(left) - len(wrong)} / {len(left)}",
            "OK" if not wrong else "MISMATCH: " + ", ".join(wrong[:3]),
        )

        title("2. ECR requests: listing + apply, against the least the brief counts")
        counts = ecr_counts
        least = {
            "DescribeRepositories": max(1, ceil_div(len(n_by_repo), PAGE)),
            "DescribeImages": sum(ceil_div(int(n), PAGE) for n in n_by_repo),
            "BatchGetImage": sum(ceil_div(int(n), BATCH) for n in x_by_repo),
            "BatchDeleteImage": sum(ceil_div(int(n), BATCH) for n in x_by_repo),
        }
        index_reads = listing_counts.get("BatchGetImage", 0)
        ops_table(
            counts,
            least,
            {
                "DescribeImages": "the inventory listing",
                "ListImages": "none: the fresh look rides on the archive's BatchGetImage reads",
                "BatchGetImage": f"incl. {index_reads:,} by the inventory listing (manifests of indexes)",
                "BatchDeleteImage": f"{BATCH} ids per call",
            },
        )
        actual = sum(counts.values())
        row("actual / least", f"{actual / sum(least.values()):.3f}")
        extra = actual - sum(least.values())
        row(
            "requests over the least",
            f"{extra:,}",
            "the listing's index reads (children must be linked to their indexes before planning)",
        )

        title("3. S3 requests against the unique digests archived")
        ops_table(
            s3_apply,
            {},
            {
                "PutObject": "packs + catalogs (write-once) + journal checkpoints + audit files",
                "GetObject": "read-back of packs and catalogs + journal loads",
            },
        )
        s3_total = sum(s3_apply.values())
        row("unique digests archived (expired images)", f"{unique_digests:,}")
        row(
            "S3 requests per unique digest",
            f"{s3_total / unique_digests:.4f}",
            "one object per digest would need >= 2 (write + read-back) plus metadata",
        )
        row("S3 requests per repository", f"{s3_total / len(x_by_repo):.1f}")

        if not args.no_baseline:
            note("baseline: a second fleet, listing + planning + bare deletes (no archive) ...")
            fleet = make_fleet(
                seed=7, repositories=repos, images=repos * per_repo, layer_scale=0.0001, prefix="base/"
            )
            seed_ecr(ecr_client(moto.endpoint), fleet, REGION)
            del fleet
            base_reg = EcrRegistry("ecr-base", ecr_client(moto.endpoint))
            t0 = time.perf_counter()
            base_plan, _, _ = list_and_plan(base_reg, policies)
            base_expire = base_plan[base_plan["action"] == "expire"]
            for repo, rows in base_expire.groupby("repository"):
                kinds_first = rows.sort_values("kind", key=lambda k: k.map({"index": 0}).fillna(1))
                base_reg.delete_images(repo, kinds_first["digest"].tolist())
            t_base = time.perf_counter() - t0
            ours = t_list + t_plan + t_apply
            title("4. against a delete-only run (no fresh look, no archive), same machine, same fleet")
            row("delete-only: list + plan + delete", f"{t_base:,.2f} s", f"{len(base_expire):,} deleted")
            row("ours: list + plan + apply (archiving everything)", f"{ours:,.2f} s")
            row("ours / delete-only", f"{ours / t_base:.2f}x", "goal: within 2x")
    finally:
        moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
