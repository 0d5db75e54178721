"""Scan bench: scanner invocations per run and findings normalization speed.

Run from the repository root (not a pytest test)::

    .venv/bin/python bench/scan.py

The fleet: 5,000 tags over 1,200 unique image digests. One registry holds 1,000 single-platform
images and 100 two-platform indexes (their 200 children are the other image digests), plus
cosign signatures; a second registry replicates every tagged manifest with the same tags, so
each digest sits in two places. Releases carry version, commit and timestamp tags (``latest`` on
the newest per repository), CI builds commit and timestamp tags.

What runs is the scan DAG's own code path (``scan.jobs``: plan, every mapped batch, publish,
gate) against S3 on moto started here, with one substitution: Trivy cannot run in this
environment, so the scanner is a replay of the 12 real Trivy reports in tests/fixtures (chosen
by digest), parsed by the real parser. "Scanner invocations" counts images handed to the
scanner. Every figure printed is measured in the run; nothing is hard-coded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import _local

ROOT = _local.prepare(
    AIRFLOW_HOME=tempfile.mkdtemp(prefix="airflow-home-bench-"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
)

from devstack.services import MotoService  # noqa: E402
from include.registry_ops import schema, storage  # noqa: E402
from include.registry_ops.clients import s3_client  # noqa: E402
from include.registry_ops.config import parse_config  # noqa: E402
from include.registry_ops.scan import jobs  # noqa: E402
from include.registry_ops.scan.parsers import parse_trivy  # noqa: E402
from include.registry_ops.scan.scanners.base import Scanner, ScanResult, Target  # noqa: E402

REPORTS = sorted((ROOT / "tests" / "fixtures" / "trivy").glob("*.json.golden"))
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REPOS, IMAGES, INDEXES = 40, 1000, 100


# The report goes to the original stdout; everything else written to fd 1 (Airflow's and the
# providers' log lines) is sent to stderr, so `python bench/scan.py > report.txt` is clean.
REPORT = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)


def out(line: str = "") -> None:
    print(line, file=REPORT, flush=True)


def row(label: str, value: Any, comment: str = "") -> None:
    text = f"  {label:<52} {value!s:>14}"
    out(f"{text}   {comment}" if comment else text)


def digest(*parts: object) -> str:
    return "sha256:" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def fleet(now: datetime, extra: int = 0) -> list[dict[str, Any]]:
    """Inventory rows (see ``schema``); ``extra`` adds that many new single images."""
    rows: list[dict[str, Any]] = []
    tops = IMAGES + INDEXES

    def base(reg: str, repo: str, d: str, kind: str, tags: list[str], **kw: Any) -> dict[str, Any]:
        return {
            "registry": reg,
            "registry_kind": "oci" if reg.startswith("oci") else "ecr",
            "repository": repo,
            "digest": d,
            "tags": tags,
            "kind": kind,
            "snapshot_at": now,
            "media_type": OCI_INDEX if kind == "index" else OCI_MANIFEST,
            "size_bytes": 50_000_000,
            **kw,
        }

    newest: dict[str, tuple[int, int]] = {}
    tagged: list[tuple[str, str, str, list[str], list[str]]] = []  # repo, digest, kind, tags, children
    for i in range(tops + extra):
        repo = f"team-{i % REPOS:02d}/app"
        commit = hashlib.sha1(f"c{i}".encode()).hexdigest()[:7]
        stamp = (now - timedelta(minutes=tops - i)).strftime("%Y%m%d-%H%M%S")
        tags = [f"1.{i // REPOS}.0", commit, stamp] if i % 55 < 13 else [commit, stamp]  # 260 releases
        if len(tags) == 3:
            newest[repo] = max(newest.get(repo, (-1, -1)), (i // REPOS, len(tagged)))
        if IMAGES <= i < tops:
            kids = [digest("child", i, arch) for arch in ("amd64", "arm64")]
            tagged.append((repo, digest("index", i), "index", tags, kids))
        else:
            tagged.append((repo, digest("image", i), "image", tags, []))
    for _, pos in newest.values():
        tagged[pos][3].append("latest")
    for reg in ("oci-bench", "ecr-bench"):
        for repo, d, kind, tags, kids in tagged:
            rows.append(base(reg, repo, d, kind, list(tags), child_digests=kids, parent_digests=[]))
            for k, arch in zip(kids, ("amd64", "arm64")[: len(kids)], strict=True):
                rows.append(
                    base(
                        reg,
                        repo,
                        k,
                        "image",
                        [],
                        parent_digests=[d],
                        child_digests=[],
                        platform=f"linux/{arch}",
                    )
                )
            if reg == "oci-bench" and kind == "image" and "latest" in tags:
                sig = digest("sig", d)
                rows.append(
                    base(
                        reg,
                        repo,
                        sig,
                        "referrer",
                        [f"sha256-{d[7:]}.sig"],
                        subject_digest=d,
                        parent_digests=[],
                        child_digests=[],
                    )
                )
    return rows


class ReplayScanner(Scanner):
    """Stands in for Trivy (not installable here): returns a real Trivy report per digest, parsed
    by the real parser; times the parsing."""

    name = "trivy"

    def __init__(self, texts: list[str]) -> None:
        super().__init__()
        self.texts = texts
        self.parse_seconds = 0.0
        self.rows = 0

    def scan(self, targets: list[Target]) -> list[ScanResult]:
        found = []
        for t in targets:
            self._count()
            text = self.texts[int(t.digest[7:15], 16) % len(self.texts)]
            start = time.perf_counter()
            rows = parse_trivy(json.loads(text))
            self.parse_seconds += time.perf_counter() - start
            self.rows += len(rows)
            found.append(ScanResult(t, self.name, "ok", datetime.now(UTC), rows))
        return found


def run(config: Any, table: Any, name: str, texts: list[str], now: datetime) -> dict[str, Any]:
    scanners: list[ReplayScanner] = []

    def build(_config: Any, _registry: str) -> ReplayScanner:
        scanners.append(ReplayScanner(texts))
        return scanners[-1]

    start = time.perf_counter()
    planned = jobs.plan_run(config, now, name, inventory=table)
    t_plan = time.perf_counter() - start
    parts = [jobs.scan_batch(config, b, planned["parts_prefix"], build) for b in planned["batches"]]
    t_scan = time.perf_counter() - start - t_plan
    manifest = jobs.publish(config, planned, parts)
    t_publish = time.perf_counter() - start - t_plan - t_scan
    gate = jobs.gate(config, manifest)
    return {
        "planned": planned,
        "manifest": manifest,
        "gate": gate,
        "t_plan": t_plan,
        "t_scan": t_scan,
        "t_publish": t_publish,
        "t_total": time.perf_counter() - start,
        "invocations": sum(s.invocations for s in scanners),
        "parse_seconds": sum(s.parse_seconds for s in scanners),
        "raw_rows": sum(s.rows for s in scanners),
    }


def report(title: str, r: dict[str, Any]) -> None:
    p, m = r["planned"], r["manifest"]
    out()
    out(title)
    row("image locations covered (digest x repository)", f"{m['images']:,}")
    row("unique image digests", f"{p['digests']:,}")
    row("fresh (skipped)", f"{p['fresh']:,}")
    row("mapped batches", f"{len(p['batches']):,}", f"batch_size {BATCH}")
    row("scanner invocations", f"{r['invocations']:,}")
    row("findings rows published (all locations)", f"{m['rows']:,}")
    row("gate: protected violations", f"{r['gate']['protected_violations']:,}")
    row(
        "time: plan / scan batches / publish",
        f"{r['t_plan']:.2f} / {r['t_scan']:.2f} / {r['t_publish']:.2f} s",
    )
    if r["raw_rows"]:
        row(
            "findings normalized (parse, in scans)",
            f"{r['raw_rows'] / r['parse_seconds']:,.0f} /s",
            f"{r['raw_rows']:,} rows in {r['parse_seconds']:.3f} s",
        )
        row(
            "findings placed in the table (publish)",
            f"{m['rows'] / r['t_publish']:,.0f} /s",
            "merge, first_seen carry-over, Parquet write",
        )


def parse_throughput(texts: list[str], seconds: float = 2.0) -> tuple[int, float]:
    """Entries normalized per second over the 12 real reports, repeated for ``seconds``."""
    rows, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for text in texts:
            rows += len(parse_trivy(json.loads(text)))
    return rows, time.perf_counter() - start


BATCH = 50


def main() -> None:
    texts = [p.read_text() for p in REPORTS]
    moto = MotoService(paging=False).start()
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = moto.conn_json()
    try:
        config = parse_config(
            {
                "registries": [
                    {"name": "ecr-bench", "kind": "ecr", "conn_id": "aws_default"},
                    {"name": "oci-bench", "kind": "oci", "conn_id": "oci_bench"},
                ],
                "storage": {"bucket": "scan-bench"},
                "scan": {"batch_size": BATCH},
            },
            "bench",
        )
        # jobs never create buckets (registry-ops init does): the bench stands in for that step
        storage.ensure_bucket(s3_client(config), config.storage.bucket)
        now = datetime.now(UTC).replace(microsecond=0)
        rows = fleet(now)
        table = schema.to_table(rows)
        tags = sum(len(r["tags"]) for r in rows if r["kind"] != "referrer")
        digests = {r["digest"] for r in rows if r["kind"] == "image"}
        if (tags, len(digests)) != (5000, 1200):
            raise SystemExit(f"fleet construction drifted: {tags} tags, {len(digests)} digests")
        out("=" * 96)
        out("registry_scan bench: incremental scanning of unique digests (scan.jobs, S3 on moto)")
        out("=" * 96)
        row("tags (image and index manifests, both registries)", f"{tags:,}")
        row("unique image digests (platform images)", f"{len(digests):,}")
        row("inventory rows", f"{table.num_rows:,}", "incl. indexes and signatures (not scanned)")
        row("scanner", "replay", f"{len(texts)} real Trivy reports, real parser (no Trivy here)")
        first = run(config, table, "first", texts, now)
        report("run 1 (empty state)", first)
        second = run(config, table, "second", texts, now + timedelta(minutes=5))
        report("run 2 (same inventory, within the 24 h window)", second)
        grown = schema.to_table(fleet(now, extra=10))
        third = run(config, grown, "third", texts, now + timedelta(minutes=10))
        report("run 3 (10 new images pushed)", third)
        fourth = run(config, grown, "fourth", texts, now + timedelta(hours=25))
        report("run 4 (25 h later: window expired, everything rescanned)", fourth)
        n, secs = parse_throughput(texts)
        out()
        out("parser alone")
        row("Trivy entries normalized per second", f"{n / secs:,.0f} /s", f"{n:,} entries in {secs:.2f} s")
        out()
        out("goals")
        row("scanner invocations, run 1 (goal 1,200)", f"{first['invocations']:,}")
        row("scanner invocations, run 2 (goal 0)", f"{second['invocations']:,}")
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
