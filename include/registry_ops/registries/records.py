"""Inventory records built from manifests, for the kinds that read manifests to list images
(the distribution API and an OCI layout); ECR's come from ``DescribeImages`` instead, with the
manifest's blob columns (:func:`blob_columns`) added when it reads manifests."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from .base import INDEX_TYPES, Manifest, classify, platform_of, referrer_subject

IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)


def config_digests(manifests: Iterable[Manifest]) -> list[str]:
    """Digests of the image configs worth reading (platform, created time), sorted."""
    return sorted(
        {
            m.body["config"]["digest"]
            for m in manifests
            if m.media_type not in INDEX_TYPES
            and m.body.get("config", {}).get("mediaType") in IMAGE_CONFIG_TYPES
            and m.body["config"].get("size", 0) > 2
        }
    )


def parse_configs(
    blobs: Iterable[tuple[str, bytes]], fail: Callable[[str], Exception]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for digest, blob in blobs:
        try:
            out[digest] = json.loads(blob)
        except ValueError:
            raise fail(f"config blob {digest} is not valid JSON") from None
    return out


def blob_columns(m: Manifest, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """``config_digest``, ``layer_digests`` and ``layer_sizes`` of a manifest, from its descriptors.

    An index has none (null). A manifest without a ``layers`` list (Docker schema 1) has unknown
    layers (null), not none. ``layer_sizes`` is null when a descriptor's size is not a whole
    number >= 0: a cost report must not add up guesses. ``body``: ``m.body`` if already parsed."""
    if m.media_type in INDEX_TYPES:
        return {"config_digest": None, "layer_digests": None, "layer_sizes": None}
    body = m.body if body is None else body
    config = body.get("config") or {}
    layers = body.get("layers")
    if not isinstance(layers, list) or not all(isinstance(x, dict) and "digest" in x for x in layers):
        return {"config_digest": config.get("digest"), "layer_digests": None, "layer_sizes": None}
    sizes = [x.get("size") for x in layers]
    known = all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes)
    return {
        "config_digest": config.get("digest"),
        "layer_digests": [x["digest"] for x in layers],
        "layer_sizes": sizes if known else None,
    }


def manifest_record(
    registry_kind: str,
    repository: str,
    m: Manifest,
    tags: list[str],
    platform: str | None,
    configs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """One inventory record from a manifest (and its image config, where it was read)."""
    body = m.body
    subject = (body.get("subject") or {}).get("digest") or referrer_subject(tags)
    config = body.get("config") or {}
    layers = body.get("layers") or []
    is_index = m.media_type in INDEX_TYPES
    cfg = configs.get(config.get("digest", ""), {})
    kind = classify(m.media_type, subject, tags)
    artifact = body.get("artifactType")
    if not artifact and kind == "referrer" and config.get("mediaType") not in IMAGE_CONFIG_TYPES:
        artifact = config.get("mediaType")
    return {
        "registry_kind": registry_kind,
        "repository": repository,
        "digest": m.digest,
        "tags": tags,
        "kind": kind,
        "media_type": m.media_type,
        "artifact_type": artifact,
        "size_bytes": None
        if is_index
        else int(config.get("size", 0)) + sum(int(x.get("size", 0)) for x in layers),
        "pushed_at": None,
        "created_at": parse_time(cfg.get("created")),
        "last_pulled_at": None,
        "platform": platform or (platform_of(cfg) if kind == "image" else None),
        "subject_digest": subject,
        **blob_columns(m, body),
    }


def index_created(records: list[dict[str, Any]]) -> None:
    """An index has no config of its own: its build time is its newest child's."""
    created = {r["digest"]: r["created_at"] for r in records if r.get("created_at") is not None}
    for r in records:
        if r["kind"] == "index" and r.get("created_at") is None:
            times = [created[c] for c in r["child_digests"] if c in created]
            r["created_at"] = max(times) if times else None


def parse_time(value: Any) -> Any:
    """Image config ``created`` (RFC 3339, Go writes nanoseconds) as a UTC timestamp, or None."""
    if not value:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
