"""``retention.pulls`` end to end on moto S3: CloudTrail log files laid out by day as CloudTrail
delivers them (gzip, ``{"Records": [...]}``) and distribution notification envelopes, built from
the real documented samples (tests/fixtures/events), merged into the inventory by ``plan_run`` (the
DAG's step) and ``apply_plan`` (the command line's), and planned by the real planner."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from include.registry_ops import schema
from include.registry_ops.config import ConfigError, parse_config
from include.registry_ops.inventory import publish_snapshot
from include.registry_ops.inventory_files import write_inventory
from include.registry_ops.retention import jobs
from include.registry_ops.retention.policy import parse_policies
from include.registry_ops.retention.pull_sources import PullSourceError, merge_configured, read_pulls
from include.registry_ops.store import objects
from tests.retention.helpers import digest, image

EVENTS = Path(__file__).resolve().parents[1] / "fixtures" / "events"
ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"  # the documented record's registryId
TRAIL = f"AWSLogs/{ACCOUNT}/CloudTrail/"
NOW = datetime.now(UTC).replace(microsecond=0)  # S3's LastModified is real time: so is the window
KEEP_DAYS = 30


def sample(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def pull_record(
    repo: str, when: datetime, *, tag: str | None = None, name: str | None = None, **changes: Any
):
    """The documented BatchGetImage record, pulling ``tag`` or the digest of image ``name``."""
    rec = sample("cloudtrail-ecr-BatchGetImage.awsdocs.json")
    rec["requestParameters"]["repositoryName"] = repo
    rec["requestParameters"]["imageIds"] = [{"imageTag": tag} if tag else {"imageDigest": digest(name)}]
    rec.update(
        eventTime=when.strftime("%Y-%m-%dT%H:%M:%SZ"), eventID=str(uuid.uuid4()), awsRegion="us-east-1"
    )
    rec.update(changes)
    return rec


def put_trail_file(
    s3, bucket: str, region: str, day: datetime, records: list[dict], body: bytes | None = None
):
    """One log file where CloudTrail puts it: <prefix><region>/YYYY/MM/DD/<account>_CloudTrail_..."""
    name = f"{ACCOUNT}_CloudTrail_{region}_{day:%Y%m%dT%H%MZ}_{uuid.uuid4().hex[:16]}.json.gz"
    key = f"{TRAIL}{region}/{day:%Y/%m/%d}/{name}"
    data = body if body is not None else gzip.compress(json.dumps({"Records": records}).encode())
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return key


def manifest_pull(repo: str, name: str, when: datetime) -> dict:
    """The documented "pull of a manifest" event, for image ``name`` of ``repo``."""
    ev = sample("distribution-notification-pull.docs.json")["events"][0]
    ev["target"].update(
        repository=repo, digest=digest(name), url=f"http://r:5000/v2/{repo}/manifests/{digest(name)}"
    )
    ev["timestamp"] = when.astimezone(UTC).isoformat()
    return ev


def blob_pull(repo: str, name: str, when: datetime) -> dict:
    """The same event as a layer fetch: ``GET /v2/<repo>/blobs/<digest>``, no manifest type."""
    ev = manifest_pull(repo, name, when)
    ev["target"].update(
        mediaType="application/octet-stream", url=f"http://r:5000/v2/{repo}/blobs/{digest(name)}"
    )
    return ev


def push_events(repo: str, name: str) -> list[dict]:
    """The documented push envelope's events, on image ``name`` (pushes are not pulls)."""
    events = sample("distribution-notification-push-envelope.docs.json")["events"]
    for ev in events:
        ev["target"]["repository"] = repo
        ev["timestamp"] = days_ago(1).isoformat()
    events[0]["target"]["digest"] = digest(name)
    return events


POLICY = {
    "version": 1,
    "policies": [
        {
            "name": "idle",
            "protect_tags": [],
            "keep_pulled_within_days": KEEP_DAYS,
            "rules": [
                {
                    "rulePriority": 1,
                    "selection": {
                        "tagStatus": "any",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": 100,
                    },
                    "action": {"type": "expire"},
                }
            ],
        }
    ],
}


@pytest.fixture
def env(moto_server, s3, tmp_path):
    """A storage bucket and a separate trail bucket, a policy file and a config writer."""
    tag = uuid.uuid4().hex[:8]
    bucket, trail = f"ret-pulls-{tag}", f"ret-trail-{tag}"
    objects.ensure_bucket(s3, bucket)
    objects.ensure_bucket(s3, trail)
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY))

    def config(pulls: dict | None = None, **retention: Any):
        data = {
            "registries": [
                {
                    "name": "ecr-trail",
                    "kind": "ecr",
                    "conn_id": "aws_default",
                    "region": "us-east-1",
                    "registry_id": ACCOUNT,
                },
                {
                    "name": "ecr-other",
                    "kind": "ecr",
                    "conn_id": "aws_default",
                    "region": "us-east-1",
                    "registry_id": "210987654321",
                },
                {"name": "oci-events", "kind": "oci", "conn_id": "oci_local"},
            ],
            "storage": {"conn_id": "aws_default", "bucket": bucket},
            "retention": {
                "policy_file": "policy.yaml",
                "in_use_discovery": [],
                "max_fraction_per_repository": 1.0,
                **({"pulls": pulls} if pulls is not None else {}),
                **retention,
            },
        }
        path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(data))
        from include.registry_ops.config import load_config

        return load_config(path)

    return {"s3": s3, "bucket": bucket, "trail": trail, "config": config, "repo": f"ret-pulls/{tag}/app"}


PULLS = {"cloudtrail": [{"prefix": TRAIL}], "notifications": [{"prefix": "registry-events/"}]}


def fleet_inventory(repo: str) -> pd.DataFrame:
    """Every image pushed 200 days ago: the rule expires each one that no pull keeps."""
    ecr = [
        image(n, [f"t-{n}"], 200, repo=repo, registry="ecr-trail")
        for n in ("bytag", "bydigest", "failed", "inspector", "old", "otherregion", "pushonly", "ancient")
    ]
    other = [image("bytag", ["t-bytag"], 200, repo=repo, registry="ecr-other")]
    oci = [
        image(n, [f"t-{n}"], 200, repo=repo, registry="oci-events", registry_kind="oci")
        for n in ("manifestpull", "blobpull", "pushed")
    ]
    return schema.to_frame(ecr + other + oci)


def seed_events(env: dict) -> None:
    s3, trail, bucket, repo = env["s3"], env["trail"], env["bucket"], env["repo"]
    put_trail_file(
        s3,
        trail,
        "us-east-1",
        days_ago(3),
        [
            pull_record(repo, days_ago(3), tag="t-bytag"),  # the record as documented: by tag
            pull_record(repo, days_ago(2), name="failed", errorCode="AccessDenied", errorMessage="denied"),
            pull_record(
                repo,
                days_ago(1),
                name="inspector",
                userIdentity={"type": "AWSService", "invokedBy": "inspector2.amazonaws.com"},
            ),
            sample("cloudtrail-ecr-PutImage.awsdocs.json")
            | {
                "requestParameters": {"repositoryName": repo, "imageTag": "t-pushonly", "registryId": ACCOUNT}
            },
        ],
    )
    put_trail_file(s3, trail, "us-east-1", days_ago(20), [pull_record(repo, days_ago(20), name="bydigest")])
    put_trail_file(s3, trail, "us-east-1", days_ago(45), [pull_record(repo, days_ago(45), name="old")])
    put_trail_file(
        s3,
        trail,
        "us-west-2",
        days_ago(2),
        [pull_record(repo, days_ago(2), name="otherregion", awsRegion="us-west-2")],
    )
    # outside the 90-day window: neither read (a broken file there fails nothing) nor counted
    put_trail_file(s3, trail, "us-east-1", days_ago(120), [pull_record(repo, days_ago(1), name="ancient")])
    put_trail_file(s3, trail, "us-east-1", days_ago(121), [], body=b"not gzip, not json: never read")
    envelope = {
        "events": [manifest_pull(repo, "manifestpull", days_ago(5)), blob_pull(repo, "blobpull", days_ago(5))]
    }
    s3.put_object(Bucket=bucket, Key="registry-events/2026/a.json", Body=json.dumps(envelope).encode())
    pushes = gzip.compress(json.dumps({"events": push_events(repo, "pushed")}).encode())
    s3.put_object(Bucket=bucket, Key="registry-events/2026/b.json.gz", Body=pushes)


EXPECTED = {
    ("ecr-trail", "bytag"): "keep",  # pulled 3 days ago, by tag, resolved through the inventory
    ("ecr-trail", "bydigest"): "keep",  # pulled 20 days ago, another day folder
    ("ecr-trail", "failed"): "expire",  # the only pull failed (errorCode)
    ("ecr-trail", "inspector"): "expire",  # the only pull was the scanner's
    ("ecr-trail", "old"): "expire",  # pulled 45 days ago: read, but older than 30 days
    ("ecr-trail", "otherregion"): "expire",  # pulled in us-west-2, the registry is us-east-1
    ("ecr-trail", "pushonly"): "expire",  # pushed, never pulled
    ("ecr-trail", "ancient"): "expire",  # its pull sits in a day folder outside the window
    ("ecr-other", "bytag"): "expire",  # the pull was in another account's registry
    ("oci-events", "manifestpull"): "keep",  # a manifest pull 5 days ago
    ("oci-events", "blobpull"): "expire",  # only its blob was fetched
    ("oci-events", "pushed"): "expire",  # pushed, never pulled
}
NAMES = {digest(n): n for _, n in EXPECTED}


def actions(plan: pd.DataFrame) -> dict[tuple[str, str], str]:
    return {(r.registry, NAMES[r.digest]): r.action for r in plan.itertuples()}


def test_plan_run_keeps_what_the_configured_sources_saw_pulled(env):
    """The DAG's plan step: a snapshot in S3, pulls merged, the real planner, plan.parquet."""
    seed_events(env)
    config = env["config"](PULLS | {"cloudtrail": [{"prefix": TRAIL, "bucket": env["trail"]}]})
    publish_snapshot(
        env["s3"],
        env["bucket"],
        "inventory/",
        schema.frame_to_table(fleet_inventory(env["repo"])),
        [],
        NOW,
        ["ecr-trail", "ecr-other", "oci-events"],
    )
    planned = jobs.plan_run(config, "pulls-run", NOW, True, [])
    plan = objects.get_table(env["s3"], env["bucket"], planned["plan_key"]).to_pandas()
    assert actions(plan) == EXPECTED
    kept = plan[plan["digest"] == digest("bytag")].set_index("registry")
    assert f"pulled within the last {KEEP_DAYS} days" in kept.at["ecr-trail", "reason"]
    merged = merge_configured(config, env["s3"], fleet_inventory(env["repo"]), NOW, parse_policies(POLICY))
    last = {(r.registry, NAMES[r.digest]): r.last_pulled_at for r in merged.itertuples()}
    assert last[("ecr-trail", "bytag")] == pd.Timestamp(days_ago(3))  # the record's eventTime
    assert last[("oci-events", "manifestpull")] == pd.Timestamp(days_ago(5))
    assert pd.isna(last[("ecr-other", "bytag")]) and pd.isna(last[("ecr-trail", "failed")])


def test_apply_plan_merges_the_same_pulls(env):
    """The command line's one-process run (a dry run): the same pulls decide the same images."""
    seed_events(env)
    config = env["config"](PULLS | {"cloudtrail": [{"prefix": TRAIL, "bucket": env["trail"]}]})
    summary = jobs.apply_plan(config, fleet_inventory(env["repo"]), NOW, dry_run=True, run_id="pulls-cli")
    assert summary["would_remove_images"] == sum(a == "expire" for a in EXPECTED.values())
    without = jobs.apply_plan(
        env["config"](), fleet_inventory(env["repo"]), NOW, dry_run=True, run_id="pulls-cli-none"
    )
    assert without["would_remove_images"] == len(EXPECTED)  # no sources: today's behaviour


def test_no_sources_configured_reads_nothing(env):
    inventory = fleet_inventory(env["repo"])
    config = env["config"]()
    assert merge_configured(config, None, inventory, NOW, parse_policies(POLICY)) is inventory


def test_exclude_principals_replaces_the_default(env):
    seed_events(env)
    config = env["config"](
        {"cloudtrail": [{"prefix": TRAIL, "bucket": env["trail"]}], "exclude_principals": []}
    )
    pulls = read_pulls(config, env["s3"], NOW)
    assert digest("inspector") in set(pulls[pulls["registry"] == "ecr-trail"]["digest"])
    assert digest("failed") not in set(pulls["digest"])  # a failed call is never a pull
    assert digest("manifestpull") not in set(pulls["digest"])  # notifications not configured here


def test_excluded_principals_of_notifications_do_not_count(env):
    """The documented pull was made with curl/7.38.0: excluding that user agent drops it."""
    seed_events(env)
    notifications = {"notifications": [{"prefix": "registry-events/", "registries": ["oci-events"]}]}
    pulls = read_pulls(env["config"](notifications), env["s3"], NOW)
    assert set(pulls["digest"]) == {digest("manifestpull")} and set(pulls["registry"]) == {"oci-events"}
    excluded = env["config"](notifications | {"exclude_principals": ["curl/*"]})
    assert read_pulls(excluded, env["s3"], NOW).empty


def test_a_broken_log_file_in_the_window_fails_the_plan_naming_it(env):
    seed_events(env)
    key = put_trail_file(
        env["s3"], env["trail"], "us-east-1", days_ago(4), [], body=gzip.compress(b'{"Records": [')
    )
    config = env["config"]({"cloudtrail": [{"prefix": TRAIL, "bucket": env["trail"]}]})
    with pytest.raises(PullSourceError) as err:
        jobs.apply_plan(config, fleet_inventory(env["repo"]), NOW, dry_run=True, run_id="pulls-broken")
    assert f"retention.pulls.cloudtrail[0]: s3://{env['trail']}/{key}" in str(err.value)


def test_the_command_line_exits_1_naming_the_source(env, tmp_path):
    """`registry-ops retention apply` with a source it cannot read: exit 1, the source named."""
    inv = tmp_path / "inventory.parquet"
    write_inventory(schema.frame_to_table(fleet_inventory(env["repo"])), inv)
    config = env["config"](
        {"notifications": [{"prefix": "registry-events/", "bucket": f"{env['trail']}-gone"}]}
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "include.registry_ops.cli",
            "retention",
            "apply",
            "--config",
            config.source,
            "--inventory",
            str(inv),
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "error: retention.pulls.notifications[0]: cannot read s3://" in proc.stderr
    assert json.loads(proc.stdout)["error"].startswith("retention.pulls.notifications[0]")


def test_a_log_file_of_another_shape_fails_naming_it(env):
    """A gzip JSON file in a day folder that is not {"Records": [...]} (here an envelope) is refused."""
    body = gzip.compress(json.dumps(sample("distribution-notification-pull.docs.json")).encode())
    key = put_trail_file(env["s3"], env["trail"], "us-east-1", days_ago(2), [], body=body)
    config = env["config"]({"cloudtrail": [{"prefix": TRAIL, "bucket": env["trail"]}]})
    with pytest.raises(
        PullSourceError, match=re.escape(key) + ': not a CloudTrail log file: no "Records" list'
    ):
        read_pulls(config, env["s3"], NOW)


def test_only_log_files_are_read_from_a_day_folder(env):
    """The zero-byte "folder" object the S3 console creates is not a log file."""
    put_trail_file(
        env["s3"],
        env["trail"],
        "us-east-1",
        days_ago(3),
        [pull_record(env["repo"], days_ago(3), tag="t-bytag")],
    )
    env["s3"].put_object(Bucket=env["trail"], Key=f"{TRAIL}us-east-1/{days_ago(3):%Y/%m/%d}/", Body=b"")
    config = env["config"]({"cloudtrail": [{"prefix": TRAIL, "bucket": env["trail"]}]})
    pulls = read_pulls(config, env["s3"], NOW)
    assert list(zip(pulls["registry"], pulls["tag"], strict=True)) == [("ecr-trail", "t-bytag")]


def test_a_record_without_what_a_pull_needs_is_named(env):
    rec = pull_record(env["repo"], days_ago(1), name="bytag")
    del rec["requestParameters"]["repositoryName"]
    key = put_trail_file(env["s3"], env["trail"], "us-east-1", days_ago(1), [rec])
    config = env["config"]({"cloudtrail": [{"prefix": TRAIL, "bucket": env["trail"]}]})
    with pytest.raises(PullSourceError, match=re.escape(key) + f".*{rec['eventID']}: no repositoryName"):
        read_pulls(config, env["s3"], NOW)
    env["s3"].delete_object(Bucket=env["trail"], Key=key)
    # a time in the format of AWS's Inspector examples, not CloudTrail's
    rec = pull_record(env["repo"], days_ago(1), name="bytag", eventTime="Dec 3, 2021, 6:02:30 PM")
    key = put_trail_file(env["s3"], env["trail"], "us-east-1", days_ago(2), [rec])
    with pytest.raises(PullSourceError, match=re.escape(key) + ".*Dec 3, 2021"):
        read_pulls(config, env["s3"], NOW)


def test_an_unreadable_source_fails_naming_it(env):
    missing = {"cloudtrail": [{"prefix": TRAIL, "bucket": f"{env['trail']}-gone"}]}
    with pytest.raises(
        PullSourceError, match=r"retention.pulls.cloudtrail\[0\]: cannot read s3://.*-gone/.*NoSuchBucket"
    ):
        read_pulls(env["config"](missing), env["s3"], NOW)
    empty = {"notifications": [{"prefix": "no-such-events/"}]}
    with pytest.raises(PullSourceError, match=r"notifications\[0\]: nothing under s3://.*/no-such-events/"):
        read_pulls(env["config"](empty), env["s3"], NOW)
    with pytest.raises(PullSourceError, match=r"cloudtrail\[0\]: nothing under s3://"):
        read_pulls(env["config"]({"cloudtrail": [{"prefix": TRAIL}]}), env["s3"], NOW)  # storage bucket: none


def test_an_envelope_of_another_shape_fails_naming_it(env):
    env["s3"].put_object(Bucket=env["bucket"], Key="registry-events/x.json", Body=b'{"Records": []}')
    with pytest.raises(PullSourceError, match=r"registry-events/x.json: not a notification envelope"):
        read_pulls(env["config"]({"notifications": [{"prefix": "registry-events/"}]}), env["s3"], NOW)


def test_envelopes_older_than_the_window_are_not_read(env):
    env["s3"].put_object(Bucket=env["bucket"], Key="registry-events/old.json", Body=b"garbage")
    config = env["config"]({"notifications": [{"prefix": "registry-events/"}], "lookback_days": 30})
    assert read_pulls(config, env["s3"], NOW + timedelta(days=31)).empty  # written before the window
    with pytest.raises(PullSourceError, match=r"old\.json"):
        read_pulls(config, env["s3"], NOW)


def test_a_window_shorter_than_a_policy_asks_for_is_refused(env):
    config = env["config"](PULLS | {"lookback_days": KEEP_DAYS - 1})
    with pytest.raises(
        ConfigError,
        match=rf"lookback_days is {KEEP_DAYS - 1}.*policy 'idle' keeps images pulled within {KEEP_DAYS} days",
    ):
        merge_configured(
            config, env["s3"], fleet_inventory(env["repo"]), NOW, parse_policies(POLICY, "p.yaml")
        )


def test_pulls_are_credited_to_registries_of_the_right_kind(env):
    wrong = {"notifications": [{"prefix": "registry-events/", "registries": ["ecr-trail"]}]}
    with pytest.raises(ConfigError, match=r"notifications\[0\].registries: 'ecr-trail' is of kind 'ecr'"):
        read_pulls(env["config"](wrong), env["s3"], NOW)
    unknown = {"cloudtrail": [{"prefix": TRAIL, "registries": ["nope"]}]}
    with pytest.raises(ConfigError, match="unknown registry 'nope'"):
        read_pulls(env["config"](unknown), env["s3"], NOW)


def test_config_errors_name_the_key():
    base = {
        "registries": [{"name": "e", "kind": "ecr", "conn_id": "aws_default"}],
        "storage": {"bucket": "b-1"},
    }
    for pulls, where in (
        ({"cloudtrail": [{"prefix": "AWSLogs/1/"}]}, "retention.pulls.cloudtrail[0].prefix"),
        ({"lookback_days": 0}, "retention.pulls.lookback_days"),
        ({"sources": []}, "retention.pulls.sources"),
        (
            {"notifications": [{"prefix": "x/", "bucket": "Bad_Bucket"}]},
            "retention.pulls.notifications[0].bucket",
        ),
    ):
        with pytest.raises(ConfigError, match=re.escape(where)):
            parse_config(base | {"retention": {"pulls": pulls}})


def test_the_documented_example_is_a_valid_config():
    """docs/retention-policies.md §7's `retention.pulls` block parses as it is written."""
    text = (ROOT / "docs" / "retention-policies.md").read_text()
    [block] = re.findall(r"```yaml\n( *retention:\n +pulls:.*?)```", text, re.S)
    data = yaml.safe_load(textwrap.dedent(block))
    base = {
        "registries": [
            {
                "name": "ecr-prod",
                "kind": "ecr",
                "conn_id": "aws_default",
                "region": "eu-west-1",
                "registry_id": ACCOUNT,
            },
            {"name": "registry-local", "kind": "oci", "conn_id": "oci_local"},
        ],
        "storage": {"bucket": "b-1"},
    }
    config = parse_config(base | data)
    assert config.retention.pulls.cloudtrail[0].prefix == TRAIL
    assert config.retention.pulls.lookback_days == 90
