"""Incremental ingestion on moto S3: CloudTrail files in CloudTrail's own layout and notification
envelopes written by the devstack generator (templated on the documented samples), read into
the day-partitioned Parquet dataset; reruns read nothing twice, a crash between the parts and the
state stores nothing twice, and bad files are counted, named and kept with their day."""

from __future__ import annotations

import gzip
import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from devstack import events as gen
from include.registry_ops.config import ConfigError, parse_config
from include.registry_ops.reports import ingest, tables
from include.registry_ops.reports.events import Attribution
from include.registry_ops.store import objects
from tests.retention.helpers import image, inventory

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
ACCOUNT = "123456789012"
REGION = "us-east-2"
TRAIL = f"AWSLogs/{ACCOUNT}/CloudTrail/"
HOST = "registry.local:5000"
DAYS = [date(2026, 11, 16), date(2026, 11, 17), date(2026, 11, 18)]
NOW = datetime(2026, 11, 18, 23, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def bucket(s3):
    name = f"reports-ingest-{uuid.uuid4().hex[:8]}"
    objects.ensure_bucket(s3, name)
    return name


@pytest.fixture
def env(s3, bucket):
    """A config of its own (unique prefixes) and an inventory of ECR and OCI images."""
    tag = uuid.uuid4().hex[:8]
    trail, notes, reports = f"{tag}/{TRAIL}", f"{tag}/notifications/", f"{tag}/reports/"

    def config(retention_pulls: dict | None = None, **events: Any):
        """``reports.events`` = ``events`` (default: this test's two sources); with
        ``retention_pulls`` there is no ``reports.events`` and those are the sources."""
        sources = events or {"cloudtrail": [{"prefix": trail}], "notifications": [{"prefix": notes}]}
        section = (
            {"retention": {"pulls": retention_pulls}} if retention_pulls else {"reports": {"events": sources}}
        )
        return parse_config(
            {
                "registries": [
                    {
                        "name": "ecr-prod",
                        "kind": "ecr",
                        "conn_id": "aws_default",
                        "region": REGION,
                        "registry_id": ACCOUNT,
                    },
                    {"name": "oci-prod", "kind": "oci", "conn_id": "oci_local", "url": f"http://{HOST}"},
                ],
                "storage": {"conn_id": "aws_default", "bucket": bucket, "prefixes": {"reports": reports}},
                **section,
            },
            "test.yaml",
        )

    inv = inventory(
        *[
            image(f"{tag}-e{n}", [f"v{n}"], 30, repo=f"ingest/app{n % 3}", registry="ecr-prod")
            for n in range(9)
        ],
        *[
            image(
                f"{tag}-o{n}",
                [f"v{n}"],
                30,
                repo=f"ingest/web{n % 2}",
                registry="oci-prod",
                registry_kind="oci",
            )
            for n in range(6)
        ],
    )
    return {
        "s3": s3,
        "bucket": bucket,
        "config": config,
        "inventory": inv,
        "trail": trail,
        "notes": notes,
        "base": f"{reports}events/",
    }


def write(env: dict, days: list[date], seed: int, **options: Any) -> dict:
    return gen.write_events(
        gen.S3Target(env["s3"], env["bucket"]),
        env["inventory"],
        days=days,
        account=ACCOUNT,
        region=REGION,
        cloudtrail_prefix=env["trail"],
        notifications_prefix=env["notes"],
        oci_host=HOST,
        records_per_file=25,
        events_per_envelope=30,
        failure_rate=0.1,
        idle_fraction=0.0,
        seed=seed,
        **options,
    )


def counts(frame: pd.DataFrame) -> pd.DataFrame:
    return (
        frame.groupby(["registry", "repository", "day"])
        .agg(pulls=("event_id", "size"), failed=("failed", "sum"))
        .sort_index()
        .astype("int64")
    )


def truth_counts(*truths: dict) -> pd.DataFrame:
    want = pd.concat([t["by_repository_day"] for t in truths]).groupby(["registry", "repository", "day"])
    return want[["pulls", "failed"]].sum().sort_index().astype("int64")


def parts(env: dict) -> list[str]:
    return sorted(
        o["Key"]
        for o in objects.list_keys(env["s3"], env["bucket"], env["base"])
        if "/day=" in o["Key"] and "/problems/" not in o["Key"]
    )


# -- the happy path and reruns ---------------------------------------------------------------------
@pytest.mark.parametrize("batch", [ingest.BATCH, 1])
def test_ingest_reads_every_file_once_into_day_partitions(env, batch, monkeypatch):
    monkeypatch.setattr(ingest, "BATCH", batch)  # 1: a redelivered record is in another batch
    truth = write(env, DAYS, seed=1)
    config = env["config"]()
    out = ingest.ingest(config, env["s3"], now=NOW)
    assert out["problems"] == []
    assert out["files_read"] == len(truth["files"]) and out["files_skipped"] == 0
    assert out["events"] == truth["events"]
    assert out["days"] == [d.isoformat() for d in DAYS]
    assert [k.split("/")[-2] for k in parts(env)] == [f"day={d.isoformat()}" for d in DAYS]

    frame = ingest.read_events(config, env["s3"], DAYS[0], DAYS[-1] + timedelta(days=1))
    assert tuple(frame.columns) == tables.EVENTS
    assert frame["event_id"].is_unique and len(frame) == truth["events"]
    pd.testing.assert_frame_equal(counts(frame), truth_counts(truth))
    assert truth["ignored"]["redelivered"] > 0  # a record delivered twice was stored once

    one_day = ingest.read_events(config, env["s3"], DAYS[1], DAYS[2])
    assert set(one_day["day"]) == {DAYS[1]}
    assert len(one_day) == int(truth["by_repository_day"].query("day == @DAYS[1]")["pulls"].sum())

    again = ingest.ingest(config, env["s3"], now=NOW + timedelta(hours=1))
    assert again["files_read"] == 0 and again["events"] == 0
    assert again["files_skipped"] == len(truth["files"])
    assert parts(env) == parts(env)  # nothing written
    assert len(parts(env)) == len(DAYS)


def test_one_more_day_reads_only_its_files(env):
    first = write(env, DAYS, seed=2)
    config = env["config"]()
    ingest.ingest(config, env["s3"], now=NOW)
    before = set(parts(env))
    new_day = DAYS[-1] + timedelta(days=1)
    second = write(env, [new_day], seed=3)
    out = ingest.ingest(config, env["s3"], now=NOW + timedelta(days=1))
    assert out["files_read"] == len(second["files"])
    assert out["events"] == second["events"] and out["days"] == [new_day.isoformat()]
    assert out["files_skipped"] == len(first["files"])  # still within late_days: listed, not read
    new_parts = set(parts(env)) - before
    assert {k.split("/")[-2] for k in new_parts} == {f"day={new_day.isoformat()}"}
    frame = ingest.read_events(config, env["s3"], DAYS[0], new_day + timedelta(days=1))
    pd.testing.assert_frame_equal(counts(frame), truth_counts(first, second))


def test_state_stays_small_and_forgets_old_day_folders(env):
    write(env, DAYS, seed=4)
    config = env["config"]()
    ingest.ingest(config, env["s3"], now=NOW)
    later = NOW + timedelta(days=10)
    out = ingest.ingest(config, env["s3"], now=later)
    assert out["files_read"] == 0
    state = objects.get_json(env["s3"], env["bucket"], f"{env['base']}_state.json")
    trail = state["sources"][f"cloudtrail:s3://{env['bucket']}/{env['trail']}"]
    assert trail["from_day"] == (later.date() - timedelta(days=ingest.LATE_DAYS)).isoformat()
    assert trail["read"] == {}  # the files read were all in older day folders


def problem_files(env: dict) -> list[str]:
    return sorted(o["Key"] for o in objects.list_keys(env["s3"], env["bucket"], f"{env['base']}problems/"))


def test_a_crash_after_the_parts_stores_nothing_twice(env, monkeypatch):
    truth = write(env, DAYS, seed=5)
    config = env["config"]()
    bad = f"{env['trail']}{REGION}/2026/11/17/{ACCOUNT}_CloudTrail_bad.json.gz"
    env["s3"].put_object(Bucket=env["bucket"], Key=bad, Body=b"not gzip, not json")

    def crash(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("killed before the state was written")

    monkeypatch.setattr(ingest, "_save_state", crash)
    with pytest.raises(RuntimeError, match="killed"):
        ingest.ingest(config, env["s3"], now=NOW)
    written, problems_written = parts(env), problem_files(env)
    assert len(written) == len(DAYS) and len(problems_written) == 1
    monkeypatch.undo()

    # a file arrives meanwhile: the rerun reads it and the crashed run's files again
    extra = write(env, [DAYS[-1]], seed=6)
    out = ingest.ingest(config, env["s3"], now=NOW)
    assert out["files_read"] == len(truth["files"]) + len(extra["files"]) + 1
    assert out["events"] == extra["events"]  # the crashed run's events are not stored again
    assert [p["source"] for p in out["problems"]] == [objects.url(env["bucket"], bad)]
    assert problem_files(env) == problems_written  # the same problems: the same write-once object
    assert set(written) <= set(parts(env)) and len(parts(env)) == len(DAYS) + 1
    frame = ingest.read_events(config, env["s3"], DAYS[0], DAYS[-1] + timedelta(days=1))
    pd.testing.assert_frame_equal(counts(frame), truth_counts(truth, extra))
    stored = pd.concat(
        [
            pd.read_parquet(pd.io.common.BytesIO(objects.get_bytes(env["s3"], env["bucket"], k)))
            for k in parts(env)
        ]
    )
    assert stored["event_id"].is_unique  # not only deduplicated on read: stored once

    rerun = ingest.ingest(config, env["s3"], now=NOW)
    assert rerun["files_read"] == 0 and rerun["events"] == 0


def test_two_runs_racing_on_the_same_files_write_each_part_once(env, monkeypatch):
    """Two runs that both found nothing stored (neither had written yet) write the same part
    names: the second write is refused (If-None-Match) and counts no event."""
    truth = write(env, DAYS, seed=14)
    config = env["config"]()
    first = ingest.ingest(config, env["s3"], now=NOW)
    written = parts(env)
    env["s3"].delete_object(Bucket=env["bucket"], Key=f"{env['base']}_state.json")  # the racer's view
    monkeypatch.setattr(ingest, "_stored_ids", lambda *_a: pa.array([], pa.string()))
    second = ingest.ingest(config, env["s3"], now=NOW)
    assert first["events"] == truth["events"] and second["events"] == 0
    assert second["files_read"] == first["files_read"]
    assert parts(env) == written


def test_a_state_changed_by_another_run_is_not_overwritten(env, monkeypatch):
    write(env, DAYS[:1], seed=15)
    config = env["config"]()
    key = f"{env['base']}_state.json"
    ingest.ingest(config, env["s3"], now=NOW)
    real = ingest._write_parts

    def meanwhile(*args: Any) -> Any:
        env["s3"].put_object(Bucket=env["bucket"], Key=key, Body=b'{"version": 1, "sources": {}, "other": 1}')
        return real(*args)

    monkeypatch.setattr(ingest, "_write_parts", meanwhile)
    with pytest.raises(RuntimeError, match=f"s3://{env['bucket']}/{key} changed while this ingest ran"):
        ingest.ingest(config, env["s3"], now=NOW)
    assert objects.get_json(env["s3"], env["bucket"], key)["other"] == 1


def test_part_names_depend_on_the_event_ids_only():
    table = pa.table({"event_id": ["b", "a", "c"], "x": [1, 2, 3]})
    same = pa.table({"event_id": ["c", "b", "a"], "x": [9, 9, 9]})
    assert ingest.part_name(table) == ingest.part_name(same)
    assert ingest.part_name(table) != ingest.part_name(pa.table({"event_id": ["a", "b"], "x": [1, 2]}))
    assert re.fullmatch(r"part-[0-9a-f]{32}\.parquet", ingest.part_name(table))


def test_a_crash_before_the_parts_leaves_the_state_untouched(env, monkeypatch):
    truth = write(env, DAYS, seed=7)
    config = env["config"]()
    real = ingest.objects.put_once

    def refuse_parts(s3, bucket, key, *args, **kwargs):
        if key.endswith(".parquet"):
            raise RuntimeError("S3 went away")
        return real(s3, bucket, key, *args, **kwargs)

    monkeypatch.setattr(ingest.objects, "put_once", refuse_parts)
    with pytest.raises(RuntimeError, match="S3 went away"):
        ingest.ingest(config, env["s3"], now=NOW)
    monkeypatch.undo()
    out = ingest.ingest(config, env["s3"], now=NOW)
    assert out["files_read"] == len(truth["files"]) and out["events"] == truth["events"]


def test_a_record_redelivered_in_a_later_run_is_stored_once(env):
    config = env["config"]()
    record = json.loads((FIXTURES / "cloudtrail-ecr-BatchGetImage.awsdocs.json").read_text())
    record.update(eventTime="2026-11-17T10:00:00Z", eventID=str(uuid.uuid4()))
    folder = f"{env['trail']}{REGION}/2026/11/17/"
    body = gzip.compress(json.dumps({"Records": [record]}).encode())
    env["s3"].put_object(Bucket=env["bucket"], Key=f"{folder}{ACCOUNT}_CloudTrail_a.json.gz", Body=body)
    assert ingest.ingest(config, env["s3"], now=NOW)["events"] == 1
    env["s3"].put_object(Bucket=env["bucket"], Key=f"{folder}{ACCOUNT}_CloudTrail_b.json.gz", Body=body)
    out = ingest.ingest(config, env["s3"], now=NOW)
    assert out["files_read"] == 1 and out["events"] == 0
    assert len(ingest.read_events(config, env["s3"], date(2026, 11, 17), date(2026, 11, 18))) == 1


# -- bad input -------------------------------------------------------------------------------------
def test_bad_files_are_counted_named_and_kept_with_their_day(env):
    truth = write(env, DAYS[:1], seed=8)
    config = env["config"]()
    s3, bucket = env["s3"], env["bucket"]
    folder = f"{env['trail']}{REGION}/2026/11/16/"
    good = gzip.compress(b'{"Records": []}')
    no_repo = json.loads((FIXTURES / "cloudtrail-ecr-BatchGetImage.awsdocs.json").read_text())
    del no_repo["requestParameters"]["repositoryName"]
    no_repo["eventTime"] = "2026-11-16T08:00:00Z"
    bad = {
        f"{folder}truncated.json.gz": gzip.compress(json.dumps({"Records": [no_repo] * 50}).encode())[:200],
        f"{folder}garbage.json.gz": b"not json at all",
        f"{folder}foo.json.gz": gzip.compress(b'{"foo": 1}'),
        f"{folder}norepo.json.gz": gzip.compress(json.dumps({"Records": [no_repo]}).encode()),
        f"{env['notes']}odd.json": b'{"events": "not a list"}',
        f"{folder}empty.json.gz": good,
    }
    for key, data in bad.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    out = ingest.ingest(config, s3, now=NOW)
    named = {p["source"]: p for p in out["problems"]}
    want = {objects.url(bucket, k) for k in bad if not k.endswith("empty.json.gz")}
    assert set(named) == want
    assert all(p["count"] == 1 for p in out["problems"])
    assert "gzip" in named[objects.url(bucket, f"{folder}truncated.json.gz")]["problem"]
    assert "not JSON" in named[objects.url(bucket, f"{folder}garbage.json.gz")]["problem"]
    assert "unknown shape" in named[objects.url(bucket, f"{folder}foo.json.gz")]["problem"]
    assert "repositoryName" in named[objects.url(bucket, f"{folder}norepo.json.gz")]["problem"]
    # the good files' events are all there
    assert out["events"] == truth["events"]
    assert out["files_read"] == len(truth["files"]) + len(bad)

    # stored with the file's day (CloudTrail: its day folder; an envelope: its LastModified day)
    stored = ingest.read_problems(config, s3, DAYS[0], DAYS[0] + timedelta(days=1))
    assert {p.source for p in stored} == want - {objects.url(bucket, f"{env['notes']}odd.json")}
    today = datetime.now(UTC).date()
    later = ingest.read_problems(config, s3, today, today + timedelta(days=1))
    assert {p.source for p in later} == {objects.url(bucket, f"{env['notes']}odd.json")}
    assert ingest.read_problems(config, s3, DAYS[1], DAYS[1] + timedelta(days=1)) == []

    # a rerun reads none of them again and files no problem twice
    again = ingest.ingest(config, s3, now=NOW)
    assert again["files_read"] == 0 and again["problems"] == []
    assert len(ingest.read_problems(config, s3, DAYS[0], DAYS[0] + timedelta(days=1))) == len(stored)


class _Flaky:
    """The S3 client, failing GETs of one key (a transient error)."""

    def __init__(self, s3: Any, key: str) -> None:
        self._s3, self.key, self.fail = s3, key, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def get_object(self, **kwargs: Any) -> Any:
        if self.fail and kwargs["Key"] == self.key:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "SlowDown", "Message": "reduce your rate"}}, "GetObject")
        return self._s3.get_object(**kwargs)


def test_a_file_that_cannot_be_fetched_is_a_problem_and_read_next_time(env):
    truth = write(env, DAYS, seed=9)
    config = env["config"]()
    victim = truth["cloudtrail_files"][0]
    flaky = _Flaky(env["s3"], victim)
    # read three days after the victim's day folder: past late_days, which that folder stays listed for
    out = ingest.ingest(config, flaky, now=NOW + timedelta(days=3))
    assert [p["source"] for p in out["problems"]] == [objects.url(env["bucket"], victim)]
    assert "SlowDown" in out["problems"][0]["problem"]
    assert out["files_read"] == len(truth["files"]) - 1
    flaky.fail = False
    again = ingest.ingest(config, flaky, now=NOW + timedelta(days=4))  # the state did not move past it
    assert victim.split("/")[-4:-1] == ["2026", "11", "16"]
    assert again["files_read"] == 1 and again["problems"] == []
    frame = ingest.read_events(config, env["s3"], DAYS[0], DAYS[-1] + timedelta(days=1))
    pd.testing.assert_frame_equal(counts(frame), truth_counts(truth))


def test_a_source_that_cannot_be_listed_is_a_problem_and_the_others_go_on(env):
    truth = write(env, DAYS, seed=10)
    config = env["config"](
        cloudtrail=[{"prefix": env["trail"]}, {"prefix": f"x/{TRAIL}", "bucket": "no-such-bucket-reports"}],
        notifications=[{"prefix": env["notes"]}],
    )
    out = ingest.ingest(config, env["s3"], now=NOW)
    assert [p["source"] for p in out["problems"]] == [f"s3://no-such-bucket-reports/x/{TRAIL}"]
    assert "reports.events.cloudtrail[1]" in out["problems"][0]["problem"]
    assert out["events"] == truth["events"]


def test_default_sources_are_retention_pulls_and_names_are_checked(env):
    config = env["config"](
        retention_pulls={
            "cloudtrail": [{"prefix": env["trail"], "registries": ["ecr-prod"]}],
            "notifications": [{"prefix": env["notes"]}],
        }
    )
    assert config.reports.events is None
    assert [(s.kind, s.prefix, s.registries) for s in ingest.sources(config)] == [
        ("cloudtrail", env["trail"], ("ecr-prod",)),
        ("notifications", env["notes"], None),
    ]
    truth = write(env, DAYS[:1], seed=11)
    assert ingest.ingest(config, env["s3"], now=NOW)["events"] == truth["events"]
    wrong = env["config"](cloudtrail=[{"prefix": env["trail"], "registries": ["oci-prod"]}])
    with pytest.raises(ConfigError, match=r"reports.events.cloudtrail\[0\].*'oci-prod' is of kind 'oci'"):
        ingest.sources(wrong)


# -- the command line's reader -------------------------------------------------------------------
def test_read_paths_reads_directories_and_s3_prefixes_alike(env, tmp_path):
    truth = write(env, DAYS[:2], seed=12)
    local = gen.write_events(
        gen.DirTarget(tmp_path / "events"),
        env["inventory"],
        days=DAYS[2:],
        account=ACCOUNT,
        region=REGION,
        oci_host=HOST,
        idle_fraction=0.0,
        seed=13,
    )
    (tmp_path / "events" / "notes.txt").write_text("not an event file")
    att = Attribution.from_config(env["config"]())
    frame, problems = ingest.read_paths(
        [
            f"s3://{env['bucket']}/{env['trail']}",
            f"s3://{env['bucket']}/{env['notes']}",
            str(tmp_path / "events"),
        ],
        att,
        lambda _url: env["s3"],
    )
    assert [p.source for p in problems] == [str(tmp_path / "events" / "notes.txt")]
    pd.testing.assert_frame_equal(counts(frame), truth_counts(truth, local))
    assert frame["event_time"].is_monotonic_increasing

    default, _ = ingest.read_paths([str(tmp_path / "events")], Attribution.default(), None)
    assert set(default["registry"]) == {f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com", HOST}

    with pytest.raises(ValueError, match="no such file or directory"):
        ingest.read_paths([str(tmp_path / "missing")], att, None)
    (tmp_path / "empty").mkdir()
    _, problems = ingest.read_paths([str(tmp_path / "empty")], att, None)
    assert [(p.source, p.problem) for p in problems] == [
        (str(tmp_path / "empty"), "no event file found there")
    ]
    with pytest.raises(ValueError, match="s3://no-such-bucket-reports/x"):
        ingest.read_paths(["s3://no-such-bucket-reports/x"], att, lambda _url: env["s3"])
