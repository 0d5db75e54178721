"""The demo's copy of the config: the shipped one plus the DR drill's scratch registry, which
backups leave out (a drill must never restore into what it backs up)."""

from __future__ import annotations

from pathlib import Path

from include.registry_ops.config import load_config


def test_the_demo_config_adds_the_drill_target_and_keeps_it_out_of_backups(tmp_path, monkeypatch):
    from devstack.demo import ROOT, demo_config

    monkeypatch.delenv("REGISTRY_OPS_CONFIG", raising=False)
    config = load_config(demo_config(tmp_path))
    shipped = load_config(ROOT / "config" / "registry-ops.yaml")
    names = [r.name for r in shipped.registries]
    assert config.dr.target == "oci-dr" and config.registry("oci-dr").conn_id == "oci_dr"
    assert config.backup.registries == names and "oci-dr" not in names
    assert Path(config.retention.policy_file).is_absolute() and Path(config.retention.policy_file).is_file()


def test_the_demo_wires_ecr_pushes_to_a_watcher(tmp_path, monkeypatch, moto_server):
    """``ecr_push_queue``: the queue and the documented rule on moto, and ``events.ecr`` in the
    demo's config, so the scan DAG's asset gets the watcher the standalone's triggerer runs; a
    documented push put on EventBridge lands on that queue."""
    import json
    from types import SimpleNamespace

    import boto3

    from devstack.demo import ECR_PUSH_QUEUE, demo_config, ecr_push_queue
    from include.registry_ops.events.sqs_watch import EcrPushTrigger, push_image, watchers

    monkeypatch.delenv("REGISTRY_OPS_CONFIG", raising=False)
    path = demo_config(tmp_path)
    url = ecr_push_queue(SimpleNamespace(moto=moto_server), path)
    config = load_config(path)
    assert [(q.registry, q.queue_url) for q in config.events.ecr] == [("ecr-local", url)]
    (watcher,) = watchers(config)
    assert isinstance(watcher.trigger, EcrPushTrigger) and watcher.trigger.queue_url == url
    kw = {"endpoint_url": moto_server.endpoint, "region_name": "us-east-1"}
    detail = {"action-type": "PUSH", "result": "SUCCESS", "repository-name": "pushed/app",
              "image-digest": "sha256:" + "b" * 64, "image-tag": "1.0.0"}  # fmt: skip
    events = boto3.client("events", **kw)
    try:
        entry = {"Source": "aws.ecr", "DetailType": "ECR Image Action", "Detail": json.dumps(detail)}
        assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0
        sqs = boto3.client("sqs", **kw)
        (msg,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
        assert push_image("ecr-local", msg["Body"])["digest"] == detail["image-digest"]
    finally:
        events.remove_targets(Rule=ECR_PUSH_QUEUE, Ids=["scan-on-push"])
        events.delete_rule(Name=ECR_PUSH_QUEUE)
        boto3.client("sqs", **kw).delete_queue(QueueUrl=url)
