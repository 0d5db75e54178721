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
    from types import SimpleNamespace

    import boto3

    from devstack import ecr_events
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
    sqs, events = boto3.client("sqs", **kw), boto3.client("events", **kw)
    digest = "sha256:" + "b" * 64
    try:
        ecr_events.put_event(events, ecr_events.documented("push"), **{"image-digest": digest})
        (msg,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
        assert push_image("ecr-local", msg["Body"])["digest"] == digest
    finally:
        ecr_events.unwire_push_queue(sqs, events, ECR_PUSH_QUEUE, url)
