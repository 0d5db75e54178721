"""Pull metrics from the ingested events (``tables.EVENTS``) and the inventory.

- ``pulls_by_repository_day`` / ``pulls_by_image_day``: ``pulls`` counts every pull (failed
  included), ``failed`` the failed ones, ``principals`` the distinct principals (an unknown
  principal is not one). The image is the digest; a pull that named a tag only is resolved to
  the digest that tag points at in the inventory (the same registry and repository), else it is
  ``tag:<tag>`` (``unknown`` when the record named neither, e.g. several imageIds).
- ``pull_success``: per registry with pulls in the window, ``success_rate`` = (pulls - failed) /
  pulls; ``meets_target`` when it is at least ``success_target``.
- ``never_pulled``: inventory images of kind ``image`` or ``index`` that are not the child of an
  index in the same repository (a child is pulled through its index; pulling a child by digest
  counts for its indexes), not pushed within the last ``never_pulled_days`` days (where the
  push time is known: a new image has not had the time), whose last successful pull, by the
  events or by the registry's own ``last_pulled_at`` (ECR ``lastRecordedPullTime``: the
  fallback where no trail exists), is older than ``now - never_pulled_days`` or unknown.
  ``last_pull_source`` says which was later: ``events``, ``registry``, or null (neither).
  Failed pulls do not count, nor pulls by ``exclude_principals`` (globs: a scanner's pulls).
  Pass the events of at least the last ``never_pulled_days`` days before ``now``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from . import tables

UNKNOWN_IMAGE = "unknown"


def _text(series: pd.Series) -> pd.Series:
    """A string column as pandas' Arrow-backed strings (fast to group and merge; not objects)."""
    return series if isinstance(series.dtype, pd.StringDtype) else series.astype("str")


def _prepared(events: pd.DataFrame) -> pd.DataFrame:
    """The columns the metrics group on, in fast types: strings Arrow-backed and ``_day`` the
    UTC day as datetime64 (``day`` holds Python dates, slow to group a million of)."""
    out = pd.DataFrame(
        {c: _text(events[c]) for c in ("registry", "repository", "digest", "tag", "principal", "event_id")},
        index=events.index,
    )
    times = pd.to_datetime(events["event_time"], utc=True)
    out["event_time"] = times
    out["_day"] = times.dt.floor("D").dt.tz_localize(None)
    out["failed"] = events["failed"].astype(bool)
    return out


def _window(events: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    if events.empty:
        return events
    day = events["_day"]
    return events[(day >= pd.Timestamp(start)) & (day < pd.Timestamp(end))]


def _resolved(events: pd.DataFrame, inventory: pd.DataFrame | None) -> pd.Series:
    """The digest of each event: its own, else its tag's in the inventory, else null."""
    digest = events["digest"]
    if inventory is None or inventory.empty or events.empty:
        return digest
    tagged = inventory[["registry", "repository", "digest", "tags"]].explode("tags").dropna(subset=["tags"])
    tagged = tagged.drop_duplicates(["registry", "repository", "tags"], keep=False)  # a tag is one digest
    tagged = pd.DataFrame({c: _text(tagged[c]) for c in ("registry", "repository", "tags", "digest")})
    lookup = events[["registry", "repository", "tag"]].merge(
        tagged.rename(columns={"tags": "tag", "digest": "resolved"}),
        on=["registry", "repository", "tag"],
        how="left",
    )
    resolved = pd.Series(lookup["resolved"].array, index=events.index)
    return digest.where(digest.notna(), resolved)


def _images(events: pd.DataFrame, digest: pd.Series) -> pd.Series:
    tag = events["tag"]
    by_tag = ("tag:" + tag.fillna("")).where(tag.notna(), UNKNOWN_IMAGE)
    return digest.where(digest.notna(), by_tag)


def _counts(frame: pd.DataFrame, keys: list[str], name: str) -> pd.DataFrame:
    grouped = frame.groupby([*keys, "_day"], sort=True, dropna=False)
    out = grouped.agg(
        pulls=("event_id", "size"), failed=("failed", "sum"), principals=("principal", "nunique")
    ).reset_index()
    out["day"] = out["_day"].dt.date.astype(object)
    out = out.astype({"pulls": "int64", "failed": "int64", "principals": "int64"})
    return tables.conform(out, name)


def _by_repository_day(events: pd.DataFrame) -> pd.DataFrame:
    if events.empty:
        return _typed_empty("pulls_by_repository_day")
    return _counts(events, ["registry", "repository"], "pulls_by_repository_day")


def _by_image_day(events: pd.DataFrame, digest: pd.Series) -> pd.DataFrame:
    if events.empty:
        return _typed_empty("pulls_by_image_day")
    return _counts(
        events.assign(image=_images(events, digest)),
        ["registry", "repository", "image"],
        "pulls_by_image_day",
    )


def _success(by_repo_day: pd.DataFrame, target: float) -> pd.DataFrame:
    if by_repo_day.empty:
        return _typed_empty("pull_success")
    out = by_repo_day.groupby("registry", sort=True)[["pulls", "failed"]].sum().reset_index()
    out = out[out["pulls"] > 0]
    out["success_rate"] = (out["pulls"] - out["failed"]) / out["pulls"]
    out["meets_target"] = out["success_rate"] >= target
    return tables.conform(out, "pull_success")


def _excluded(principal: pd.Series, globs: Sequence[str]) -> np.ndarray:
    """Rows whose principal matches one of the globs (each distinct principal matched once)."""
    if not globs:
        return np.zeros(len(principal), dtype=bool)
    names = [n for n in principal.dropna().unique() if any(fnmatch.fnmatchcase(str(n), g) for g in globs)]
    return principal.isin(names).to_numpy(dtype=bool)


def _never_pulled(
    events: pd.DataFrame,
    digest: pd.Series,
    inventory: pd.DataFrame | None,
    *,
    days: int,
    now: datetime,
    exclude_principals: Sequence[str],
) -> pd.DataFrame:
    if inventory is None or inventory.empty:
        return _typed_empty("never_pulled")
    cutoff = pd.Timestamp(now - timedelta(days=days)).tz_convert("UTC")
    keys = ["registry", "repository", "digest"]
    inventory = inventory.assign(**{k: _text(inventory[k]) for k in keys})
    inv = inventory[inventory["kind"].isin(["image", "index"]).to_numpy(dtype=bool)]

    # last successful pull per digest from the events (a child's pull counts for its indexes)
    ok = ~events["failed"].to_numpy(dtype=bool) & ~_excluded(events["principal"], exclude_principals)
    ok &= (events["event_time"] <= pd.Timestamp(now)).to_numpy(dtype=bool)
    pulled = events.loc[ok, ["registry", "repository", "event_time"]].assign(digest=digest[ok])
    pulled = pulled.dropna(subset=["digest"])
    parents = inventory[["registry", "repository", "digest", "parent_digests"]].explode("parent_digests")
    parents = parents.dropna(subset=["parent_digests"]).astype({"parent_digests": "str"})
    via_child = pulled.merge(parents, on=keys).drop(columns=["digest"])
    via_child = via_child.rename(columns={"parent_digests": "digest"})
    pulled = pd.concat([pulled, via_child], ignore_index=True)
    last = pulled.groupby(keys)["event_time"].max().rename("by_events").reset_index()

    children = inv["parent_digests"].map(lambda v: v is not None and len(v) > 0)
    inv = inv[~children.to_numpy(dtype=bool)]
    if "pushed_at" in inv.columns:
        pushed = pd.to_datetime(inv["pushed_at"], utc=True)
        inv = inv[~(pushed >= cutoff).to_numpy(dtype=bool)]
    inv = inv.merge(last, on=keys, how="left")
    if "last_pulled_at" in inv.columns:
        by_registry = pd.to_datetime(inv["last_pulled_at"], utc=True)
    else:
        by_registry = pd.Series(pd.NaT, index=inv.index, dtype="datetime64[ns, UTC]")
    by_events = pd.to_datetime(inv["by_events"], utc=True)
    events_later = by_events.notna() & (by_registry.isna() | (by_events >= by_registry))
    last_pull = by_events.where(events_later, by_registry)
    source = np.where(events_later, "events", np.where(by_registry.notna(), "registry", None))
    inv = inv.assign(last_pull=last_pull, last_pull_source=source)
    out = inv[inv["last_pull"].isna() | (inv["last_pull"] < cutoff)]
    out = out.assign(tags=out["tags"].map(lambda v: [] if v is None else list(v)))
    out = out.sort_values(["registry", "repository", "digest"])
    return tables.conform(out, "never_pulled")


def _typed_empty(name: str) -> pd.DataFrame:
    columns, _ = tables.TABLES[name]
    return tables.empty(columns)


def metrics(
    events: pd.DataFrame,
    inventory: pd.DataFrame | None,
    *,
    start: date,
    end: date,
    success_target: float,
    never_pulled_days: int,
    now: datetime,
    exclude_principals: Sequence[str] = (),
) -> dict[str, pd.DataFrame]:
    """The pull tables of the window ``start`` <= day < ``end`` (see the module docstring):
    ``pulls_by_repository_day``, ``pulls_by_image_day``, ``pull_success``, ``never_pulled``."""
    events = _prepared(events)
    digest = _resolved(events, inventory)
    window = _window(events, start, end)
    by_repo = _by_repository_day(window)
    return {
        "pulls_by_repository_day": by_repo,
        "pulls_by_image_day": _by_image_day(window, digest.loc[window.index]),
        "pull_success": _success(by_repo, success_target),
        "never_pulled": _never_pulled(
            events,
            digest,
            inventory,
            days=never_pulled_days,
            now=now,
            exclude_principals=exclude_principals,
        ),
    }


def pulls_json(tables_: dict[str, pd.DataFrame], *, start: date, end: date) -> dict[str, Any]:
    """The ``report pulls`` JSON: ``by_repository_day`` rows (day as ISO text), ``total_pulls``,
    ``failed_pulls``, ``success_rate`` (None when there was no pull)."""
    frame = tables_["pulls_by_repository_day"]
    if not frame.empty:
        frame = frame[(frame["day"] >= start) & (frame["day"] < end)]
    frame = frame.sort_values(["registry", "repository", "day"])
    rows = [
        {
            "registry": str(r.registry),
            "repository": str(r.repository),
            "day": r.day.isoformat(),
            "pulls": int(r.pulls),
            "failed": int(r.failed),
            "principals": int(r.principals),
        }
        for r in frame.itertuples(index=False)
    ]
    total = sum(r["pulls"] for r in rows)
    failed = sum(r["failed"] for r in rows)
    return {
        "by_repository_day": rows,
        "total_pulls": total,
        "failed_pulls": failed,
        "success_rate": (total - failed) / total if total else None,
    }


def worst_repositories(tables_: dict[str, pd.DataFrame], top: int) -> pd.DataFrame:
    """Repositories with pulls, lowest success rate first (then most failed, most pulls, name):
    ``registry, repository, pulls, failed, success_rate``."""
    frame = tables_["pulls_by_repository_day"]
    columns = ["registry", "repository", "pulls", "failed", "success_rate"]
    if frame.empty:
        return tables.empty(columns)
    out = frame.groupby(["registry", "repository"], sort=True)[["pulls", "failed"]].sum().reset_index()
    out = out[out["pulls"] > 0]
    out["success_rate"] = (out["pulls"] - out["failed"]) / out["pulls"]
    out = out.sort_values(
        ["success_rate", "failed", "pulls", "registry", "repository"],
        ascending=[True, False, False, True, True],
    )
    return out.head(top).loc[:, columns].reset_index(drop=True)
