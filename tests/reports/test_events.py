"""Pull events from the real documented samples (tests/fixtures/events): what is a pull, what is
not, failures, UTC days, deduplication, attribution to config registries, and bad input counted
and named. Records that AWS does not document (GetDownloadUrlForLayer, an ECR Public
BatchGetImage, a failed call) are the documented record with named fields changed here."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from include.registry_ops.config import parse_config
from include.registry_ops.reports import events, tables
from include.registry_ops.reports.events import Attribution

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
PULL = "cloudtrail-ecr-BatchGetImage.awsdocs.json"
DIGEST = "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"
DEFAULT = Attribution.default()


def sample(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def trail_file(*records: dict) -> bytes:
    """Records as CloudTrail delivers them: gzip, ``{"Records": [...]}``."""
    return gzip.compress(json.dumps({"Records": list(records)}).encode())


def pull_record(**changes: Any) -> dict:
    rec = sample(PULL)
    rec.update(changes)
    return rec


def pull_event(**changes: Any) -> dict:
    ev = sample("distribution-notification-pull.docs.json")["events"][0]
    ev.update(changes)
    return ev


def envelope(*evs: dict) -> bytes:
    return json.dumps({"events": list(evs)}).encode()


def parse(data: bytes, name: str = "f.json.gz", attribution: Attribution = DEFAULT):
    frame, problems = events.parse_file(data, name, attribution)
    assert tuple(frame.columns) == tables.EVENTS
    return frame, problems


# -- the real samples ------------------------------------------------------------------------------
def test_documented_batchgetimage_is_one_pull_on_its_utc_day():
    frame, problems = parse(trail_file(sample(PULL)), "trail/x.json.gz")
    assert problems == []
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["event_id"] == "c84f5880-c2f9-4585-9757-28fa5c1065df"
    assert row["source"] == "cloudtrail"
    assert row["registry"] == "123456789012.dkr.ecr.us-east-2.amazonaws.com"
    assert row["repository"] == "testrepo"
    assert row["tag"] == "latest" and pd.isna(row["digest"])  # responseElements is null
    assert row["event_time"] == pd.Timestamp("2019-04-15T17:23:20Z")
    assert row["day"] == date(2019, 4, 15)
    assert row["principal"] == "arn:aws:sts::123456789012:user/Mary_Major"
    assert not row["failed"] and pd.isna(row["error_code"])
    assert row["file"] == "trail/x.json.gz"


@pytest.mark.parametrize(
    "name", ["cloudtrail-ecr-PutImage.awsdocs.json", "cloudtrail-ecr-public-PutImage.awsdocs.json"]
)
def test_documented_pushes_are_no_pull(name):
    frame, problems = parse(trail_file(sample(name)))
    assert frame.empty and problems == []


def test_layer_downloads_and_ecr_public_are_no_pull():
    layer = pull_record(eventName="GetDownloadUrlForLayer", eventID="layer-1")
    public = pull_record(eventSource="ecr-public.amazonaws.com", eventID="public-1")
    frame, problems = parse(trail_file(layer, public, sample(PULL)))
    assert problems == []
    assert frame["event_id"].tolist() == ["c84f5880-c2f9-4585-9757-28fa5c1065df"]


def test_documented_manifest_pull_is_one_pull_with_nanoseconds_in_utc():
    frame, problems = parse((FIXTURES / "distribution-notification-pull.docs.json").read_bytes(), "env.json")
    assert problems == []
    row = frame.iloc[0]
    assert row["source"] == "distribution" and row["registry"] == "192.168.100.227:5000"
    assert (row["repository"], row["digest"], row["tag"]) == ("hello-world", DIGEST, "latest")
    # 14:44:26.402973972-08:00 is 22:44:26.402973972 UTC, to the nanosecond
    assert row["event_time"] == pd.Timestamp("2016-03-09T22:44:26.402973972Z")
    assert row["event_time"].nanosecond == 972
    assert row["day"] == date(2016, 3, 9)
    assert row["principal"] == "192.168.64.11"  # anonymous actor: the client address without its port
    assert not row["failed"]


def test_an_offset_timestamp_late_in_the_local_day_is_the_next_utc_day():
    ev = pull_event(timestamp="2016-03-09T18:44:26.402973972-08:00")
    frame, _ = parse(envelope(ev))
    assert frame.iloc[0]["day"] == date(2016, 3, 10)


def test_blob_pulls_and_pushes_are_no_pull():
    blob = pull_event(id="blob-1")
    blob["target"].update(mediaType="application/octet-stream", url="http://r/v2/hello-world/blobs/x")
    layer = pull_event(id="blob-2")
    layer["target"]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    frame, problems = parse(envelope(blob, layer, pull_event()))
    assert problems == []
    assert frame["event_id"].tolist() == ["320678d8-ca14-430f-8bb6-4ca139cd83f7"]
    for name in (
        "distribution-notification-push-envelope.docs.json",
        "distribution-notification-push-envelope.event_test.json",
    ):
        frame, problems = parse((FIXTURES / name).read_bytes(), name)
        assert frame.empty and problems == [], name


def test_index_pulls_count_and_the_actor_is_the_principal():
    ev = pull_event(actor={"name": "ci"})
    ev["target"]["mediaType"] = "application/vnd.oci.image.index.v1+json"
    frame, _ = parse(envelope(ev))
    assert len(frame) == 1 and frame.iloc[0]["principal"] == "ci"


def test_failed_calls_are_pulls_that_failed():
    failed = pull_record(eventID="failed-1", errorCode="AccessDenied", errorMessage="denied")
    frame, problems = parse(trail_file(sample(PULL), failed))
    assert problems == []
    by_id = frame.set_index("event_id")
    assert bool(by_id.loc["failed-1", "failed"]) and by_id.loc["failed-1", "error_code"] == "AccessDenied"
    assert not by_id.loc["c84f5880-c2f9-4585-9757-28fa5c1065df", "failed"]


def test_a_failed_call_needs_no_image():
    rec = pull_record(eventID="denied-1", errorCode="InvalidParameterException")
    rec["requestParameters"]["imageIds"] = []
    frame, problems = parse(trail_file(rec))
    assert problems == [] and frame["failed"].tolist() == [True]


def test_one_record_is_one_pull_whatever_imageids_holds():
    two_tags = pull_record(eventID="two-tags")
    two_tags["requestParameters"]["imageIds"] = [{"imageTag": "a"}, {"imageTag": "b"}]
    tag_and_digest = pull_record(eventID="both")
    tag_and_digest["requestParameters"]["imageIds"] = [{"imageTag": "a", "imageDigest": DIGEST}]
    same_twice = pull_record(eventID="same")
    same_twice["requestParameters"]["imageIds"] = [{"imageDigest": DIGEST}, {"imageDigest": DIGEST}]
    frame, problems = parse(trail_file(two_tags, tag_and_digest, same_twice))
    assert problems == []
    by_id = frame.set_index("event_id")
    assert len(frame) == 3
    assert pd.isna(by_id.loc["two-tags", "tag"]) and pd.isna(by_id.loc["two-tags", "digest"])
    assert (by_id.loc["both", "tag"], by_id.loc["both", "digest"]) == ("a", DIGEST)
    assert by_id.loc["same", "digest"] == DIGEST


def test_principal_falls_back_to_invoked_by_then_source_address():
    service = pull_record(
        eventID="svc", userIdentity={"type": "AWSService", "invokedBy": "ecs.amazonaws.com"}
    )
    anonymous = pull_record(eventID="anon", userIdentity={"type": "Unknown"})
    frame, _ = parse(trail_file(service, anonymous))
    by_id = frame.set_index("event_id")
    assert by_id.loc["svc", "principal"] == "ecs.amazonaws.com"
    assert by_id.loc["anon", "principal"] == "203.0.113.12"


# -- duplicates ----------------------------------------------------------------------------------
def test_a_record_delivered_twice_in_two_files_counts_once():
    raws = [
        events.read_raw(trail_file(sample(PULL), pull_record(eventID="other")), "a.json.gz"),
        events.read_raw(trail_file(sample(PULL)), "b.json.gz"),
    ]
    table, problems = events.events_table(raws, DEFAULT)
    frame = events.to_frame(table)
    assert problems == []
    assert sorted(frame["event_id"]) == ["c84f5880-c2f9-4585-9757-28fa5c1065df", "other"]
    assert frame.set_index("event_id").loc["c84f5880-c2f9-4585-9757-28fa5c1065df", "file"] == "a.json.gz"


# -- bad input -------------------------------------------------------------------------------------
def test_bad_files_are_counted_and_named_and_the_others_go_on():
    no_repo = pull_record(eventID="no-repo")
    del no_repo["requestParameters"]["repositoryName"]
    wrong_type = pull_record(eventID="wrong-type", eventTime=1555349000)
    good = trail_file(sample(PULL))
    files = {
        "truncated.json.gz": good[: len(good) // 2],
        "garbage.json": b"<html>503 Service Unavailable</html>",
        "foo.json": b'{"foo": 1}',
        "list.json": b"[1, 2]",
        "bare-record.json": (FIXTURES / PULL).read_bytes(),  # not wrapped as CloudTrail delivers
        "no-repo.json.gz": trail_file(no_repo, pull_record(eventID="kept-1")),
        "wrong-type.json.gz": trail_file(wrong_type, pull_record(eventID="kept-2")),
        "good.json.gz": good,
        "envelope.json": (FIXTURES / "distribution-notification-pull.docs.json").read_bytes(),
    }
    raws = [events.read_raw(data, name) for name, data in files.items()]
    table, problems = events.events_table(raws, DEFAULT)
    frame = events.to_frame(table)
    assert sorted(frame["event_id"]) == sorted(
        ["kept-1", "kept-2", "c84f5880-c2f9-4585-9757-28fa5c1065df", "320678d8-ca14-430f-8bb6-4ca139cd83f7"]
    )
    named = {p.source: p for p in problems}
    assert sorted(named) == sorted(
        [
            *("truncated.json.gz", "garbage.json", "foo.json", "list.json", "bare-record.json"),
            *("no-repo.json.gz", "wrong-type.json.gz"),
        ]
    )
    assert all(p.count == 1 for p in problems)
    assert "gzip" in named["truncated.json.gz"].problem
    assert named["garbage.json"].problem.startswith("not JSON")
    assert "unknown shape" in named["foo.json"].problem and "foo" in named["foo.json"].problem
    assert "unknown shape" in named["list.json"].problem
    assert '{"Records": [...]}' in named["bare-record.json"].problem
    assert "requestParameters.repositoryName" in named["no-repo.json.gz"].problem
    assert "no-repo" in named["no-repo.json.gz"].problem
    assert (
        "eventTime" in named["wrong-type.json.gz"].problem
        and "wrong-type" in named["wrong-type.json.gz"].problem
    )


def test_records_missing_what_a_pull_needs_are_counted_per_file():
    recs = []
    for n in range(3):
        rec = pull_record(eventID=f"no-time-{n}")
        del rec["eventTime"]
        recs.append(rec)
    no_zone = pull_record(eventID="no-zone", eventTime="2019-04-15T17:23:20")
    no_id = pull_record()
    del no_id["eventID"]
    no_image = pull_record(eventID="no-image")
    no_image["requestParameters"]["imageIds"] = []
    frame, problems = parse(trail_file(*recs, no_zone, no_id, no_image), "bad.json.gz")
    assert frame.empty
    assert sum(p.count for p in problems) == 6
    text = " | ".join(p.problem for p in problems)
    assert "4 BatchGetImage record(s) without a readable eventTime" in text  # 3 missing, 1 zoneless
    assert "eventID" in text and "imageIds" in text
    assert all(p.source == "bad.json.gz" for p in problems)


def test_manifest_pull_without_media_type_or_repository_is_a_problem():
    untyped = pull_event(id="untyped")
    del untyped["target"]["mediaType"]
    no_repo = pull_event(id="no-repo")
    del no_repo["target"]["repository"]
    frame, problems = parse(envelope(untyped, no_repo, pull_event()), "env.json")
    assert len(frame) == 1
    text = " | ".join(p.problem for p in problems)
    assert "without target.mediaType" in text and "untyped" in text
    assert "without target.repository" in text and "no-repo" in text
    assert sum(p.count for p in problems) == 2


def test_fast_and_careful_readers_agree():
    """The pyarrow reader and the json fallback give the same events for the same records."""
    rec = sample(PULL)
    failed = pull_record(eventID="f", errorCode="ThrottlingException")
    data = json.dumps({"Records": [rec, failed]}).encode()
    fast = events.read_raw(data, "x")
    slow = events._read_slow(data, events.Raw("x"))
    assert fast.records is not None and slow.records is not None
    a, _ = events.events_table([fast], DEFAULT)
    b, _ = events.events_table([slow], DEFAULT)
    assert a.equals(b) and a.num_rows == 2


# -- attribution ---------------------------------------------------------------------------------
def _config(**extra: Any):
    return parse_config(
        {
            "registries": [
                {"name": "ecr-any", "kind": "ecr", "conn_id": "aws_default"},
                {
                    "name": "ecr-east2",
                    "kind": "ecr",
                    "conn_id": "aws_default",
                    "region": "us-east-2",
                    "registry_id": "123456789012",
                    "exclude": ["apps/*"],
                },
                {
                    "name": "ecr-apps",
                    "kind": "ecr",
                    "conn_id": "aws_default",
                    "region": "us-east-2",
                    "registry_id": "123456789012",
                    "include": ["apps/*"],
                },
                {
                    "name": "ecr-other",
                    "kind": "ecr",
                    "conn_id": "aws_default",
                    "region": "eu-west-1",
                    "registry_id": "210987654321",
                },
                {"name": "oci-a", "kind": "oci", "conn_id": "oci_a", "url": "https://reg.example.com"},
                {"name": "oci-b", "kind": "oci", "conn_id": "oci_b", "url": "http://192.168.100.227:5000"},
            ],
            "storage": {"bucket": "b-attr"},
            **extra,
        }
    )


def test_config_registries_by_account_region_globs_and_host():
    att = Attribution.from_config(_config())
    assert att.ecr_registry("123456789012", "us-east-2", "testrepo") == "ecr-east2"  # most specific
    assert att.ecr_registry("123456789012", "us-east-2", "apps/web") == "ecr-apps"  # its globs want it
    assert att.only(["ecr-east2"], "ecr").ecr_registry("123456789012", "us-east-2", "apps/web") == "ecr-east2"
    assert att.ecr_registry("999999999999", "us-west-2", "x") == "ecr-any"  # unset matches any
    assert att.oci_registry("reg.example.com:443") == "oci-a"
    assert att.oci_registry("REG.example.com") == "oci-a"
    assert att.oci_registry("192.168.100.227:5000") == "oci-b"
    assert att.oci_registry("elsewhere:5000") is None
    frame, problems = parse((FIXTURES / "distribution-notification-pull.docs.json").read_bytes(), "e", att)
    assert frame["registry"].tolist() == ["oci-b"] and problems == []


def test_an_event_no_registry_takes_is_a_counted_problem():
    att = Attribution.from_config(_config()).only(["ecr-other"], "ecr")
    frame, problems = parse(trail_file(sample(PULL), pull_record(eventID="second")), "t.json.gz", att)
    assert frame.empty
    assert [(p.source, p.count) for p in problems] == [("t.json.gz", 2)]
    assert "no configured registry for account 123456789012 region us-east-2" in problems[0].problem
    ev = pull_event()
    ev["request"]["host"] = "unknown.example:5000"
    frame, problems = parse(envelope(ev), "e.json", Attribution.from_config(_config()))
    assert frame.empty and "request.host unknown.example:5000" in problems[0].problem


def test_a_source_naming_one_registry_takes_its_events_whatever_the_host():
    att = Attribution.from_config(_config()).only(["oci-a"], "oci")
    frame, problems = parse((FIXTURES / "distribution-notification-pull.docs.json").read_bytes(), "e", att)
    assert frame["registry"].tolist() == ["oci-a"] and problems == []


def test_an_oci_registry_without_url_is_matched_by_its_connection_host(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCI_CONN_HOST",
        json.dumps(
            {"conn_type": "generic", "host": "192.168.100.227", "port": 5000, "extra": {"scheme": "http"}}
        ),
    )
    config = parse_config(
        {
            "registries": [{"name": "oci-conn", "kind": "oci", "conn_id": "oci_conn_host"}],
            "storage": {"bucket": "b-attr"},
        }
    )
    att = Attribution.from_config(config)
    assert att.oci_registry("192.168.100.227:5000") == "oci-conn"


def test_generated_files_parse_to_the_generators_truth(tmp_path):
    """The devstack generator's files (templated on these samples) read back as what it wrote."""
    from devstack import events as gen
    from tests.retention.helpers import image, inventory

    inv = inventory(
        *[image(f"e{n}", [f"v{n}"], 10, repo=f"gen/app{n % 3}", registry="ecr-east2") for n in range(12)],
        *[
            image(f"o{n}", [f"v{n}"], 10, repo=f"gen/web{n % 2}", registry="oci-b", registry_kind="oci")
            for n in range(8)
        ],
    )
    truth = gen.write_events(
        gen.DirTarget(tmp_path),
        inv,
        days=[date(2026, 11, 20), date(2026, 11, 21)],
        account="123456789012",
        region="us-east-2",
        oci_host="192.168.100.227:5000",
        failure_rate=0.2,
        records_per_file=7,
        events_per_envelope=9,
        idle_fraction=0.0,
        seed=5,
    )
    raws = [events.read_raw(p.read_bytes(), str(p)) for p in sorted(tmp_path.rglob("*")) if p.is_file()]
    table, problems = events.events_table(raws, Attribution.from_config(_config()))
    frame = events.to_frame(table)
    assert problems == []
    assert truth["ignored"]["redelivered"] > 0 and truth["ignored"]["blob pulls"] > 0
    assert len(frame) == truth["events"] and int(frame["failed"].sum()) == truth["failed"] > 0
    got = frame.groupby(["registry", "repository", "day"]).agg(
        pulls=("event_id", "size"), failed=("failed", "sum"), principals=("principal", "nunique")
    )
    want = truth["by_repository_day"].set_index(["registry", "repository", "day"])
    pd.testing.assert_frame_equal(got.sort_index(), want.sort_index(), check_dtype=False)
    assert set(frame["registry"]) == {"ecr-east2", "oci-b"}


def test_events_schema_is_the_table_contract():
    assert tuple(events.EVENTS_SCHEMA.names) == tables.EVENTS
    assert events.EVENTS_SCHEMA.field("event_time").type == pa.timestamp("ns", tz="UTC")
    frame = events.empty_frame()
    assert tuple(frame.columns) == tables.EVENTS and frame.empty


def test_the_generator_is_deterministic_and_handles_one_kind(tmp_path):
    from devstack import events as gen
    from tests.retention.helpers import image, inventory

    inv = inventory(*[image(f"d{n}", [f"v{n}"], 10, repo="gen/one") for n in range(5)])
    written = []
    for run in ("a", "b"):
        truth = gen.write_events(
            gen.DirTarget(tmp_path / run), inv, days=[date(2026, 11, 20)], seed=9, compress_envelopes=True
        )
        assert truth["notification_files"] == [] and truth["cloudtrail_files"]
        written.append(
            {p.relative_to(tmp_path / run): p.read_bytes() for p in (tmp_path / run).rglob("*.gz")}
        )
    assert written[0] == written[1]


def test_records_of_the_wrong_type_are_named_by_the_first_and_counted():
    wrong = pull_record(eventID="wrong-1", awsRegion=["us-east-2"])
    also = pull_record(eventID="wrong-2", userIdentity="Mary")
    frame, problems = parse(json.dumps({"Records": [7, wrong, also, sample(PULL)]}).encode(), "mixed.json")
    assert frame["event_id"].tolist() == ["c84f5880-c2f9-4585-9757-28fa5c1065df"]
    assert [(p.source, p.count) for p in problems] == [("mixed.json", 3)]
    assert "(e.g. item 0: the record is a JSON int, expected an object)" in problems[0].problem
