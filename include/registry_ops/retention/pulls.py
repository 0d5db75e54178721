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

PULL_COLUMNS = ("repository", "digest", "tag", "pulled_at", "source", "principal", "account", "region")
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


def _excluded(names: Iterable[str | None], globs: list[str]) -> bool:
    return any(n and fnmatch.fnmatchcase(n, g) for n in names for g in globs)


def _required(event: Mapping[str, Any], what: str, **fields: Any) -> None:
    """A pull event without what a pull needs is an error naming it, never a silent skip."""
    missing = [name for name, value in fields.items() if not value]
    if missing:
        ident = event.get("eventID") or event.get("id") or "without an id"
        raise ValueError(f"{what} {ident}: no {', '.join(missing)}")


def cloudtrail_rows(source: Any, exclude_principals: Iterable[str]) -> Iterator[dict[str, Any]]:
    """One row per image a successful ``BatchGetImage`` asked for; failed calls (``errorCode``) and
    excluded principals (globs on the caller's ARN, ``invokedBy`` or source address) give none.
    ``account`` and ``region`` say which registry was pulled from."""
    excluded = list(exclude_principals)
    for rec in _records(source):
        if rec.get("eventSource") != "ecr.amazonaws.com" or rec.get("eventName") != "BatchGetImage":
            continue
        if rec.get("errorCode"):
            continue
        who = rec.get("userIdentity") or {}
        if _excluded([who.get("arn"), who.get("invokedBy"), rec.get("sourceIPAddress")], excluded):
            continue
        params = rec.get("requestParameters") or {}
        ids = list(params.get("imageIds") or [])
        for image in (rec.get("responseElements") or {}).get("images") or []:
            ids.append(image.get("imageId") or {})
        repo = params.get("repositoryName")
        _required(
            rec, "BatchGetImage record", eventTime=rec.get("eventTime"), repositoryName=repo, imageIds=ids
        )
        for image_id in ids:
            yield {
                "repository": repo,
                "digest": image_id.get("imageDigest"),
                "tag": image_id.get("imageTag"),
                "pulled_at": rec["eventTime"],
                "source": "cloudtrail",
                "principal": who.get("arn") or who.get("invokedBy") or rec.get("sourceIPAddress") or "",
                "account": params.get("registryId") or rec.get("recipientAccountId"),
                "region": rec.get("awsRegion"),
            }


def cloudtrail_pulls(
    sources: Iterable[Any] | Any, exclude_principals: Iterable[str] = DEFAULT_EXCLUDED_PRINCIPALS
) -> pd.DataFrame:
    """Pulls from CloudTrail ``BatchGetImage`` records (see :func:`cloudtrail_rows`)."""
    items = sources if isinstance(sources, list) else [sources]
    excluded = list(exclude_principals)
    return _frame([row for item in items for row in cloudtrail_rows(item, excluded)])


MANIFEST_MEDIA_TYPES = frozenset(ACCEPT_ALL) | {
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
}


def distribution_rows(source: Any, exclude_principals: Iterable[str] = ()) -> Iterator[dict[str, Any]]:
    """Manifest pulls of one notification envelope (``{"events": [...]}``); blob pulls and
    excluded principals (globs on the actor's name, the client address or its user agent) give none."""
    excluded = list(exclude_principals)
    data = _load(source)
    if isinstance(data, Mapping) and not isinstance(data.get("events"), list):
        raise ValueError('not a notification envelope: no "events" list')
    for ev in data.get("events", []) if isinstance(data, Mapping) else data:
        if ev.get("action") != "pull":
            continue
        target = ev.get("target") or {}
        url = target.get("url") or ""
        if target.get("mediaType") not in MANIFEST_MEDIA_TYPES and "/manifests/" not in url:
            continue  # a blob pull
        request = ev.get("request") or {}
        actor = (ev.get("actor") or {}).get("name")
        if _excluded([actor, request.get("addr"), request.get("useragent")], excluded):
            continue
        _required(
            ev,
            "pull event",
            timestamp=ev.get("timestamp"),
            **{"target.repository": target.get("repository")},
            **{"target.digest or target.tag": target.get("digest") or target.get("tag")},
        )
        yield {
            "repository": target["repository"],
            "digest": target.get("digest"),
            "tag": target.get("tag"),
            "pulled_at": ev["timestamp"],
            "source": "distribution",
            "principal": actor or request.get("addr"),
            "account": None,
            "region": None,
        }


def distribution_pulls(sources: Iterable[Any] | Any, exclude_principals: Iterable[str] = ()) -> pd.DataFrame:
    """Manifest pulls from distribution notification envelopes (see :func:`distribution_rows`)."""
    items = sources if isinstance(sources, list) else [sources]
    return _frame([row for item in items for row in distribution_rows(item, exclude_principals)])


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
