"""ECR's scan-on-push wiring on moto and the events put on it, for the demo and the tests.

ECR in moto emits no EventBridge events when an image is pushed, so the demo and the tests put
AWS's documented examples (``tests/fixtures/events/eventbridge-*.awsdocs.json``) on the default
bus with ``PutEvents``; moto matches them against a real rule (the pattern of
``docs/scan-on-push.md``) and delivers them to the rule's SQS target, as AWS does.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "events"
PUSH_PATTERN = {  # the rule docs/scan-on-push.md gives: successful image pushes only
    "source": ["aws.ecr"],
    "detail-type": ["ECR Image Action"],
    "detail": {"action-type": ["PUSH"], "result": ["SUCCESS"]},
}
TARGET_ID = "scan-on-push"


def documented(name: str) -> dict[str, Any]:
    """One of AWS's documented EventBridge examples (``push``, ``delete``, ``scan-basic``)."""
    file = {
        "push": "eventbridge-ecr-image-action-push.awsdocs.json",
        "delete": "eventbridge-ecr-image-action-delete.awsdocs.json",
        "scan-basic": "eventbridge-ecr-image-scan-basic.awsdocs.json",
    }[name]
    return json.loads((EVENTS / file).read_text())


def wire_push_queue(sqs: Any, events: Any, name: str) -> str:
    """An SQS queue ``name`` and a rule of that name for successful pushes targeting it; its URL."""
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventPattern=json.dumps(PUSH_PATTERN), State="ENABLED")
    events.put_targets(Rule=name, Targets=[{"Id": TARGET_ID, "Arn": arn}])
    return url


def unwire_push_queue(sqs: Any, events: Any, name: str, url: str) -> None:
    events.remove_targets(Rule=name, Ids=[TARGET_ID])
    events.delete_rule(Name=name)
    sqs.delete_queue(QueueUrl=url)


def put_event(events: Any, example: dict[str, Any], **detail: Any) -> None:
    """Put a documented example on the default bus with ``detail`` fields replaced; raises
    RuntimeError when EventBridge refuses it."""
    event = copy.deepcopy(example)
    event["detail"].update(detail)
    entry = {
        "Source": event["source"],
        "DetailType": event["detail-type"],
        "Detail": json.dumps(event["detail"]),
    }
    resp = events.put_events(Entries=[entry])
    if resp["FailedEntryCount"]:
        raise RuntimeError(f"EventBridge refused the event: {resp['Entries']}")
