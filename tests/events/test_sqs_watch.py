"""The ECR push watcher against moto's EventBridge and SQS.

ECR in moto does not emit EventBridge events when an image is pushed (nor does any emulator
here), so each test puts the documented "ECR Image Action" event (AWS's example from the ECR
user guide, ``tests/fixtures/events/eventbridge-ecr-image-action-push.awsdocs.json``) on the
default bus with ``PutEvents``; moto matches it against a real rule (the event pattern from
``docs/scan-on-push.md``) and delivers it to the rule's SQS target, as AWS does. The documented
digest is 60 hex digits (shortened in the docs), so the tests put real 64-digit digests in it.
The trigger's ``run()`` is driven as the triggerer drives it: to its first event, then on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
import yaml

from devstack import ecr_events
from include.registry_ops.config import load_config
from include.registry_ops.events import sqs_watch
from include.registry_ops.events.sqs_watch import EcrPushTrigger

PUSH, DELETE, SCAN = (ecr_events.documented(n) for n in ("push", "delete", "scan-basic"))
put = ecr_events.put_event  # raises when EventBridge refuses the event


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture
def queue(moto_server):
    """A queue that a rule with the documented pattern targets; gives (sqs, events, url)."""
    kw = {"endpoint_url": moto_server.endpoint, "region_name": "us-east-1"}
    sqs, events = boto3.client("sqs", **kw), boto3.client("events", **kw)
    name = f"ecr-pushes-{uuid.uuid4().hex[:8]}"
    url = ecr_events.wire_push_queue(sqs, events, name)
    yield sqs, events, url
    ecr_events.unwire_push_queue(sqs, events, name, url)


def counts(sqs, url: str) -> tuple[int, int]:
    """(waiting, in flight) messages on the queue."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attrs[names[0]]), int(attrs[names[1]])


def trigger(url: str) -> EcrPushTrigger:
    return EcrPushTrigger("ecr-local", url, "aws_default", "us-east-1", poll_seconds=1)


async def first_then_on(trig: EcrPushTrigger, check_between) -> dict:
    """The first event; ``check_between()`` while the triggerer holds it; then resume once."""
    gen = trig.run()
    try:
        event = await asyncio.wait_for(gen.__anext__(), 30)
        check_between()
        with pytest.raises(TimeoutError):  # resumed: deletes, then polls an empty queue
            await asyncio.wait_for(gen.__anext__(), 3)
    finally:
        await gen.aclose()
    return event.payload


def test_pushes_become_one_event_and_leave_the_queue_after_it(queue, moto_server):
    sqs, events, url = queue
    web, api = digest("web"), digest("api")
    put(events, PUSH, **{"image-digest": web})
    put(events, PUSH, **{"image-digest": api, "repository-name": "team/api", "image-tag": "2.1.0"})
    put(events, PUSH, **{"image-digest": web})  # EventBridge delivers at least once: a duplicate
    put(events, DELETE, **{"image-digest": web})  # the rule filters deletes out before SQS
    assert counts(sqs, url) == (3, 0)

    seen = []
    payload = asyncio.run(first_then_on(trigger(url), lambda: seen.append(counts(sqs, url))))
    assert seen == [(0, 3)]  # taken into the event, not deleted while the triggerer holds it
    assert counts(sqs, url) == (0, 0)  # deleted once the triggerer asked for the next event
    assert payload["source"] == "ecr-eventbridge"
    assert sorted(payload["images"], key=lambda i: i["repository"]) == [
        {
            "registry": "ecr-local",
            "repository": "my-repository-name",
            "digest": web,
            "tag": "latest",
            "pushed_at": payload["images"][0]["pushed_at"],
        },
        {
            "registry": "ecr-local",
            "repository": "team/api",
            "digest": api,
            "tag": "2.1.0",
            "pushed_at": payload["images"][1]["pushed_at"],
        },
    ]
    assert all(i["pushed_at"] and i["pushed_at"].endswith("+00:00") for i in payload["images"])


def test_messages_that_are_no_push_are_named_and_dropped(queue, caplog):
    sqs, events, url = queue
    bad_ids = [
        sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]
        for body in (
            "not json at all",
            json.dumps({**DELETE, "detail": {**DELETE["detail"], "image-digest": digest("gone")}}),
            json.dumps(SCAN),
            json.dumps(PUSH),  # the docs' digest is 60 hex digits: no image anyone can scan
            json.dumps(
                {**PUSH, "detail": {**PUSH["detail"], "result": "FAILURE", "image-digest": digest("x")}}
            ),
            json.dumps(
                {**PUSH, "source": "custom.app", "detail": {**PUSH["detail"], "image-digest": digest("y")}}
            ),
            json.dumps(
                {
                    **PUSH,
                    "detail": {
                        **PUSH["detail"],
                        "image-digest": digest("z"),
                        "manifest-media-type": "application/vnd.docker.distribution.manifest.v1+prettyjws",
                    },
                }
            ),
        )
    ]
    put(events, PUSH, **{"image-digest": digest("good")})
    seen = []
    with caplog.at_level(logging.WARNING, logger=sqs_watch.__name__):
        payload = asyncio.run(first_then_on(trigger(url), lambda: seen.append(counts(sqs, url))))
    assert [i["digest"] for i in payload["images"]] == [digest("good")]
    assert seen == [(0, 1)]  # the bad ones were deleted at once: only the push is in flight
    assert counts(sqs, url) == (0, 0)
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == len(bad_ids)
    for message_id in bad_ids:
        assert any(message_id in line for line in dropped), message_id


def test_the_trigger_serializes_to_what_rebuilds_it():
    trig = EcrPushTrigger("ecr-local", "http://127.0.0.1:1/123456789012/q", "aws_default", "eu-west-1", 7)
    path, kwargs = trig.serialize()
    assert path == "include.registry_ops.events.sqs_watch.EcrPushTrigger"
    module, name = path.rsplit(".", 1)
    import importlib

    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (path, kwargs) and json.dumps(kwargs)


def test_the_scan_dag_watches_the_queues_of_the_config(tmp_path, monkeypatch, moto_server):
    config = tmp_path / "registry-ops.yaml"
    url = "http://127.0.0.1:1/123456789012/ecr-pushes"
    config.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default", "region": "us-east-1"},
                    {"name": "oci-local", "kind": "oci", "conn_id": "oci_local"},
                ],
                "storage": {"bucket": "registry-ops-watch"},
                "notifications": {"recipients": ["ops@example.com"]},
                "events": {"ecr": [{"registry": "ecr-local", "queue_url": url, "poll_seconds": 5}]},
            }
        )
    )
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(config))
    from airflow.dag_processing.dagbag import DagBag

    from include.registry_ops.assets import PUSHED

    root = Path(__file__).resolve().parents[2]
    dag = DagBag(dag_folder=str(root / "dags" / "registry_scan.py")).dags["registry_scan"]
    assets = {a.name: a for a in dag.timetable.asset_condition.objects}
    assert set(assets) >= {PUSHED["name"], "registry_inventory_snapshot"}
    [watcher] = assets[PUSHED["name"]].watchers
    assert watcher.name == "ecr_push_ecr-local"
    assert watcher.trigger.serialize()[1] == {
        "registry": "ecr-local",
        "queue_url": url,
        "aws_conn_id": "aws_default",
        "region_name": "us-east-1",
        "poll_seconds": 5,
    }

    # Airflow serializes the DAG with its watchers (what the dag processor stores for the triggerer)
    from airflow.serialization.serialized_objects import DagSerialization

    stored = json.dumps(DagSerialization.to_dict(dag))
    assert "include.registry_ops.events.sqs_watch.EcrPushTrigger" in stored and url in stored

    config.write_text(config.read_text().replace("registry: ecr-local\n", "registry: oci-local\n", 1))
    with pytest.raises(ValueError, match=r"events\.ecr: registry 'oci-local' is oci, not ecr"):
        sqs_watch.watchers(load_config(config))


def test_an_ecr_push_is_scanned_from_the_trigger_event(queue, moto_server, registry_server, ecr, tmp_path):
    """The whole ECR path but the triggerer: an image really in (moto's) ECR, its documented
    push event through the rule and queue, the trigger's event as Airflow stores it on the asset
    (``{"from_trigger": True, "payload": ...}``), and the scan of just that digest with ECR's
    own findings (AWS CLI's real response, seeded into moto by digest)."""
    from devstack.fleet import RepoSpec
    from devstack.seed import seed_ecr
    from include.registry_ops import storage
    from include.registry_ops.clients import s3_client
    from include.registry_ops.scan import jobs
    from include.registry_ops.scan.pushed import from_extras
    from tests.scan.scanfleet import ECR, image, publish_inventory, seed_ecr_findings, write_config

    repo = f"sqs-push/{uuid.uuid4().hex[:6]}"  # outside scan/*: the scan tests count that fleet
    pushed = image(repo, ["1.0.0", "latest"])
    older = image(repo + "-old", ["0.9.0"])  # in the same repository and the snapshot, not pushed now
    tag = f"t-{uuid.uuid4().hex[:8]}"
    _, config = write_config(tmp_path, tag, tmp_path / "no-trivy", include="sqs-push/*")
    seed_ecr(ecr, [RepoSpec(repo, [older])])
    snapshot = publish_inventory(config)  # an inventory from before the push: older is in it
    seed_ecr(ecr, [RepoSpec(repo, [pushed])])
    seed_ecr_findings(
        moto_server.endpoint, repo, pushed.digest, ECR / "describe-image-scan-findings.basic.awscli.json"
    )
    put(queue[1], PUSH, **{"image-digest": pushed.digest, "repository-name": repo})

    payload = asyncio.run(first_then_on(trigger(queue[2]), lambda: None))
    images = from_extras([{"from_trigger": True, "payload": payload}])
    planned = jobs.plan_run(config, datetime.now(UTC), "ecr-push", inventory_key=[], pushed=images)
    s3 = s3_client(config)
    targets = storage.get_json(s3, config.storage.bucket, planned["parts_prefix"] + "targets.json")
    assert targets == [{"digest": pushed.digest, "registry": "ecr-local", "repository": repo}]
    assert older.digest not in {t["digest"] for t in targets} and snapshot["images"] >= 1
    inventory = storage.get_table(s3, config.storage.bucket, planned["inventory_key"]).to_pandas()
    mine = inventory[inventory["repository"] == repo]
    assert set(mine["digest"]) == {older.digest, pushed.digest}  # the snapshot's rows and the push's
    assert len(inventory) == snapshot["images"] + 1
    parts = [jobs.scan_batch(config, b, planned["parts_prefix"]) for b in planned["batches"]]
    manifest = jobs.publish(config, planned, parts)
    assert manifest["error_count"] == 0 and manifest["ok"] == 1
    findings = storage.get_table(s3, config.storage.bucket, manifest["findings_key"]).to_pandas()
    assert set(findings["digest"]) == {pushed.digest} and set(findings["source"]) == {"ecr-basic"}


def test_a_queue_that_is_not_there_is_named(moto_server):
    url = f"{moto_server.endpoint}/123456789012/no-such-queue-{uuid.uuid4().hex[:6]}"

    async def first():
        gen = trigger(url).run()
        try:
            return await asyncio.wait_for(gen.__anext__(), 10)
        finally:
            await gen.aclose()

    with pytest.raises(sqs_watch.QueueError, match="ECR push queue of ecr-local") as err:
        asyncio.run(first())
    assert url in str(err.value) and "'aws_default'" in str(err.value)
