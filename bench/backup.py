"""Backup bench: the first backup of an ECR fleet and the unchanged second one, on moto.

Run from the repository root (not a pytest test)::

    .venv/bin/python bench/backup.py                  # 30 repositories x ~1,500 images
    .venv/bin/python bench/backup.py --quick          # 4 repositories x ~300 images
    .venv/bin/python bench/backup.py --repositories 10 --images 500 --mode metadata

What it does, on a moto server started here (ECR with AWS-like paging and layer downloads, S3):

1. seeds the fleet (``make_fleet``, tiny ``layer_scale``; ``seed_ecr`` with layers held);
2. backs it up (``run_backup``; ``--mode``, default ``full``: manifests and configs in packs,
   every layer as a blob), timed, counting S3 requests and ECR requests by operation;
3. backs it up again, unchanged, one day later (``auto``: a metadata snapshot): the goal is two
   PUTs (the snapshot's manifest and the ``latest`` pointer) and no manifest read;
4. runs every phase in :data:`PHASES` after those two (``verify`` by default: every object read
   back and hashed). **Hook**: restore timing (RTO, manifests per second) is added by appending a
   phase ``(name, function)``; the function gets the :class:`Bench` (config, S3 client, ECR
   adapter, fleet, summaries, counters) and returns rows to print.

Printed against the least possible requests, as ratios:

- S3 PUTs of the first backup vs ``distinct layers (full) + 1 pack + 1 catalog + 2``;
- S3 PUTs of the second vs 2;
- ECR requests vs the listing the backup cannot avoid (``describe_repositories`` pages; per
  repository ``describe_repositories`` + 3 settings reads and ``list_images`` pages; 4 registry
  settings reads) plus, on the first run, ``ceil(n/100)`` ``batch_get_image`` and one
  ``get_download_url_for_layer`` per distinct blob stored (configs; layers in full mode).

Every figure is measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any

import _local
from _report import S3Counter, ceil_div, note, out, row, title

ROOT = _local.prepare()


from devstack.fleet import make_fleet  # noqa: E402
from devstack.moto_ecr_extras import enable_pull_through_cache_rules  # noqa: E402
from devstack.seed import seed_ecr  # noqa: E402
from devstack.services import MotoService  # noqa: E402
from include.registry_ops.backup.run import run_backup  # noqa: E402
from include.registry_ops.backup.store import SnapshotStore  # noqa: E402
from include.registry_ops.backup.verify import verify_snapshot  # noqa: E402
from include.registry_ops.config import parse_config  # noqa: E402
from include.registry_ops.registries.ecr import BATCH, PAGE, EcrRegistry  # noqa: E402

REGION = "us-east-1"
BUCKET = "backup-bench"
NOW = datetime(2026, 11, 27, 2, tzinfo=UTC)


def ratio(actual: int, least: int) -> str:
    return f"{actual / least:.2f}x" if least else "-"


@dataclass
class Bench:
    """What a phase gets: the set-up and what the backups did."""

    config: Any
    s3: Any
    ecr: EcrRegistry
    fleet: list[Any]
    s3_counts: S3Counter
    summaries: list[dict[str, Any]] = field(default_factory=list)


def phase_verify(bench: Bench) -> list[tuple[str, Any, str]]:
    t = time.perf_counter()
    result = verify_snapshot(SnapshotStore.from_config(bench.config, bench.s3))
    seconds = time.perf_counter() - t
    gets = bench.s3_counts.take().get("GetObject", 0)
    return [
        ("verify: wall time (s)", f"{seconds:.1f}", "every object of the snapshot read back and hashed"),
        ("verify: objects / GETs", f"{result['objects']:,} / {gets:,}", "ok" if result["ok"] else "DAMAGED"),
        ("verify: MiB read", f"{result['bytes_read'] / 2**20:.1f}", ""),
    ]


def phase_restore(bench: Bench) -> list[tuple[str, Any, str]]:
    """The latest snapshot restored whole into an empty OCI layout: the RTO of this fleet, its
    manifests per second, and the S3 reads against the least (each object the snapshot needs read
    once: the pointer, the snapshot manifest, the catalog, every pack and every layer blob)."""
    from include.registry_ops.backup.restore import restore_registry

    store = SnapshotStore.from_config(bench.config, bench.s3)
    snapshot = store.resolve("latest")
    needed = len(snapshot.get("objects") or {})
    bench.s3_counts.take()
    t = time.perf_counter()
    summary = restore_registry(
        bench.config, bench.s3, "latest", "restore-layout", source_registry="ecr-bench"
    )
    seconds = time.perf_counter() - t
    calls = bench.s3_counts.take()
    gets = calls.get("GetObject", 0)
    least = needed + 2
    manifests = summary["manifests"]
    return [
        ("restore: wall time = RTO (s)", f"{seconds:.1f}", f"snapshot {snapshot['snapshot']} into a layout"),
        ("restore: manifests / per second", f"{manifests:,} / {manifests / seconds:,.0f}", ""),
        ("restore: blobs written / bytes", f"{summary['blobs']:,} / {summary['bytes']:,}", ""),
        ("restore: S3 GETs (least)", f"{gets:,} ({least:,})", ratio(gets, least)),
        ("restore: failures", len(summary["failures"]), "goal 0"),
    ]


# name -> function(Bench) -> rows
PHASES: list[tuple[str, Callable[[Bench], list[tuple[str, Any, str]]]]] = [
    ("verify", phase_verify),
    ("restore", phase_restore),
]


def ecr_client(endpoint: str) -> Any:
    return _local.ecr_client(endpoint, REGION)


def least_ecr(per_repo: dict[str, int], blobs: int, first: bool) -> int:
    """ECR API requests no backup can avoid: the listings and settings reads; the first run also
    reads every manifest (100 a ``batch_get_image``) and asks a download URL for every distinct
    blob it stores (configs; layers too in full mode). The downloads themselves go to the URLs."""
    listing = ceil_div(len(per_repo), PAGE) + sum(1 + 3 + ceil_div(n, PAGE) for n in per_repo.values())
    registry = 4  # registry policy, replication, scanning, pull-through cache rules
    reads = sum(ceil_div(n, BATCH) for n in per_repo.values()) + blobs if first else 0
    return listing + registry + reads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 repositories x ~300 images")
    parser.add_argument("--repositories", type=int, default=30)
    parser.add_argument("--images", type=int, default=1500, help="images per repository (about)")
    parser.add_argument(
        "--mode", choices=("full", "metadata"), default="full", help="the first backup's mode"
    )
    parser.add_argument("--workers", type=int, default=8, help="backup.workers")
    args = parser.parse_args(argv)
    repos, per_repo = (4, 300) if args.quick else (args.repositories, args.images)

    title("registry-ops backup bench" + ("  (--quick)" if args.quick else ""))
    row("date (UTC)", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
    row("nproc (usable CPUs)", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?")
    row("python", platform.python_version())
    for pkg in ("moto", "boto3"):
        row(pkg, metadata.version(pkg))
    out(f"  fleet: {repos} repositories x ~{per_repo} images (make_fleet seed=7, layer_scale=0.0001)")
    out(f"  first backup: {args.mode}; second: auto one day later (metadata); workers {args.workers}")

    enable_pull_through_cache_rules()  # moto 5 lacks them (test-only shim, devstack/moto_ecr_extras.py)
    moto = MotoService().start()
    try:
        note(f"seeding {repos} x ~{per_repo} ...")
        fleet = make_fleet(
            seed=7, repositories=repos, images=repos * per_repo, layer_scale=0.0001, prefix="bench/"
        )
        seed_ecr(ecr_client(moto.endpoint), fleet, REGION)
        images = sum(len(r.manifests) for r in fleet)
        layers = {b.digest for r in fleet for m in r.manifests for b in m.blobs[1:]}
        configs = {m.blobs[0].digest for r in fleet for m in r.manifests if m.blobs}
        s3 = _local.s3_client(moto.endpoint, REGION)
        s3.create_bucket(Bucket=BUCKET)
        config = parse_config(
            {
                "registries": [
                    {"name": "ecr-bench", "kind": "ecr", "conn_id": "aws_default"},
                    # where the restore phase puts the snapshot back (a disk: what is timed is
                    # the store side and the restore's own work, not a registry's writes)
                    {"name": "restore-layout", "kind": "ocilayout", "path": tempfile.mkdtemp(prefix="rb-")},
                ],
                "storage": {"bucket": BUCKET},
                "backup": {"workers": args.workers, "registries": ["ecr-bench"]},
            },
            "bench",
        )
        counts = S3Counter(s3)
        ecr = EcrRegistry("ecr-bench", ecr_client(moto.endpoint))
        bench = Bench(config, s3, ecr, fleet, counts)
        per = {r.name: len(r.manifests) for r in fleet}

        runs = [
            ("first backup", NOW, args.mode),
            ("unchanged second backup", NOW + timedelta(days=1), "auto"),
        ]
        for label, when, mode in runs:
            note(f"{label} ...")
            ecr.requests.counts.clear()
            t = time.perf_counter()
            summary = run_backup(config, s3, {"ecr-bench": ecr}, when, mode)
            seconds = time.perf_counter() - t
            s3_ops = counts.take()
            first = not bench.summaries
            bench.summaries.append(summary)
            full = summary["mode"] == "full"
            least_puts = (len(layers) if full and first else 0) + (2 + 2 if first else 2)
            stored_blobs = len(configs) + (len(layers) if full else 0)
            least_regs = least_ecr(per, stored_blobs, first)
            title(f"{label}: {summary['mode']} snapshot {summary['snapshot']}")
            row("images (manifests) in the fleet", f"{images:,}")
            row("manifests / blobs in the snapshot", f"{summary['manifests']:,} / {summary['blobs']:,}")
            row("distinct layers / configs", f"{len(layers):,} / {len(configs):,}")
            row("failures", len(summary["failures"]), "; ".join(list(summary["failures"])[:3]))
            row("latest", summary["latest"])
            row("wall time (s)", f"{seconds:.1f}", f"{images / seconds:,.0f} images/s")
            row("manifests read from ECR", f"{summary['manifests_read']:,}")
            row(
                "uploaded objects / MiB",
                f"{summary['uploaded_objects']:,} / {summary['uploaded_bytes'] / 2**20:.1f}",
            )
            row(
                "S3 PUTs (summary['puts'])",
                f"{summary['puts']:,}",
                f"hook counted {s3_ops.get('PutObject', 0):,}",
            )
            row(
                "S3 PUTs, least possible",
                f"{least_puts:,}",
                "layers (full, first) + pack + catalog + manifest + pointer",
            )
            row("S3 PUTs / least", ratio(summary["puts"], least_puts))
            row(
                "S3 requests, all",
                f"{sum(s3_ops.values()):,}",
                ", ".join(f"{k} {v:,}" for k, v in s3_ops.most_common()),
            )
            row(
                "ECR requests",
                f"{ecr.requests.total:,}",
                ", ".join(f"{k} {v:,}" for k, v in ecr.requests.counts.most_common(6)),
            )
            row(
                "ECR requests, least possible",
                f"{least_regs:,}",
                "listings + settings (+ every manifest and config once)",
            )
            row("ECR requests / least", ratio(ecr.requests.total, least_regs))
            note(f"{label}: {seconds:.1f}s, {summary['puts']} PUTs")
        for name, phase in PHASES:
            note(f"{name} ...")
            counts.take()
            title(name)
            for label, value, comment in phase(bench):
                row(label, value, comment)
        second = bench.summaries[-1]
        ok = second["puts"] == 2 and second["manifests_read"] == 0 and second["latest"]
        out()
        verdict = "MET" if ok else "MISSED"
        out(f"  goal (the unchanged second run PUTs only its manifest and pointer): {verdict}")
        return 0 if ok and not any(s["failures"] for s in bench.summaries) else 1
    finally:
        moto.stop()


if __name__ == "__main__":
    sys.exit(main())
