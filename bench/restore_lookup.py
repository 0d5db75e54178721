"""Restore-lookup bench: S3 requests to find an archived image by digest, with the digest index
and with the full catalog scan it replaces, at two archive sizes; and what the index adds to
archiving.

Run from the repository root (not a pytest test)::

    .venv/bin/python bench/restore_lookup.py                      # 5 repositories x ~1,000 images
    .venv/bin/python bench/restore_lookup.py --repositories 50    # the retention_apply fleet

All on a moto server started here. Each archive is written by the real path: a fleet seeded
into moto's ECR (``make_fleet``, ``seed_ecr``), listed and planned ("keep the newest 10") and
applied by the executor (archive packs + catalogs to S3, verified, then delete):

1. archiving: the fleet applied with packs of 1,000 into an archive whose (empty) index exists,
   S3 requests split into the index's (one delta per catalog) and the rest; then the compaction
   that merges the deltas (what the end of a retention run does); then a second fleet into the
   same archive, whose compaction also reads the shards it rewrites (the steady state);
2. lookups: two more fleets of 5 repositories, applied with packs of 495 and of 50 images
   (10 and 100 catalogs), compacted; per archive the S3 requests of ``find(digest=...)`` for
   sampled archived digests, against the full scan that ``find`` did before the index (list
   every catalog, read every catalog).

Every figure is measured by counting the requests the S3 client sends.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import _local
import _report
from _report import note, out, title

ROOT = _local.prepare()


from devstack.fleet import make_fleet  # noqa: E402
from devstack.seed import seed_ecr  # noqa: E402
from devstack.services import MotoService  # noqa: E402
from include.registry_ops import schema  # noqa: E402
from include.registry_ops.inventory import list_batch  # noqa: E402
from include.registry_ops.registries.ecr import EcrRegistry  # noqa: E402
from include.registry_ops.retention.archive import ArchiveStore  # noqa: E402
from include.registry_ops.retention.executor import Limits, RunContext, execute  # noqa: E402
from include.registry_ops.retention.planner import plan as make_plan  # noqa: E402
from include.registry_ops.retention.policy import parse_policies  # noqa: E402

REGION = "us-east-1"
BUCKET = "restore-lookup-bench"
NOW = datetime(2026, 11, 27, tzinfo=UTC)
SAMPLES = 20
POLICY = {
    "policies": [
        {
            "name": "keep-newest-10",
            "enabled": True,
            "protect_tags": [],
            "rules": [
                {
                    "rulePriority": 1,
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 10},
                    "action": {"type": "expire"},
                }
            ],
        }
    ]
}


def row(label: str, value: Any, comment: str = "") -> None:
    _report.row(label, value, comment, widths=(56, 12))


class S3Requests:
    """S3 requests by operation, and how many of them touched the digest index's objects."""

    def __init__(self, client: Any) -> None:
        self.ops: Counter[str] = Counter()
        self.index: Counter[str] = Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-parameter-build.s3.*", self._count)

    def _count(self, event_name: str, params: dict[str, Any], **_: Any) -> None:
        op = event_name.rsplit(".", 1)[-1]
        key = str(params.get("Key") or params.get("Prefix") or "")
        with self._lock:
            self.ops[op] += 1
            if "/index/" in key or key.endswith("index/"):
                self.index[op] += 1

    def take(self) -> tuple[Counter[str], Counter[str]]:
        with self._lock:
            got = (Counter(self.ops), Counter(self.index))
            self.ops.clear()
            self.index.clear()
        return got


def fmt(counts: Counter[str]) -> str:
    return ", ".join(f"{op} {n:,}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


def ecr_client(endpoint: str) -> Any:
    return _local.ecr_client(endpoint, REGION)


def archive_fleet(
    moto: MotoService, s3: Any, prefix: str, repos: int, batch: int, store: ArchiveStore
) -> int:
    """Seed a fleet, plan "keep the newest 10" and apply it into ``store``; returns images archived."""
    fleet = make_fleet(seed=7, repositories=repos, images=repos * 996, layer_scale=0.0001, prefix=prefix)
    seed_ecr(ecr_client(moto.endpoint), fleet, REGION)
    del fleet
    reg = EcrRegistry("ecr-bench", ecr_client(moto.endpoint))
    policies = parse_policies(POLICY)
    inventory = schema.table_to_frame(list_batch(reg, reg.list_repositories(), NOW).table)
    planned = make_plan(inventory, policies, NOW)
    planned = planned[planned["repository"].str.startswith(prefix)]
    run = RunContext(
        s3=s3,
        bucket=BUCKET,
        store=store,
        run_id=f"bench-{prefix}",
        now=NOW,
        dry_run=False,
        archive_batch=batch,
    )
    results = execute(
        planned,
        run,
        lambda _: reg,
        limits=Limits(max_deletions_per_run=10**9, max_fraction=1.0),
        policies=policies,
    )
    bad = [r["message"] for r in results if r["status"] != "done"]
    if bad:
        raise SystemExit(f"apply failed: {bad[:3]}")
    return int((planned["action"] == "expire").sum())


def lookups(store: ArchiveStore, counter: S3Requests, digests: list[str]) -> tuple[list[int], float]:
    counter.take()  # not what it took to choose the sample
    counts = []
    t = time.perf_counter()
    for digest in digests:
        hits = store.find(None, None, digest=digest)
        ops, _ = counter.take()
        if [h["digest"] for h in hits][:1] != [digest]:
            raise SystemExit(f"lookup of {digest} found {hits!r}")
        counts.append(sum(ops.values()))
    return counts, (time.perf_counter() - t) / len(digests)


def full_scan(store: ArchiveStore, counter: S3Requests, digest: str) -> tuple[int, float]:
    """What ``find(digest=...)`` did before the index: list every catalog, read every catalog."""
    t = time.perf_counter()
    docs, _ = store.read_catalogs(store.catalog_keys())
    assert any(e["digest"] == digest for d in docs for e in d["images"])
    ops, _ = counter.take()
    return sum(ops.values()), time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repositories", type=int, default=5, help="repositories in the archiving fleet")
    args = parser.parse_args(argv)

    title("registry-ops restore lookup bench")
    row("date (UTC)", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
    moto = MotoService().start()
    try:
        s3 = _local.s3_client(moto.endpoint, REGION)
        s3.create_bucket(Bucket=BUCKET)
        counter = S3Requests(s3)

        # 1. archiving cost
        store = ArchiveStore(s3, BUCKET, "archive-a/")
        store.compact_index()  # the index exists before this run (as after any earlier run)
        counter.take()
        note(f"archiving: {args.repositories} repositories x ~996 images, packs of 1,000 ...")
        t = time.perf_counter()
        archived = archive_fleet(moto, s3, "a/", args.repositories, 1000, store)
        t_apply = time.perf_counter() - t
        ops, index_ops = counter.take()
        catalogs = len(store.catalog_keys())
        t = time.perf_counter()
        compaction = store.compact_index()
        t_compact = time.perf_counter() - t
        compact_ops, _ = counter.take()
        title(f"1. archiving {archived:,} images ({catalogs} catalogs): what the index adds")
        total = sum(ops.values())
        row("S3 requests of the apply (all)", f"{total:,}", fmt(ops))
        row("  of which the index's (one delta per catalog)", f"{sum(index_ops.values()):,}", fmt(index_ops))
        row("  index requests per catalog", f"{sum(index_ops.values()) / catalogs:.2f}")
        row(
            "  increase over the apply without the index",
            f"{sum(index_ops.values()) / (total - sum(index_ops.values())):.1%}",
        )
        row("apply wall time", f"{t_apply:,.2f} s")
        row(
            "compaction at the end of the run: S3 requests",
            f"{sum(compact_ops.values()):,}",
            f"{fmt(compact_ops)}; {compaction['deltas_merged']} deltas, "
            f"{compaction['shards_written']} shards written",
        )
        row("compaction wall time", f"{t_compact:,.2f} s")
        note("a second run into the same archive: compaction now reads the shards it rewrites ...")
        archive_fleet(moto, s3, "a2/", args.repositories, 1000, store)
        _, index_ops2 = counter.take()
        t = time.perf_counter()
        compaction = store.compact_index()
        t_compact = time.perf_counter() - t
        compact_ops, _ = counter.take()
        row("second run: index requests while archiving", f"{sum(index_ops2.values()):,}", fmt(index_ops2))
        row(
            "second run: compaction S3 requests",
            f"{sum(compact_ops.values()):,}",
            f"{fmt(compact_ops)}; {compaction['deltas_merged']} deltas, "
            f"{compaction['shards_written']} shards rewritten; {t_compact:,.2f} s",
        )
        index_counts, per = lookups(store, counter, random.Random(1).sample(_digests(store), SAMPLES))
        row(
            f"restore lookup by digest ({SAMPLES} samples): S3 requests",
            f"{min(index_counts)}-{max(index_counts)}",
            f"{per * 1000:.1f} ms each",
        )

        # 2. lookups at two archive sizes
        title("2. a restore lookup by digest: the index against the full catalog scan")
        head = f"{'index: requests':>16} {'ms':>7} {'full scan: requests':>20} {'ms':>8}"
        out(f"  {'archive':<28} {'catalogs':>9} {head}")
        for batch, prefix in ((495, "b/"), (50, "c/")):
            store = ArchiveStore(s3, BUCKET, f"archive-{prefix}")
            note(f"archiving 5 repositories with packs of {batch} ...")
            archive_fleet(moto, s3, prefix, 5, batch, store)
            store.compact_index()
            counter.take()
            sample = random.Random(2).sample(_digests(store), SAMPLES)
            counts, per = lookups(store, counter, sample)
            scan, t_scan = full_scan(store, counter, sample[0])
            n = len(store.catalog_keys())
            counter.take()
            spread = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
            out(
                f"  {'5 repos, packs of ' + str(batch):<28} {n:>9} {spread:>16} {per * 1000:>7.1f} "
                f"{scan:>20,} {t_scan * 1000:>8.1f}"
            )
        out("  index: LIST pending deltas + GET pointer + GET one shard + GET the catalog(s) holding it;")
        out("  full scan: LIST every catalog (1,000 keys a page) + GET every catalog.")
    finally:
        moto.stop()
    return 0


def _digests(store: ArchiveStore) -> list[str]:
    docs, _ = store.read_catalogs(store.catalog_keys())
    return sorted({e["digest"] for d in docs for e in d["images"]})


if __name__ == "__main__":
    sys.exit(main())
