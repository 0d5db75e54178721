"""ECR scan on push: EventBridge -> SQS -> this trigger -> the ``registry_pushed_images`` asset.

ECR sends no webhooks. An EventBridge rule (``source: aws.ecr``, ``detail-type: ECR Image
Action``, ``detail.action-type: PUSH``, ``detail.result: SUCCESS``) puts every successful push
on an SQS queue, and an Airflow ``AssetWatcher`` on the asset runs :class:`EcrPushTrigger` in
the triggerer: it long-polls the queue, turns one batch of push events into one
``TriggerEvent`` with the same payload the OCI receiver records
(``{"source": "ecr-eventbridge", "images": [...]}``), and deletes those messages only when
the triggerer asks for the next event, i.e. after it has taken this one: a crash before that
leaves them on the queue to be delivered again (at least once; the scan is idempotent).
A message that is not an ECR image push (another event, a delete, a failed push, not JSON)
is named by its message id in the log and deleted at once, so it never comes round again.

Why not the amazon provider's ``SqsSensorTrigger``: it was written when aiobotocore could not be
installed beside our boto3 (it can now, #14); it passes on every message received and, by
default, deletes them on reception, before Airflow has stored the event. This trigger keeps
only ECR pushes, batches them into one asset event, and deletes only after the triggerer has
taken the event. It calls boto3 in ``asyncio.to_thread``
with the registry's own AWS connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from ..registries.base import DIGEST
from .push import IMAGE_TYPES, image_record

log = logging.getLogger(__name__)

SOURCE = "ecr-eventbridge"
MAX_MESSAGES = 10  # SQS's most per ReceiveMessage


class QueueError(RuntimeError):
    """The queue cannot be read (missing, no permission); names it and the connection."""


class NotAPush(ValueError):
    """A queue message that is not a successful ECR image push."""


def push_image(registry: str, body: str) -> dict[str, Any]:
    """The pushed image an EventBridge "ECR Image Action" event (as SQS delivers it) names."""
    try:
        event = json.loads(body)
    except ValueError:
        raise NotAPush("body is not JSON") from None
    if not isinstance(event, dict):
        raise NotAPush("body is not a JSON object")
    if event.get("source") != "aws.ecr" or event.get("detail-type") != "ECR Image Action":
        raise NotAPush(f"source {event.get('source')!r}, detail-type {event.get('detail-type')!r}")
    detail = event.get("detail") or {}
    action, result = detail.get("action-type"), detail.get("result")
    if action != "PUSH" or result != "SUCCESS":
        raise NotAPush(f"action-type {action!r}, result {result!r}")
    media = detail.get("manifest-media-type")
    if media and media not in IMAGE_TYPES:
        raise NotAPush(f"manifest-media-type {media!r} is not an image")
    repository, digest = detail.get("repository-name"), detail.get("image-digest")
    if not repository or not DIGEST.match(str(digest or "")):
        raise NotAPush(f"repository-name {repository!r}, image-digest {digest!r}")
    return image_record(registry, repository, digest, detail.get("image-tag"), event.get("time"))


def read_batch(registry: str, messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list, list]:
    """(images once each, messages they came from, messages that are no push)."""
    images: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    used, bad = [], []
    for msg in messages:
        try:
            image = push_image(registry, msg.get("Body", ""))
        except NotAPush as exc:
            log.warning("ECR push queue of %s: message %s is no ECR image push (%s): dropped",
                        registry, msg.get("MessageId"), exc)  # fmt: skip
            bad.append(msg)
            continue
        images.setdefault((image["repository"], image["digest"], image["tag"]), image)
        used.append(msg)
    return list(images.values()), used, bad


class EcrPushTrigger(BaseEventTrigger):
    """Long-polls one SQS queue; one TriggerEvent per batch of ECR image pushes."""

    def __init__(
        self,
        registry: str,
        queue_url: str,
        aws_conn_id: str,
        region_name: str | None = None,
        poll_seconds: int = 20,
    ) -> None:
        super().__init__()
        self.registry, self.queue_url, self.aws_conn_id = registry, queue_url, aws_conn_id
        self.region_name, self.poll_seconds = region_name, poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "registry": self.registry,
                "queue_url": self.queue_url,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "poll_seconds": self.poll_seconds,
            },
        )

    def _client(self) -> Any:
        from ..clients import aws_client

        return aws_client("sqs", self.aws_conn_id, self.region_name)

    def _check(self, sqs: Any) -> None:
        """Fail at once, naming the queue, when it is not there or not readable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise QueueError(
                f"ECR push queue of {self.registry} ({self.queue_url}, connection {self.aws_conn_id!r}): "
                f"{err.get('Code')}: {err.get('Message')}"
            ) from None
        except BotoCoreError as exc:
            raise QueueError(f"ECR push queue of {self.registry} ({self.queue_url}): {exc}") from None

    def _receive(self, sqs: Any) -> list[dict[str, Any]]:
        resp = sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=MAX_MESSAGES,
            WaitTimeSeconds=self.poll_seconds,
        )
        return resp.get("Messages") or []

    def _delete(self, sqs: Any, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
        resp = sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        for failed in resp.get("Failed") or []:  # it comes back after its visibility timeout
            msg = messages[int(failed["Id"])]
            log.error("ECR push queue of %s: message %s not deleted: %s %s", self.registry,
                      msg.get("MessageId"), failed.get("Code"), failed.get("Message"))  # fmt: skip

    async def run(self) -> AsyncIterator[TriggerEvent]:
        sqs = await asyncio.to_thread(self._client)
        await asyncio.to_thread(self._check, sqs)
        while True:
            messages = await asyncio.to_thread(self._receive, sqs)
            images, used, bad = read_batch(self.registry, messages)
            await asyncio.to_thread(self._delete, sqs, bad)  # never useful: never again
            if not images:
                continue
            log.info("ECR push queue of %s: %d image push(es) from %d message(s)", self.registry,
                     len(images), len(used))  # fmt: skip
            yield TriggerEvent({"source": SOURCE, "images": images})
            # resumed: the triggerer has taken the event, the messages may go
            await asyncio.to_thread(self._delete, sqs, used)


def watchers(config: Any) -> list[Any]:
    """One ``AssetWatcher`` per ``events.ecr[]`` queue (for the DAG that schedules on the asset)."""
    from airflow.sdk import AssetWatcher

    out = []
    for queue in config.events.ecr:
        reg = config.registry(queue.registry)
        if reg.kind != "ecr":
            raise ValueError(f"events.ecr: registry {queue.registry!r} is {reg.kind}, not ecr")
        trigger = EcrPushTrigger(queue.registry, queue.queue_url, reg.conn_id, reg.region, queue.poll_seconds)
        out.append(AssetWatcher(name=f"ecr_push_{queue.registry}", trigger=trigger))
    return out


def push_watchers() -> list[Any]:
    """:func:`watchers` for the config file, read at parse time as the deadlines are; none when
    the file cannot be read or is invalid (the DAG must still parse; the reason is logged)."""
    from ..config import ConfigError, load_config

    try:
        return watchers(load_config())
    except (ConfigError, ValueError) as exc:
        log.warning("ECR push watchers: config not usable, none wired: %s", exc)
        return []
