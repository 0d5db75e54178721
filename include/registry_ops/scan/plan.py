"""Which digests to scan: one scan per unique image digest, only when its last scan is stale.

The inventory has one row per (registry, repository, digest). Scanning works on digests:

- only ``kind == image`` rows with no ``artifact_type`` are scanned: an index is not scanned
  (its platform children are, they are image rows of their own), referrers (signatures,
  attestations, SBOMs) and other artifacts are skipped;
- a digest present in several repositories or registries is scanned once, at the first
  location in (registry, repository) order, and its findings are copied to every location;
- a digest whose last good scan (any source, including imported reports) is younger than the
  freshness window is skipped, so a run with no new images starts no scan at all.

An image's tags are its own plus those of the indexes listing it, so a platform child of
``app:1.4.2`` is known as ``1.4.2`` in reports and counts as protected in the gate.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from .tagging import newest_tag

GOOD = ("ok", "unsupported")  # scan outcomes that count as "scanned" for the freshness window


def image_rows(inventory: pd.DataFrame) -> pd.DataFrame:
    """Scannable rows with ``image_tags`` (own + parent index tags) and ``newest_tag``."""
    parents = inventory[inventory["kind"] == "index"]
    index_tags = {(r.registry, r.repository, r.digest): list(r.tags) for r in parents.itertuples(index=False)}
    images = inventory[(inventory["kind"] == "image") & inventory["artifact_type"].isna()].copy()

    def tags_of(row: Any) -> list[str]:
        tags = set(row.tags)
        for parent in row.parent_digests or []:
            tags.update(index_tags.get((row.registry, row.repository, parent), []))
        return sorted(tags)

    images["image_tags"] = [tags_of(r) for r in images.itertuples(index=False)]
    images["newest_tag"] = [newest_tag(t) for t in images["image_tags"]]
    return images.reset_index(drop=True)


def candidates(inventory: pd.DataFrame, scan_untagged: bool = True) -> pd.DataFrame:
    """Image rows the scan covers (untagged ones only if ``scan_untagged``)."""
    images = image_rows(inventory)
    if not scan_untagged:
        images = images[images["image_tags"].map(bool)]
    return images.sort_values(["digest", "registry", "repository"]).reset_index(drop=True)


def fresh_digests(state: pd.DataFrame, now: datetime, freshness_hours: float) -> set[str]:
    """Digests whose last good scan is within the window."""
    if state.empty or freshness_hours <= 0:
        return set()
    cutoff = pd.Timestamp(now - timedelta(hours=freshness_hours))
    good = state[state["status"].isin(GOOD) & (state["scanned_at"] >= cutoff)]
    return set(good["digest"])


def targets(rows: pd.DataFrame, skip: Iterable[str]) -> list[dict[str, str]]:
    """One target per unique digest not in ``skip``: its first (registry, repository)."""
    skip = set(skip)
    todo = rows[~rows["digest"].isin(skip)]
    first = todo.drop_duplicates("digest", keep="first")
    return [
        {"digest": r.digest, "registry": r.registry, "repository": r.repository}
        for r in first.itertuples(index=False)
    ]


def batches(items: list[dict[str, str]], size: int) -> list[tuple[int, int]]:
    """(start, stop) slices of the target list, one per mapped task."""
    return [(i, min(i + size, len(items))) for i in range(0, len(items), size)]
