"""Scan results as tables, and the merge that turns one run's results into the findings table.

Two tables travel between the mapped tasks and the publishing step:

- **raw findings**: per digest (no location yet): ``digest``, the finding fields, ``source``,
  ``scanned_at``;
- **scans** (the incremental state): one row per digest: last outcome, its ``source`` and
  ``scanned_at``, ``status`` (ok / unsupported / error) and ``error``.

:func:`merge` builds the run's complete findings table: new results for digests scanned now,
the previous run's rows for digests still fresh (or whose rescan failed: old findings are kept
rather than dropped, so a scanner outage cannot make the gate pass), copied to every current
location of the digest, with ``first_seen`` carried over.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import pyarrow as pa

from . import findings
from .plan import GOOD
from .scanners.base import ScanResult
from .severity import RANK

TS = pa.timestamp("us", tz="UTC")
RAW_SCHEMA = pa.schema(
    [
        pa.field("digest", pa.string(), nullable=False),
        *(findings.ARROW_SCHEMA.field(name) for name in findings.FINDING_FIELDS),
        pa.field("source", pa.string(), nullable=False),
        pa.field("scanned_at", TS, nullable=False),
    ]
)
SCANS_SCHEMA = pa.schema(
    [
        pa.field("digest", pa.string(), nullable=False),
        pa.field("registry", pa.string(), nullable=False),
        pa.field("repository", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("scanned_at", TS, nullable=False),
        pa.field("error", pa.string()),
    ]
)
FINDING_KEY = ["digest", *findings.FINDING_FIELDS, "source"]


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pydict(
        {f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in schema}, schema=schema
    )


def raw_table(results: Iterable[ScanResult]) -> pa.Table:
    """Findings of successful scans, one row per finding, keyed by digest."""
    rows = []
    for res in results:
        if res.status != "ok":
            continue
        for f in res.findings:
            rows.append(
                {**f, "digest": res.target.digest, "source": res.source, "scanned_at": res.scanned_at}
            )
    return _table(rows, RAW_SCHEMA)


def scans_table(results: Iterable[ScanResult]) -> pa.Table:
    rows = [
        {
            "digest": r.target.digest,
            "registry": r.target.registry,
            "repository": r.target.repository,
            "source": r.source,
            "status": r.status,
            "scanned_at": r.scanned_at,
            "error": r.error,
        }
        for r in results
    ]
    return _table(rows, SCANS_SCHEMA)


def merge_state(previous: pd.DataFrame, new: pd.DataFrame, digests: set[str]) -> pd.DataFrame:
    """Per digest: the newest good scan; an error replaces an earlier row only if that was no
    good scan either (so one failure does not erase the freshness of the last good scan)."""
    prev = previous[previous["digest"].isin(digests)]
    new = new[new["digest"].isin(digests)]
    new_good = new[new["status"].isin(GOOD)]
    keep_prev = prev[~prev["digest"].isin(new_good["digest"])]
    prev_good = set(keep_prev.loc[keep_prev["status"].isin(GOOD), "digest"])
    new_errors = new[~new["status"].isin(GOOD) & ~new["digest"].isin(prev_good)]
    keep_prev = keep_prev[~keep_prev["digest"].isin(new_errors["digest"])]
    out = pd.concat([df for df in (keep_prev, new_good, new_errors) if not df.empty], ignore_index=True)
    if out.empty:
        return SCANS_SCHEMA.empty_table().to_pandas()
    return out.sort_values("scanned_at").drop_duplicates("digest", keep="last").sort_values("digest")


def merge(
    locations: pd.DataFrame,
    previous: pd.DataFrame,
    raw_new: pd.DataFrame,
    rescanned: set[str],
) -> pa.Table:
    """The run's findings table.

    ``locations``: (registry, repository, digest) of every image the scan covers; ``previous``:
    the last run's findings table; ``raw_new``: raw findings of this run; ``rescanned``: digests
    scanned successfully this run (their previous rows are replaced, even by zero findings).
    """
    locations = locations[["registry", "repository", "digest"]].drop_duplicates()
    digests = set(locations["digest"])
    new = raw_new[raw_new["digest"].isin(digests & rescanned)].copy()
    if not previous.empty and not new.empty:
        seen = previous.groupby(list(findings.IDENTITY), dropna=False)["first_seen"].min().reset_index()
        new = new.merge(seen, on=list(findings.IDENTITY), how="left")
        new["first_seen"] = new["first_seen"].fillna(new["scanned_at"])
    else:
        new["first_seen"] = new["scanned_at"]
    carried = previous[previous["digest"].isin(digests - rescanned)]
    if not carried.empty:
        carried = (
            carried.groupby(FINDING_KEY, dropna=False)
            .agg(first_seen=("first_seen", "min"), scanned_at=("scanned_at", "max"))
            .reset_index()
        )
    parts = [df for df in (new, carried) if not df.empty]
    if not parts:
        return findings.empty_table()
    placed = pd.concat(parts, ignore_index=True).merge(locations, on="digest", how="inner")
    placed["_rank"] = placed["severity"].map(RANK)
    placed = placed.sort_values(
        ["registry", "repository", "digest", "_rank", "vulnerability_id", "package"], na_position="last"
    )
    return pa.Table.from_pandas(
        placed[list(findings.COLUMNS)], schema=findings.ARROW_SCHEMA, preserve_index=False
    )
