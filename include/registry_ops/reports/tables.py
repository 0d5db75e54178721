"""The report tables: one place that names their columns and keys, so the builders (``pulls``,
``cost``, ``trend``, ``s3_cost``), the checks (``quality``), the rendering (``render``) and the
command line agree. Every table is a pandas DataFrame with exactly these columns, in this order.

Units: bytes are int64 bytes; ``usd_month`` is float USD per month at ``reports.price_per_gb_month``
per GiB (2^30 bytes); days are ``datetime.date`` values (UTC days); times are UTC timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

# Pull events, as ingested (the day-partitioned Parquet dataset under <reports>events/).
EVENTS = (
    "event_id",  # CloudTrail eventID / distribution event id; the dedupe key
    "source",  # "cloudtrail" | "distribution"
    "registry",  # config registry name (or the host/account when no config maps it)
    "repository",
    "digest",  # null when the pull named a tag only (resolved through the inventory where possible)
    "tag",  # null when pulled by digest
    "event_time",  # UTC timestamp
    "day",  # date: the UTC day of event_time (the partition)
    "principal",  # caller ARN / actor name / client address; null when anonymous and unknown
    "failed",  # bool: CloudTrail errorCode present
    "error_code",  # null when it did not fail
    "file",  # the object key (or path) the event came from
)
EVENTS_KEY = ("event_id",)

# Pulls per repository and day: the pull table of the report and of `report pulls`.
PULLS_BY_REPOSITORY_DAY = ("registry", "repository", "day", "pulls", "failed", "principals")
PULLS_BY_REPOSITORY_DAY_KEY = ("registry", "repository", "day")

# Pulls per image and day ("image": the digest, or "tag:<tag>" when the digest is unknown).
PULLS_BY_IMAGE_DAY = ("registry", "repository", "image", "day", "pulls", "failed", "principals")
PULLS_BY_IMAGE_DAY_KEY = ("registry", "repository", "image", "day")

# Success per registry over the window.
PULL_SUCCESS = ("registry", "pulls", "failed", "success_rate", "meets_target")
PULL_SUCCESS_KEY = ("registry",)

# Images (kind image or index, in the inventory) without a pull in the last N days.
NEVER_PULLED = ("registry", "repository", "digest", "tags", "size_bytes", "last_pull", "last_pull_source")
NEVER_PULLED_KEY = ("registry", "repository", "digest")

# Cost per stored digest: kind image or referrer only (an index adds nothing: its children count).
COST = ("registry", "repository", "digest", "kind", "team", "size_bytes", "usd_month")
COST_KEY = ("registry", "repository", "digest")

# Cost per repository: the `report cost` JSON rows, plus the shared-layer estimate columns.
COST_BY_REPOSITORY = (
    "registry",
    "repository",
    "team",
    "images",
    "stored_bytes",
    "usd_month",
    "unique_layer_bytes_estimate",  # layers shared inside the repository counted once; null when unknown
    "usd_month_estimate",
)
COST_BY_REPOSITORY_KEY = ("registry", "repository")

COST_BY_TEAM = ("team", "repositories", "images", "stored_bytes", "usd_month")
COST_BY_TEAM_KEY = ("team",)

# Stored bytes per registry in each inventory snapshot read (the trend).
TREND = ("snapshot_at", "registry", "images", "stored_bytes", "usd_month")
TREND_KEY = ("snapshot_at", "registry")

# Repositories that grew most between the previous report's snapshot and this one.
GROWERS = ("registry", "repository", "team", "bytes_before", "bytes_now", "bytes_change", "usd_month_change")
GROWERS_KEY = ("registry", "repository")

# The S3 archive's and backups' objects by storage class.
S3_STORAGE = ("area", "storage_class", "objects", "bytes", "usd_month")
S3_STORAGE_KEY = ("area", "storage_class")

# Retention: what executed runs in the window removed, and what the latest plan would remove.
SAVINGS = ("kind", "run_id", "registry", "images", "bytes", "usd_month")  # kind: "made" | "projected"
SAVINGS_KEY = ("kind", "run_id", "registry")

TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pulls_by_repository_day": (PULLS_BY_REPOSITORY_DAY, PULLS_BY_REPOSITORY_DAY_KEY),
    "pulls_by_image_day": (PULLS_BY_IMAGE_DAY, PULLS_BY_IMAGE_DAY_KEY),
    "pull_success": (PULL_SUCCESS, PULL_SUCCESS_KEY),
    "never_pulled": (NEVER_PULLED, NEVER_PULLED_KEY),
    "cost": (COST, COST_KEY),
    "cost_by_repository": (COST_BY_REPOSITORY, COST_BY_REPOSITORY_KEY),
    "cost_by_team": (COST_BY_TEAM, COST_BY_TEAM_KEY),
    "trend": (TREND, TREND_KEY),
    "growers": (GROWERS, GROWERS_KEY),
    "s3_storage": (S3_STORAGE, S3_STORAGE_KEY),
    "savings": (SAVINGS, SAVINGS_KEY),
}


def empty(columns: Sequence[str]) -> pd.DataFrame:
    """A table with no rows and the given columns."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def conform(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame`` with exactly table ``name``'s columns in order; ValueError naming what is missing."""
    columns, _ = TABLES[name]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"report table {name!r}: missing column(s) {', '.join(missing)}")
    return frame.loc[:, list(columns)].reset_index(drop=True)
