"""Reports bench: ingest, build, validate and render of the storage-cost and pull report for
100,000 images and 1,000,000 pull events, and incremental ingestion of one more day.

Run from the repository root (not a pytest test)::

    .venv/bin/python bench/reports.py                   # 100,000 images, 1,000,000 pull events
    .venv/bin/python bench/reports.py --quick           # 10,000 images, 100,000 pull events
    .venv/bin/python bench/reports.py --profile build   # also cProfile a phase (its time inflates)

On moto S3 started in this process (no registry: the inventory is synthetic):

1. Data setup (timed, not part of the figures): the synthetic inventory of
   ``bench/retention_plan.py`` (``make_inventory``: indexes with two children, cosign
   signatures, attestations, semver/dev/pr tags), spread over two registries (``ecr-prod``,
   ``oci-prod``: every repository whose number is 3 or 4 modulo 5 is the OCI one's), tags made
   unique in their repository, and layers added: every image has 2-4 base layers from its
   repository's pool of 8 (shared inside the repository) and 1-3 layers of its own, a
   referrer one small layer; ``size_bytes`` is config + layers (an index: its largest child).
   Published with ``inventory.publish_snapshot`` as the current snapshot and ``--snapshots``-1
   weekly earlier ones (the rows pushed by then), so the trend reads real history. Pull
   events of the 30 days before today are written by ``devstack.events.write_events``
   (CloudTrail files for ECR, notification envelopes for OCI; ``per_image_per_day`` tuned so
   the unique pulls total ``--events``).
2. Each phase timed (wall and CPU of every thread) with its memory (``_report.Meter``):
   ``ingest.ingest`` (the first, full read), ``jobs.build`` (cost tables, pull metrics, trend,
   savings, S3 cost) of the window of those 30 days, ``quality.validate`` (Great Expectations,
   its import included: a task pays it) and ``render.render``. Figures checked against the
   generator's truth (events ingested, pulls and failures in the report). For reference, the
   event files are also only read (GET, 16 threads, nothing parsed): the share of ``ingest``
   that is the local S3 server and client in this process.
3. One more day's files written, then ``ingest.ingest`` one day later (incremental: it must
   read only the new files) against a full re-read of everything into a fresh reports prefix,
   in the same process; S3 requests counted by operation (botocore's before-send).

Memory: moto keeps every object in this process, so the process's RSS includes the S3 store.
Each phase prints its start RSS, the peak RSS sampled every 5 ms from ``/proc/self/statm``, the
``ru_maxrss`` delta (exact, but it only moves when the phase exceeds every earlier peak of the
process) and VmHWM reset at the phase start (the kernel's exact peak of the phase). Quoted per
phase: the **peak RSS above the baseline** (the highest of those peaks minus the RSS right
before the first phase: interpreter, libraries, moto and its store, setup frames freed). Against
the 2 GiB goal: a task process's peak, estimated as the RSS of the interpreter and libraries
before moto started plus the highest phase's peak above the baseline. The absolute peak of this
process (moto's store included) is printed beside it.

``--profile`` runs the named phases under cProfile in every thread they start (the ingest's
readers, moto's request threads), timing each thread's CPU: the functions' own times add up to
the phase's CPU time; the output ranks functions by own time and with callees, our functions
alone, modules, and areas (registry_ops, pandas, pyarrow, GX, matplotlib, the local S3 server,
the S3 client), the standard library and helper libraries counted for their callers.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import metadata
from typing import Any

import _local
from _report import Meter, S3Counter, note, out, release_memory, row, rss_bytes, title

ROOT = _local.prepare()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from retention_plan import NOW as PLAN_NOW  # noqa: E402
from retention_plan import _hex_digests, make_inventory  # noqa: E402

from devstack.events import S3Target, day_range, write_events  # noqa: E402
from devstack.services import MotoService  # noqa: E402
from include.registry_ops import schema  # noqa: E402
from include.registry_ops.config import Config, parse_config  # noqa: E402
from include.registry_ops.inventory import publish_snapshot  # noqa: E402
from include.registry_ops.reports import ingest, jobs, savings  # noqa: E402
from include.registry_ops.reports.charts import human_bytes  # noqa: E402
from include.registry_ops.reports.events import Attribution, dedupe, events_table, read_raw  # noqa: E402
from include.registry_ops.store import objects  # noqa: E402

REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "reports-bench"
TRAIL = f"AWSLogs/{ACCOUNT}/CloudTrail/"
NOTIFICATIONS = "registry-events/"
OCI_HOST = "registry.example.com"
REGISTRIES = ("ecr-prod", "oci-prod")
DAYS = 30
IDLE = 0.2  # write_events' default idle_fraction: images with no pull at all
POOL = 8  # base layers per repository
GOAL_SECONDS = 30.0
GOAL_BYTES = 2 * 2**30
PHASES = ("ingest", "build", "validate", "render")
TEAMS = {
    "payments": ["team1/*", "team11/*", "team21/*"],
    "search": ["team2/*", "team12/*"],
    "data": ["team3*/*"],
    "platform": ["oci-prod/team4/*", "team5/*"],
    "sandbox": ["sandbox/*"],
}


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


# -- the synthetic inventory -------------------------------------------------------------------------
def _lists(counts: np.ndarray, values: pa.Array, present: np.ndarray | None = None) -> pa.Array:
    """A list array of ``values`` cut into rows of ``counts`` (null where not ``present``)."""
    offsets = pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32))
    mask = None if present is None else pa.array(~present)
    return pa.ListArray.from_arrays(offsets, values, mask=mask)


def _unique_tags(tags: pa.Array, repo: np.ndarray) -> pa.Array:
    """Each tag kept on the newest row of its repository only (a tag names one digest)."""
    flat = pc.list_flatten(tags)
    parent = pc.list_parent_indices(tags).to_numpy()
    pairs = pd.DataFrame({"repo": repo[parent], "tag": flat.to_numpy(zero_copy_only=False)})
    keep = ~pairs.duplicated(["repo", "tag"], keep="last").to_numpy()
    return _lists(np.bincount(parent[keep], minlength=len(tags)), flat.filter(pa.array(keep)))


def _layers(
    rng: np.random.Generator, kind: np.ndarray, repo: np.ndarray, repos: int
) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Layer digests and sizes per row (null for indexes) and each row's layer bytes."""
    n = len(kind)
    image, layered = kind == "image", kind != "index"
    nbase = np.where(image, rng.integers(2, 5, n), 0)
    nown = np.where(image, rng.integers(1, 4, n), np.where(layered, 1, 0))
    count = nbase + nown
    starts = np.r_[0, np.cumsum(count)][:-1]
    row_of = np.repeat(np.arange(n), count)
    pos = np.arange(int(count.sum())) - starts[row_of]
    base = pos < nbase[row_of]
    ids = np.empty(len(pos), np.int64)
    first = rng.integers(0, POOL, n)
    ids[base] = repo[row_of[base]] * POOL + (first[row_of[base]] + pos[base]) % POOL
    own = int((~base).sum())
    ids[~base] = repos * POOL + np.arange(own)
    pool_sizes = rng.integers(5 * 2**20, 80 * 2**20, repos * POOL)
    own_sizes = np.where(
        image[row_of[~base]], rng.integers(100_000, 40 * 2**20, own), rng.integers(800, 60_000, own)
    )
    sizes = np.empty(len(pos), np.int64)
    sizes[base], sizes[~base] = pool_sizes[ids[base]], own_sizes
    digests = _hex_digests(rng, repos * POOL + own).take(pa.array(ids))
    per_row = np.bincount(row_of, weights=sizes, minlength=n).astype(np.int64)
    return _lists(count, digests, layered), _lists(count, pa.array(sizes), layered), per_row


def synthetic_inventory(
    images: int, repositories: int, now: datetime, seed: int
) -> tuple[pa.Table, np.ndarray]:
    """The inventory table (validated against ``schema``) and each row's push time (ns; known
    for the OCI rows too, where the inventory records none) for the earlier snapshots."""
    frame, _ = make_inventory(images, repositories, seed)
    rng = np.random.default_rng(seed + 1)
    n = len(frame)
    shift = pd.Timestamp(now - timedelta(days=1)) - pd.Timestamp(PLAN_NOW)  # newest push: a day ago
    born = (frame["pushed_at"] + shift).astype("datetime64[us, UTC]")
    repo, names = pd.factorize(frame["repository"])
    oci = repo % 5 >= 3
    kind = frame["kind"].to_numpy(dtype=object)
    layer_digests, layer_sizes, layer_bytes = _layers(rng, kind, repo, len(names))
    size = np.where(kind == "index", 0, rng.integers(1_500, 12_000, n) + layer_bytes)
    # an index's size is its largest child's (ECR's rule)
    children = pa.array(frame["child_digests"].tolist(), pa.list_(pa.string()))
    by_digest = pd.Series(size, index=frame["digest"].to_numpy(dtype=object))
    child_size = by_digest.reindex(pc.list_flatten(children).to_numpy(zero_copy_only=False)).to_numpy()
    parent = pc.list_parent_indices(children).to_numpy()
    largest = pd.Series(child_size).groupby(parent).max()
    size[largest.index.to_numpy()] = largest.to_numpy()
    pulled = (frame["last_pulled_at"] + shift).astype("datetime64[us, UTC]")
    config_digest = _hex_digests(rng, n)
    columns = {
        "registry": pa.array(np.where(oci, REGISTRIES[1], REGISTRIES[0]), pa.string()),
        "registry_kind": pa.array(np.where(oci, "oci", "ecr"), pa.string()),
        "repository": pa.array(frame["repository"].to_numpy(dtype=object), pa.string()),
        "digest": pa.array(frame["digest"].to_numpy(dtype=object), pa.string()),
        "tags": _unique_tags(pa.array(frame["tags"].tolist(), pa.list_(pa.string())), repo),
        "kind": pa.array(kind, pa.string()),
        "media_type": pa.array(frame["media_type"].to_numpy(dtype=object), pa.string()),
        "size_bytes": pa.array(size.astype(np.int64)),
        "pushed_at": pa.array(born.where(~oci)),  # the distribution registry records none
        "last_pulled_at": pa.array(pulled.where(~oci)),  # ECR's lastRecordedPullTime only
        "parent_digests": pa.array(frame["parent_digests"].tolist(), pa.list_(pa.string())),
        "child_digests": children,
        "subject_digest": pa.array(frame["subject_digest"], pa.string(), from_pandas=True),
        "config_digest": pc.if_else(pa.array(kind != "index"), config_digest, None),
        "layer_digests": layer_digests,
        "layer_sizes": layer_sizes,
        "snapshot_at": pa.array(np.full(n, pd.Timestamp(now).as_unit("us"))),
    }
    table = pa.table(columns)
    born_ns = born.dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
    return schema.validate_table(table, "synthetic inventory"), born_ns


def at_time(table: pa.Table, born: np.ndarray, at: datetime) -> pa.Table:
    """The rows pushed by ``at``, as a snapshot taken then."""
    rows = table.filter(pa.array(born <= pd.Timestamp(at).value))
    stamp = pa.array(np.full(rows.num_rows, pd.Timestamp(at).as_unit("us")))
    return rows.set_column(rows.schema.get_field_index("snapshot_at"), "snapshot_at", stamp)


# -- set-up ----------------------------------------------------------------------------------------
def make_config(reports_prefix: str) -> Config:
    return parse_config(
        {
            "registries": [
                {
                    "name": REGISTRIES[0],
                    "kind": "ecr",
                    "conn_id": "aws_default",
                    "region": REGION,
                    "registry_id": ACCOUNT,
                },
                {"name": REGISTRIES[1], "kind": "oci", "conn_id": "oci_prod", "url": f"https://{OCI_HOST}"},
            ],
            "storage": {"conn_id": "aws_default", "bucket": BUCKET, "prefixes": {"reports": reports_prefix}},
            "reports": {
                "events": {"cloudtrail": [{"prefix": TRAIL}], "notifications": [{"prefix": NOTIFICATIONS}]},
                "teams": TEAMS,
            },
        },
        "<bench>",
    )


def s3_client(endpoint: str) -> Any:
    return _local.s3_client(endpoint, REGION)


def pullable(table: pa.Table) -> int:
    """Images a client pulls directly (write_events' rule): image or index, not a child."""
    kind = table["kind"]
    top = pc.and_(
        pc.is_in(kind, value_set=pa.array(["image", "index"])),
        pc.equal(pc.list_value_length(table["parent_digests"]), 0),
    )
    return int(pc.sum(top).as_py())


def events(
    s3: Any, frame: pd.DataFrame, days: list[date], per_image_per_day: float, seed: int
) -> dict[str, Any]:
    """Write the event files of ``days``; the generator's counts (its truth frames dropped)."""
    truth = write_events(
        S3Target(s3, BUCKET),
        frame,
        days=days,
        account=ACCOUNT,
        region=REGION,
        cloudtrail_prefix=TRAIL,
        notifications_prefix=NOTIFICATIONS,
        oci_host=OCI_HOST,
        per_image_per_day=per_image_per_day,
        idle_fraction=IDLE,
        seed=seed,
    )
    return {
        "events": truth["events"],
        "failed": truth["failed"],
        "cloudtrail_files": len(truth["cloudtrail_files"]),
        "notification_files": len(truth["notification_files"]),
        "ignored": truth["ignored"],
    }


def store_size(s3: Any) -> tuple[int, int]:
    """(objects, bytes) in the bench bucket: what moto holds in this process."""
    count = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            count, size = count + 1, size + int(item["Size"])
    return count, size


def read_all(s3: Any, prefixes: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """GET every object under ``prefixes`` with ``ingest.READERS`` threads, as ingest fetches its
    files, parsing nothing: the S3 side of a full ingest. (key, body) per object."""
    keys = [
        item["Key"]
        for prefix in prefixes
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for item in page.get("Contents", [])
    ]
    with ThreadPoolExecutor(ingest.READERS) as pool:
        return list(pool.map(lambda k: (k, s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()), keys))


def parse_all(config: Config, bodies: list[tuple[str, bytes]]) -> int:
    """Those bodies turned into pull events as ingest turns them (``events.read_raw`` in
    ``ingest.READERS`` threads, then ``events.events_table`` per ``ingest.BATCH`` files), with no
    S3 in the way: the parsing and the rules alone. The unique events found."""
    attribution = Attribution.from_config(config)
    found = []
    with ThreadPoolExecutor(ingest.READERS) as pool:
        for start in range(0, len(bodies), ingest.BATCH):
            batch = bodies[start : start + ingest.BATCH]
            raws = list(pool.map(lambda kb: read_raw(kb[1], objects.url(BUCKET, kb[0])), batch))
            found.append(events_table(raws, attribution)[0])
    return dedupe(pa.concat_tables(found)).num_rows if found else 0


def gx_import_seconds() -> float:
    """``import great_expectations`` in a fresh interpreter (validate pays it once per task)."""
    code = "import time; t = time.perf_counter(); import great_expectations; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


# -- measuring -------------------------------------------------------------------------------------
class Bench:
    """The S3 client and its request counter, the phases' meters and profiles, and the RSS
    baseline the peaks are quoted against."""

    def __init__(self, config: Config, s3: Any, counter: S3Counter, profile: set[str]) -> None:
        self.config, self.s3, self.counter = config, s3, counter
        self.profile = profile
        self.meters: dict[str, Meter] = {}
        self.profiles: dict[str, pstats.Stats] = {}
        self.baseline = 0  # RSS before the first phase
        self.libraries = 0  # RSS before moto and the setup
        self.reads = (0, 0)  # the reference read of the event files: (files, bytes)

    def run(self, name: str, fn: Any) -> Any:
        note(f"{name} ...")
        profiling = name in self.profile
        with Meter() as meter:
            profilers = _start_profiling() if profiling else []
            try:
                result = fn()
            finally:
                if profiling:
                    self.profiles[name] = _stop_profiling(profilers)
        self.meters[name] = meter
        note(f"{name}: {meter.seconds:.1f} s, peak {mib(meter.peak)}")
        return result

    def memory_rows(self, name: str) -> None:
        m = self.meters[name]
        hwm = "-" if m.peak_hwm is None else mib(m.peak_hwm)
        row(f"{name}: RSS at start / end", f"{mib(m.rss_start)} / {mib(m.rss_end)}")
        row(f"{name}: peak RSS sampled (statm, 5 ms)", mib(m.peak_sampled))
        row(
            f"{name}: ru_maxrss delta", mib(m.maxrss_delta), "" if m.maxrss_delta else "below an earlier peak"
        )
        row(f"{name}: VmHWM since the phase start", hwm, "the kernel's exact peak of the phase")
        row(f"{name}: peak RSS above the phase's start", mib(m.peak - m.rss_start))
        row(f"{name}: peak RSS above the baseline (quoted)", mib(m.peak - self.baseline))


def _start_profiling() -> list[cProfile.Profile]:
    """cProfile in this thread and in every thread started from now on (the phase's pools and
    moto's request threads: the work of ``ingest`` runs in threads), timing each thread's CPU
    (``time.thread_time``): a thread waiting on a socket or a lock costs nothing, so the
    functions' times add up to the phase's CPU time, whatever else runs on the machine."""
    profilers = [cProfile.Profile(time.thread_time)]
    lock = threading.Lock()

    def begin(*_: Any) -> None:
        profiler = cProfile.Profile(time.thread_time)
        with lock:
            profilers.append(profiler)
        profiler.enable()  # replaces this hook for the rest of the thread

    threading.setprofile(begin)
    profilers[0].enable()
    return profilers


def _stop_profiling(profilers: list[cProfile.Profile]) -> pstats.Stats:
    threading.setprofile(None)  # type: ignore[arg-type]
    profilers[0].disable()
    stats = pstats.Stats(profilers[0])
    for profiler in profilers[1:]:
        stats.add(profiler)
    stats.threads = len(profilers)  # type: ignore[attr-defined]
    return stats


_WAITS = ("acquire' of '_thread.", "method 'poll'", "built-in method select.")
_AREAS = (  # where a function lives -> the area its own time is summed under
    ("include/registry_ops/", "registry_ops (the code measured)"),
    ("great_expectations/", "great_expectations"),
    ("matplotlib/", "matplotlib"),
    ("pyarrow/", "pyarrow"),
    ("pandas/", "pandas"),
    ("numpy/", "numpy"),
    ("moto/", "moto + werkzeug + flask (the local S3 server)"),
    ("werkzeug/", "moto + werkzeug + flask (the local S3 server)"),
    ("flask/", "moto + werkzeug + flask (the local S3 server)"),
    ("botocore/", "boto3 / botocore / urllib3 (the S3 client)"),
    ("boto3/", "boto3 / botocore / urllib3 (the S3 client)"),
    ("urllib3/", "boto3 / botocore / urllib3 (the S3 client)"),
    ("/bench/", "the bench"),
    ("<frozen importlib", "imports (finding and loading modules)"),
    ("<frozen zipimport", "imports (finding and loading modules)"),
)
_OTHER = "thread start-up and other"


def _where(path: str) -> str:
    return re.sub(r"^.*?(site-packages/|/lib/python3\.\d+/)", "", path.replace(f"{ROOT}/", ""))


def _areas(entries: dict[Any, Any]) -> Counter[str]:
    """Own time per area. A function outside every area (builtins, the standard library, the
    libraries the areas use: jinja2, pydantic, dateutil...) counts for its callers' areas, in
    proportion to the time spent in it from each caller, up the call graph until an area is
    reached (solved as a fixed point, so recursion is fine); roots reached first are other."""
    from scipy import sparse

    keys = list(entries)
    index = {k: i for i, k in enumerate(keys)}
    names = [*sorted({area for _, area in _AREAS}), _OTHER]
    column = {name: j for j, name in enumerate(names)}
    fixed = np.zeros((len(keys), len(names)))
    rows, cols, weights = [], [], []
    for i, key in enumerate(keys):
        direct = next((area for part, area in _AREAS if part in key[0]), None)
        callers = [(index[c], v[2]) for c, v in entries[key][4].items() if c in index and v[2] > 0]
        total = sum(w for _, w in callers)
        if direct is not None or total <= 0:
            fixed[i, column[direct or _OTHER]] = 1.0
            continue
        for j, w in callers:
            rows.append(i)
            cols.append(j)
            weights.append(w / total)
    flow = sparse.csr_matrix((weights, (rows, cols)), shape=(len(keys), len(keys)))
    shares = fixed.copy()
    for _ in range(500):
        shares = fixed + flow @ shares
    own = np.array([entries[k][2] for k in keys])
    summed = own @ shares
    out = Counter({name: float(summed[j]) for j, name in enumerate(names)})
    out[_OTHER] += float(own.sum() - summed.sum())  # time still circling in a cycle
    return out


def print_profile(name: str, meter: Meter, stats: pstats.Stats, top: int = 25) -> None:
    """Where the phase's CPU time went: functions by own time and by time with callees, own time
    summed per module and per area, as shares of the CPU time of every profiled thread."""
    entries = stats.stats  # type: ignore[attr-defined]
    busy = {k: v for k, v in entries.items() if not any(w in k[2] for w in _WAITS)}
    total = max(sum(v[2] for v in busy.values()), 1e-9)
    threads = stats.threads  # type: ignore[attr-defined]
    title(
        f"cProfile of {name} (CPU time per thread): {total:.1f} s in {threads} thread(s); "
        f"the phase took {meter.seconds:.1f} s wall, {meter.cpu_seconds:.1f} s CPU, profiler on"
    )

    def label(key: tuple[str, int, str]) -> str:
        return f"{_where(key[0])}:{key[1]} {key[2]}"

    ours = {k: v for k, v in busy.items() if "include/registry_ops/" in k[0]}
    for what, found, index in (
        ("own time (tottime)", busy, 2),
        (
            "time with callees (cumtime)",
            {k: v for k, v in busy.items() if not k[0].endswith("threading.py")},
            3,
        ),
        ("time with callees, registry_ops functions only", ours, 3),
    ):
        out(f"  top {top} by {what}, share of {total:.1f} s:")
        for key, value in sorted(found.items(), key=lambda kv: kv[1][index], reverse=True)[:top]:
            out(f"    {value[index]:7.2f} s {value[index] / total:6.1%}  {label(key)}")
    modules: Counter[str] = Counter()
    for key, value in busy.items():
        modules[_where(key[0])] += value[2]
    out(f"  own time by module (top {top}; '~' is builtins):")
    for where, own in modules.most_common(top):
        out(f"    {own:7.2f} s {own / total:6.1%}  {where}")
    out("  own time by area (builtins, stdlib and helper libraries counted for their callers):")
    for where, own in _areas(busy).most_common():
        if own >= 0.005:
            out(f"    {own:7.2f} s {own / total:6.1%}  {where}")


def ops(calls: Counter[str]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in calls.most_common()) or "none"


@dataclass
class Setup:
    """What the data setup made."""

    table: pa.Table  # the current inventory
    born: np.ndarray  # each row's push time (ns)
    per_image_per_day: float
    written: dict[str, Any]  # write_events' counts
    store_bytes: int


def setup(s3: Any, config: Config, args: argparse.Namespace, now: datetime, days: list[date]) -> Setup:
    """The inventory snapshots and the event files (timed, not part of the figures)."""
    title("1. data setup (not in the figures)")
    t = time.perf_counter()
    table, born = synthetic_inventory(args.images, args.repositories, now, seed=7)
    built_s = time.perf_counter() - t
    kinds = Counter(table["kind"].to_pylist())
    per_registry = Counter(table["registry"].to_pylist())
    row("inventory rows", f"{table.num_rows:,}", ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())))
    row("rows per registry", ", ".join(f"{k} {v:,}" for k, v in sorted(per_registry.items())))
    repos = len(set(zip(table["registry"].to_pylist(), table["repository"].to_pylist(), strict=True)))
    layers = pc.list_flatten(table["layer_digests"])
    row(
        "repositories / layer references / distinct layers",
        f"{repos:,} / {len(layers):,} / {len(pc.unique(layers)):,}",
    )
    stored = pc.sum(table.filter(pc.not_equal(table["kind"], "index"))["size_bytes"]).as_py()
    row("stored bytes (image + referrer rows)", human_bytes(int(stored)))
    row("inventory built and validated (s)", f"{built_s:.1f}")

    t = time.perf_counter()
    for k in reversed(range(args.snapshots)):
        at = now - timedelta(weeks=k, hours=1)
        snap = at_time(table, born, at)
        publish_snapshot(s3, BUCKET, config.storage.prefixes.inventory, snap, [], at, list(REGISTRIES))
    row(f"inventory snapshots published ({args.snapshots}, weekly) (s)", f"{time.perf_counter() - t:.1f}")

    top = pullable(table)
    per_day = args.events / (top * (1 - IDLE) * DAYS)
    t = time.perf_counter()
    written = events(s3, schema.built_frame(table), days, per_day, seed=11)
    events_s = time.perf_counter() - t
    row("pullable images / per_image_per_day", f"{top:,} / {per_day:.3f}", f"idle fraction {IDLE}")
    row(
        "unique pulls written (failed)",
        f"{written['events']:,} ({written['failed']:,})",
        f"{days[0]}..{days[-1]}",
    )
    row(
        "CloudTrail files / notification envelopes",
        f"{written['cloudtrail_files']:,} / {written['notification_files']:,}",
        "1,000 records / 500 events each (write_events' defaults)",
    )
    row(
        "non-pull records and redeliveries written",
        f"{sum(written['ignored'].values()):,}",
        ", ".join(f"{k} {v:,}" for k, v in written["ignored"].items()),
    )
    row("events written (s)", f"{events_s:.1f}")
    objects_n, objects_b = store_size(s3)
    row("objects in moto S3 (in this process)", f"{objects_n:,}", mib(objects_b))
    row(
        "import great_expectations, fresh interpreter (s)",
        f"{gx_import_seconds():.1f}",
        "paid inside validate",
    )
    return Setup(table, born, per_day, written, objects_b)


def references(bench: Bench) -> int:
    """The event files only read from S3, then only parsed (not phases: what ``ingest`` is made
    of); the bodies are dropped before the next phase. The unique events parsed."""
    bodies = bench.run("S3 reads alone", lambda: read_all(bench.s3, (TRAIL, NOTIFICATIONS)))
    bench.reads = (len(bodies), sum(len(b) for _, b in bodies))
    parsed = bench.run("parsing alone", lambda: parse_all(bench.config, bodies))
    bench.counter.take()
    return parsed


def report_phases(bench: Bench, ready: Setup, days: list[date], now: datetime) -> bool:
    """Ingest, build, validate and render the report of the 30 days; print the figures; whether
    they match the generator's truth."""
    config, s3 = bench.config, bench.s3
    release_memory()
    bench.baseline = rss_bytes()
    load = os.getloadavg()
    period, start, end = jobs.window(f"{days[0]}..{days[-1]}", now)
    bench.counter.take()
    ingested = bench.run("ingest", lambda: ingest.ingest(config, s3, now=now))
    ingest_calls = bench.counter.take()
    parsed = references(bench)
    report = bench.run("build", lambda: jobs.build(config, s3, period, start, end, now))
    build_calls = bench.counter.take()

    def validate() -> Any:
        from include.registry_ops.reports import quality

        return quality.validate(
            report,
            previous_stored_bytes=report.headline.get("previous_stored_bytes"),
            explained_drop_bytes=savings.explained_drop_bytes(report.tables["savings"]),
            max_change=config.reports.max_bytes_change,
        )

    result = bench.run("validate", validate)

    def render() -> Any:
        from include.registry_ops.reports import render as rendering

        summary = {"success": result.success, "failures": result.failures}
        return rendering.render(report, summary, top=config.reports.top)

    rendered = bench.run("render", render)
    load_after = os.getloadavg()

    title(f"2. the report of {report.label} ({period}, {(end - start).days} days)")
    h, written = report.headline, ready.written
    ok_events = ingested["events"] == written["events"]
    ok_pulls = h["total_pulls"] == written["events"] and h["failed_pulls"] == written["failed"]
    row(
        "ingest: files read / events stored",
        f"{ingested['files_read']:,} / {ingested['events']:,}",
        "= written" if ok_events else f"WRONG: {written['events']:,} written",
    )
    row("ingest: problems", len(ingested["problems"]))
    row("ingest: S3 requests", f"{sum(ingest_calls.values()):,}", ops(ingest_calls))
    reads, read_bytes = bench.reads
    m, r = bench.meters["ingest"], bench.meters["S3 reads alone"]
    row(
        "reference: the same files only GET, 16 threads (s)",
        f"{r.seconds:.1f}",
        f"{reads:,} files, {mib(read_bytes)}; CPU {r.cpu_seconds:.1f} s (moto + boto3 in this process)",
    )
    p = bench.meters["parsing alone"]
    row(
        "reference: those bodies only parsed, 16 threads (s)",
        f"{p.seconds:.1f}",
        f"read_raw + events_table: {parsed:,} events; CPU {p.cpu_seconds:.1f} s",
    )
    rest_wall, rest_cpu = m.seconds - r.seconds - p.seconds, m.cpu_seconds - r.cpu_seconds - p.cpu_seconds
    row(
        "ingest minus both: wall / CPU (s)",
        f"{rest_wall:.1f} / {rest_cpu:.1f}",
        "listing, Parquet parts, state, problems; and the overlap lost",
    )
    row(
        "build: pulls / failed in the report",
        f"{h['total_pulls']:,} / {h['failed_pulls']:,}",
        "= written" if ok_pulls else "WRONG",
    )
    row("build: S3 requests", f"{sum(build_calls.values()):,}", ops(build_calls))
    row(
        "build: total USD/month, images, repositories",
        f"{h['total_usd_month']:,.2f}",
        f"{h['images']:,} images, {h['repositories']:,} repositories",
    )
    for name, frame in report.tables.items():
        row(f"  table {name}", f"{len(frame):,} rows")
    failures = "; ".join(f"{f['table']}: {f['expectation']}" for f in result.failures[:3])
    row("validate: success / failed expectations", f"{result.success} / {len(result.failures)}", failures)
    docs = sum(map(len, result.data_docs.values()))
    row("validate: data docs files / size", f"{len(result.data_docs):,}", mib(docs))
    parts = [
        rendered.html.encode(),
        *(i.data for i in rendered.images),
        *(a.data for a in rendered.attachments),
    ]
    largest = max(rendered.attachments, key=lambda a: len(a.data))
    row(
        "render: email parts (HTML + PNGs + CSVs), before MIME",
        mib(sum(map(len, parts))),
        f"largest {largest.name} {mib(len(largest.data))}",
    )
    attached = ", ".join(f"{a.name} {len(a.data) / 2**20:.1f}" for a in rendered.attachments)
    row("render: attachments (MiB)", len(rendered.attachments), attached)
    left = sorted(set(rendered.csvs) - {a.name.removesuffix(".gz") for a in rendered.attachments})
    row(
        "render: CSVs stored, not attached",
        ", ".join(left) or "none",
        mib(sum(map(len, rendered.csvs.values()))) + " of CSV in all",
    )
    row("render: subject", "", rendered.subject)

    title("2. wall time and memory per phase")
    total = sum(bench.meters[p].seconds for p in PHASES)
    peak = max(bench.meters[p].peak for p in PHASES)
    row(
        "baseline RSS before the phases",
        mib(bench.baseline),
        f"interpreter, libraries, moto + its {mib(ready.store_bytes)} store",
    )
    for name in PHASES:
        m = bench.meters[name]
        profiled = " (profiled)" if name in bench.profile else ""
        row(f"{name}: wall time (s)", f"{m.seconds:.1f}", f"{m.seconds / total:.0%} of the total{profiled}")
        row(f"{name}: CPU time, all threads (s)", f"{m.cpu_seconds:.1f}")
        bench.memory_rows(name)
    verdict = "MET" if total < GOAL_SECONDS else "MISSED"
    row("total wall time of the four phases (s)", f"{total:.1f}", f"goal < {GOAL_SECONDS:.0f} s: {verdict}")
    row("total CPU time of the four phases (s)", f"{sum(bench.meters[p].cpu_seconds for p in PHASES):.1f}")
    row(
        "load average (1 min) before / after the phases",
        f"{load[0]:.1f} / {load_after[0]:.1f}",
        f"{os.cpu_count()} CPUs, shared with other processes",
    )
    above = peak - bench.baseline
    task = bench.libraries + above
    row("highest peak RSS above the baseline", mib(above))
    row("RSS of the interpreter and libraries (before moto)", mib(bench.libraries))
    row(
        "a task process's peak: libraries + the highest above",
        mib(task),
        f"goal < 2 GiB: {'MET' if task < GOAL_BYTES else 'MISSED'}",
    )
    row("highest peak RSS, absolute (moto's store included)", mib(peak), "this process, not a task's")
    return ok_events and ok_pulls


def incremental(bench: Bench, ready: Setup, today: date, now: datetime) -> bool:
    """One more day's files; the incremental ingest against a full re-read into a fresh prefix."""
    title(f"3. one more day ({today}): incremental ingest against a full re-read")
    t = time.perf_counter()
    more = events(bench.s3, schema.built_frame(ready.table), [today], ready.per_image_per_day, seed=12)
    row(
        "new day: unique pulls / files written",
        f"{more['events']:,}",
        f"{more['cloudtrail_files']:,} CloudTrail + {more['notification_files']:,} envelopes, "
        f"{time.perf_counter() - t:.1f} s (setup)",
    )
    later = now + timedelta(days=1)
    bench.counter.take()
    inc = bench.run("incremental", lambda: ingest.ingest(bench.config, bench.s3, now=later))
    inc_calls = bench.counter.take()
    fresh = make_config("reports-reread/")
    full = bench.run("full re-read", lambda: ingest.ingest(fresh, bench.s3, now=later))
    full_calls = bench.counter.take()
    written = ready.written
    new_files = more["cloudtrail_files"] + more["notification_files"]
    all_files = new_files + written["cloudtrail_files"] + written["notification_files"]
    ok_inc = inc["files_read"] == new_files and inc["events"] == more["events"]
    ok_full = full["files_read"] == all_files and full["events"] == more["events"] + written["events"]
    mi, mf = bench.meters["incremental"], bench.meters["full re-read"]
    for label, res, calls, m, expect, ok in (
        ("incremental", inc, inc_calls, mi, new_files, ok_inc),
        ("full re-read", full, full_calls, mf, all_files, ok_full),
    ):
        row(
            f"{label}: files read / skipped",
            f"{res['files_read']:,} / {res['files_skipped']:,}",
            f"{expect:,} expected" + ("" if ok else " WRONG"),
        )
        row(f"{label}: events stored", f"{res['events']:,}", f"over {len(res['days'])} day(s)")
        row(
            f"{label}: S3 GETs / LISTs / PUTs",
            " / ".join(f"{calls.get(op, 0):,}" for op in ("GetObject", "ListObjectsV2", "PutObject")),
            ops(calls),
        )
        row(f"{label}: wall time / CPU time (s)", f"{m.seconds:.2f} / {m.cpu_seconds:.2f}")
        row(
            f"{label}: peak RSS above start / baseline",
            f"{mib(m.peak - m.rss_start)} / {mib(m.peak - bench.baseline)}",
        )
    row(
        "incremental / full re-read: wall time",
        f"{mi.seconds / mf.seconds:.3f}",
        f"{mf.seconds / mi.seconds:.0f}x faster",
    )
    gets = inc_calls.get("GetObject", 0) / max(full_calls.get("GetObject", 0), 1)
    row("incremental / full re-read: GETs", f"{gets:.3f}")
    return ok_inc and ok_full


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 images and 100,000 pull events")
    parser.add_argument("--images", type=int, help="images (default 100,000; 10,000 with --quick)")
    parser.add_argument("--events", type=int, help="unique pull events over 30 days (default 1,000,000)")
    parser.add_argument("--repositories", type=int, help="repositories (default 500; 100 with --quick)")
    parser.add_argument("--snapshots", type=int, default=6, help="inventory snapshots, a week apart")
    parser.add_argument(
        "--profile", default="", help=f"comma-separated phases to cProfile: {', '.join(PHASES)}"
    )
    args = parser.parse_args(argv)
    args.images = args.images or (10_000 if args.quick else 100_000)
    args.events = args.events or (100_000 if args.quick else 1_000_000)
    args.repositories = args.repositories or (100 if args.quick else 500)
    profile = {p.strip() for p in args.profile.split(",") if p.strip()}
    unknown = profile - set(PHASES)
    if unknown:
        parser.error(
            f"--profile: unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}"
        )

    now = datetime.now(UTC).replace(microsecond=0)  # moto stamps LastModified with the real clock
    days = day_range(now.date() - timedelta(days=DAYS), DAYS)
    title("registry-ops reports bench" + ("  (--quick)" if args.quick else ""))
    row("date (UTC)", now.strftime("%Y-%m-%d %H:%M:%S"))
    row("nproc (usable CPUs)", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?")
    row("python", platform.python_version())
    for pkg in ("pandas", "pyarrow", "numpy", "great_expectations", "matplotlib", "moto", "boto3"):
        row(pkg, metadata.version(pkg))
    out(
        f"  sizes: {args.images:,} images over {args.repositories:,} repositories, "
        f"~{args.events:,} pulls over {DAYS} days"
    )
    out(
        f"  goal: the four phases under {GOAL_SECONDS:.0f} s and {GOAL_BYTES / 2**30:.0f} GiB on this machine"
    )

    release_memory()
    libraries = rss_bytes()  # what a task process holds before its work: interpreter and libraries
    moto = MotoService(layers=False).start()
    try:
        s3 = s3_client(moto.endpoint)
        s3.create_bucket(Bucket=BUCKET)
        bench = Bench(make_config("reports/"), s3, S3Counter(s3), profile)
        bench.libraries = libraries
        ready = setup(s3, bench.config, args, now, days)
        ok = report_phases(bench, ready, days, now)
        ok = incremental(bench, ready, now.date(), now) and ok
        for name, stats in bench.profiles.items():
            print_profile(name, bench.meters[name], stats)
        out()
        out(f"  figures checked against the generator's truth: {'yes' if ok else 'NO (see WRONG above)'}")
        return 0 if ok else 1
    finally:
        moto.stop()


if __name__ == "__main__":
    sys.exit(main())
