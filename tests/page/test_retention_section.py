"""The Retention section against runs made by the real executor on moto's ECR (archive, verify,
delete; a dry run; a repository stopped by a cap; one that fails), summarised and published by
the retention jobs' own writers into this module's bucket."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow.compute as pc
import pytest

from include.registry_ops.config import parse_config
from include.registry_ops.page import retention
from include.registry_ops.page.context import Memo, PageContext
from include.registry_ops.page.model import guard
from include.registry_ops.retention import audit, history, jobs
from include.registry_ops.retention.executor import Limits, RunContext, execute
from include.registry_ops.store import objects
from tests.retention_exec.helpers import (
    ecr_registry,
    oldest_images,
    plan_for,
    seed,
    small_fleet,
    unique,
    visible,
    with_children,
)

BUCKET = "page-retention-test"
NO_CAPS = Limits(max_deletions_per_run=10_000, max_fraction=1.0)
NOW = datetime.now(UTC).replace(microsecond=0)
GIB = 2**30


def _config(bucket: str):
    return parse_config(
        {
            "registries": [{"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default"}],
            "storage": {"conn_id": "aws_default", "bucket": bucket},
        }
    )


def _ctx(config, s3) -> PageContext:
    return PageContext(config, s3, NOW, Memo())


def _run(config, s3, reg, run_id, at, plan, dry, stops=None):
    run = RunContext.from_config(config, s3, run_id, at, dry)
    results = execute(plan, run, lambda _: reg, limits=NO_CAPS, stop_reasons=stops or {})
    summary = audit.summarize(results, config.retention.usd_per_gb_month, dry)
    summary.update(run_id=run_id, now=at.isoformat())
    jobs._publish_summary(config, s3, summary, results)
    return results


@pytest.fixture(scope="module")
def runs(moto_server, s3):
    """Four runs: one 400 days old (outside the year), a dry run, an executed run (deletes in
    repository 0, repository 1 stopped by a cap, a missing repository failing), and an executed
    run deleting in repository 1. Returns what each expired, by run id."""
    objects.ensure_bucket(s3, BUCKET)
    config = _config(BUCKET)
    reg = ecr_registry(moto_server.endpoint)
    fleet = seed(reg, small_fleet(unique("page-ret"), repositories=2, images=24))
    (r0, s0), (r1, s1) = ((r, visible(reg, r)) for r in fleet)
    e0, e1 = with_children(s0, oldest_images(s0, 2)), with_children(s1, oldest_images(s1, 2))
    dry_plan = plan_for(reg.name, r0, s0, e0, dry_run=True)
    _run(config, s3, reg, "page-old", NOW - timedelta(days=400), dry_plan, True)
    _run(config, s3, reg, "page-dry", NOW - timedelta(days=3), dry_plan, True)
    ghost = plan_for(reg.name, r0, s0, e0)
    ghost["repository"] = r0.name + "-missing"
    plan = pd.concat(
        [plan_for(reg.name, r0, s0, e0), plan_for(reg.name, r1, s1, e1), ghost], ignore_index=True
    )
    _run(
        config, s3, reg, "page-exec-1", NOW - timedelta(days=2), plan, False, {(reg.name, r1.name): "capped"}
    )
    # page-exec-2 deletes e1 and only audits the next two (a policy that is a dry run): the
    # same audit object then holds deleted and would_delete records
    audited = with_children(s1, oldest_images(s1, 4)) - e1
    last = plan_for(reg.name, r1, s1, e1 | audited)
    last.loc[last["digest"].isin(audited), "dry_run"] = True
    _run(config, s3, reg, "page-exec-2", NOW - timedelta(days=1), last, False)
    sizes = {m.digest: m.size for m in s0 + s1}
    return {
        "config": config,
        "repos": (r0.name, r1.name),
        "expired": {"page-dry": e0, "page-exec-1": e0, "page-exec-2": e1},
        "sizes": sizes,
        "tags": {m.digest: sorted(m.tags) for m in s0 + s1},
    }


def test_never_run_names_the_retention_dag(s3):
    objects.ensure_bucket(s3, "page-retention-empty")
    ctx = _ctx(_config("page-retention-empty"), s3)
    section = retention.load(ctx)
    assert section.status == "never_run" and "registry_retention" in section.message
    assert retention.search_deleted(ctx, "x").total == 0


def test_runs_of_the_year_with_their_numbers(runs, s3):
    section = retention.load(_ctx(runs["config"], s3))
    assert section.status == "ok", section.message
    rows = {r["run_id"]: r for r in section.tables[0].rows}
    assert list(rows) == ["page-exec-2", "page-exec-1", "page-dry"]  # newest first, page-old left out
    r0, r1 = runs["repos"]
    size = runs["sizes"]
    for run_id in ("page-exec-1", "page-exec-2"):
        gone = runs["expired"][run_id]
        row = rows[run_id]
        assert row["mode"] == "executed" and row["images_removed"] == len(gone)
        assert row["bytes_removed"] == sum(size[d] for d in gone)
        assert row["usd_month_saved"] == round(sum(size[d] for d in gone) / GIB * 0.10, 2)
    dry = rows["page-dry"]
    assert dry["mode"] == "dry run" and dry["images_removed"] == 0
    assert dry["would_remove_images"] == len(runs["expired"]["page-dry"])
    assert dry["would_remove_bytes"] == sum(size[d] for d in runs["expired"]["page-dry"])
    assert rows["page-exec-1"]["caps_hit"] == [f"ecr-local/{r1}"]
    assert rows["page-exec-1"]["failed"] == [f"ecr-local/{r0}-missing"]
    assert rows["page-exec-1"]["status"] == "failed" and rows["page-exec-2"]["status"] == "ok"
    assert section.as_of == (NOW - timedelta(days=1)).isoformat()

    deleted = section.tables[1]
    want = runs["expired"]["page-exec-1"] | runs["expired"]["page-exec-2"]
    assert deleted.total == len(want) == len(deleted.rows)
    assert {r["digest"] for r in deleted.rows} == want
    for r in deleted.rows:
        assert r["restore"] == {
            "mode": "restore",
            "digest": r["digest"],
            "registry": "ecr-local",
            "repository": r0 if r["digest"] in runs["expired"]["page-exec-1"] else r1,
        }
        assert r["archive_key"] and r["archive_key"].startswith("archive/")
        assert r["tags"] == runs["tags"][r["digest"]] and r["size_bytes"] == size[r["digest"]]
        assert r["rule"] == "test-policy rule 1"
    assert [c.kind for c in deleted.columns if c.key == "restore"] == ["restore"]
    [chart] = section.charts
    assert chart.kind == "bytes" and chart.x == sorted(chart.x) and len(chart.x) == 3
    removed = dict(zip(chart.x, chart.series[0].values, strict=True))
    assert removed[(NOW - timedelta(days=1)).isoformat()] == rows["page-exec-2"]["bytes_removed"]
    assert removed[(NOW - timedelta(days=3)).isoformat()] is None  # a dry run removed nothing
    figures = {f.label: f for f in section.figures}
    assert figures["Images removed (year)"].value == len(want)
    assert figures["Runs (last year)"].value == 3


def test_the_preview_is_the_newest_deletions_and_search_finds_the_rest(runs, s3, monkeypatch):
    ctx = _ctx(runs["config"], s3)
    monkeypatch.setattr(retention, "PREVIEW", 2)
    section = retention.load(ctx)
    deleted = section.tables[1]
    newest = runs["expired"]["page-exec-2"]
    assert len(deleted.rows) == 2 and {r["digest"] for r in deleted.rows} <= newest
    assert deleted.total == len(newest | runs["expired"]["page-exec-1"])
    assert any("search them all" in n for n in section.notes)

    one = sorted(runs["expired"]["page-exec-1"])[0]
    hit = retention.search_deleted(ctx, one[7:20].upper())
    assert hit.total == 1 and hit.rows[0]["digest"] == one
    by_run = retention.search_deleted(ctx, "PAGE-EXEC-1")
    assert {r["digest"] for r in by_run.rows} == runs["expired"]["page-exec-1"]
    r1 = runs["repos"][1]
    by_repo = retention.search_deleted(ctx, r1)
    assert {r["digest"] for r in by_repo.rows} == newest and by_repo.total == len(newest)
    tag = next(t for d in newest for t in runs["tags"][d])
    assert any(tag in r["tags"] for r in retention.search_deleted(ctx, tag).rows)
    everything = retention.search_deleted(ctx, "")
    pages = retention.search_deleted(ctx, "", limit=2, offset=1)
    assert pages.total == everything.total and pages.rows == everything.rows[1:3]
    assert retention.search_deleted(ctx, "rule 1").total == everything.total
    assert retention.search_deleted(ctx, "no-such-thing").total == 0
    with pytest.raises(ValueError, match="offset"):
        retention.search_deleted(ctx, "", offset=-1)


def _copy(s3, bucket: str, prefix: str = "retention/", history: bool = True) -> None:
    """The module's runs in a bucket of the test's own; without the history of runs, the page
    reads every summary and audit object (the path taken before the first publish writes it)."""
    objects.ensure_bucket(s3, bucket)
    for o in objects.list_keys(s3, BUCKET, prefix):
        if history or "/history" not in o["Key"]:
            s3.copy_object(Bucket=bucket, Key=o["Key"], CopySource={"Bucket": BUCKET, "Key": o["Key"]})


def test_a_corrupt_summary_or_audit_object_is_named_and_the_rest_shows(runs, s3):
    bucket = "page-retention-corrupt"
    _copy(s3, bucket, history=False)
    config = _config(bucket)
    summary = "retention/runs/page-exec-1/summary.json"
    doc = json.loads(
        s3.get_object(Bucket=bucket, Key="retention/runs/page-exec-2/summary.json")["Body"].read()
    )
    [audit_key] = [r["audit_key"] for r in doc["results"] if r["deleted"]]
    s3.put_object(Bucket=bucket, Key=summary, Body=b"\xff\xfe not json")
    s3.put_object(Bucket=bucket, Key=audit_key, Body=b"{broken line\n")

    section = guard("retention", "Retention", lambda: retention.load(_ctx(config, s3)))
    assert section.status == "ok"
    rows = {r["run_id"]: r for r in section.tables[0].rows}
    assert rows["page-exec-1"]["status"] == "error"
    assert rows["page-exec-2"]["images_removed"] == len(runs["expired"]["page-exec-2"])
    assert any(f"s3://{bucket}/{summary}" in n for n in section.notes)
    assert any(f"s3://{bucket}/{audit_key}" in n for n in section.notes)
    assert section.tables[1].rows == []  # page-exec-1 unreadable, page-exec-2's audit broken

    s3.put_object(Bucket=bucket, Key="retention/runs/latest.json", Body=b"garbage")
    broken = guard("retention", "Retention", lambda: retention.load(_ctx(config, s3)))
    assert broken.status == "error" and f"s3://{bucket}/retention/runs/latest.json" in broken.message


def test_no_secret_reaches_the_json(runs, s3):
    ctx = _ctx(runs["config"], s3)
    doc = guard("retention", "Retention", lambda: retention.load(ctx)).to_json()
    text = json.dumps(doc)
    assert "testing" not in re.sub(r"\btest-policy\b", "", text)  # moto's access key and secret
    found = json.dumps(retention.search_deleted(ctx, "").__dict__, default=str)
    assert "secret" not in found.lower() and "password" not in found.lower()


def _settle(ctx) -> None:
    deadline = time.monotonic() + 20
    while retention.loading(ctx) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_summaries_past_the_budget_load_behind_and_a_warm_request_reads_only_the_pointer(
    runs, s3, monkeypatch
):
    monkeypatch.setattr(retention, "SUMMARY_BUDGET", 0.0)
    monkeypatch.setattr(retention, "PREVIEW_BUDGET", 0.0)
    _copy(s3, "page-retention-budget", history=False)
    ctx = _ctx(_config("page-retention-budget"), s3)
    first = retention.load(ctx)
    assert first.tables[0].rows == [] and any(
        "4 older run summaries are still being read" in n for n in first.notes
    )
    _settle(ctx)
    full = retention.load(ctx)
    assert [r["run_id"] for r in full.tables[0].rows] == ["page-exec-2", "page-exec-1", "page-dry"]
    assert not any("still being read" in n for n in full.notes)
    _settle(ctx)  # the audit objects the section asked for, read behind it
    full = retention.load(ctx)
    with _calls(s3) as calls:
        again = retention.load(ctx)
    assert again.to_json() == full.to_json() and calls == ["GetObject"]


def test_a_rerun_rewriting_the_latest_summary_shows_on_the_next_request(runs, s3):
    bucket = "page-retention-rerun"
    _copy(s3, bucket)
    config = _config(bucket)
    ctx = _ctx(config, s3)
    before = {r["run_id"]: r for r in retention.load(ctx).tables[0].rows}
    assert before["page-exec-2"]["failed"] == []
    layout = audit.run_layout(bucket, config.retention.runs_prefix)
    key = layout.id_prefix("page-exec-2") + audit.SUMMARY_NAME
    doc = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    time.sleep(1.1)  # S3's LastModified has one-second resolution
    doc["repositories_failed"] = ["ecr-local/rerun-failed"]  # what the rerun found
    deleted_before = retention.search_deleted(ctx, "").rows
    pointer_before = s3.get_object(Bucket=bucket, Key=layout.latest_key)["Body"].read()
    jobs._publish_summary(config, s3, {k: v for k, v in doc.items() if k != "results"}, doc["results"])
    assert s3.get_object(Bucket=bucket, Key=layout.latest_key)["Body"].read() == pointer_before  # same text
    after = {r["run_id"]: r for r in retention.load(ctx).tables[0].rows}
    assert after["page-exec-2"]["failed"] == ["ecr-local/rerun-failed"]
    assert after["page-exec-1"] == before["page-exec-1"]
    assert retention.search_deleted(ctx, "").rows == deleted_before  # its deletions once, not twice
    assert history.current(s3, layout, json.loads(pointer_before)) is not None


@contextlib.contextmanager
def _calls(s3) -> Iterator[list[str]]:
    """The S3 operations sent while the block runs (``GetObject``, ...)."""
    calls: list[str] = []

    def handler(event_name: str, **_) -> None:
        calls.append(event_name.split(".")[-1])

    s3.meta.events.register("before-send.s3.*", handler)
    try:
        yield calls
    finally:
        s3.meta.events.unregister("before-send.s3.*", handler)


def _settled(ctx):
    """The section and the whole search once every background read is done."""
    retention.load(ctx)
    _settle(ctx)
    retention.search_deleted(ctx, "")
    _settle(ctx)
    return retention.load(ctx).to_json(), retention.search_deleted(ctx, "").__dict__


def test_a_cold_page_reads_the_year_from_the_history_and_shows_what_the_summaries_say(runs, s3):
    ctx = _ctx(runs["config"], s3)
    with _calls(s3) as calls:
        section = retention.load(ctx)
        found = retention.search_deleted(ctx, "")
    assert sorted(calls) == sorted(["GetObject"] * 4 + ["ListObjectsV2"]), calls  # pointer twice
    assert not any("still being read" in n for n in section.notes)
    layout = audit.run_layout(BUCKET, runs["config"].retention.runs_prefix)
    hist = history.read(s3, layout)
    assert hist.older == [layout.id_prefix("page-old") + audit.SUMMARY_NAME]  # outside the year
    assert [r["key"].split("/")[-2] for r in hist.runs] == ["page-exec-2", "page-exec-1", "page-dry"]

    _copy(s3, "page-retention-nohistory", history=False)
    slow = _ctx(_config("page-retention-nohistory"), s3)
    want_section, want_found = _settled(slow)
    got = section.to_json()
    for doc in (got, want_section):
        doc.pop("source")  # names the bucket
    assert got == want_section
    assert found.__dict__ == want_found and found.total == len(
        runs["expired"]["page-exec-1"] | runs["expired"]["page-exec-2"]
    )
    later = NOW + timedelta(days=363, hours=12)  # page-exec-2 is the one run left in the year
    year_later = retention.search_deleted(PageContext(runs["config"], s3, later, ctx.memo), "")
    slow_later = retention.search_deleted(PageContext(slow.config, s3, later, slow.memo), "")
    assert year_later.__dict__ == slow_later.__dict__
    assert {r["digest"] for r in year_later.rows} == runs["expired"]["page-exec-2"]


def _copied(s3, bucket: str):
    """The module's runs, history included, in the test's own bucket: its config and run layout."""
    _copy(s3, bucket)
    config = _config(bucket)
    return config, audit.run_layout(bucket, config.retention.runs_prefix)


def _summary(s3, layout, run_id: str) -> dict:
    key = layout.id_prefix(run_id) + audit.SUMMARY_NAME
    return json.loads(s3.get_object(Bucket=layout.bucket, Key=key)["Body"].read())


def test_a_history_that_is_not_current_or_is_broken_is_not_trusted(runs, s3, caplog):
    bucket = "page-retention-stale"
    config, layout = _copied(s3, bucket)
    # a run published by a writer that did not update the history (an older registry-ops)
    doc = _summary(s3, layout, "page-dry")
    doc.update(run_id="page-late", now=(NOW - timedelta(hours=1)).isoformat())
    layout.publish(
        s3, layout.id_prefix("page-late"), doc, extra={k: doc[k] for k in ("run_id", "now", "dry_run")}
    )
    rows = [r["run_id"] for r in _settled(_ctx(config, s3))[0]["tables"][0]["rows"]]
    assert rows == ["page-late", "page-exec-2", "page-exec-1", "page-dry"]
    # a run folder the history does not know, while the pointer is the one it covers
    s3.put_object(
        Bucket=bucket, Key=layout.latest_key, Body=json.dumps({"manifest": history.read(s3, layout).covers})
    )
    assert history.current(s3, layout, {"manifest": history.read(s3, layout).covers}) is None
    # a history that is not one: named in the log, and the page still shows every run
    s3.put_object(Bucket=bucket, Key=history.key_of(layout), Body=b"{not json")
    with caplog.at_level("WARNING"):
        rows = [r["run_id"] for r in _settled(_ctx(config, s3))[0]["tables"][0]["rows"]]
    assert rows == ["page-late", "page-exec-2", "page-exec-1", "page-dry"]
    assert f"s3://{bucket}/{history.key_of(layout)}" in caplog.text


def test_a_publish_whose_history_failed_still_publishes_and_the_next_one_heals_it(runs, s3, monkeypatch):
    bucket = "page-retention-heal"
    config, layout = _copied(s3, bucket)
    doc = _summary(s3, layout, "page-exec-2")
    results = doc.pop("results")

    def broken(*_a, **_k):
        raise ConnectionError("S3 went away while the history was written")

    # the history written, then the summary not: the page shows no run whose summary is not there
    monkeypatch.setattr(type(layout), "publish", broken)
    with pytest.raises(ConnectionError):
        jobs._publish_summary(config, s3, {**doc, "run_id": "page-phantom"}, results)
    assert history.read(s3, layout).covers == layout.id_prefix("page-phantom") + audit.SUMMARY_NAME
    shown = [r["run_id"] for r in retention.load(_ctx(config, s3)).tables[0].rows]
    assert shown == ["page-exec-2", "page-exec-1", "page-dry"]
    monkeypatch.undo()

    monkeypatch.setattr(history, "update", broken)
    jobs._publish_summary(
        config, s3, {**doc, "run_id": "page-missed", "now": (NOW - timedelta(hours=2)).isoformat()}, results
    )
    assert (
        json.loads(s3.get_object(Bucket=bucket, Key=layout.latest_key)["Body"].read())["run_id"]
        == "page-missed"
    )
    monkeypatch.undo()
    jobs._publish_summary(
        config,
        s3,
        {
            **doc,
            "run_id": "page-next",
            "now": (NOW - timedelta(hours=1)).isoformat(),
            "dry_run": True,
            "images_removed": 0,
        },
        [],
    )
    pointer = json.loads(s3.get_object(Bucket=bucket, Key=layout.latest_key)["Body"].read())
    hist = history.current(s3, layout, pointer)
    assert hist is not None
    assert [r["key"].split("/")[-2] for r in hist.runs][:2] == ["page-next", "page-missed"]
    missed = layout.id_prefix("page-missed") + audit.SUMMARY_NAME
    assert hist.deleted.filter(pc.equal(hist.deleted["run_key"], missed)).num_rows == len(
        runs["expired"]["page-exec-2"]
    )
    section = retention.load(_ctx(config, s3))
    assert [r["run_id"] for r in section.tables[0].rows][:2] == ["page-next", "page-missed"]
