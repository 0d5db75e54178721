"""The probe dataset on the session's moto S3: write-once run objects, compaction that deletes
only what it verified, and reads that count each probe once whatever state compaction left."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest
import yaml

from include.registry_ops.config import parse_config
from include.registry_ops.health import dataset
from include.registry_ops.store import objects
from tests.conftest import BUCKET

DAY = date(2026, 11, 20)


@pytest.fixture
def config(s3, config_file):
    """A config whose health prefix no other test uses."""
    return parse_config(
        {
            "registries": [{"name": "oci-a", "kind": "oci", "conn_id": "oci_local"}],
            "storage": {"bucket": BUCKET, "prefixes": {"health": f"health-{uuid.uuid4().hex[:8]}/"}},
        }
    )


def rows(run_id: str, at: datetime, registries=("ecr-a", "oci-a"), good: bool = True) -> list[dict]:
    return [
        {
            "at": at,
            "run_id": run_id,
            "registry": name,
            "kind": name.split("-")[0],
            "api_ok": good,
            "api_ms": 1.5 if good else None,
            "canary_repository": "app/web",
            "canary_digest": "sha256:" + "a" * 64,
            "canary_ok": good,
            "canary_ms": 2.5 if good else None,
            "good": good,
            "error": None if good else f"registry {name} (http://127.0.0.1:1): API: refused",
        }
        for name in registries
    ]


def day_runs(s3, config, day: date, n: int) -> list[str]:
    """``n`` runs five minutes apart on ``day``; their keys."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return [
        dataset.append(
            s3,
            config,
            rows(f"scheduled__{i}", start + timedelta(minutes=5 * i)),
            f"scheduled__{i}",
            start + timedelta(minutes=5 * i),
        )
        for i in range(n)
    ]


def keys(s3, config) -> list[str]:
    return sorted(o["Key"] for o in objects.list_keys(s3, BUCKET, dataset.root(config)))


def whole_day(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def test_append_names_the_object_by_time_and_run(s3, config):
    at = datetime(2026, 11, 20, 13, 5, 7, tzinfo=UTC)
    key = dataset.append(
        s3,
        config,
        rows("scheduled__2026-11-20T13:05:00+00:00", at),
        "scheduled__2026-11-20T13:05:00+00:00",
        at,
    )
    name = "130507Z-scheduled__2026-11-20T13_05_00_00_00.parquet"
    assert key == f"{config.storage.prefixes.health}probes/dt=2026-11-20/{name}"
    table = dataset.read(s3, config, at, at + timedelta(seconds=1))
    assert table.schema == dataset.PROBE_SCHEMA
    assert table.column("registry").to_pylist() == ["ecr-a", "oci-a"]
    assert table.column("at").to_pylist() == [at, at]


def test_append_is_write_once(s3, config):
    """A retried append with other rows never replaces the stored ones."""
    at = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    first = dataset.append(s3, config, rows("r1", at, good=True), "r1", at)
    again = dataset.append(s3, config, rows("r1", at, good=False), "r1", at)
    assert again == first
    table = dataset.read(s3, config, *whole_day(DAY))
    assert table.column("good").to_pylist() == [True, True]


def test_append_refuses_bad_rows_naming_them(s3, config):
    at = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    bad = rows("r1", at)
    bad[1]["registry"] = None
    with pytest.raises(dataset.ProbeDataError, match=r"probe row 1 .*registry"):
        dataset.append(s3, config, bad, "r1", at)
    with pytest.raises(dataset.ProbeDataError, match=r"another run.*'r2'"):
        dataset.append(s3, config, rows("r1", at) + rows("r2", at, ("x-b",)), "r1", at)
    assert keys(s3, config) == []


def test_read_takes_the_half_open_range(s3, config):
    day_runs(s3, config, DAY, 4)  # 00:00, 00:05, 00:10, 00:15
    start = whole_day(DAY)[0]
    table = dataset.read(s3, config, start + timedelta(minutes=5), start + timedelta(minutes=15))
    assert sorted(set(table.column("run_id").to_pylist())) == ["scheduled__1", "scheduled__2"]
    assert table.num_rows == 4


def test_read_lists_from_the_ranges_first_day_not_the_whole_history(s3, config):
    """Years of probes must not make a read of the last hours list them all: S3 is asked for
    the keys from the range's first day on (keys sort by day), and returns no older one."""
    old = [f"{dataset.day_prefix(config, date(2025, m, 1))}000000Z-old.parquet" for m in (1, 6, 12)]
    for key in old:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"an old day's object: never listed by this read")
    new = day_runs(s3, config, DAY, 3)
    listed: list[str] = []

    def seen(**kwargs) -> None:
        listed.extend(o["Key"] for o in kwargs["parsed"].get("Contents", []))

    s3.meta.events.register("after-call.s3.ListObjectsV2", seen)
    try:
        table = dataset.read(s3, config, *whole_day(DAY))
    finally:
        s3.meta.events.unregister("after-call.s3.ListObjectsV2", seen)
    assert table.num_rows == 6
    assert sorted(listed) == sorted(new)


def test_a_run_filed_under_the_day_before_is_still_read(s3, config):
    """A run that started just before midnight is filed under its start's day while its rows are
    stamped after midnight: a read of the next day lists from the day before."""
    start = whole_day(DAY)[0]
    key = dataset.append(
        s3, config, rows("late", start + timedelta(seconds=2)), "late", start - timedelta(seconds=1)
    )
    assert key.startswith(dataset.day_prefix(config, DAY - timedelta(days=1)))
    table = dataset.read(s3, config, *whole_day(DAY))
    assert table.column("run_id").to_pylist() == ["late", "late"]


def test_compaction_merges_verifies_then_deletes(s3, config):
    small = day_runs(s3, config, DAY, 6)
    result = dataset.compact(s3, config, now=datetime(2026, 11, 21, 0, 1, tzinfo=UTC))
    [day] = result["days"]
    assert day["sources"] == 6 and day["rows"] == 12 and day["status"] == "compacted"
    assert keys(s3, config) == [day["key"]] == [dataset.compacted_key(config, DAY, small)]
    assert dataset.read(s3, config, *whole_day(DAY)).num_rows == 12


def test_compaction_leaves_unfinished_days_and_catches_up_missed_ones(s3, config):
    day_runs(s3, config, DAY - timedelta(days=2), 2)  # a day a missed compaction left behind
    day_runs(s3, config, DAY, 2)  # today
    result = dataset.compact(s3, config, now=datetime(2026, 11, 20, 12, 0, tzinfo=UTC))
    assert [d["day"] for d in result["days"]] == ["2026-11-18"]
    assert [k.rsplit("/", 1)[-1].startswith("compacted-") for k in keys(s3, config)] == [True, False, False]
    with pytest.raises(ValueError, match="2026-11-20 is not over yet"):
        dataset.compact(s3, config, DAY, now=datetime(2026, 11, 20, 12, 0, tzinfo=UTC))


def test_a_compaction_crash_before_the_deletes_counts_each_probe_once(s3, config, monkeypatch):
    small = day_runs(s3, config, DAY, 5)

    def crash(*args, **kwargs):
        raise ConnectionError("injected: the worker died before deleting the small objects")

    monkeypatch.setattr(objects, "delete_keys", crash)
    with pytest.raises(ConnectionError):
        dataset.compact(s3, config, DAY, now=datetime(2026, 11, 22, tzinfo=UTC))
    monkeypatch.undo()
    assert len(keys(s3, config)) == 6  # the compacted object and every small one
    table = dataset.read(s3, config, *whole_day(DAY))
    assert table.num_rows == 10
    assert (
        len(set(zip(table.column("run_id").to_pylist(), table.column("registry").to_pylist(), strict=True)))
        == 10
    )

    again = dataset.compact(s3, config, now=datetime(2026, 11, 22, tzinfo=UTC))  # the rerun finishes
    assert again["days"][0]["status"] == "finished (compacted object already written)"
    assert keys(s3, config) == [dataset.compacted_key(config, DAY, small)]
    assert dataset.read(s3, config, *whole_day(DAY)).num_rows == 10


def test_an_unverified_compaction_deletes_nothing(s3, config, monkeypatch):
    """The compacted object read back short of a row: every small object is kept."""
    small = day_runs(s3, config, DAY, 3)
    real = objects.put_once

    def short(s3_, bucket, key, body, content_type, sse=None):
        if "compacted-" in key:  # a write that lost its last row on the way
            import io

            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(body))
            buf = io.BytesIO()
            pq.write_table(table.slice(0, table.num_rows - 1), buf)
            body = buf.getvalue()
        return real(s3_, bucket, key, body, content_type, sse)

    monkeypatch.setattr(objects, "put_once", short)
    with pytest.raises(dataset.CompactionError, match=r"read back 5 row.*expected 6.*kept"):
        dataset.compact(s3, config, DAY, now=datetime(2026, 11, 22, tzinfo=UTC))
    assert set(small) <= set(keys(s3, config))
    assert dataset.read(s3, config, *whole_day(DAY)).num_rows == 6


def test_a_late_object_for_a_compacted_day_is_compacted_again_and_read_once(s3, config):
    day_runs(s3, config, DAY, 2)
    now = datetime(2026, 11, 22, tzinfo=UTC)
    dataset.compact(s3, config, now=now)
    late = datetime(2026, 11, 20, 23, 59, 59, tzinfo=UTC)
    dataset.append(s3, config, rows("late", late), "late", late)
    dataset.compact(s3, config, now=now)
    assert len(keys(s3, config)) == 2  # two compacted objects
    assert dataset.read(s3, config, *whole_day(DAY)).num_rows == 6


def test_read_names_an_object_that_is_not_a_probe_object(s3, config):
    key = dataset.day_prefix(config, DAY) + "junk.parquet"
    objects.put_table(s3, BUCKET, key, pa.table({"x": [1]}))
    with pytest.raises(dataset.ProbeDataError, match=r"junk\.parquet: not a probe object, missing at"):
        dataset.read(s3, config, *whole_day(DAY))


def test_cli_compact(s3, config, tmp_path, capsys):
    from include.registry_ops.cli import main

    path = tmp_path / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [{"name": "oci-a", "kind": "oci", "conn_id": "oci_local"}],
                "storage": {"bucket": BUCKET, "prefixes": {"health": config.storage.prefixes.health}},
            }
        )
    )
    day_runs(s3, config, DAY, 2)
    now = ["--now", "2026-11-20T23:00:00Z"]
    assert main(["health", "compact", "--config", str(path), "--day", "2026-11-20", *now]) == 2
    assert "2026-11-20 is not over yet" in capsys.readouterr().err
    assert main(["health", "compact", "--config", str(path), "--now", "2026-11-21T00:05:00Z"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["compacted"] == 1 and out["days"][0]["rows"] == 4
    assert keys(s3, config) == [out["days"][0]["key"]]
    with pytest.raises(SystemExit) as exit_:
        main(["health", "compact", "--config", str(path), "--day", "20-11-2026"])
    assert exit_.value.code == 2


def test_a_read_racing_a_compaction_still_finds_every_row(s3, config, monkeypatch):
    """Listed before a compaction deleted the small objects, read after: the day's compacted
    object is looked up again, and each probe is counted once."""
    day_runs(s3, config, DAY, 3)
    stale = objects.list_keys(s3, BUCKET, dataset.root(config))
    dataset.compact(s3, config, DAY, now=datetime(2026, 11, 22, tzinfo=UTC))
    real, calls = objects.list_keys, []

    def listing(s3_, bucket, prefix, start_after=None):
        calls.append(prefix)
        return stale if len(calls) == 1 else real(s3_, bucket, prefix, start_after)

    monkeypatch.setattr(objects, "list_keys", listing)
    assert dataset.read(s3, config, *whole_day(DAY)).num_rows == 6
    assert calls == [dataset.root(config), dataset.day_prefix(config, DAY)]
