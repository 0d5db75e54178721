"""The Vulnerabilities section against two scan runs made by the real scan jobs (plan, publish,
gate, the gate state saved as ``report_gate`` saves it) on an inventory published by
``inventory.publish_snapshot``, with real Trivy reports uploaded the way pipelines upload them
(no scanner runs: every image has a fresh report), and acknowledgements given by
``scan.jobs.acknowledge``. The expected numbers are counted from the Trivy JSON itself."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from include.registry_ops import inventory, schema
from include.registry_ops.config import parse_config
from include.registry_ops.page import vulns
from include.registry_ops.page.context import Memo, PageContext
from include.registry_ops.page.model import guard
from include.registry_ops.scan import gate_state, store
from include.registry_ops.scan import jobs as scan_jobs
from include.registry_ops.store import objects

BUCKET = "page-vulns-test"
TRIVY = Path(__file__).resolve().parents[1] / "fixtures" / "trivy"
REG = "ecr-local"
_rng = random.Random(12)
D = {name: "sha256:" + "".join(_rng.choice("0123456789abcdef") for _ in range(64)) for name in "ABCDEFG"}
# image -> (repository, tags, report of run 1); run 2 uploads busybox for A
IMAGES = {
    "A": ("page/app", ["1.0.0", "latest"], "alpine-39"),
    "B": ("page/app", ["2.0.0"], "photon-30"),
    "C": ("page/app", ["dev-x"], "fluentd-gems"),
    "D": ("page/lib", ["3.1.0"], "debian-buster"),
    "E": ("page/lib", ["0.1.0"], "spring4shell-jre11"),
    "F": ("page/lib", [], "ubuntu-1804"),
}


def _report(name: str) -> dict:
    return json.loads((TRIVY / f"{name}.json.golden").read_text())


def _ids(name: str, severity: str) -> set[str]:
    return {
        v["VulnerabilityID"]
        for r in _report(name).get("Results") or []
        for v in r.get("Vulnerabilities") or []
        if v["Severity"] == severity
    }


def _config(bucket: str, today):
    allow = [
        {
            "id": sorted(_ids("debian-buster", "CRITICAL"))[0],
            "reason": "no fix",
            "expires": str(today + timedelta(days=30)),
            "repositories": ["page/lib"],  # the same CVE in page/app (C) still counts
        },
        {
            "id": sorted(_ids("spring4shell-jre11", "CRITICAL"))[0],
            "reason": "old",
            "expires": str(today - timedelta(days=2)),
        },
    ]
    return parse_config(
        {
            "registries": [{"name": REG, "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"conn_id": "aws_default", "bucket": bucket},
            "scan": {"allowlist": allow},
        }
    )


def _upload_key(config, image: str) -> str:
    return f"{config.scan.uploads_prefix}{REG}/{IMAGES[image][0]}/{D[image].replace(':', '-')}.json"


def _upload(s3, config, image: str, report: str) -> None:
    key = _upload_key(config, image)
    s3.put_object(Bucket=config.storage.bucket, Key=key, Body=json.dumps(_report(report)).encode())


def _reupload(s3, config, image: str, report: str) -> None:
    """Upload a newer report for ``image``. S3 times objects to the second and the scan imports a
    report only if it is newer than the digest's last scan (the previous upload's time): a report
    uploaded within that second is skipped and the image keeps its old findings. Alone this file
    is slow enough between the two uploads; after other files (warm imports) it is not."""
    key = _upload_key(config, image)
    before = s3.head_object(Bucket=config.storage.bucket, Key=key)["LastModified"]
    while datetime.now(UTC) < before + timedelta(seconds=1):
        time.sleep(0.05)
    _upload(s3, config, image, report)
    assert s3.head_object(Bucket=config.storage.bucket, Key=key)["LastModified"] > before


def _scan(s3, config, run_at: datetime, run_id: str, imports: int) -> dict:
    planned = scan_jobs.plan_run(config, run_at, run_id)
    assert planned["to_scan"] == 0, planned  # every image came from an upload
    assert planned["imported"]["count"] == imports, planned
    manifest = scan_jobs.publish(config, planned, [])
    result = scan_jobs.gate(config, manifest, run_at)
    gate_state.save(s3, config, gate_state.next_state(result, run_at))  # as report_gate, no email
    return result


@pytest.fixture(scope="module")
def scanned(moto_server, s3):
    now = datetime.now(UTC).replace(microsecond=0)
    config = _config(BUCKET, now.date())
    objects.ensure_bucket(s3, BUCKET)
    rows = [
        {
            "registry": REG,
            "registry_kind": "ecr",
            "repository": repo,
            "digest": D[name],
            "tags": tags,
            "kind": "image",
            "size_bytes": 1000,
            "pushed_at": now - timedelta(days=3),
            "snapshot_at": now,
        }
        for name, (repo, tags, _) in IMAGES.items()
    ]
    inventory.publish_snapshot(s3, BUCKET, "inventory/", schema.to_table(rows), [], now, [REG])
    for name, (_, _, report) in IMAGES.items():
        _upload(s3, config, name, report)
    first = _scan(s3, config, now, "scan-1", imports=len(IMAGES))
    # acknowledged: B until 10 days ahead; E acknowledged earlier, ended yesterday
    scan_jobs.acknowledge(
        config, REG, "page/app", D["B"], "fix in sprint", now.date() + timedelta(days=10), "ana"
    )
    past = now - timedelta(days=20)
    scan_jobs.acknowledge(
        config, REG, "page/lib", D["E"], "was waiting", now.date() - timedelta(days=1), "bo", past
    )
    _reupload(s3, config, "A", "busybox-with-lockfile")  # A fixed: run 2 imports the new report
    second = _scan(s3, config, now + timedelta(minutes=5), "scan-2", imports=1)
    reports = {n: r for n, (_, _, r) in IMAGES.items()}
    runs = [reports, {**reports, "A": "busybox-with-lockfile"}]
    # "today" is the day the acknowledgements were dated; "now" (an hour on) may be tomorrow
    return {
        "config": config,
        "today": now.date(),
        "now": now + timedelta(hours=1),
        "runs": runs,
        "gates": (first, second),
    }


def _ctx(config, s3, now) -> PageContext:
    return PageContext(config, s3, now, Memo())


def test_never_run_names_the_scan_dag(s3):
    objects.ensure_bucket(s3, "page-vulns-empty")
    section = vulns.load(_ctx(_config("page-vulns-empty", datetime.now(UTC).date()), s3, datetime.now(UTC)))
    assert section.status == "never_run" and "registry_scan" in section.message


def test_counts_violators_allowlist_acks_and_trend(scanned, s3):
    section = vulns.load(_ctx(scanned["config"], s3, scanned["now"]))
    assert section.status == "ok", section.message
    tables = {t.id: t for t in section.tables}
    latest = scanned["runs"][1]
    want_images = {}
    for name, report in latest.items():
        crit, high = len(_ids(report, "CRITICAL")), len(_ids(report, "HIGH"))
        if crit or high:
            want_images[D[name]] = (crit, high)
    got_images = {r["digest"]: (r["critical"], r["high"]) for r in tables["images"].rows}
    assert got_images == want_images and tables["images"].total == len(want_images)
    for repo in ("page/app", "page/lib"):
        names = [n for n, (r, _, _) in IMAGES.items() if r == repo]
        crit = set().union(*(_ids(latest[n], "CRITICAL") for n in names))
        high = set().union(*(_ids(latest[n], "HIGH") for n in names))
        [row] = [r for r in tables["repositories"].rows if r["repository"] == repo]
        assert (row["critical"], row["high"]) == (len(crit), len(high))
        assert row["images"] == sum(D[n] in want_images for n in names)

    violators = {r["digest"]: r for r in tables["violators"].rows}
    assert set(violators) == {D["B"], D["C"], D["E"]}  # A fixed, D allowlisted
    assert violators[D["B"]]["status"] == "acknowledged"
    assert violators[D["B"]]["ack_until"] == str(scanned["today"] + timedelta(days=10))
    assert violators[D["E"]]["status"] == "unacknowledged"
    assert violators[D["C"]]["status"] == "unprotected" and violators[D["C"]]["protected"] == "no"
    want_b = sorted(_ids("photon-30", "CRITICAL")) + sorted(_ids("photon-30", "HIGH"))
    assert violators[D["B"]]["cve_ids"] == want_b

    allow = {r["id"]: r["status"] for r in tables["allowlist"].rows}
    assert allow == {
        sorted(_ids("debian-buster", "CRITICAL"))[0]: "active",
        sorted(_ids("spring4shell-jre11", "CRITICAL"))[0]: "expired",
    }
    acks = {r["digest"]: r for r in tables["acks"].rows}
    assert acks[D["B"]]["status"] == "active" and acks[D["E"]]["status"] == "expired"
    assert acks[D["E"]]["cve_ids"] == sorted(_ids("spring4shell-jre11", "CRITICAL"))
    figures = {f.label: f for f in section.figures}
    assert figures["Gate"].value == "failed" and figures["Gate"].alert  # E is unacknowledged
    assert figures["Expired allowlist entries"].value == 1 and figures["Expired allowlist entries"].alert
    assert figures["Failing violations"].value == 1

    [trend] = section.charts
    assert len(trend.x) == 2 and trend.x == sorted(trend.x)
    for point, reports in enumerate(scanned["runs"]):
        for series, sev in zip(trend.series, ("CRITICAL", "HIGH"), strict=True):
            pairs = {(D[n], i) for n, rep in reports.items() for i in _ids(rep, sev)}
            assert series.values[point] == len(pairs), (point, sev)


def test_expiry_is_judged_at_the_request_time(scanned, s3):
    later = scanned["now"] + timedelta(days=40)
    section = vulns.load(_ctx(scanned["config"], s3, later))
    tables = {t.id: t for t in section.tables}
    assert {r["status"] for r in tables["allowlist"].rows} == {"expired"}
    assert {r["status"] for r in tables["acks"].rows} == {"expired"}
    assert {f.label: f.value for f in section.figures}["Expired allowlist entries"] == 2


def test_broken_gate_report_and_ack_are_named_and_the_rest_shows(scanned, s3):
    bucket = "page-vulns-corrupt"
    objects.ensure_bucket(s3, bucket)
    for o in objects.list_keys(s3, BUCKET, "reports/scan/"):
        s3.copy_object(Bucket=bucket, Key=o["Key"], CopySource={"Bucket": BUCKET, "Key": o["Key"]})
    config = _config(bucket, scanned["now"].date())
    pointer = json.loads(s3.get_object(Bucket=bucket, Key="reports/scan/latest.json")["Body"].read())
    gate_key = pointer["manifest"].rsplit("/", 1)[0] + "/gate.json"
    ack_key = store.ack_key(config, REG, "page/app", D["B"])
    s3.put_object(Bucket=bucket, Key=gate_key, Body=b"\x00\x01 not a gate")
    s3.put_object(Bucket=bucket, Key=ack_key, Body=b"[1, 2")
    section = guard("vulns", "Vulnerabilities", lambda: vulns.load(_ctx(config, s3, scanned["now"])))
    assert section.status == "ok"
    assert any(f"s3://{bucket}/{gate_key}" in n for n in section.notes)
    assert any(f"s3://{bucket}/{ack_key}" in n for n in section.notes)
    tables = {t.id: t for t in section.tables}
    assert tables["repositories"].rows and tables["violators"].rows == []
    assert [r["digest"] for r in tables["acks"].rows] == [D["E"]]

    s3.put_object(Bucket=bucket, Key=pointer["findings"], Body=b"garbage")
    broken = guard("vulns", "Vulnerabilities", lambda: vulns.load(_ctx(config, s3, scanned["now"])))
    assert broken.status == "error" and f"s3://{bucket}/{pointer['findings']}" in broken.message


def test_a_memo_shared_by_two_buckets_keeps_their_pages_apart(scanned, s3):
    """The plugin's memo is process-wide; the bench and tests load many buckets through one. Two
    buckets holding the same runs (same keys, ETags and pointer time) get their own pages."""
    twins = ("page-vulns-twin-a", "page-vulns-twin-b")
    for bucket in twins:
        objects.ensure_bucket(s3, bucket)
        for o in objects.list_keys(s3, BUCKET, "reports/scan/"):
            s3.copy_object(Bucket=bucket, Key=o["Key"], CopySource={"Bucket": BUCKET, "Key": o["Key"]})
    pointer_key = "reports/scan/latest.json"
    body = s3.get_object(Bucket=BUCKET, Key=pointer_key)["Body"].read()
    pointer = json.loads(body)
    gate_key = pointer["manifest"].rsplit("/", 1)[0] + "/gate.json"
    ack_key = store.ack_key(_config(twins[0], scanned["now"].date()), REG, "page/app", D["B"])
    for _ in range(5):  # the same pointer version in both: written within one second
        for bucket in twins:
            s3.put_object(Bucket=bucket, Key=gate_key, Body=b"not a gate")
            s3.put_object(Bucket=bucket, Key=ack_key, Body=b"[1, 2")
            s3.put_object(Bucket=bucket, Key=pointer_key, Body=body)
        heads = [s3.head_object(Bucket=b, Key=pointer_key) for b in twins]
        if len({(h["ETag"], h["LastModified"]) for h in heads}) == 1:
            break
    else:
        pytest.fail("could not write the two pointers within one second")
    memo = Memo()
    for bucket in twins:
        config = _config(bucket, scanned["now"].date())
        section = vulns.load(PageContext(config, s3, scanned["now"], memo))
        assert section.status == "ok", section.message
        assert any(f"s3://{bucket}/{gate_key}" in n for n in section.notes), section.notes
        assert any(f"s3://{bucket}/{ack_key}" in n for n in section.notes), section.notes
        other = next(b for b in twins if b != bucket)
        assert not any(f"s3://{other}/" in n for n in section.notes), section.notes


def test_no_secret_reaches_the_json(scanned, s3):
    section = guard(
        "vulns", "Vulnerabilities", lambda: vulns.load(_ctx(scanned["config"], s3, scanned["now"]))
    )
    text = json.dumps(section.to_json())
    assert '"testing"' not in text and "aws_secret" not in text.lower() and "password" not in text.lower()


def test_the_trend_reads_the_last_30_days_daily_and_one_run_a_week_before():
    start = datetime(2026, 1, 1, 6, tzinfo=UTC)
    keys = [
        f"reports/scan/runs/dt={start + timedelta(days=n):%Y-%m-%d}/060000Z/manifest.json" for n in range(120)
    ]
    daily_from = start + timedelta(days=90)
    chosen = vulns._sampled(keys, daily_from)
    assert chosen == sorted(chosen)
    assert keys[90:] == [k for k in chosen if k >= keys[90]]  # every run from daily_from's day
    older = [k for k in chosen if k < keys[90]]
    weeks = {datetime.strptime(k.split("dt=")[1][:10], "%Y-%m-%d").isocalendar()[:2] for k in keys[:90]}
    assert len(older) == len(weeks)  # one per ISO week, the week's newest
    assert all(datetime.strptime(k.split("dt=")[1][:10], "%Y-%m-%d").weekday() == 6 for k in older[1:-1])
