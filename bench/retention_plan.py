"""Retention planner bench: the vectorized planner against a straightforward per-image loop.

Run from the repository root (not a pytest test)::

    .venv/bin/python bench/retention_plan.py            # 1,000,000 images over 2,000 repositories
    .venv/bin/python bench/retention_plan.py --quick    # 50,000 images over 100 repositories

1. Builds a synthetic inventory with numpy/Arrow (no per-image Python loop): plain images with
   semver, commit, ``dev-``, ``pr-`` and ``main``/``latest`` tags, untagged images, multi-arch
   indexes with two untagged children each, cosign signatures (tag ``sha256-<hex>.sig``) and
   OCI attestations (untagged, ``subject_digest``), push and pull times over a year. Tags are
   read back through ``schema.table_to_frame`` (validated), list columns kept as Arrow as the
   retention DAG and ``retention plan`` read them (``--lists python``: Python lists instead).
2. Plans it with a realistic policy (five ECR rules including a ``tagRegexList`` rule, an
   override, exclusions, protected tags, semver keep, keep-if-pulled, untag-partial and an
   in-use list of 1,000 references), timing the best of ``--repeat`` runs.
3. Peak memory is the process's resident-set high-water mark (VmHWM, reset after the inventory
   is built; ``ru_maxrss`` where it cannot be reset), read right after planning (before the loop
   runs); tracemalloc is not used because it does not see Arrow's allocator. The RSS before
   planning (the inventory, Python and the libraries) is printed too, and the difference is
   what the planner adds: its working set and its result frame.
4. Runs the per-image loop planner of ``tests/retention/reference_planner.py`` (same
   semantics, written as plainly as possible) and asserts both produce the same action,
   rule priority and untag tags for every image.
5. Does all of this at three sizes (10 %, 30 % and 100 % of the requested size, ``--sizes``),
   each in a fresh process, and prints the slope between them (seconds and MB per million
   images), so a step that grows faster than linearly shows.

The loop planner is the test oracle the differential test
(tests/retention/test_planner_differential.py) checks the vectorized planner against; it
lives with the tests and is imported from there.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import _local

ROOT = _local.prepare()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from include.registry_ops import schema  # noqa: E402
from include.registry_ops.registries.base import OCI_INDEX, OCI_MANIFEST  # noqa: E402
from include.registry_ops.retention.planner import plan  # noqa: E402
from include.registry_ops.retention.policy import (  # noqa: E402
    parse_policies,
)

DAY_NS = 86_400 * 10**9
NEWEST = np.iinfo(np.int64).max
NOW = datetime(2026, 11, 27, tzinfo=UTC)

from tests.retention.reference_planner import decisions, loop_plan  # noqa: E402  (the test oracle)

# --------------------------------------------------------------------------- synthetic inventory

BENCH_POLICY = {
    "version": 1,
    "policies": [
        {
            "name": "services",
            "repositories": ["*"],
            "exclude_repositories": ["sandbox/*"],
            "enabled": True,
            "protect_tags": ["latest", "main"],
            "exclude_tags": ["keep-*"],
            "keep_semver": {"per": "minor", "keep": 2},
            "keep_pulled_within_days": 14,
            "untag_partial": True,
            "rules": [
                {
                    "rulePriority": 1,
                    "description": "releases: keep 30",
                    "selection": {
                        "tagStatus": "tagged",
                        "tagPatternList": ["v*.*.*"],
                        "countType": "imageCountMoreThan",
                        "countNumber": 30,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 2,
                    "description": "PR builds: 14 days",
                    "selection": {
                        "tagStatus": "tagged",
                        "tagRegexList": [r"^pr-\d+$"],
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": 14,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 3,
                    "description": "dev builds: keep 50",
                    "selection": {
                        "tagStatus": "tagged",
                        "tagPrefixList": ["dev-"],
                        "countType": "imageCountMoreThan",
                        "countNumber": 50,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 4,
                    "description": "untagged: 7 days",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": 7,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 5,
                    "description": "everything: keep 200",
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 200},
                    "action": {"type": "expire"},
                },
            ],
            "overrides": [
                {
                    "repositories": ["team1/*"],
                    "keep_semver": {"per": "major", "keep": 3},
                    "untag_partial": False,
                }
            ],
        }
    ],
}


def _hex_digests(rng: np.random.Generator, n: int) -> pa.Array:
    raw = np.frombuffer(rng.bytes(32 * n), dtype=np.uint8).reshape(n, 32)
    hexchars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    out = np.empty((n, 71), dtype=np.uint8)
    out[:, :7] = np.frombuffer(b"sha256:", dtype=np.uint8)
    out[:, 7::2] = hexchars[raw >> 4]
    out[:, 8::2] = hexchars[raw & 15]
    arr = pa.array(out.view("S71").ravel())
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return arr.cast(pa.string())


def _join(*parts: Any) -> pa.Array:
    return pc.binary_join_element_wise(
        *[p if isinstance(p, (pa.Array, pa.ChunkedArray)) else pa.scalar(p) for p in parts], ""
    )


def make_inventory(
    images: int, repositories: int, seed: int = 7, lists: str = "arrow"
) -> tuple[pd.DataFrame, set[str]]:
    """A synthetic inventory (vectorized) and an in-use reference list for it; ``lists`` as in
    ``schema.table_to_frame`` ("arrow": how the retention DAG and CLI read an inventory)."""
    rng = np.random.default_rng(seed)
    per = images // repositories
    n = per * repositories
    repo_i = np.repeat(np.arange(repositories), per)
    j = np.tile(np.arange(per), repositories)
    slot = j % 25
    kind = np.full(n, "image", dtype=object)
    kind[slot == 0] = "index"
    kind[(slot == 1) | (slot == 2)] = "image"  # children of the index at slot 0
    kind[(slot == 3) | (slot == 4)] = "referrer"  # signature of the index, attestation of the next image
    digests = _hex_digests(rng, n)
    d_np = np.asarray(digests.to_numpy(zero_copy_only=False), dtype=object)
    idx0 = np.arange(n) - slot  # the index of this block of 25
    is_child = (slot == 1) | (slot == 2)
    # push times: one repository spans a year, newest last; children/referrers near their subject
    step = 365 * DAY_NS // per
    now = int(pd.Timestamp(NOW).value)
    pushed = now - (per - j) * step + rng.integers(0, step // 2, n)
    pushed[is_child] = pushed[idx0[is_child]]
    subject = np.full(n, None, dtype=object)
    subject[slot == 3] = d_np[idx0[slot == 3]]
    subject[slot == 4] = d_np[np.minimum(np.arange(n) + 1, n - 1)[slot == 4]]
    # tags: up to three slots per row
    top = ~is_child & (slot != 3) & (slot != 4)
    roll = rng.random(n)
    commit = pc.utf8_slice_codeunits(digests, 60, 67)
    major = rng.integers(0, 4, n)
    minor = (j // 7) % 12
    patch = j % 7
    version = _join(
        "v",
        pc.cast(pa.array(major), pa.string()),
        ".",
        pc.cast(pa.array(minor), pa.string()),
        ".",
        pc.cast(pa.array(patch), pa.string()),
    )
    pr = _join("pr-", pc.cast(pa.array(rng.integers(1, 5000, n)), pa.string()))
    dev = _join("dev-", commit)
    release = top & (roll < 0.3)
    devb = top & (roll >= 0.3) & (roll < 0.6)
    prb = top & (roll >= 0.6) & (roll < 0.78)
    keep = top & (roll >= 0.78) & (roll < 0.79)
    # the rest of top rows (~21%) are untagged
    s0 = pc.if_else(
        pa.array(release), version, pc.if_else(pa.array(devb), dev, pc.if_else(pa.array(prb), pr, None))
    )
    s0 = pc.if_else(pa.array(keep), _join("keep-", commit), s0)
    sig = _join("sha256-", pc.utf8_slice_codeunits(pa.array(subject[slot == 3].astype(str)), 7, 71), ".sig")
    s0_np = np.asarray(s0.to_numpy(zero_copy_only=False), dtype=object)
    s0_np[slot == 3] = np.asarray(sig.to_numpy(zero_copy_only=False), dtype=object)
    s0 = pa.array(s0_np, type=pa.string())
    s1 = pc.if_else(pa.array(release | (devb & (roll < 0.4))), commit, None)  # releases also carry the commit
    extra = rng.random(n)
    s2 = pc.if_else(pa.array(devb & (extra < 0.1)), "main", None)
    s2 = pc.if_else(pa.array(release & (extra < 0.02)), "latest", s2)
    s2 = pc.if_else(pa.array(prb & (extra < 0.3)), pc.utf8_slice_codeunits(dev, 0, 11), s2)
    stacked = pa.concat_arrays([s0, s1.cast(pa.string()), s2.cast(pa.string())])
    inter = (np.arange(n)[:, None] + np.array([0, n, 2 * n])[None, :]).ravel()
    values = stacked.take(pa.array(inter))
    valid = np.asarray(pc.is_valid(values)).reshape(n, 3)
    offsets = np.r_[0, np.cumsum(valid.sum(axis=1))].astype(np.int32)
    tags = pa.ListArray.from_arrays(pa.array(offsets), pc.drop_null(values))
    pulled = pushed + (rng.random(n) * (now - pushed)).astype(np.int64)
    pulled_mask = rng.random(n) < 0.5
    sizes = rng.integers(5_000_000, 250_000_000, n)
    media = np.where(kind == "index", OCI_INDEX, OCI_MANIFEST)
    team = pc.cast(pa.array(repo_i % 40), pa.string())
    app = pc.cast(pa.array(repo_i), pa.string())
    repo_names = _join(pc.if_else(pa.array(repo_i % 97 == 5), "sandbox", _join("team", team)), "/app-", app)
    is_index = slot == 0
    child_offsets = np.r_[0, np.cumsum(is_index * 2)].astype(np.int32)
    child_pos = (np.flatnonzero(is_index)[:, None] + np.array([1, 2])[None, :]).ravel()
    parent_offsets = np.r_[0, np.cumsum(is_child)].astype(np.int32)

    def times(ns: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
        return pa.array(ns // 1000, pa.timestamp("us", tz="UTC"), mask=None if valid is None else ~valid)

    columns = {
        "registry": pa.array(np.full(n, "ecr-prod", dtype=object), pa.string()),
        "registry_kind": pa.array(np.full(n, "ecr", dtype=object), pa.string()),
        "repository": repo_names,
        "digest": digests,
        "tags": tags,
        "kind": pa.array(kind, pa.string()),
        "media_type": pa.array(media, pa.string()),
        "size_bytes": pa.array(sizes, pa.int64()),
        "pushed_at": times(pushed),
        "last_pulled_at": times(pulled, pulled_mask),
        "parent_digests": pa.ListArray.from_arrays(
            pa.array(parent_offsets), digests.take(pa.array(idx0[is_child]))
        ),
        "child_digests": pa.ListArray.from_arrays(pa.array(child_offsets), digests.take(pa.array(child_pos))),
        "subject_digest": pa.array(subject, pa.string()),
        "snapshot_at": pa.array(np.full(n, now // 1000), pa.timestamp("us", tz="UTC")),
    }
    # read back as an inventory file or snapshot is: validated, in the schema (absent columns
    # null), list columns as the planning path reads them (Arrow) or as Python lists
    frame = schema.table_to_frame(pa.table(columns), "bench inventory", lists=lists)
    # in use: 1,000 references, half by tag (ECR URI), half by digest
    pick = rng.choice(n, 1000, replace=False)
    host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    refs = set()
    names = frame["repository"].to_numpy()
    for k, i in enumerate(pick):
        t = frame["tags"].iat[i]
        if k % 2 == 0 and t:
            refs.add(f"{host}/{names[i]}:{t[0]}")
        else:
            refs.add(f"{host}/{names[i]}@{d_np[i]}")
    return frame, refs


# --------------------------------------------------------------------------- bench


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    """ru_maxrss: the process's resident-set high-water mark (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hwm_mb() -> float | None:
    """VmHWM: the resident-set high-water mark since the last reset (see ``reset_peak``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Return freed heap to the OS and reset the high-water mark (Linux: clear_refs 5), so the
    peak printed after planning is the planner's (plus the inventory), not the generator's."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Hand freed memory back to the OS (Python, glibc, Arrow's pool) between sizes, so the RSS
    before each size's plan is that size's inventory, not the previous size's leftovers."""
    gc.collect()
    pa.default_memory_pool().release_unused()


class Measure:
    """One size's figures. (A plain class: the differential test loads this file without
    registering it in ``sys.modules``, which a dataclass needs.)"""

    def __init__(self, images: int, planned: int, times: list[float], rss_before: float, peak: float):
        self.images = images  # rows in the inventory
        self.planned = planned
        self.times = times
        self.rss_before = rss_before  # MB, inventory loaded
        self.peak = peak  # MB, high-water mark while planning (inventory included)
        self.loop_s: float | None = None

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def added(self) -> float:
        """What planning adds on top of the loaded inventory (its working set and its result)."""
        return self.peak - self.rss_before

    @property
    def ratio(self) -> float | None:
        return None if self.loop_s is None else self.loop_s / self.best


def check_against_loop(result: pd.DataFrame, expected: dict) -> None:
    """Same action, rule priority and untag tags as the per-image loop for every image."""
    got = decisions(result)
    assert got.keys() == expected.keys(), "planned images differ"
    bad = [k for k in got if got[k] != expected[k]]
    assert not bad, (
        f"{len(bad)} decisions differ, e.g. {bad[0]}: vectorized {got[bad[0]]}, loop {expected[bad[0]]}"
    )


def measure(images: int, repos: int, policies: Any, repeat: int, loop: bool, lists: str = "arrow") -> Measure:
    """Build one inventory, plan it ``repeat`` times, optionally run and compare the loop."""
    t = time.perf_counter()
    inventory, in_use = make_inventory(images, repos, lists=lists)
    print(
        f"  inventory built in {time.perf_counter() - t:.2f} s: {len(inventory):,} rows, "
        f"{inventory['repository'].nunique():,} repositories, kinds "
        f"{inventory['kind'].value_counts().to_dict()}, {len(in_use):,} in-use references"
    )
    release_memory()
    reset = reset_peak()
    rss_before = rss_mb()
    times = []
    result = None
    for _ in range(max(1, repeat)):
        result = None
        gc.collect()
        t = time.perf_counter()
        result = plan(inventory, policies, NOW, in_use)
        times.append(time.perf_counter() - t)
    hwm = hwm_mb() if reset else None
    peak = hwm if hwm is not None else peak_mb()
    assert result is not None
    m = Measure(len(inventory), len(result), times, rss_before, peak)
    print(
        f"  vectorized plan: best {m.best:.3f} s of {len(times)} run(s) "
        f"({', '.join(f'{x:.3f}' for x in times)}), {m.planned:,} rows planned; actions "
        f"{result['action'].value_counts().to_dict()}"
    )
    print(
        f"  memory: RSS with the inventory loaded {rss_before:,.0f} MB; peak RSS while planning "
        f"{peak:,.0f} MB ({'VmHWM reset after building the inventory' if hwm is not None else 'ru_maxrss'}; "
        f"includes the inventory and Python/pandas/pyarrow); the planner adds {m.added:,.0f} MB "
        f"(its working set and its result frame)"
    )
    if loop:
        if lists != "python":  # the loop reads plain Python lists (its natural input), outside its timing
            for col in schema.LIST_COLUMNS:
                inventory[col] = inventory[col].tolist()
        t = time.perf_counter()
        expected = loop_plan(inventory, policies, NOW, in_use)
        m.loop_s = time.perf_counter() - t
        check_against_loop(result, expected)
        print(
            f"  per-image loop: {m.loop_s:.2f} s; same action, rule priority and untag tags for all "
            f"{len(expected):,} images; speed-up {m.ratio:.1f}x"
        )
    return m


def measure_in_child(images: int, repos: int, repeat: int, skip_loop: bool, lists: str) -> Measure:
    """``measure`` in a fresh interpreter: each size starts from the same state (no heap left
    fragmented, no allocator cache warmed by a smaller size), so the slope compares like with like."""
    cmd = [sys.executable, __file__, "--one-size", str(images), str(repos), "--repeat", str(repeat)]
    cmd += ["--lists", lists]
    if skip_loop:
        cmd.append("--skip-loop")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = proc.stdout.rstrip("\n").split("\n")
    if proc.returncode != 0:
        raise SystemExit(
            f"bench size {images:,} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    print("\n".join(lines[:-1]), flush=True)
    fields = json.loads(lines[-1])
    m = Measure(fields["images"], fields["planned"], fields["times"], fields["rss_before"], fields["peak"])
    m.loop_s = fields["loop_s"]
    return m


def slope_lines(sizes: list[Measure]) -> list[str]:
    """Seconds and MB per million images between consecutive sizes; a growing slope (ratio of
    the later slope to the earlier one well above 1) is a super-linear step."""
    lines = []
    slopes = []
    for a, b in itertools.pairwise(sizes):
        million = (b.images - a.images) / 1e6
        if million <= 0:
            continue
        s_time, s_mem = (b.best - a.best) / million, (b.added - a.added) / million
        slopes.append((s_time, s_mem))
        lines.append(
            f"slope {a.images:,} -> {b.images:,} images: {s_time:.2f} s per million images, "
            f"{s_mem:,.0f} MB per million images"
        )
    if len(slopes) == 2 and slopes[0][0] > 0 and slopes[0][1] > 0:
        lines.append(
            f"slope growth (later / earlier; about 1 = linear): time {slopes[1][0] / slopes[0][0]:.2f}x, "
            f"memory {slopes[1][1] / slopes[0][1]:.2f}x"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50,000 images over 100 repositories")
    ap.add_argument("--images", type=int, help="images (default 1,000,000; 50,000 with --quick)")
    ap.add_argument("--repositories", type=int, help="repositories (default 2,000; 100 with --quick)")
    ap.add_argument("--repeat", type=int, default=3, help="planner runs per size; the best is reported")
    ap.add_argument("--skip-loop", action="store_true", help="do not run the loop baseline")
    ap.add_argument(
        "--lists",
        choices=schema.LIST_MODES,
        default="arrow",
        help="list columns of the inventory: arrow (as the planning path reads them, default) or python",
    )
    ap.add_argument(
        "--sizes",
        default="10,30,100",
        help="percentages of the requested size to measure, smallest first (default 10,30,100)",
    )
    ap.add_argument("--one-size", type=int, nargs=2, metavar=("IMAGES", "REPOS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one_size:  # a child process: one size, its figures as the last line (JSON)
        m = measure(
            *args.one_size,
            parse_policies(BENCH_POLICY, "bench-policy"),
            args.repeat,
            not args.skip_loop,
            args.lists,
        )
        print(json.dumps(vars(m)))
        return 0
    images = args.images or (50_000 if args.quick else 1_000_000)
    repos = args.repositories or (100 if args.quick else 2_000)
    fractions = sorted({float(x) / 100 for x in args.sizes.split(",") if x.strip()})
    if not fractions or fractions[-1] != 1.0 or fractions[0] <= 0:
        ap.error(f"--sizes {args.sizes!r}: percentages above 0, the largest 100")
    print(f"retention planner bench: {images:,} images over {repos:,} repos, {args.lists} list columns")
    print(
        f"python {platform.python_version()}, pandas {pd.__version__}, pyarrow {pa.__version__}, "
        f"numpy {np.__version__}, {platform.machine()}, {os.cpu_count()} CPUs"
    )
    sizes = []
    for frac in fractions:
        n, r = max(1, round(images * frac)), max(1, round(repos * frac))
        print(f"size {frac:.0%}: {n:,} images over {r:,} repositories (a fresh process)", flush=True)
        sizes.append(measure_in_child(n, r, args.repeat, args.skip_loop, args.lists))
    print("sizes (images: best plan s, planner adds MB, peak RSS MB, loop speed-up):")
    for m in sizes:
        ratio = "loop not run" if m.ratio is None else f"{m.ratio:.1f}x the loop"
        print(f"  {m.images:>10,}: {m.best:7.3f} s, +{m.added:6,.0f} MB, peak {m.peak:6,.0f} MB, {ratio}")
    for line in slope_lines(sizes):
        print(line)
    full = sizes[-1]
    goals = [
        f"time {'OK' if full.best < 2 else 'MISSED'} (< 2 s)",
        f"memory {'OK' if full.peak < 1024 else 'MISSED'} (peak < 1 GB, inventory included; "
        f"the planner adds {full.added:,.0f} MB)",
    ]
    if full.ratio is not None:
        goals.append(f"speed-up {'OK' if full.ratio >= 20 else 'MISSED'} (>= 20x)")
    print("goals at 100 %: " + ", ".join(goals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
