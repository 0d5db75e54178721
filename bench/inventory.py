"""Inventory listing bench: ECR on moto, OCI on the distribution registry, and skopeo.

Run from the repository root (not a pytest test)::

    .venv/bin/python bench/inventory.py            # 50 ECR repos x ~1,000 images, 20 OCI repos x ~200 tags
    .venv/bin/python bench/inventory.py --quick    # a small smoke run

What it measures, all on local services started here and stopped at the end:

1. ECR (moto in this process, AWS-like paging shim): ``EcrRegistry.list_repositories`` then
   ``list_images`` per repository; requests by API operation against the least AWS allows
   (pages of 1,000; plus ``batch_get_image`` at 100 ids for image indexes). Then the same
   listing with ``read_manifests`` (every manifest read, 100 per ``batch_get_image``, for the
   layer digests and sizes): its requests and seconds against the plain listing's and against
   its own least, and its layer sizes checked against the seeded manifests.
2. OCI (Debian's CNCF distribution 2.8): ``OciRegistry`` at concurrency 8 and 1; requests by
   operation against the least the distribution API allows (list pages + one manifest GET per
   tag + one per untagged manifest reached through an index) and against the goal "one
   manifest request per unique digest plus list pages"; peak requests in flight.
3. skopeo as a user runs it: ``list-tags`` per repository then ``inspect`` per tag, timed
   (on every repository unless ``--skopeo-repos N`` asks for a subset, then extrapolated).
4. The incremental listing: the previous listing as the cache, unchanged and after 5 % of the
   tags moved; its ratio against skopeo is this run's section 3. The unchanged run is made three
   times and the best counts (all three are printed): a 5 s run moves with the machine's load
   more than skopeo's ~170 s one, which is made once.

The registry runs with the blob-descriptor cache (``storage: cache: blobdescriptor: inmemory``)
as production distribution deployments do (Harbor's is redis); ``--no-blob-cache`` runs it
without. ``--registry-gogc N`` sets the registry's Go ``GOGC`` (not set by default: production
registries seldom tune it). Both apply to skopeo's runs too: every section talks to the one
registry.

Every figure printed is measured in the run; nothing is hard-coded.
"""

from __future__ import annotations

import argparse
import gc
import io
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import _local
import _report
from _report import note, out, title

ROOT = _local.prepare()

import boto3  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from botocore.config import Config as BotoConfig  # noqa: E402

from devstack.fleet import RepoSpec, make_fleet  # noqa: E402
from devstack.seed import seed_ecr, seed_oci  # noqa: E402
from devstack.services import MotoService, RegistryService  # noqa: E402
from include.registry_ops import inventory_cache  # noqa: E402
from include.registry_ops.clients import RETRIES  # noqa: E402
from include.registry_ops.registries.base import (  # noqa: E402
    REFERRER_TAG,
    Manifest,
    digest_of,
)
from include.registry_ops.registries.ecr import BATCH, PAGE, EcrRegistry  # noqa: E402
from include.registry_ops.registries.known import KnownContent  # noqa: E402
from include.registry_ops.registries.oci import OciRegistry  # noqa: E402

REGION = "us-east-1"
REPEATS = 3  # unchanged incremental runs; the best is the figure


@dataclass(frozen=True)
class Sizes:
    ecr_repos: int
    ecr_images_per_repo: int  # make_fleet's per-repository target (it may overshoot by up to 4)
    oci_repos: int
    oci_tags_per_repo: int
    skopeo_repos: int | None  # None: every repository
    ecr_layer_scale: float = 0.0001
    oci_layer_scale: float = 0.001


QUICK = Sizes(ecr_repos=5, ecr_images_per_repo=1200, oci_repos=3, oci_tags_per_repo=40, skopeo_repos=None)
# 996 so that make_fleet's overshoot (at most 4 manifests) keeps every repository at <= 1,000.
# skopeo runs on every repository by default (~4,000 invocations at ~35 ms: minutes, not hours);
# --skopeo-repos N times a subset and extrapolates.
FULL = Sizes(ecr_repos=50, ecr_images_per_repo=996, oci_repos=20, oci_tags_per_repo=200, skopeo_repos=None)


# -- report helpers ---------------------------------------------------------------------------
def row(label: str, value: Any, comment: str = "") -> None:
    _report.row(label, value, comment, widths=(46, 16))


def ops_table(counts: Counter[str], comments: dict[str, str] | None = None) -> None:
    comments = comments or {}
    out(f"  {'requests by operation':<46} {'count':>16}")
    out(f"  {'-' * 46} {'-' * 16}")
    for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        row(f"  {op}", f"{n:,}", comments.get(op, ""))
    row("  total", f"{sum(counts.values()):,}")


def secs(t: float) -> str:
    return f"{t:,.2f} s"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def version_of(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({type(exc).__name__})"
    return (p.stdout or p.stderr).strip().splitlines()[0] if (p.stdout or p.stderr).strip() else "?"


def header(args: argparse.Namespace, sizes: Sizes) -> None:
    title("registry-ops inventory listing bench" + ("  (--quick)" if args.quick else ""))
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        kb = next(
            int(x.split()[1])
            for x in Path("/proc/meminfo").read_text().splitlines()
            if x.startswith("MemTotal")
        )
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        mem = "?"
    row("date (UTC)", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
    row("nproc (usable CPUs / os.cpu_count)", f"{affinity} / {os.cpu_count()}")
    row("memory", mem)
    row("python", platform.python_version(), sys.executable)
    row("platform", platform.machine(), platform.platform())
    for pkg in ("moto", "boto3", "botocore", "requests"):
        try:
            row(pkg, metadata.version(pkg))
        except metadata.PackageNotFoundError:
            row(pkg, "not installed")
    out(f"  {'docker-registry':<46} {version_of(['docker-registry', '--version'])}")
    row(
        "  blob-descriptor cache / GOGC",
        f"{'inmemory' if args.blob_cache else 'none'} / {args.registry_gogc or 'default'}",
        "the one registry every OCI section and skopeo use",
    )
    out(f"  {'skopeo':<46} {version_of(['skopeo', '--version'])}")
    out(
        f"  sizes: ECR {sizes.ecr_repos} repos x ~{sizes.ecr_images_per_repo:,} images;"
        f" OCI {sizes.oci_repos} repos x ~{sizes.oci_tags_per_repo} tags;"
        f" skopeo on {sizes.skopeo_repos or 'all'} OCI repos"
    )


# -- ECR ----------------------------------------------------------------------------------------
@dataclass
class EcrResult:
    wall: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)
    images: int = 0
    manifests_wall: float = 0.0  # the same listing with read_manifests
    manifests_counts: Counter[str] = field(default_factory=Counter)


def bench_ecr(moto: MotoService, sizes: Sizes) -> EcrResult:
    note(f"ECR: building fleet {sizes.ecr_repos} x ~{sizes.ecr_images_per_repo} ...")
    fleet, t_fleet = timed(
        lambda: make_fleet(
            seed=7,
            repositories=sizes.ecr_repos,
            images=sizes.ecr_repos * sizes.ecr_images_per_repo,
            layer_scale=sizes.ecr_layer_scale,
            prefix="bench/",
        )
    )
    seeded_per_repo = {r.name: len(r.manifests) for r in fleet}
    seeded_kinds = Counter(m.kind for r in fleet for m in r.manifests)
    seeded_layers = {  # what read_manifests must find: each manifest's layer sizes (blobs[0]: config)
        (r.name, m.digest): [b.size for b in m.blobs[1:]]
        for r in fleet
        for m in r.manifests
        if m.kind != "index"
    }
    client = boto3.client(
        "ecr", endpoint_url=moto.endpoint, region_name=REGION, config=BotoConfig(retries=dict(RETRIES))
    )
    note("ECR: seeding moto ...")
    t = time.perf_counter()
    seeded = seed_ecr(client, fleet, REGION)
    t_seed = time.perf_counter() - t
    del fleet
    gc.collect()

    reg = EcrRegistry("ecr-bench", client)
    note("ECR: listing ...")

    def listing() -> dict[str, list[dict[str, Any]]]:
        repos = reg.list_repositories()
        return {r: reg.list_images(r) for r in repos}

    listed, wall = timed(listing)
    res = EcrResult(wall=wall, counts=Counter(reg.requests.counts))
    per_repo = {r: len(recs) for r, recs in listed.items()}
    indexes = {r: sum(1 for x in recs if x["kind"] == "index") for r, recs in listed.items()}
    res.images = sum(per_repo.values())
    kinds = Counter(x["kind"] for recs in listed.values() for x in recs)

    repos = len(listed)
    least_repo_pages = max(1, ceil_div(repos, PAGE))
    least_image_pages = sum(max(1, ceil_div(n, PAGE)) for n in per_repo.values())
    least_plain = least_repo_pages + least_image_pages
    least_index_calls = sum(ceil_div(n, BATCH) for n in indexes.values())
    least_with_index = least_plain + least_index_calls
    actual = sum(res.counts.values())

    title(f"1. ECR on moto: {repos} repositories, EcrRegistry (page size {reg.page_size})")
    row("fleet generation (make_fleet)", secs(t_fleet))
    row("seeding (seed_ecr into moto's backend)", secs(t_seed), f"{seeded:,} images")
    row(
        "images per repository (seeded min..max)",
        f"{min(seeded_per_repo.values()):,}..{max(seeded_per_repo.values()):,}",
    )
    row("images per repository (listed min..max)", f"{min(per_repo.values()):,}..{max(per_repo.values()):,}")
    mismatch = [r for r in seeded_per_repo if per_repo.get(r) != seeded_per_repo[r]]
    row(
        "repositories listed / seeded",
        f"{repos} / {len(seeded_per_repo)}",
        "MISMATCH: " + ", ".join(mismatch[:5]) if mismatch else "all counts match",
    )
    row(
        "images listed",
        f"{res.images:,}",
        "by kind: " + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())),
    )
    row("  (seeded by kind)", "", ", ".join(f"{k} {v:,}" for k, v in sorted(seeded_kinds.items())))
    row(
        "wall time (list_repositories + list_images)",
        secs(wall),
        f"{res.images / wall:,.0f} images/s" if wall else "",
    )
    out()
    ops_table(
        res.counts,
        {
            "DescribeRepositories": f"least {least_repo_pages} (ceil({repos}/{PAGE}))",
            "DescribeImages": f"least {least_image_pages} (sum of ceil(n/{PAGE}) per repo)",
            "BatchGetImage": f"least {least_index_calls} (sum of ceil(indexes/{BATCH}) per repo;"
            f" {sum(indexes.values()):,} indexes)",
        },
    )
    out()
    row("requests per image", f"{actual / res.images:.5f}" if res.images else "n/a")
    row(
        "least, issue's definition (list pages only)",
        f"{least_plain:,}",
        f"{least_repo_pages} + {least_image_pages}",
    )
    row(
        "least incl. batch_get_image for indexes",
        f"{least_with_index:,}",
        f"{least_plain} + {least_index_calls}",
    )
    row("actual / least (issue's definition)", ratio(actual, least_plain))
    row("actual / least incl. index reads", ratio(actual, least_with_index))
    if actual == least_with_index:
        verdict = "the run hit the least INCLUDING the batch_get_image index reads"
    elif actual == least_plain:
        verdict = "the run hit the issue's least (no index reads)"
    else:
        verdict = f"NEITHER least hit: {actual - least_with_index:+,} requests vs the least incl. index reads"
    row("verdict", "", verdict)
    retries = actual - (
        res.counts["DescribeRepositories"] + res.counts["DescribeImages"] + res.counts["BatchGetImage"]
    )
    if retries:
        row("other operations", f"{retries:,}", "see the table above")
    read_manifests_cost(client, res, per_repo, least_plain, seeded_layers)
    return res


def read_manifests_cost(
    client: Any,
    plain: EcrResult,
    per_repo: dict[str, int],
    least_plain: int,
    seeded_layers: dict[tuple[str, str], list[int]],
) -> None:
    """The same listing with ``read_manifests``: what reading every manifest costs."""
    note("ECR: listing again with read_manifests ...")
    reg = EcrRegistry("ecr-bench", client, read_manifests=True)

    def listing() -> dict[str, list[dict[str, Any]]]:
        return {r: reg.list_images(r) for r in reg.list_repositories()}

    listed, wall = timed(listing)
    plain.manifests_wall, plain.manifests_counts = wall, Counter(reg.requests.counts)
    counts = plain.manifests_counts
    least_reads = sum(ceil_div(n, BATCH) for n in per_repo.values())
    least = least_plain + least_reads  # list pages + every manifest once, 100 per call
    actual, before = sum(counts.values()), sum(plain.counts.values())
    rows = [(r, x) for r, recs in listed.items() for x in recs if x["kind"] != "index"]
    sized = sum(1 for _, x in rows if x.get("layer_sizes") is not None)
    match = sum(1 for r, x in rows if x.get("layer_sizes") == seeded_layers.get((r, x["digest"])))
    out()
    out("  price of read_manifests (the same listing, every manifest read for layer digests and sizes)")
    row(
        "  BatchGetImage without / with",
        f"{plain.counts['BatchGetImage']:,} / {counts['BatchGetImage']:,}",
        f"least with: {least_reads:,} (sum of ceil(images/{BATCH}) per repo, indexes included)",
    )
    row("  requests without / with", f"{before:,} / {actual:,}", f"{actual - before:+,} requests")
    row("  wall without / with", f"{secs(plain.wall)} / {secs(wall)}", f"x{ratio(wall, plain.wall)}")
    row(
        "  with: actual / least",
        ratio(actual, least),
        f"least {least:,} = list pages + {least_reads:,} reads",
    )
    row(
        "  images with layer sizes / matching the seeded",
        f"{sized:,} / {match:,}",
        f"of {len(rows):,} non-index images" + ("" if match == len(rows) else " (MISMATCH)"),
    )
    out("      (moto finds each id of a BatchGetImage by a linear scan of the repository: its seconds")
    out("       grow with the repository's size, which AWS's need not; the request counts are AWS's)")


# -- OCI ----------------------------------------------------------------------------------------
def oci_fleet(sizes: Sizes) -> tuple[list[RepoSpec], float]:
    """make_fleet with ample manifests, each repository cut to the first ~N tags.

    make_fleet gives about 1.x tags per manifest in plain repositories but ~0.6 in multi-arch
    ones (two untagged children per index), so a uniform ``images`` would give uneven tag counts.
    The cut keeps a prefix of the repository's manifests ending at a tagged one (children come
    before their index, so no index loses a child) and moves ``latest`` to the newest release
    kept.
    """
    want = sizes.oci_tags_per_repo
    fleet, t = timed(
        lambda: make_fleet(
            seed=11,
            repositories=sizes.oci_repos,
            images=sizes.oci_repos * max(want * 2, 10),
            layer_scale=sizes.oci_layer_scale,
            prefix="bench/",
        )
    )
    for repo in fleet:
        for m in repo.manifests:
            if "latest" in m.tags:
                m.tags.remove("latest")
        kept, n = [], 0
        for m in repo.manifests:
            kept.append(m)
            n += len(m.tags)
            if n >= want:
                break
        releases = [
            m for m in kept if m.kind != "referrer" and any(t[0].isdigit() and "." in t for t in m.tags)
        ]
        if releases:
            releases[-1].tags.append("latest")
            releases[-1].tags.sort()
        repo.manifests = kept
    return fleet, t


class InFlight:
    """Wraps an OciRegistry's ``_send`` (each HTTP exchange, fast path or requests) to record
    the peak number of concurrent calls."""

    def __init__(self, reg: OciRegistry) -> None:
        self._orig = reg._send
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0
        reg._send = self._request  # type: ignore[method-assign]

    def _request(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            return self._orig(*args, **kwargs)
        finally:
            with self._lock:
                self.now -= 1


@dataclass
class OciRun:
    concurrency: int
    wall: float
    counts: Counter[str]
    peak: int
    records: dict[str, list[dict[str, Any]]]
    repo_wall: dict[str, float]
    page_size: int
    read_configs: bool
    op_seconds: Counter[str]  # summed latency of OciRegistry.request calls, by operation
    cpu_ours: float  # this process, all threads
    cpu_registry: float  # the docker-registry process


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, from /proc (0.0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def list_oci(url: str, concurrency: int, registry_pid: int, read_configs: bool = True) -> OciRun:
    reg = OciRegistry("oci-bench", url, concurrency=concurrency, read_configs=read_configs)
    flight = InFlight(reg)
    repo_wall: dict[str, float] = {}
    op_seconds: Counter[str] = Counter()
    lock = threading.Lock()
    request = reg.request

    def timed_request(method: str, path: str, op: str, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return request(method, path, op, **kwargs)
        finally:
            with lock:
                op_seconds[op] += time.perf_counter() - t

    reg.request = timed_request  # type: ignore[method-assign]

    def listing() -> dict[str, list[dict[str, Any]]]:
        recs = {}
        for r in reg.list_repositories():
            recs[r], repo_wall[r] = timed(lambda r=r: reg.list_images(r))
        return recs

    cpu0, reg0 = time.process_time(), proc_cpu(registry_pid)
    records, wall = timed(listing)
    cpu_ours, cpu_reg = time.process_time() - cpu0, proc_cpu(registry_pid) - reg0
    return OciRun(
        concurrency,
        wall,
        Counter(reg.requests.counts),
        flight.peak,
        records,
        repo_wall,
        reg.page_size,
        read_configs,
        op_seconds,
        cpu_ours,
        cpu_reg,
    )


@dataclass
class OciFacts:
    repos: int
    tags: int
    unique: int
    untagged_reached: int
    tags_per_repo: dict[str, int]


def oci_facts(run: OciRun) -> OciFacts:
    tags_per_repo = {r: sum(len(x["tags"]) for x in recs) for r, recs in run.records.items()}
    return OciFacts(
        repos=len(run.records),
        tags=sum(tags_per_repo.values()),
        unique=sum(len(recs) for recs in run.records.values()),
        untagged_reached=sum(1 for recs in run.records.values() for x in recs if not x["tags"]),
        tags_per_repo=tags_per_repo,
    )


def bench_oci(svc: RegistryService, sizes: Sizes) -> tuple[OciRun, OciFacts]:
    note(f"OCI: building fleet {sizes.oci_repos} x ~{sizes.oci_tags_per_repo} tags ...")
    fleet, t_fleet = oci_fleet(sizes)
    pushed = sum(len(r.manifests) for r in fleet)
    reachable = 0  # what the distribution API can reach: tagged manifests and their index children
    for r in fleet:
        seen = {m.digest for m in r.manifests if m.tags}
        seen.update(c for m in r.manifests if m.tags for c in m.children)
        reachable += len(seen)
    note(f"OCI: seeding {pushed:,} manifests through the registry API ...")
    seeder = OciRegistry("seed", svc.url)
    t = time.perf_counter()
    seed_oci(seeder, fleet)
    t_seed = time.perf_counter() - t
    seed_requests = seeder.requests.total
    del fleet
    gc.collect()

    note("OCI: listing at concurrency 8 ...")
    pid = svc._proc.pid if svc._proc else 0  # read only: CPU accounting of the registry process
    c8 = list_oci(svc.url, 8, pid)
    note("OCI: listing at concurrency 1 ...")
    c1 = list_oci(svc.url, 1, pid)
    note("OCI: listing at concurrency 8 again (order check) ...")
    c8b = list_oci(svc.url, 8, pid)
    note("OCI: listing at concurrency 8 with read_configs=False ...")
    nocfg = list_oci(svc.url, 8, pid, read_configs=False)
    f = oci_facts(c8)

    list_pages = c8.counts["catalog"] + c8.counts["tags_list"]
    least_list_pages = max(1, ceil_div(f.repos, c8.page_size)) + f.repos  # distribution 2.8: one tags page
    manifest_reqs = c8.counts["manifest_get"] + c8.counts["manifest_head"]
    least_manifests = f.tags + f.untagged_reached
    least = least_list_pages + least_manifests
    goal = least_list_pages + f.unique
    actual = sum(c8.counts.values())

    title(
        f"2. OCI on distribution: {f.repos} repositories, OciRegistry"
        f" (concurrency 8, page size {c8.page_size})"
    )
    row("fleet generation (make_fleet + cut to ~N tags)", secs(t_fleet))
    row(
        "seeding (seed_oci, through the API)",
        secs(t_seed),
        f"{pushed:,} manifests, {seed_requests:,} requests",
    )
    row(
        "pushed manifests the API cannot reach",
        f"{pushed - reachable:,}",
        "untagged, no tagged index parent: not listable",
    )
    row(
        "reachable manifests (seeded) / listed",
        f"{reachable:,} / {f.unique:,}",
        "match" if reachable == f.unique else "MISMATCH",
    )
    tpr = f.tags_per_repo.values()
    row("tags per repository (min..max, mean)", f"{min(tpr)}..{max(tpr)}", f"mean {f.tags / f.repos:.1f}")
    row("tags listed", f"{f.tags:,}")
    row("unique digests listed (per repository)", f"{f.unique:,}", f"{f.tags / f.unique:.2f} tags per digest")
    row("  of which untagged (index children)", f"{f.untagged_reached:,}")
    row("wall time, concurrency 8", secs(c8.wall), f"{f.unique / c8.wall:,.0f} digests/s" if c8.wall else "")
    out()
    what = {
        "manifest_get": "one per tag + one per untagged child",
        "catalog": "list page",
        "tags_list": "list page",
        "blob_get": "image config blobs (read_configs=True)",
        "referrers": "referrers API probe (404 on distribution 2.8)",
    }
    ops_table(
        c8.counts,
        {
            op: f"mean {c8.op_seconds[op] / n * 1000:5.1f} ms, sum {c8.op_seconds[op]:6.1f} s;"
            f" {what.get(op, '')}"
            for op, n in c8.counts.items()
        },
    )
    out("      (sum = latencies summed over all threads, so it can exceed the wall time)")
    out()
    row("list pages (catalog + tags_list)", f"{list_pages:,}", f"least {least_list_pages:,}")
    row(
        "manifest requests",
        f"{manifest_reqs:,}",
        f"least {least_manifests:,} = {f.tags:,} tags + {f.untagged_reached:,} untagged",
    )
    row("manifest requests per unique digest", f"{manifest_reqs / f.unique:.3f}" if f.unique else "n/a")
    row("requests per unique digest (all operations)", f"{actual / f.unique:.3f}" if f.unique else "n/a")
    out()
    row(
        "least possible: list pages + tags + untagged",
        f"{least:,}",
        "no bulk tag->digest call in the API: one request per tag",
    )
    row("actual (all operations) / least", ratio(actual, least))
    row("actual manifest requests / least manifest", ratio(manifest_reqs, least_manifests))
    row("issue's goal: list pages + 1 per unique digest", f"{goal:,}")
    row("actual (all operations) / goal", ratio(actual, goal))
    row("actual (list pages + manifests) / goal", ratio(list_pages + manifest_reqs, goal))
    row("least possible / goal", ratio(least, goal), "> 1: the goal is below what the API allows")
    extra = {op: n for op, n in c8.counts.items() if op not in ("catalog", "tags_list", "manifest_get")}
    if extra:
        row(
            "requests beyond list pages + manifests",
            f"{sum(extra.values()):,}",
            ", ".join(f"{op} {n:,}" for op, n in sorted(extra.items())),
        )
    out()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    out("  concurrency check (the same listing, fresh OciRegistry each time)")
    for label, run in (("concurrency 8, 1st", c8), ("concurrency 1", c1), ("concurrency 8, 2nd", c8b)):
        row(
            f"  {label}: wall / peak in flight",
            f"{secs(run.wall)} / {run.peak}",
            f"{sum(run.counts.values()):,} requests"
            + ("" if run.counts == c8.counts else " (DIFFERENT counts)")
            + f"; CPU ours {run.cpu_ours:.1f} s + registry {run.cpu_registry:.1f} s"
            + f" = {(run.cpu_ours + run.cpu_registry) / (cpus * run.wall):.0%} of {cpus} CPUs",
        )
    row("speedup concurrency 8 vs 1 (first c8 run)", f"{c1.wall / c8.wall:.2f}x" if c8.wall else "n/a")
    row("speedup concurrency 8 vs 1 (repeat c8 run)", f"{c1.wall / c8b.wall:.2f}x" if c8b.wall else "n/a")
    concurrent = c8.peak > 1
    row(
        "requests issued concurrently?",
        "yes" if concurrent else "NO",
        f"peak {c8.peak} requests in flight at concurrency 8, {c1.peak} at concurrency 1",
    )
    out()
    out("  price of read_configs (the same listing at concurrency 8 with read_configs=False)")
    row(
        "  read_configs=False: wall / requests",
        f"{secs(nocfg.wall)} / {sum(nocfg.counts.values()):,}",
        ", ".join(f"{op} {n:,}" for op, n in sorted(nocfg.counts.items())),
    )
    row("  read_configs=False: actual / least", ratio(sum(nocfg.counts.values()), least))
    row(
        "  wall, read_configs True / False",
        ratio(c8.wall, nocfg.wall),
        f"mean of both c=8 runs: {ratio((c8.wall + c8b.wall) / 2, nocfg.wall)}",
    )
    return c8, f


# -- skopeo -------------------------------------------------------------------------------------
@dataclass
class SkopeoResult:
    repos: list[str]
    list_calls: int = 0
    inspect_calls: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    t_list: float = 0.0
    t_inspect: float = 0.0
    tags_seen: int = 0
    failed_tags: Counter[str] = field(default_factory=Counter)  # failed inspects by tag form


def skopeo(args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    return timed(lambda: subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120))


def debug_requests(command: str, ref: str) -> tuple[Counter[str], int]:
    """HTTP requests one ``skopeo COMMAND`` issues, from its --debug log (one sample)."""
    p, _ = skopeo(["--debug", command, "--tls-verify=false", ref])
    kinds: Counter[str] = Counter()
    for line in p.stderr.splitlines():
        if 'msg="GET ' in line or 'msg="HEAD ' in line:
            url = line.split('msg="', 1)[1].split('"', 1)[0].split(" ", 1)[1]
            if url.endswith("/v2/"):
                kinds["ping " + url.split("://")[0]] += 1
            elif "/manifests/" in url:
                kinds["manifest"] += 1
            elif "/blobs/" in url:
                kinds["blob"] += 1
            elif "/tags/list" in url:
                kinds["tags/list"] += 1
            else:
                kinds["other"] += 1
    return kinds, p.returncode


def bench_skopeo(svc: RegistryService, ours: OciRun, facts: OciFacts, sizes: Sizes) -> float:
    host = svc.url.split("://", 1)[1]
    all_repos = sorted(ours.records)
    subset = all_repos if sizes.skopeo_repos is None else all_repos[: sizes.skopeo_repos]
    res = SkopeoResult(subset)
    note(f"skopeo: list-tags + inspect per tag on {len(subset)} repositories ...")
    first_error: dict[str, str] = {}
    for repo in subset:
        p, t = skopeo(["list-tags", "--tls-verify=false", f"docker://{host}/{repo}"])
        res.list_calls += 1
        res.t_list += t
        if p.returncode:
            res.failures["list-tags"] += 1
            first_error.setdefault(
                "list-tags", p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "?"
            )
            continue
        tags = json.loads(p.stdout).get("Tags") or []
        res.tags_seen += len(tags)
        for tag in tags:
            p, t = skopeo(["inspect", "--tls-verify=false", f"docker://{host}/{repo}:{tag}"])
            res.inspect_calls += 1
            res.t_inspect += t
            if p.returncode:
                res.failures["inspect"] += 1
                m = REFERRER_TAG.match(tag)
                res.failed_tags[f"*.{m.group(2)}" if m and m.group(2) else "other"] += 1
                first_error.setdefault(
                    "inspect", p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "?"
                )

    # one --debug sample each for a plain image tag and an index tag, to show what an inspect costs
    samples: dict[str, str] = {}
    for recs_repo in subset:
        for x in ours.records[recs_repo]:
            if x["tags"] and x["kind"] in ("image", "index") and x["kind"] not in samples:
                samples[x["kind"]] = f"docker://{host}/{recs_repo}:{x['tags'][0]}"
    sample_counts = {k: debug_requests("inspect", ref) for k, ref in sorted(samples.items())}
    list_sample = debug_requests("list-tags", f"docker://{host}/{subset[0]}")
    tag_kinds = Counter(x["kind"] for r in subset for x in ours.records[r] for _ in x["tags"])
    per_inspect = {k: sum(c.values()) for k, (c, _) in sample_counts.items()}
    est_http = sum(list_sample[0].values()) * res.list_calls + sum(
        n * per_inspect.get("index" if k == "index" else "image", 0) for k, n in tag_kinds.items()
    )

    our_subset = sum(ours.repo_wall[r] for r in subset)
    our_subset_tags = sum(facts.tags_per_repo[r] for r in subset)
    sk_subset = res.t_list + res.t_inspect
    full = len(subset) == len(all_repos)
    if full:
        sk_total = sk_subset
    else:  # per-repository list-tags time x repositories + per-inspect time x all tags
        sk_total = res.t_list / max(res.list_calls, 1) * len(all_repos) + (
            res.t_inspect / max(res.inspect_calls, 1) * facts.tags
        )

    scope = "all" if full else f"{len(subset)} of {len(all_repos)}"
    title(f"3. skopeo as a user runs it: list-tags per repository, inspect per tag ({scope} repositories)")
    row(
        "repositories run", f"{len(subset)} / {len(all_repos)}", ", ".join(subset) if len(subset) <= 4 else ""
    )
    row("tags (skopeo list-tags / our listing)", f"{res.tags_seen:,} / {our_subset_tags:,}")
    row("skopeo list-tags invocations / time", f"{res.list_calls:,} / {secs(res.t_list)}")
    row("skopeo inspect invocations / time", f"{res.inspect_calls:,} / {secs(res.t_inspect)}")
    row("mean time per inspect", f"{res.t_inspect / max(res.inspect_calls, 1) * 1000:,.0f} ms")
    row("skopeo invocations, total", f"{res.list_calls + res.inspect_calls:,}")
    fails = sum(res.failures.values())
    row(
        "skopeo invocations that failed", f"{fails:,}", "; ".join(f"{k}: {v}" for k, v in first_error.items())
    )
    if res.failed_tags:
        att = sum(1 for r in subset for x in ours.records[r] for t in x["tags"] if t.endswith(".att"))
        row(
            "  failed inspects by tag form",
            "",
            ", ".join(f"{k} {v:,}" for k, v in sorted(res.failed_tags.items()))
            + f" (the listing holds {att:,} *.att tags: in-toto attestations, empty config)",
        )
    for kind, (counts, rc) in sample_counts.items():
        row(
            f"HTTP requests in one inspect of an {kind} tag",
            f"{sum(counts.values())}",
            ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + (f" (exit {rc})" if rc else ""),
        )
    row(
        "HTTP requests in one list-tags",
        f"{sum(list_sample[0].values())}",
        ", ".join(f"{k} {v}" for k, v in sorted(list_sample[0].items())),
    )
    row(
        "skopeo HTTP requests, these repositories",
        f"~{est_http:,}",
        "ESTIMATED: the samples above x invocations (index tags at the index rate);"
        f" ours: {sum(ours.counts.values()):,} for the whole registry",
    )
    out()
    row("skopeo time on these repositories", secs(sk_subset), "measured")
    row("our time on these repositories (c=8 run)", secs(our_subset), "measured, list_images only")
    row("ratio skopeo / ours on these repositories", ratio(sk_subset, our_subset))
    if full:
        row("skopeo time, whole registry", secs(sk_total), "measured (every repository run)")
    else:
        row(
            "skopeo time, whole registry",
            secs(sk_total),
            f"EXTRAPOLATED from {len(subset)} of {len(all_repos)} repos:"
            f" mean list-tags x {len(all_repos)} repos + mean inspect x {facts.tags:,} tags",
        )
    row("our time, whole registry (concurrency 8)", secs(ours.wall), "measured")
    row("ratio skopeo / ours, whole registry", ratio(sk_total, ours.wall), "" if full else "(extrapolated)")
    return sk_total


# -- incremental --------------------------------------------------------------------------------
CPU_SPENT: list[tuple[float, float]] = []  # (ours, the registry's) CPU seconds of each listing_with


def listing_with(
    url: str, known: KnownContent, repos: list[str], pid: int = 0
) -> tuple[dict[str, list[dict]], float, Counter]:
    """One listing of ``repos`` at concurrency 8 with ``known`` as the cache; its CPU (this
    process and the registry ``pid``) goes to ``CPU_SPENT``."""
    reg = OciRegistry("oci-bench", url, concurrency=8)
    reg.known = known
    t, cpu, reg_cpu = time.perf_counter(), time.process_time(), proc_cpu(pid)
    records = {r: reg.list_images(r) for r in repos}
    wall = time.perf_counter() - t
    CPU_SPENT.append((time.process_time() - cpu, proc_cpu(pid) - reg_cpu))
    return records, wall, Counter(reg.requests.counts)


def cpu_note() -> str:
    ours, registry = CPU_SPENT[-1]
    return f"CPU ours {ours:.1f} s + registry {registry:.1f} s"


def next_cache(known: KnownContent, records: dict[str, list[dict]]) -> tuple[KnownContent, float, int]:
    """The cache the next run loads, through the same Parquet tables the inventory writes and
    reads (bytes in memory here, S3 in a run); seconds and bytes of that round trip."""
    t = time.perf_counter()
    manifests, configs = inventory_cache.seen_tables("oci-bench", known)
    blobs = []
    for table in (manifests, configs):
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        blobs.append(buf.getvalue())
    manifests, configs = (pq.read_table(io.BytesIO(b)) for b in blobs)
    tags = {(repo, tag): x["digest"] for repo, recs in records.items() for x in recs for tag in x["tags"]}
    loaded = inventory_cache.known_from(manifests, configs, tags)
    return loaded, time.perf_counter() - t, sum(len(b) for b in blobs)


def comparable(records: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {r: sorted(recs, key=lambda x: x["digest"]) for r, recs in records.items()}


def move_tags(url: str, records: dict[str, list[dict]], fraction: float) -> int:
    """Re-push ``fraction`` of the tags as new manifests (same config and layers, one annotation
    more, so a new digest): what a day of CI rebuilds looks like to the listing."""
    reg = OciRegistry("mover", url, concurrency=8)
    moves = [
        (repo, tag, x["digest"])
        for repo, recs in sorted(records.items())
        for x in recs
        if x["kind"] == "image"
        for tag in x["tags"]
    ]
    step = max(1, round(1 / fraction))
    chosen = moves[::step]
    for i, (repo, tag, digest) in enumerate(chosen):
        old = reg.get_manifest(repo, digest)
        body = json.loads(old.raw)
        body["annotations"] = {**body.get("annotations", {}), "org.example.rebuild": str(i)}
        raw = json.dumps(body).encode()
        reg.put_manifest(repo, Manifest(digest_of(raw), old.media_type, raw), tag)
    return len(chosen)


def bench_incremental(svc: RegistryService, facts: OciFacts, sk_total: float) -> None:
    """Section 4: the previous listing as the cache (inventory_cache, registries.known)."""
    repos = sorted(facts.tags_per_repo)
    pid = svc._proc.pid if svc._proc else 0  # read only: CPU accounting of the registry process
    note("incremental: full listing that collects the cache ...")
    first_known = KnownContent()
    full, t_full, full_counts = listing_with(svc.url, first_known, repos, pid)
    full_cpu = cpu_note()
    # the unchanged run, REPEATS times from the same cache (each rebuilt through Parquet): the best
    # is the figure, as for the planner; all are printed (one run's wall moves with the machine)
    runs = []
    for i in range(REPEATS):
        note(f"incremental: unchanged registry ({i + 1} of {REPEATS}) ...")
        cache, t_cache, cache_bytes = next_cache(first_known, full)
        same, t_same, same_counts = listing_with(svc.url, cache, repos, pid)
        runs.append((t_same + t_cache, t_same, t_cache, same, same_counts, cpu_note(), cache))
    identical = all(comparable(r[3]) == comparable(full) for r in runs)
    _, t_same, t_cache, same, same_counts, same_cpu, second_known = min(runs, key=lambda r: r[0])
    list_pages = same_counts["tags_list"] + same_counts["catalog"]

    title("4. incremental OCI listing: the previous snapshot as the cache")
    full_requests = sum(full_counts.values())
    row("full listing (collects the cache)", secs(t_full), f"{full_requests:,} requests; {full_cpu}")
    row("cache round trip (Parquet write + read + hash check)", secs(t_cache), f"{cache_bytes / 1e6:.1f} MB")
    ops_table(same_counts)
    row("unchanged run: requests", f"{sum(same_counts.values()):,}", "goal: list pages + one HEAD per tag")
    row("  list pages + tags", f"{list_pages:,} + {facts.tags:,} = {list_pages + facts.tags:,}")
    row(
        "  manifest GETs / blob GETs",
        f"{same_counts['manifest_get']} / {same_counts['blob_get']}",
        "goal: 0 / 0",
    )
    row(
        f"unchanged run: wall, best of {REPEATS}",
        secs(t_same + t_cache),
        f"listing + cache round trip; {same_cpu}; all: " + ", ".join(secs(r[0]) for r in runs),
    )
    row("ratio full / unchanged", ratio(t_full, t_same + t_cache))
    row("ratio skopeo / unchanged", ratio(sk_total, t_same + t_cache), "goal: >= 30")
    row(f"records identical to the full listing (all {REPEATS} runs)", "yes" if identical else "NO")
    if not identical:
        raise SystemExit("incremental listing differs from the full listing")

    note("incremental: 5 % of the tags moved ...")
    moved = move_tags(svc.url, full, 0.05)
    third_cache, _, _ = next_cache(second_known, same)
    changed, t_changed, changed_counts = listing_with(svc.url, third_cache, repos)
    after, _, _ = listing_with(svc.url, KnownContent(), repos)
    out()
    row("tags moved to new digests", f"{moved:,}", f"{moved / facts.tags:.1%} of {facts.tags:,}")
    row(
        "after the move: manifest GETs / blob GETs",
        f"{changed_counts['manifest_get']} / {changed_counts['blob_get']}",
        f"goal: {moved} (the new digests) / 0 (configs known)",
    )
    row("after the move: requests / wall", f"{sum(changed_counts.values()):,} / {secs(t_changed)}")
    row(
        "after the move: identical to a full listing",
        "yes" if comparable(changed) == comparable(after) else "NO",
    )

    out()
    out("  growth: unchanged run over 10 %, 30 %, 100 % of the repositories (cache from the last run)")
    points = []
    for share in (0.1, 0.3, 1.0):
        subset = repos[: max(1, round(len(repos) * share))]
        tags = sum(facts.tags_per_repo[r] for r in subset)
        _, t, counts = listing_with(svc.url, cache_for(svc.url, subset), subset, pid)
        points.append((tags, t, sum(counts.values())))
        row(
            f"  {share:.0%}: {len(subset)} repositories, {tags:,} tags",
            f"{secs(t)}",
            f"{sum(counts.values()):,} requests; {cpu_note()}",
        )
    for (n0, t0, _), (n1, t1, _) in itertools.pairwise(points):
        row(f"  slope {n0:,} -> {n1:,} tags", f"{(t1 - t0) / max(1, n1 - n0) * 1000:.2f} ms/tag")


def cache_for(url: str, repos: list[str]) -> KnownContent:
    known = KnownContent()
    records, _, _ = listing_with(url, known, repos)
    return next_cache(known, records)[0]


# -- main -----------------------------------------------------------------------------------------
def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a fast smoke run")
    parser.add_argument(
        "--skopeo-repos",
        type=int,
        default=None,
        help="run skopeo on only this many OCI repositories and extrapolate (default: all)",
    )
    parser.add_argument(
        "--skip-ecr", action="store_true", help="OCI, skopeo and the incremental listing only (no moto)"
    )
    parser.add_argument(
        "--no-blob-cache",
        dest="blob_cache",
        action="store_false",
        help="run the registry without storage.cache.blobdescriptor: inmemory",
    )
    parser.add_argument(
        "--registry-gogc", type=int, default=None, help="the registry process's GOGC (Go default: 100)"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    sizes = QUICK if args.quick else FULL
    if args.skopeo_repos is not None:
        sizes = Sizes(**{**sizes.__dict__, "skopeo_repos": args.skopeo_repos or None})
    if not shutil.which("skopeo"):
        raise SystemExit("skopeo not found (apt-get install skopeo)")

    header(args, sizes)
    t0 = time.perf_counter()
    moto: MotoService | None = None
    svc: RegistryService | None = None
    try:
        ecr = None
        if not args.skip_ecr:
            note("starting moto ...")
            moto = MotoService().start()
            ecr = bench_ecr(moto, sizes)
            moto.stop()
            moto = None
        note("starting docker-registry ...")
        svc = RegistryService(blob_cache=args.blob_cache, gogc=args.registry_gogc).start()
        oci, facts = bench_oci(svc, sizes)
        sk_total = bench_skopeo(svc, oci, facts, sizes)
        bench_incremental(svc, facts, sk_total)
    finally:
        if moto is not None:
            moto.stop()
        if svc is not None:
            svc.stop()

    title("summary")
    if ecr is not None:
        ecr_requests = sum(ecr.counts.values())
        row("ECR: images / requests / wall", f"{ecr.images:,} / {ecr_requests:,} / {secs(ecr.wall)}")
        row(
            "ECR with read_manifests: requests / wall",
            f"{sum(ecr.manifests_counts.values()):,} / {secs(ecr.manifests_wall)}",
        )
    row(
        "OCI: digests / requests / wall (c=8)",
        f"{facts.unique:,} / {sum(oci.counts.values()):,} / {secs(oci.wall)}",
    )
    row("bench total wall time", secs(time.perf_counter() - t0), "incl. fleet generation, seeding, skopeo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
