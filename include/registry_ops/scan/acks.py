"""Acknowledgements: ops saying "this violation is known and being handled", without a deploy.

An acknowledgement is one S3 object per image (``store.ack_key``), written by ``registry-ops
scan ack`` rather than kept in the config file, so it takes effect on the next run. It names
who gave it and why, and it is narrow on purpose:

- it covers the CVE ids the image had **when it was given** (read from the gate state): a CVE
  found later on the same image is news and fails the gate again;
- it ends after ``until`` (inclusive, like allowlist entries), at most ``MAX_DAYS`` ahead, so
  an acknowledgement cannot quietly become permanent.

An unreadable acknowledgement is skipped with an error naming its object: it then covers
nothing, and the gate fails rather than passes.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import date, datetime, timedelta
from typing import Any

from .. import storage
from ..config import Config
from . import store

log = logging.getLogger(__name__)
MAX_DAYS = 90
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def key_of(registry: str, repository: str, digest: str) -> str:
    """How violations, gate state and acknowledgements name an image."""
    return f"{registry}/{repository}@{digest}"


def check(digest: str, reason: str, until: date, today: date) -> None:
    """The user's arguments, before anything is looked up (ValueError naming the bad one)."""
    if not DIGEST.match(digest):
        raise ValueError(f"--digest: {digest!r} is not sha256: followed by 64 lowercase hex digits")
    if len(reason.strip()) < 3:
        raise ValueError("--reason: say why this violation is accepted for now (at least 3 characters)")
    if until < today:
        raise ValueError(f"--until {until.isoformat()} is in the past (today is {today.isoformat()})")
    if until > today + timedelta(days=MAX_DAYS):
        raise ValueError(
            f"--until {until.isoformat()} is more than {MAX_DAYS} days ahead: acknowledge again when it ends"
        )


def build(
    *,
    registry: str,
    repository: str,
    digest: str,
    cve_ids: list[str],
    reason: str,
    until: date,
    by: str,
    now: datetime,
) -> dict[str, Any]:
    """A checked acknowledgement record (ValueError naming the bad argument otherwise)."""
    check(digest, reason, until, now.date())
    if not cve_ids:
        raise ValueError(f"{key_of(registry, repository, digest)}: no CVE ids to acknowledge")
    return {
        "registry": registry,
        "repository": repository,
        "digest": digest,
        "cve_ids": sorted(set(cve_ids)),
        "reason": reason.strip(),
        "until": until.isoformat(),
        "by": by,
        "acked_at": now.isoformat(),
    }


def is_active(ack: dict[str, Any], today: date) -> bool:
    return date.fromisoformat(ack["until"]) >= today


def covers(ack: dict[str, Any], cve_ids: list[str], today: date) -> bool:
    """Active, and every id the image has now was there when it was acknowledged."""
    return is_active(ack, today) and set(cve_ids) <= set(ack["cve_ids"])


def _valid(doc: Any) -> bool:
    fields = ("registry", "repository", "digest", "cve_ids", "reason", "until")
    if not isinstance(doc, dict) or not all(f in doc for f in fields):
        return False
    try:
        date.fromisoformat(doc["until"])
    except (TypeError, ValueError):
        return False
    return isinstance(doc["cve_ids"], list)


def load(s3: Any, config: Config) -> dict[str, dict[str, Any]]:
    """Every acknowledgement by image key (expired ones too: the caller decides)."""
    bucket = config.storage.bucket
    out: dict[str, dict[str, Any]] = {}
    for obj in store.list_keys(s3, bucket, store.acks_prefix(config)):
        key = obj["Key"]
        try:
            doc = store.get_json_or_none(s3, bucket, key)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            log.error(
                "scan: acknowledgement s3://%s/%s is not JSON (%s); it covers nothing", bucket, key, exc
            )
            continue
        if doc is None:  # deleted between the listing and the read
            continue
        if not _valid(doc):
            log.error("scan: acknowledgement s3://%s/%s is malformed; it covers nothing", bucket, key)
            continue
        out[key_of(doc["registry"], doc["repository"], doc["digest"])] = {**doc, "key": key}
    return out


def save(s3: Any, config: Config, ack: dict[str, Any]) -> str:
    key = store.ack_key(config, ack["registry"], ack["repository"], ack["digest"])
    storage.put_json(s3, config.storage.bucket, key, ack)
    return key


def remove(s3: Any, config: Config, registry: str, repository: str, digest: str) -> str | None:
    """Delete the image's acknowledgement; its key, or None when there was none."""
    key = store.ack_key(config, registry, repository, digest)
    if store.get_json_or_none(s3, config.storage.bucket, key) is None:
        return None
    s3.delete_object(Bucket=config.storage.bucket, Key=key)
    return key
