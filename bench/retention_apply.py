"""Retention apply bench: "keep the newest 10" on moto, archiving every expired image.

Run from the repository root (not a pytest test)::

    .venv/bin/python bench/retention_apply.py            # 50 repositories x ~1,000 images
    .venv/bin/python bench/retention_apply.py --quick    # 10 repositories x ~300 images

What it does, on a moto server (ECR with AWS-like paging, and S3) in a child process, so its CPU
is not this process's (ECR's and S3's are not a real run's either), at three sizes (10 %, 30 %
and 100 % of the fleet's repositories), each on a freshly reset and seeded moto:

1. seeds the fleet (``make_fleet`` with a tiny ``layer_scale``; ``seed_ecr``);
2. lists it (``EcrRegistry``: ``describe_repositories``, ``describe_images``) and plans it with
   the real planner (one policy: ``imageCountMoreThan 10``, expire, enabled, nothing protected);
3. applies the plan with the real executor (fresh look and archive from the same
   ``batch_get_image`` reads, archive packs to S3 with read-back verification,
   ``batch_delete_image``; caps lifted for the bench), and checks the result;
4. unless ``--no-baseline``: seeds the same fleet again and times the same listing and planning
   followed by bare deletes (no fresh look, no archive), repositories as many at a time as ours:
   the "without archive" peer.

Printed: for the whole fleet, ECR requests by operation against the least the brief counts (1
``describe_repositories`` page, ceil(n/1000) ``describe_images`` per repository, ceil(n/100)
``batch_get_image`` and ceil(n/100) ``batch_delete_image`` per repository for its n expired
images), S3 requests by operation against the unique digests archived; then at each size the wall
times, the ratio to the peer and the requests, and the slopes between sizes (seconds per 1,000
expired images, and the growth exponent: a quadratic step shows as a slope that grows and an
exponent near 2), the floor moto leaves, and (section 5) moto's ``BatchGetImage`` CPU at three
sizes of one repository. Every figure is measured.

Where the time goes (profiled 2026-11-29, 50 x ~1,000, moto 5.2.5): moto's one process is the
bottleneck (its CPU is 85-90 % of the apply's wall time). Per call, with the apply's four
repositories at a time: ``BatchGetImage`` of 100 ids ~43 ms of moto CPU (section 5: it answers
with 100 manifests and compares every id with every image of the repository, so it costs the
most on the full repository the fresh look must read), ``BatchDeleteImage`` ~30 ms on a
shrinking one; S3 (9 requests per repository: journal load, pack put + read-back, index delta,
catalog put + read-back, journal after the pack and at the end, audit) ~3-4 s in all. So the 500
reads cost moto more (~21 s) than all 500 bare deletes (~15 s), and the ratio's floor on moto,
printed as "floor on this moto", is (listing + moto's CPU in the apply) / delete-only: 1.47-1.63x
over this session's runs, before any cost of this process (~19 s of CPU: botocore's
per-request work, JSON of catalog, journal and audit, audit records and catalog entries; sha256
and tar building under 1 %). Smaller archive packs, so that reads meet a repository already
partly deleted, cost more than they save (each pack adds 6 S3 requests): archive_batch 1,000 /
500 / 250 / 100 gave 1.60x / 1.64x / 2.16x / 2.64x. More workers do not help either (8: 1.83x;
moto's threads then contend for its one GIL). One run's ratio moves by +-0.1 with the machine.
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from multiprocessing.connection import Connection
from typing import Any

import _local
from _report import S3Counter, ceil_div, note, out, row, title

ROOT = _local.prepare()

import pandas as pd  # noqa: E402

from include.registry_ops import schema  # noqa: E402
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
FRACTIONS = (0.1, 0.3, 1.0)  # sizes, as fractions of the fleet's repositories
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
    return _local.ecr_client(endpoint, REGION)


def s3_client(endpoint: str) -> Any:
    return _local.s3_client(endpoint, REGION)


# -- moto in a child process ------------------------------------------------------------------------
def _serve(conn: Connection) -> None:
    """The child: moto's server (ECR paging, layer downloads), seeding its backend on request."""
    from devstack.fleet import make_fleet
    from devstack.seed import seed_ecr
    from devstack.services import MotoService

    moto = MotoService().start()
    conn.send(moto.endpoint)
    client = ecr_client(moto.endpoint)
    while True:
        cmd, args = conn.recv()
        if cmd == "stop":
            moto.stop()
            conn.send(None)
            return
        moto.reset()
        repos, per_repo = args
        fleet = make_fleet(
            seed=7, repositories=repos, images=repos * per_repo, layer_scale=0.0001, prefix="bench/"
        )
        t = time.perf_counter()
        conn.send((seed_ecr(client, fleet, REGION), time.perf_counter() - t))


class MotoChild:
    """moto in a child process (forked, so the child seeds its own backend): its CPU is then not
    this process's, as ECR's and S3's are not a real run's; in one process the two would share
    one GIL and every request would wait for the other side's work."""

    def __init__(self) -> None:
        self._conn, child = multiprocessing.get_context("fork").Pipe()
        self._proc = multiprocessing.get_context("fork").Process(target=_serve, args=(child,), daemon=True)
        self._proc.start()
        self.endpoint: str = self._conn.recv()

    def fresh_fleet(self, repos: int, per_repo: int) -> tuple[int, float]:
        """Reset moto and seed ``repos`` x ~``per_repo`` images; (images, seconds)."""
        self._conn.send(("seed", (repos, per_repo)))
        return self._conn.recv()

    def cpu(self) -> float:
        """The child's CPU seconds so far (user + system, ``/proc/<pid>/stat``)."""
        with open(f"/proc/{self._proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self._conn.send(("stop", None))
        self._conn.recv()
        self._proc.join(10)


def list_and_plan(reg: EcrRegistry, policies: Any) -> tuple[pd.DataFrame, float, float]:
    t0 = time.perf_counter()
    repos = reg.list_repositories()
    inventory = schema.table_to_frame(list_batch(reg, repos, NOW).table)
    t1 = time.perf_counter()
    planned = make_plan(inventory, policies, NOW)
    return planned, t1 - t0, time.perf_counter() - t1


@dataclass
class Measured:
    """One size's figures (``ours``: list + plan + apply; ``base``: list + plan + bare delete)."""

    repos: int
    images: int
    expired: int
    t_seed: float
    t_list: float
    t_plan: float
    t_apply: float
    ecr: Counter[str]
    least: dict[str, int]
    index_reads: int
    s3: Counter[str]
    checks: list[tuple[str, str, str]]
    cpu_moto: float = 0.0  # the apply's CPU seconds in moto's process
    cpu_self: float = 0.0  # and in this one
    t_base: float | None = None
    t_base_delete: float | None = None
    cpu_moto_base: float = 0.0  # the bare deletes' CPU seconds in moto's process
    cpu_self_base: float = 0.0
    cpu_list: float = 0.0  # list + plan: CPU seconds in both processes (ours)
    cpu_list_base: float = 0.0  # and the peer's
    base_deleted: int = 0

    @property
    def ours(self) -> float:
        return self.t_list + self.t_plan + self.t_apply

    @property
    def ours_cpu(self) -> float:
        """List + plan + apply in CPU seconds of both processes: unlike the wall time, it does not
        move with what else the machine runs."""
        return self.cpu_list + self.cpu_moto + self.cpu_self

    @property
    def base_cpu(self) -> float:
        return self.cpu_list_base + self.cpu_moto_base + self.cpu_self_base


def apply_once(moto: MotoChild, repos: int, per_repo: int, policies: Any, workers: int) -> Measured:
    """Seed a fresh fleet, list, plan and apply it; check the outcome."""
    seeded, t_seed = moto.fresh_fleet(repos, per_repo)
    list_reg = EcrRegistry("ecr-bench", ecr_client(moto.endpoint))
    cpu_start = moto.cpu() + time.process_time()
    planned, t_list, t_plan = list_and_plan(list_reg, policies)
    cpu_list = moto.cpu() + time.process_time() - cpu_start
    expire = planned[planned["action"] == "expire"]
    n_by_repo = planned.groupby("repository").size()
    x_by_repo = expire.groupby("repository").size()
    kinds = Counter(expire["kind"])

    s3 = s3_client(moto.endpoint)
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
    note(f"applying: {len(expire):,} images of {len(n_by_repo)} repositories to archive and delete ...")
    cpu0, self0, t = moto.cpu(), time.process_time(), time.perf_counter()
    results = execute(
        planned,
        run,
        lambda _: apply_reg,
        limits=Limits(max_deletions_per_run=10**9, max_fraction=1.0),
        policies=policies,
        workers=workers,
    )
    t_apply = time.perf_counter() - t
    cpu_moto, cpu_self = moto.cpu() - cpu0, time.process_time() - self0
    listing_counts = Counter(list_reg.requests.counts)
    ecr_counts = listing_counts + Counter(apply_reg.requests.counts)
    s3_apply = s3_counts.take()

    # the outcome: every expired image deleted and archived, every kept one still there
    status = Counter(r["status"] for r in results)
    deleted = sum(r["deleted"] + r["already_deleted"] for r in results)
    check_reg = EcrRegistry("ecr-bench", ecr_client(moto.endpoint))
    left = {r: len(check_reg.describe(r)) for r in n_by_repo.index}
    keep_by_repo = n_by_repo - x_by_repo.reindex(n_by_repo.index, fill_value=0)
    wrong = [r for r in left if left[r] != keep_by_repo[r]]
    catalogs = run.store.catalog_keys("ecr-bench")
    docs = [run.store.read_catalog(k) for k in catalogs]
    archived = {e["digest"] for d in docs for e in d["images"]}
    packs = {d["pack"] for d in docs}
    unarchived = set(expire["digest"]) - archived
    least = {
        "DescribeRepositories": max(1, ceil_div(len(n_by_repo), PAGE)),
        "DescribeImages": sum(ceil_div(int(n), PAGE) for n in n_by_repo),
        "BatchGetImage": sum(ceil_div(int(n), BATCH) for n in x_by_repo),
        "BatchDeleteImage": sum(ceil_div(int(n), BATCH) for n in x_by_repo),
    }
    checks = [
        ("expired by kind", "", ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items()))),
        ("repositories by status", "", ", ".join(f"{k} {v}" for k, v in sorted(status.items()))),
        (
            "images deleted / planned",
            f"{deleted:,} / {len(expire):,}",
            "OK" if deleted == len(expire) else "MISMATCH",
        ),
        (
            "expired images archived (catalog entries)",
            f"{len(archived & set(expire['digest'])):,}",
            f"{len(catalogs)} catalogs, {len(packs)} packs; "
            + ("OK" if not unarchived else f"MISSING {len(unarchived)}"),
        ),
        (
            "repositories left with exactly the kept images",
            f"{len(left) - len(wrong)} / {len(left)}",
            "OK" if not wrong else "MISMATCH: " + ", ".join(wrong[:3]),
        ),
    ]
    return Measured(
        repos=len(n_by_repo),
        images=seeded,
        expired=len(expire),
        t_seed=t_seed,
        t_list=t_list,
        t_plan=t_plan,
        t_apply=t_apply,
        ecr=ecr_counts,
        least=least,
        index_reads=listing_counts.get("BatchGetImage", 0),
        s3=s3_apply,
        checks=checks,
        cpu_moto=cpu_moto,
        cpu_self=cpu_self,
        cpu_list=cpu_list,
    )


def delete_only(moto: MotoChild, m: Measured, per_repo: int, policies: Any, workers: int) -> None:
    """The peer without archive, on the same fleet seeded again: list, plan, bare deletes (indexes
    first), repositories ``workers`` at a time like ours."""
    moto.fresh_fleet(m.repos, per_repo)
    reg = EcrRegistry("ecr-base", ecr_client(moto.endpoint))
    cpu_start, t0 = moto.cpu() + time.process_time(), time.perf_counter()
    planned, _, _ = list_and_plan(reg, policies)
    cpu0, self0, t1 = moto.cpu(), time.process_time(), time.perf_counter()
    m.cpu_list_base = cpu0 + self0 - cpu_start
    expire = planned[planned["action"] == "expire"]

    def one(item: tuple[str, pd.DataFrame]) -> int:
        repo, rows = item
        kinds_first = rows.sort_values("kind", key=lambda k: k.map({"index": 0}).fillna(1))
        return len(reg.delete_images(repo, kinds_first["digest"].tolist()).deleted)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        m.base_deleted = sum(pool.map(one, expire.groupby("repository")))
    m.t_base, m.t_base_delete = time.perf_counter() - t0, time.perf_counter() - t1
    m.cpu_moto_base, m.cpu_self_base = moto.cpu() - cpu0, time.process_time() - self0


def print_details(m: Measured) -> None:
    """Sections 1 to 3: the whole fleet's run, its ECR and S3 requests."""
    title(f"1. apply on moto: {m.repos} repositories, {m.images:,} images, {m.expired:,} expired")
    row("seeding (seed_ecr into moto's backend)", f"{m.t_seed:,.2f} s", f"{m.images:,} images")
    row("listing (describe_repositories + describe_images)", f"{m.t_list:,.2f} s")
    row("planning (planner.plan)", f"{m.t_plan:,.2f} s")
    row(
        "apply (fresh look + archive + verify + delete)",
        f"{m.t_apply:,.2f} s",
        f"{m.expired / m.t_apply:,.0f} images/s",
    )
    row("list + plan + apply", f"{m.ours:,.2f} s")
    row("apply: CPU in moto's process / in this one", f"{m.cpu_moto:.2f} / {m.cpu_self:.2f} s")
    if m.t_base_delete is not None:
        row("bare deletes (the peer)", f"{m.t_base_delete:,.2f} s", f"{m.base_deleted:,} deleted")
        row(
            "bare deletes: CPU in moto's process / in this one",
            f"{m.cpu_moto_base:.2f} / {m.cpu_self_base:.2f} s",
        )
    for label, value, comment in m.checks:
        row(label, value, comment)

    title("2. ECR requests: listing + apply, against the least the brief counts")
    ops_table(
        m.ecr,
        m.least,
        {
            "DescribeImages": "the inventory listing",
            "ListImages": "none: the fresh look rides on the archive's BatchGetImage reads",
            "BatchGetImage": f"incl. {m.index_reads:,} by the inventory listing (manifests of indexes)",
            "BatchDeleteImage": f"{BATCH} ids per call",
        },
    )
    actual = sum(m.ecr.values())
    row("actual / least", f"{actual / sum(m.least.values()):.3f}")
    row(
        "requests over the least",
        f"{actual - sum(m.least.values()):,}",
        "the listing's index reads (children must be linked to their indexes before planning)",
    )
    apply_ecr = actual - m.index_reads - m.least["DescribeImages"] - m.least["DescribeRepositories"]
    row(
        "apply's own ECR requests / its least",
        f"{apply_ecr:,} / {m.least['BatchGetImage'] + m.least['BatchDeleteImage']:,}",
        "BatchGetImage + BatchDeleteImage, ceil(n/100) each per repository",
    )

    title("3. S3 requests against the unique digests archived")
    ops_table(
        m.s3,
        {},
        {
            "PutObject": "packs + catalogs (write-once) + journal checkpoints + audit files",
            "GetObject": "read-back of packs and catalogs + journal loads",
        },
    )
    s3_total = sum(m.s3.values())
    row("unique digests archived (expired images)", f"{m.expired:,}")
    row(
        "S3 requests per unique digest",
        f"{s3_total / m.expired:.4f}",
        "one object per digest would need >= 2 (write + read-back) plus metadata",
    )
    row("S3 requests per repository", f"{s3_total / m.repos:.1f}")


def growth(sizes: list[Measured], value: Callable[[Measured], float]) -> tuple[list[float], float]:
    """Seconds per 1,000 expired images between consecutive sizes, and the exponent of the
    smallest-to-largest growth (1.0: linear; 2.0: quadratic)."""
    per_k = [(value(b) - value(a)) / (b.expired - a.expired) * 1000 for a, b in itertools.pairwise(sizes)]
    first, last = sizes[0], sizes[-1]
    exponent = math.log(value(last) / value(first)) / math.log(last.expired / first.expired)
    return per_k, exponent


def print_sizes(sizes: list[Measured], fractions: tuple[float, ...], baseline: bool) -> None:
    """Section 4: the main figure at each size and the slopes between them."""
    title("4. against a delete-only run (no fresh look, no archive), same machine, same fleet, three sizes")
    head = f"  {'size':>5} {'repos':>5} {'expired':>7} {'ours s':>7} {'apply s':>7}"
    if baseline:
        head += f" {'del-only s':>10} {'ratio':>6} {'ours CPU':>8} {'del CPU':>7} {'CPU ratio':>9}"
        head += f" {'apply/del':>9}"
    out(head + f" {'ECR req':>7} {'least':>6}")
    for frac, m in zip(fractions, sizes, strict=True):
        line = f"  {frac:>5.0%} {m.repos:>5} {m.expired:>7,} {m.ours:>7.2f} {m.t_apply:>7.2f}"
        if baseline and m.t_base is not None and m.t_base_delete is not None:
            line += (
                f" {m.t_base:>10.2f} {m.ours / m.t_base:>5.2f}x {m.ours_cpu:>8.2f} {m.base_cpu:>7.2f}"
                f" {m.ours_cpu / m.base_cpu:>8.2f}x {m.t_apply / m.t_base_delete:>8.2f}x"
            )
        out(line + f" {sum(m.ecr.values()):>7,} {sum(m.least.values()):>6,}")
    out("  ours = list + plan + apply; del-only = list + plan + bare delete; ratio = ours / del-only (wall);")
    out("  CPU: the same, in CPU seconds of this process and moto's (steady under a loaded machine);")
    out("  apply/del: apply alone / the bare deletes alone (wall); ECR req: listing + apply")
    series: list[tuple[str, Callable[[Measured], float]]] = [
        ("ours (list + plan + apply), wall", lambda m: m.ours),
        ("apply, wall", lambda m: m.t_apply),
        ("ours, CPU", lambda m: m.ours_cpu),
    ]
    if baseline:
        series += [
            ("delete-only (list + plan + delete), wall", lambda m: m.t_base or 0.0),
            ("delete-only, CPU", lambda m: m.base_cpu),
        ]
    out(f"  {'slope: s per 1,000 expired images':<46} {'10->30 %':>10} {'30->100 %':>10} {'exponent':>9}")
    for label, value in series:
        per_k, exponent = growth(sizes, value)
        out(f"    {label:<44} {per_k[0]:>10.3f} {per_k[1]:>10.3f} {exponent:>9.2f}")
    out("  exponent: log(t_100 / t_10) / log(n_100 / n_10); 1.0 is linear, 2.0 quadratic")
    if baseline:
        full = sizes[-1]
        assert full.t_base is not None
        row(
            "ours / delete-only at 100 %: wall, CPU",
            f"{full.ours / full.t_base:.2f}x, {full.ours_cpu / full.base_cpu:.2f}x",
            "goal: within 1.5x",
        )
        floor = (full.t_list + full.t_plan + full.cpu_moto) / full.t_base
        row(
            "floor on this moto (see below)",
            f"{floor:.2f}x",
            "(list + plan + moto's CPU in the apply) / delete-only: ours if this process cost "
            "nothing and moto never waited",
        )


def moto_read_cost(moto: MotoChild, per_repo: int) -> list[tuple[int, float, float]]:
    """moto's ``BatchGetImage`` of 100 ids at three sizes of one repository (bare deletes shrink
    it between sizes): (images, moto CPU ms per call, wall ms per call), 10 calls each, nothing
    else running against moto. The request is the same at each size; what grows is moto's work."""
    moto.fresh_fleet(1, per_repo)
    reg = EcrRegistry("ecr-scan", ecr_client(moto.endpoint))
    repo = reg.list_repositories()[0]
    digests = sorted(d["imageDigest"] for d in reg.describe(repo))
    calls, costs = 10, []
    for size in (len(digests), len(digests) // 2, len(digests) // 10):
        reg.delete_images(repo, digests[size:])
        digests = digests[:size]
        left = len(reg.describe(repo))
        ids = digests[:BATCH]
        cpu0, t0 = moto.cpu(), time.perf_counter()
        for _ in range(calls):
            reg.client.batch_get_image(repositoryName=repo, imageIds=[{"imageDigest": d} for d in ids])
        costs.append((left, (moto.cpu() - cpu0) / calls * 1000, (time.perf_counter() - t0) / calls * 1000))
    return costs


def print_read_cost(costs: list[tuple[int, float, float]]) -> None:
    """Section 5: why the floor is moto's."""
    title("5. moto's BatchGetImage of 100 ids against the repository's size (one repository, alone)")
    out(f"  {'images in the repository':<40} {'moto CPU per call':>18} {'wall per call':>14}")
    for left, cpu_ms, wall_ms in costs:
        out(f"    {left:<38,} {cpu_ms:>15.1f} ms {wall_ms:>11.1f} ms")
    out("  moto compares every requested id with every image of the repository, so the fresh look's")
    out("  and the archive's reads, made before anything is deleted, cost it the most per id; the")
    out("  bare deletes meet a repository that shrinks with each batch")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="10 repositories x ~300 images instead of 50 x ~1,000"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the delete-only baseline")
    parser.add_argument(
        "--workers",
        type=int,
        default=4,
        help="repositories applied (and bare-deleted by the peer) in parallel (default 4, the executor's)",
    )
    args = parser.parse_args(argv)
    repos, per_repo = (10, 296) if args.quick else (50, 996)  # make_fleet overshoots by <= 4
    fractions = FRACTIONS

    title("registry-ops retention apply bench" + ("  (--quick)" if args.quick else ""))
    row("date (UTC)", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
    row("nproc (usable CPUs)", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?")
    row("load average (1 min) at start", f"{os.getloadavg()[0]:.2f}")
    row("python", platform.python_version())
    for pkg in ("moto", "boto3", "pandas", "pyarrow"):
        row(pkg, metadata.version(pkg))
    out(f"  fleet: {repos} repositories x ~{per_repo} images (make_fleet seed=7, layer_scale=0.0001);")
    out(f"  sizes: {', '.join(f'{f:.0%}' for f in fractions)} of its repositories, each on a fresh moto;")
    out(f"  policy: keep the newest {KEEP} (imageCountMoreThan {KEEP}, expire);")
    out(f"  repositories applied {args.workers} at a time; moto in a child process")

    policies = parse_policies(POLICY)
    moto = MotoChild()
    try:
        sizes: list[Measured] = []
        for frac in fractions:
            n = max(1, round(repos * frac))
            note(f"size {frac:.0%}: seeding {n} x ~{per_repo} ...")
            m = apply_once(moto, n, per_repo, policies, args.workers)
            if not args.no_baseline:
                note(f"size {frac:.0%}: delete-only peer on the same fleet ...")
                delete_only(moto, m, per_repo, policies, args.workers)
            sizes.append(m)
        print_details(sizes[-1])
        print_sizes(sizes, fractions, not args.no_baseline)
        print_read_cost(moto_read_cost(moto, per_repo))
    finally:
        moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
