"""Last-pull sources parsed from real payload shapes (tests/fixtures/events) and merged into the
inventory, then used by sinceImagePulled and keep_pulled_within_days."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd

from include.registry_ops.retention.pulls import cloudtrail_pulls, distribution_pulls, merge_last_pulled
from tests.retention.helpers import NOW, actions, digest, ecr_policy, image, inventory, rule

EVENTS = Path(__file__).resolve().parents[1] / "fixtures" / "events"


def load(name: str):
    return json.loads((EVENTS / name).read_text())


def test_cloudtrail_batch_get_image_record():
    pulls = cloudtrail_pulls(EVENTS / "cloudtrail-ecr-BatchGetImage.awsdocs.json")
    assert len(pulls) == 1
    row = pulls.iloc[0]
    assert (row["repository"], row["tag"], row["source"]) == ("testrepo", "latest", "cloudtrail")
    assert pd.isna(row["digest"])  # responseElements is null in AWS's example
    assert row["pulled_at"] == pd.Timestamp("2019-04-15T17:23:20Z")
    assert row["principal"] == "arn:aws:sts::123456789012:user/Mary_Major"


def test_cloudtrail_log_files_failed_calls_pushes_and_scanner_pulls():
    pull = load("cloudtrail-ecr-BatchGetImage.awsdocs.json")
    push = load("cloudtrail-ecr-PutImage.awsdocs.json")
    denied = copy.deepcopy(pull) | {"errorCode": "AccessDenied"}
    inspector = copy.deepcopy(pull)
    inspector["userIdentity"] = {"type": "AWSService", "invokedBy": "inspector2.amazonaws.com"}
    by_digest = copy.deepcopy(pull)
    by_digest["requestParameters"]["imageIds"] = [{"imageDigest": digest("x")}]
    log_file = {"Records": [pull, push, denied, inspector, by_digest]}
    pulls = cloudtrail_pulls(log_file)
    assert len(pulls) == 2
    assert pulls["digest"].tolist()[1] == digest("x")
    assert len(cloudtrail_pulls(log_file, exclude_principals=())) == 3  # the scanner's pull counts if asked


def test_distribution_manifest_pull_notification():
    pulls = distribution_pulls(EVENTS / "distribution-notification-pull.docs.json")
    assert len(pulls) == 1
    row = pulls.iloc[0]
    assert (row["repository"], row["tag"]) == ("hello-world", "latest")
    assert row["digest"] == "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"
    # 2016-03-09T14:44:26.402973972-08:00: nanoseconds and an offset, normalized to UTC
    assert row["pulled_at"] == pd.Timestamp("2016-03-09T22:44:26.402973972Z")


def test_push_events_and_blob_pulls_are_not_pulls():
    assert distribution_pulls(EVENTS / "distribution-notification-push-envelope.docs.json").empty
    blob = load("distribution-notification-pull.docs.json")
    target = blob["events"][0]["target"]
    target["mediaType"] = "application/octet-stream"
    target["url"] = target["url"].replace("/manifests/", "/blobs/")
    assert distribution_pulls(blob).empty


def test_merge_keeps_the_latest_pull_by_digest_or_by_tag():
    inv = inventory(
        image("a", ["latest"], 400, repo="hello-world", pulled_days=300),
        image("b", ["v1"], 400, repo="hello-world", pulled_days=5),
        image("c", ["v2"], 400, repo="hello-world"),
        image("other-repo", ["latest"], 400, repo="elsewhere"),
    )
    pulls = pd.DataFrame(
        {
            "repository": ["hello-world", "hello-world", "hello-world"],
            "digest": [None, digest("b"), digest("c")],
            "tag": ["latest", None, None],
            "pulled_at": pd.to_datetime(
                [NOW - pd.Timedelta(days=2), NOW - pd.Timedelta(days=50), NOW], utc=True
            ),
            "source": "test",
            "principal": None,
        }
    )
    merged = merge_last_pulled(inv, pulls)
    last = dict(zip(merged["digest"], merged["last_pulled_at"], strict=True))
    assert last[digest("a")] == NOW - pd.Timedelta(days=2)  # by tag, newer than the inventory's
    assert last[digest("b")] == NOW - pd.Timedelta(days=5)  # the inventory's is newer than the event
    assert last[digest("c")] == NOW
    assert pd.isna(last[digest("other-repo")])
    assert merged.index.equals(inv.index) and inv["last_pulled_at"].iloc[0] == NOW - pd.Timedelta(days=300)


def test_merged_pulls_drive_since_image_pulled_and_keep_if_pulled():
    inv = inventory(
        image("docs", ["latest"], 4000, repo="hello-world"),
        image("idle", ["old"], 4000, repo="hello-world"),
    )
    pulls = distribution_pulls(EVENTS / "distribution-notification-pull.docs.json")
    pulls["digest"] = None  # resolve the documented pull by its tag
    merged = merge_last_pulled(inv, pulls)
    when = pd.Timestamp("2016-03-20T00:00:00Z").to_pydatetime()  # 10 days after the documented pull
    archive = ecr_policy(rule(1, "any", "sinceImagePulled", 30, action="transition"))
    assert actions(merged, archive, when) == {digest("docs"): "keep", digest("idle"): "transition"}
    keep = ecr_policy(rule(1, "any", "sinceImagePushed", 30), keep_pulled_within_days=14)
    assert actions(merged, keep, when) == {digest("docs"): "keep", digest("idle"): "expire"}
