"""Scan on push: a distribution registry's push events become one Airflow asset event.

The receiver stores each notification envelope, then calls :func:`forward_pushes`. Only pushes
of manifests are images: a ``push`` event whose ``target.mediaType`` is an image manifest or an
index (OCI or Docker v2). The registry also sends a push event for every blob (layer, config)
and a pull event for every read; neither is an image. The images of one envelope are recorded
as ONE event on the ``registry_pushed_images`` asset through Airflow's REST API (the receiver
runs outside any task, so it has no other way in), and ``registry_scan`` scans just them.

A failure of that call is an :class:`~include.registry_ops.airflow_api.ApiError` naming the
connection and the URL (no secrets): the receiver then answers 503 and the registry delivers
the envelope again, so a push is never dropped because Airflow was briefly away.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from ..airflow_api import ApiError, connect
from ..assets import PUSHED
from ..clients import ConnectionMissing
from ..config import Config
from ..registries.base import DIGEST, INDEX_TYPES, MANIFEST_TYPES

log = logging.getLogger(__name__)

SOURCE = "registry-notifications"
IMAGE_TYPES = MANIFEST_TYPES | INDEX_TYPES


def utc_iso(value: Any) -> str | None:
    """The event's timestamp as UTC ISO-8601 (the registry writes nanoseconds and an offset)."""
    try:
        when = datetime.fromisoformat(str(value))  # 3.11: nanoseconds truncated, "Z" accepted
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def image_record(registry: str, repository: str, digest: str, tag: Any, at: Any) -> dict[str, Any]:
    """One pushed image as the ``registry_pushed_images`` extra carries it (both sources)."""
    return {
        "registry": registry,
        "repository": repository,
        "digest": digest,
        "tag": tag or None,
        "pushed_at": utc_iso(at),
    }


def _image(registry: str, event: Any) -> dict[str, Any] | None:
    """The pushed image of one event, or None when the event is not an image push."""
    if not isinstance(event, dict) or event.get("action") != "push":
        return None
    target = event.get("target")
    if not isinstance(target, dict) or target.get("mediaType") not in IMAGE_TYPES:
        return None  # a blob push (layer, config) or an unknown kind of manifest
    repository, digest = target.get("repository"), target.get("digest")
    if not isinstance(repository, str) or not repository or not DIGEST.match(str(digest or "")):
        # stored already; a retry would not change it, so it is named and left out
        log.warning(
            "push event %s: no repository or sha256 digest in its target (%r, %r): not an image",
            event.get("id"),
            repository,
            digest,
        )
        return None
    return image_record(registry, repository, digest, target.get("tag"), event.get("timestamp"))


def pushed_images(registry: str, envelope: dict[str, Any]) -> list[dict[str, Any]]:
    """The images an envelope says were pushed, once each per (repository, digest, tag), in the
    order of the events (the earliest push time kept)."""
    events = envelope.get("events") if isinstance(envelope, dict) else None
    if not isinstance(events, list):
        raise ValueError(f"registry {registry}: not a notification envelope (no 'events' list)")
    found: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for event in events:
        image = _image(registry, event)
        if image is None:
            continue
        key = (image["repository"], image["digest"], image["tag"])
        first = found.setdefault(key, image)
        if image["pushed_at"] and (not first["pushed_at"] or image["pushed_at"] < first["pushed_at"]):
            first["pushed_at"] = image["pushed_at"]
    return list(found.values())


def record(config: Config, source: str, images: list[dict[str, Any]]) -> dict[str, Any]:
    """Record one ``registry_pushed_images`` asset event with ``images`` through Airflow's REST API
    (connection ``notifications.airflow_api_conn_id``); the event as Airflow returns it."""
    conn_id = config.notifications.airflow_api_conn_id
    try:
        api = connect(conn_id)
    except ConnectionMissing as exc:
        raise ApiError(f"Airflow API connection {conn_id!r}: {exc}") from None
    try:
        asset_id = api.asset_id(PUSHED["name"], PUSHED["uri"])
        event = api.create_asset_event(asset_id, {"source": source, "images": images})
    finally:
        api.http.close()
    log.info(
        "pushed images: asset event %s on %s: %d image(s) from %s",
        event.get("id"),
        PUSHED["name"],
        len(images),
        source,
    )
    return event


def forward_pushes(config: Config, registry: str, envelope: dict[str, Any]) -> dict[str, Any] | None:
    """The asset event recorded for the envelope's pushed images; None when scan on push is off
    or the envelope holds no image push. Raises ApiError (the receiver answers 503)."""
    if not config.events.scan_on_push:
        return None
    images = pushed_images(registry, envelope)
    if not images:
        return None
    return record(config, SOURCE, images)
