"""Last-pull times from the sources a registry offers, merged into the inventory.

- ECR ``lastRecordedPullTime`` is already the inventory's ``last_pulled_at`` (lags up to 24 h,
  and Inspector pulls do not update it).
- CloudTrail ``BatchGetImage`` records give per-pull times. The record names the image as
  requested (``imageIds``: a tag or a digest); ``responseElements`` is null in AWS's documented
  example, so a pull by tag is resolved to the digest the tag points at *in the inventory*
  (if the tag moved since, the newer image gets the credit: the safe direction).
- CNCF distribution notifications (``{"events": [...]}``, action ``pull``) carry repository,
  digest and tag; only manifest pulls count, blob pulls are ignored.

EventBridge has no pull event (aws/containers-roadmap#2750), so it is not a source here.
``merge_last_pulled`` keeps the latest of the inventory's value and every pull found.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..registries.base import ACCEPT_ALL

PULL_COLUMNS = ("repository", "digest", "tag", "pulled_at", "source", "principal")
# Scanner pulls must not keep an image alive (ECR ignores Inspector's for lastRecordedPullTime too).
DEFAULT_EXCLUDED_PRINCIPALS = ("inspector2.amazonaws.com",)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(PULL_COLUMNS))
    frame["pulled_at"] = pd.to_datetime(frame["pulled_at"], utc=True, format="ISO8601")
    return frame


def _load(source: Any) -> Any:
    if isinstance(source, (str, Path)) and Path(source).exists():
        return json.loads(Path(source).read_text(encoding="utf-8"))
    if isinstance(source, (str, bytes)):
        return json.loads(source)
    return source


def _records(source: Any) -> Iterator[Mapping[str, Any]]:
    """CloudTrail records from a record, a list, or a log file object ``{"Records": [...]}``."""
    data = _load(source)
    if isinstance(data, Mapping):
        if "Records" in data:
            yield from data["Records"]
        else:
            yield data
    else:
        for item in data:
            yield from _records(item) if not isinstance(item, Mapping) or "Records" in item else [item]


def cloudtrail_pulls(
    sources: Iterable[Any] | Any, exclude_principals: Iterable[str] = DEFAULT_EXCLUDED_PRINCIPALS
) -> pd.DataFrame:
    """Pulls from CloudTrail ``BatchGetImage`` records; failed calls and excluded principals
    (globs on the caller's ARN, ``invokedBy`` or service source) are skipped."""
    excluded = list(exclude_principals)
    items = sources if isinstance(sources, list) else [sources]
    rows: list[dict[str, Any]] = []
    for item in items:
        for rec in _records(item):
            if rec.get("eventSource") != "ecr.amazonaws.com" or rec.get("eventName") != "BatchGetImage":
                continue
            if rec.get("errorCode"):
                continue
            who = rec.get("userIdentity") or {}
            principal = who.get("arn") or who.get("invokedBy") or rec.get("sourceIPAddress") or ""
            names = [who.get("arn"), who.get("invokedBy"), rec.get("sourceIPAddress")]
            if any(n and fnmatch.fnmatchcase(n, g) for n in names for g in excluded):
                continue
            params = rec.get("requestParameters") or {}
            repo = params.get("repositoryName")
            ids = list(params.get("imageIds") or [])
            for image in (rec.get("responseElements") or {}).get("images") or []:
                ids.append(image.get("imageId") or {})
            for image_id in ids:
                rows.append(
                    {
                        "repository": repo,
                        "digest": image_id.get("imageDigest"),
                        "tag": image_id.get("imageTag"),
                        "pulled_at": rec.get("eventTime"),
                        "source": "cloudtrail",
                        "principal": principal,
                    }
                )
    return _frame(rows)


MANIFEST_MEDIA_TYPES = frozenset(ACCEPT_ALL) | {
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
}


def distribution_pulls(sources: Iterable[Any] | Any) -> pd.DataFrame:
    """Manifest pulls from distribution notification envelopes (``{"events": [...]}``)."""
    items = sources if isinstance(sources, list) else [sources]
    rows: list[dict[str, Any]] = []
    for item in items:
        data = _load(item)
        for ev in data.get("events", []) if isinstance(data, Mapping) else data:
            if ev.get("action") != "pull":
                continue
            target = ev.get("target") or {}
            url = target.get("url") or ""
            if target.get("mediaType") not in MANIFEST_MEDIA_TYPES and "/manifests/" not in url:
                continue  # a blob pull
            rows.append(
                {
                    "repository": target.get("repository"),
                    "digest": target.get("digest"),
                    "tag": target.get("tag"),
                    "pulled_at": ev.get("timestamp"),
                    "source": "distribution",
                    "principal": (ev.get("actor") or {}).get("name") or (ev.get("request") or {}).get("addr"),
                }
            )
    return _frame(rows)


def merge_last_pulled(inventory: pd.DataFrame, pulls: pd.DataFrame) -> pd.DataFrame:
    """A copy of the inventory whose ``last_pulled_at`` is the latest of its own value and the
    pulls (by digest, or by tag resolved through the inventory). If ``pulls`` has a ``registry``
    column it must match too; otherwise pulls apply to that repository in every registry, so
    pass one registry's pulls with its inventory rows."""
    out = inventory.copy()
    if "last_pulled_at" not in out.columns:
        out["last_pulled_at"] = pd.NaT
    out["last_pulled_at"] = pd.to_datetime(out["last_pulled_at"], utc=True)
    if pulls.empty:
        return out
    keys = (
        ["registry", "repository"]
        if "registry" in pulls.columns and "registry" in out.columns
        else ["repository"]
    )
    by_digest = pulls[pulls["digest"].notna()][[*keys, "digest", "pulled_at"]]
    tagged = pulls[pulls["digest"].isna() & pulls["tag"].notna()]
    if not tagged.empty:
        exploded = out[[*keys, "digest", "tags"]].explode("tags").dropna(subset=["tags"])
        resolved = tagged.merge(
            exploded, left_on=[*keys, "tag"], right_on=[*keys, "tags"], suffixes=("_x", "")
        )
        by_digest = pd.concat([by_digest, resolved[[*keys, "digest", "pulled_at"]]], ignore_index=True)
    latest = by_digest.groupby([*keys, "digest"], as_index=False)["pulled_at"].max()
    merged = out[[*keys, "digest"]].merge(latest, on=[*keys, "digest"], how="left")
    pulled = pd.Series(merged["pulled_at"].to_numpy(), index=out.index)
    both = pd.concat([out["last_pulled_at"], pulled], axis=1)
    out["last_pulled_at"] = both.max(axis=1).astype(out["last_pulled_at"].dtype)
    return out
