"""Registry page bench: the Fleet, Vulnerabilities and Retention sections' JSON for a fleet of
100,000 images and a year of daily runs, cold and warm, against the issue's goals (warm under
300 ms per request, cold under 2 s).

Run from the repository root (not a pytest test)::

    .venv/bin/python bench/registry_page.py            # 100,000 images, 365 daily runs
    .venv/bin/python bench/registry_page.py --quick    # 10,000 images, 60 daily runs

1. Data (timed, not part of the figures), on moto S3 started in this process, written with the
   project's own writers:

   - inventory: ``bench/reports.py``'s synthetic inventory (500 repositories over two
     registries, indexes, signatures, attestations, layers) published by
     ``inventory.publish_snapshot``, with one repository recorded as failed;
   - scan: a run a day for the year through the scan's run layout (``scan.store.layout``
     ``.publish``, manifests in ``scan.jobs.publish``'s shape); the newest run's findings are
     synthetic (30 % of the images, 1-8 vulnerabilities each from 2,000 ids) and its gate is
     ``scan.jobs.gate`` itself (``gate.json``); 40 acknowledgements by ``scan.acks.save``;
   - retention: a run a day (every 7th a dry run) with 20 repositories of 10 images each: audit
     records by ``audit.record`` + ``audit.write_audit``, per-repository results by the
     executor's ``_tally``, totals by ``audit.summarize``, published by ``jobs._publish_summary``.

2. Timing, in a **child process** (a page server's state: libraries imported, nothing read; its
   own GIL, as a real S3 would not share the page's): per section, the first request of the
   process (``cold``, fresh ``Memo`` and S3 client), then three more with a fresh Memo each
   (``cold again``: median), then 20 with the same Memo (``warm``: median and worst) and the
   S3 requests one warm request makes. A request is what the plugin does: ``guard(load)``,
   ``to_json()`` and ``json.dumps``. ``retention search`` is ``search_deleted`` (every
   deletion of the year).

3. Baseline: the two retention requests again in a second child, after the history of runs
   (``retention/history.py``, written by every publish) is deleted, so the page reads every
   run summary and audit object, as before the history existed; the cold ratio is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import _local
from _report import S3Counter, note, out, row, title

ROOT = _local.prepare()

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

GOAL_WARM, GOAL_COLD = 0.300, 2.0
BUCKET = "reports-bench"  # bench/reports.py's config names it
SECTIONS = ("fleet", "vulns", "retention", "retention search")
RETENTION = ("retention", "retention search")
WITHOUT = "(no history: every summary)"
REPOS_PER_RUN, IMAGES_PER_REPO = 20, 10


def make_config() -> Any:
    from reports import make_config as reports_config

    return reports_config("reports/")


# -- data ------------------------------------------------------------------------------------------
def seed_inventory(s3: Any, config: Any, images: int, repositories: int, now: datetime) -> pa.Table:
    from reports import synthetic_inventory

    from include.registry_ops.inventory import publish_snapshot

    table, _ = synthetic_inventory(images, repositories, now, seed=7)
    failed = [
        {"registry": "oci-prod", "repository": "team9/failing", "error": "Unavailable: 503 after 5 tries"}
    ]
    names = [r.name for r in config.registries]
    publish_snapshot(s3, BUCKET, config.storage.prefixes.inventory, table, failed, now, names)
    return table


def _findings(table: pa.Table, now: datetime, seed: int) -> pa.Table:
    from include.registry_ops.scan import findings

    rng = np.random.default_rng(seed)
    kind = table["kind"].to_numpy(zero_copy_only=False)
    rows = np.flatnonzero((kind == "image") & (rng.random(len(kind)) < 0.3))
    per = rng.integers(1, 9, len(rows))
    at = np.repeat(rows, per)
    n = len(at)
    ids = rng.integers(0, 2000, n)
    sev = np.array(["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"])[ids % 23 % 5]
    ts = pa.array(np.full(n, np.datetime64(now.replace(tzinfo=None), "us")), pa.timestamp("us", tz="UTC"))
    cols = {
        "registry": table["registry"].take(pa.array(at)),
        "repository": table["repository"].take(pa.array(at)),
        "digest": table["digest"].take(pa.array(at)),
        "vulnerability_id": pa.array([f"CVE-2026-{i:05d}" for i in ids]),
        "package": pa.array([f"pkg{i % 300}" for i in ids]),
        "installed_version": pa.array(["1.0"] * n),
        "fixed_version": pa.array(["1.1"] * n),
        "severity": pa.array(sev),
        "source_severity": pa.array(sev),
        "source": pa.array(["trivy"] * n),
        "first_seen": ts,
        "scanned_at": ts,
    }
    return pa.Table.from_pydict(cols, schema=findings.ARROW_SCHEMA)


def seed_scans(s3: Any, config: Any, inventory_table: pa.Table, now: datetime, days: int) -> dict[str, Any]:
    from include.registry_ops.scan import acks, findings, store
    from include.registry_ops.scan import jobs as scan_jobs
    from include.registry_ops.scan.results import SCANS_SCHEMA
    from include.registry_ops.store import objects

    layout = store.layout(config)
    empty_findings, empty_scans = findings.empty_table(), SCANS_SCHEMA.empty_table()
    rng = np.random.default_rng(3)
    inventory_key = json.loads(
        s3.get_object(Bucket=BUCKET, Key=config.storage.prefixes.inventory + "latest.json")["Body"].read()
    )["key"]
    manifest: dict[str, Any] = {}
    for back in range(days - 1, -1, -1):
        run_at = now - timedelta(days=back, hours=1)
        prefix = layout.run_prefix(run_at)
        table = _findings(inventory_table, run_at, 11) if back == 0 else empty_findings
        keys = {"findings": prefix + "findings.parquet", "scans": prefix + "scans.parquet"}
        objects.put_table(s3, BUCKET, keys["findings"], table)
        objects.put_table(s3, BUCKET, keys["scans"], empty_scans)
        crit, high = int(400 + 60 * np.sin(back / 20) + rng.integers(0, 30)), int(1500 + rng.integers(0, 200))
        manifest = {
            "run_id": f"scheduled__{run_at:%Y-%m-%dT%H:%M:%S}",
            "run_at": run_at.isoformat(),
            "bucket": BUCKET,
            "key": keys["findings"],
            "findings_key": keys["findings"],
            "scans_key": keys["scans"],
            "inventory_key": inventory_key,
            "run_prefix": prefix,
            "images": inventory_table.num_rows,
            "vulnerabilities_by_severity": {
                "CRITICAL": crit,
                "HIGH": high,
                "MEDIUM": 0,
                "LOW": 0,
                "UNKNOWN": 0,
            },
            "never_scanned": [],
            "never_scanned_count": 0,
            "errors": [],
        }
        manifest = layout.publish(s3, prefix, manifest, named=keys, extra={"run_at": manifest["run_at"]})
    started = time.perf_counter()
    logging.getLogger("include.registry_ops").setLevel(logging.CRITICAL)  # its top-violators table
    result = scan_jobs.gate(config, {**manifest, "never_scanned_count": 0}, now - timedelta(hours=1))
    took = time.perf_counter() - started
    note(f"scan gate on the newest run: {len(result['violations']):,} violations, {took:.1f} s")
    for v in result["violations"][:40]:
        back = int(rng.integers(0, 60))
        given = now - timedelta(days=back)
        ack = acks.build(
            registry=v["registry"],
            repository=v["repository"],
            digest=v["digest"],
            cve_ids=v["critical_ids"] + v["high_ids"] or ["CVE-2026-00000"],
            reason="bench",
            until=(given + timedelta(days=30)).date(),
            by="bench",
            now=given,
        )
        acks.save(s3, config, ack)
    return result


def seed_retention(s3: Any, config: Any, inventory_table: pa.Table, now: datetime, days: int) -> int:
    from include.registry_ops.retention import audit, jobs
    from include.registry_ops.retention.executor import _tally

    repos = sorted(
        set(
            zip(
                inventory_table["registry"].to_pylist(),
                inventory_table["repository"].to_pylist(),
                strict=True,
            )
        )
    )
    rng = np.random.default_rng(5)
    audit_prefix = config.retention.audit_prefix
    deleted = 0
    with ThreadPoolExecutor(16) as pool:
        for back in range(days - 1, -1, -1):
            at = now - timedelta(days=back, hours=2)
            run_id = f"scheduled__{at:%Y-%m-%dT%H:%M:%S}+00:00"
            dry = back % 7 == 0
            start = int(rng.integers(0, len(repos)))
            chosen = [repos[(start + i) % len(repos)] for i in range(REPOS_PER_RUN)]

            def one(repo: tuple[str, str], at: datetime = at, run_id: str = run_id, dry: bool = dry) -> dict:
                registry, repository = repo
                records = []
                for k in range(IMAGES_PER_REPO):
                    digest = "sha256:" + os.urandom(32).hex()
                    plan_row = {
                        "registry": registry,
                        "repository": repository,
                        "digest": digest,
                        "tags": [f"pr-{k}-{digest[7:13]}"] if k % 2 else [],
                        "action": "expire",
                        "policy": "default",
                        "rule_priority": 1 + k % 3,
                        "reason": "rule 1: untagged images older than 14 days",
                        "size_bytes": int(20 * 2**20 + k * 2**20),
                    }
                    archive = None if dry else f"archive/images/{registry}/{repository}/{digest[7:]}.json"
                    result = "would_delete" if dry else "deleted"
                    records.append(
                        audit.record(plan_row, result, run_id=run_id, dry_run=dry, archive_key=archive, at=at)
                    )
                key = audit.audit_key(audit_prefix, at, run_id, registry, repository)
                audit.write_audit(s3, BUCKET, key, records)
                return {**_tally(registry, repository, records, "done", None), "audit_key": key}

            results = list(pool.map(one, chosen))
            if back % 45 == 3:  # now and then a repository fails
                results[0] = {
                    **results[0],
                    "status": "failed",
                    "message": f"{chosen[0][0]}/{chosen[0][1]}: Throttled",
                }
            summary = audit.summarize(results, config.retention.usd_per_gb_month, dry)
            summary.update(run_id=run_id, now=at.isoformat(), snapshot=None, plan_key=None)
            jobs._publish_summary(config, s3, summary, results)
            deleted += summary["images_removed"]
    return deleted


# -- timing (child process) ------------------------------------------------------------------------
def _request(section: str, ctx: Any) -> tuple[int, dict[str, Any]]:
    """What the plugin does for one request: the JSON's size in bytes, and what it held."""
    from dataclasses import asdict

    from include.registry_ops.page import fleet, retention, vulns
    from include.registry_ops.page.model import guard, jsonable

    if section == "retention search":
        table = retention.search_deleted(ctx, "pr-1")
        doc = jsonable(asdict(table))
        held = {"matches": table.total, "complete": table.note is None}
    else:
        module = {"fleet": fleet, "vulns": vulns, "retention": retention}[section]
        result = guard(section, section, lambda: module.load(ctx))
        if result.status != "ok":
            raise SystemExit(f"{section}: {result.status}: {result.message}")
        doc = result.to_json()
        held = {"rows": {t.id: len(t.rows) for t in result.tables}}
        if section == "retention":
            held["complete"] = not any("still being read" in n for n in result.notes)
    return len(json.dumps(doc)), held


def _settle(ctx: Any) -> float:
    """Seconds until the retention section's background reads are done."""
    from include.registry_ops.page import retention

    t0 = time.perf_counter()
    while retention.loading(ctx):
        time.sleep(0.02)
    return time.perf_counter() - t0


def child(endpoint: str, now_iso: str, sections: tuple[str, ...] = SECTIONS) -> None:
    import boto3
    from botocore.config import Config as BotoConfig

    from include.registry_ops.page import fleet, retention, vulns  # noqa: F401  (imported as the plugin loads)
    from include.registry_ops.page.context import Memo, PageContext

    config = make_config()
    now = datetime.fromisoformat(now_iso)

    def fresh() -> Any:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=BotoConfig(s3={"addressing_style": "path"}),
        )
        return PageContext(config, s3, now, Memo())

    report: dict[str, Any] = {}
    for section in sections:
        ctx = fresh()
        t0 = time.perf_counter()
        size, held = _request(section, ctx)
        first = time.perf_counter() - t0
        behind = first + _settle(ctx)  # the first request, then what it left to the background
        complete_size, complete = _request(section, ctx)
        _settle(ctx)  # what the complete request started behind it (the search's audit objects)
        again = []
        for _ in range(3):
            other = fresh()
            t0 = time.perf_counter()
            _request(section, other)
            again.append(time.perf_counter() - t0)
            _settle(other)  # its background reads must not slow the next measurement
        counter = S3Counter(ctx.s3)
        warm = []
        for _ in range(20):
            t0 = time.perf_counter()
            _, warm_held = _request(section, ctx)
            warm.append(time.perf_counter() - t0)
        calls = counter.take()
        report[section] = {
            "first": first,
            "first_held": held,
            "complete_after": behind,
            "complete_held": complete,
            "cold": statistics.median(again),
            "warm": statistics.median(warm),
            "warm_max": max(warm),
            "warm_held": warm_held,
            "warm_requests": {k: v / 20 for k, v in calls.items()},
            "bytes": size,
            "complete_bytes": complete_size,
        }
    print(json.dumps(report))


def _timed(endpoint: str, at: str, sections: tuple[str, ...]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", endpoint, at, ",".join(sections)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if proc.returncode:
        out(proc.stdout)
        out(proc.stderr[-4000:])
        raise SystemExit(1)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _held(held: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v}" if not isinstance(v, dict) else " ".join(f"{a}={b}" for a, b in v.items())
        for k, v in held.items()
    )


# -- main ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 images, 60 days of runs")
    parser.add_argument("--child", nargs=3, metavar=("ENDPOINT", "NOW", "SECTIONS"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--hold",
        action="store_true",
        help="after seeding, print moto's endpoint and keep it up (for profiling)",
    )
    args = parser.parse_args(argv)
    if args.child:
        endpoint, at, sections = args.child
        child(endpoint, at, tuple(sections.split(",")))
        return 0
    images, repositories, days = (10_000, 100, 60) if args.quick else (100_000, 500, 365)

    from reports import s3_client

    from devstack.services import MotoService
    from include.registry_ops.store import objects

    now = datetime.now(UTC).replace(microsecond=0)
    title("registry-ops Registry page bench" + ("  (--quick)" if args.quick else ""))
    row("date (UTC)", now.strftime("%Y-%m-%d %H:%M:%S"))
    row("nproc (usable CPUs)", len(os.sched_getaffinity(0)))
    row("python", platform.python_version())
    out(
        f"  data: {images:,} images over {repositories} repositories; {days} daily scan runs; {days} daily "
        f"retention runs ({REPOS_PER_RUN} repositories x {IMAGES_PER_REPO} images each, every 7th a dry run)"
    )
    out(f"  goals: warm < {GOAL_WARM * 1000:.0f} ms per request, cold < {GOAL_COLD:.0f} s")
    moto = MotoService(layers=False).start()
    try:
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = moto.conn_json()  # scan.jobs.gate's client
        s3 = s3_client(moto.endpoint)
        s3.create_bucket(Bucket=BUCKET)
        config = make_config()
        t0 = time.perf_counter()
        table = seed_inventory(s3, config, images, repositories, now - timedelta(hours=3))
        t1 = time.perf_counter()
        gate = seed_scans(s3, config, table, now, days)
        t2 = time.perf_counter()
        deleted = seed_retention(s3, config, table, now, days)
        t3 = time.perf_counter()
        row("setup: inventory snapshot (s)", f"{t1 - t0:.1f}", f"{table.num_rows:,} rows")
        row(
            "setup: scan runs (s)",
            f"{t2 - t1:.1f}",
            f"{len(gate['violations']):,} violations in the newest gate",
        )
        row("setup: retention runs (s)", f"{t3 - t2:.1f}", f"{deleted:,} images deleted over the year")
        if args.hold:
            out(f"  holding: endpoint {moto.endpoint}, now {(now + timedelta(minutes=1)).isoformat()}")
            while True:
                time.sleep(60)
        note("timing in a child process")
        at = (now + timedelta(minutes=1)).isoformat()
        report = _timed(moto.endpoint, at, SECTIONS)
        history_keys = [
            o["Key"] for o in objects.list_keys(s3, BUCKET, config.retention.runs_prefix + "history")
        ]
        if not history_keys:
            out("  no history of runs was written: the retention figures above are the summaries' path")
            return 1
        objects.delete_keys(s3, BUCKET, history_keys)
        note("baseline: the retention requests again, without the history of runs")
        baseline = _timed(moto.endpoint, at, RETENTION)
        report.update({f"{k} {WITHOUT}": v for k, v in baseline.items()})
    finally:
        moto.stop()

    ok = True
    widths = (44, 10)
    for section in report:
        r = report[section]
        title(section)
        first, cold, warm, worst = r["first"], r["cold"], r["warm"], r["warm_max"]
        row(
            "first request of a fresh process (ms)",
            f"{first * 1000:.0f}",
            f"{first / GOAL_COLD:.2f} x cold goal",
            widths,
        )
        row("  what it showed", _held(r["first_held"]), "", widths)
        row(
            "  all read (background done) after (ms)",
            f"{r['complete_after'] * 1000:.0f}",
            _held(r["complete_held"]),
            widths,
        )
        row(
            "cold again, fresh Memo, median of 3 (ms)",
            f"{cold * 1000:.0f}",
            f"{cold / GOAL_COLD:.2f} x cold goal",
            widths,
        )
        row(
            "warm, same Memo, median of 20 (ms)",
            f"{warm * 1000:.1f}",
            f"{warm / GOAL_WARM:.2f} x warm goal",
            widths,
        )
        row("warm, worst of 20 (ms)", f"{worst * 1000:.1f}", f"{worst / GOAL_WARM:.2f} x warm goal", widths)
        row("  what a warm request showed", _held(r["warm_held"]), "", widths)
        calls = ", ".join(f"{k} {v:g}" for k, v in sorted(r["warm_requests"].items())) or "0"
        row("S3 requests per warm request", calls, "", widths)
        row("JSON bytes (first / complete)", f"{r['bytes']:,}", f"{r['complete_bytes']:,}", widths)
        met = warm < GOAL_WARM and max(first, cold) < GOAL_COLD
        if section in SECTIONS and section != "retention search":  # a search is an endpoint of its own
            ok = ok and met
        row("goals met", "yes" if met else "NO", "", widths)
    title("the history of runs against reading every summary and audit object (same run)")
    for section in RETENTION:
        old, new = report[f"{section} {WITHOUT}"], report[section]
        for what, label in (
            ("first", "first request"),
            ("cold", "cold again"),
            ("complete_after", "all shown"),
        ):
            row(
                f"{section}: {label} (ms)",
                f"{new[what] * 1000:.0f} vs {old[what] * 1000:.0f}",
                f"{old[what] / new[what]:.1f}x",
                widths,
            )
    note(
        "without the history a first or cold request shows what its read budget allowed; "
        "'all shown' is the time until the whole year is shown"
    )
    out()
    out(f"  every section within both goals: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
