"""Storage cost per stored digest, repository and team, from an inventory (``schema``).

Rules (issue 11, item 3):

- Stored bytes of a repository: the sum of ``size_bytes`` over its distinct digests of kind
  ``image`` or ``referrer``. An index adds nothing (its children are rows of their own); a digest
  is counted once per repository whatever its tags or parents (one row per inventory key; a frame
  holding a key twice, e.g. two listings concatenated, still counts it once); the same digest in
  two repositories counts in both (each repository is billed for it). A null ``size_bytes``
  counts 0 bytes and is logged.
- USD per month: bytes / 2^30 (GiB, as AWS bills storage) x ``reports.price_per_gb_month``.
- Team: ``reports.team_of(registry, repository)`` (first team whose glob matches, else
  ``unassigned``), asked once per repository.
- Estimate (``unique_layer_bytes_estimate``): layers shared inside a repository counted once, from
  the inventory's ``layer_digests`` + ``layer_sizes``, plus each row's bytes beyond its layers (the
  config blob: a few KB per image, counted per image, not deduplicated). It is null for a
  repository where any counted row lacks layer data (ECR without ``read_manifests``, older
  snapshots): a partial sum would look like a saving that is not there.

Tables have exactly ``tables.py``'s columns, sorted by their key. ``usd_month`` values are
unrounded floats; :func:`cost_json` (the ``report cost`` output) rounds them to 4 decimals.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import tables
from .settings import GIB, ReportsConfig

log = logging.getLogger(__name__)

STORED_KINDS = ("image", "referrer")
NEEDED = ("registry", "repository", "digest", "kind", "size_bytes")
USD_DECIMALS = 4


def usd(size: Any, price: float) -> Any:
    """USD per month of ``size`` bytes (a number or an array) at ``price`` per GiB-month."""
    return size / GIB * price


def price_of(settings: ReportsConfig, price_per_gb_month: float | None) -> float:
    """The override if given, else the config's; ValueError for a negative or non-finite one."""
    price = settings.price_per_gb_month if price_per_gb_month is None else float(price_per_gb_month)
    if not np.isfinite(price) or price < 0:
        raise ValueError(f"price per GB-month: {price_per_gb_month!r} is not a number >= 0")
    return price


def stored(inventory: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry cost: kind image or referrer, one per (registry, repository, digest),
    ``size_bytes`` as int64 (null: 0, logged). Keeps any other columns of the kept rows."""
    missing = [c for c in NEEDED if c not in inventory.columns]
    if missing:
        raise ValueError(f"inventory: missing column(s) {', '.join(missing)} (needed for the cost)")
    rows = inventory[inventory["kind"].isin(STORED_KINDS).to_numpy(dtype=bool)]
    rows = rows.drop_duplicates(subset=list(tables.COST_KEY), keep="first")
    sizes = pd.to_numeric(rows["size_bytes"])
    unknown = sizes.isna()
    if unknown.any():
        first = rows[unknown.to_numpy()].iloc[0]
        log.warning(
            "cost: %d stored row(s) without size_bytes count 0 bytes; e.g. %s/%s@%s",
            int(unknown.sum()),
            first["registry"],
            first["repository"],
            first["digest"],
        )
    rows = rows.assign(size_bytes=sizes.fillna(0).astype("int64"))
    return rows.reset_index(drop=True)


def _by(codes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Exact int64 sums of ``values`` per code 0..n-1."""
    if not len(codes):
        return np.zeros(n, dtype="int64")
    sums = pd.Series(values, dtype="int64").groupby(codes).sum()
    out = np.zeros(n, dtype="int64")
    out[sums.index.to_numpy()] = sums.to_numpy()
    return out


def _list_array(column: pd.Series, kind: pa.DataType) -> pa.Array:
    """A list column as Arrow; text in it is refused (Arrow would split it into characters)."""
    values = column.to_numpy(dtype=object)
    text = np.fromiter(map(str.__instancecheck__, values), bool, len(values))
    try:
        if text.any():
            raise pa.ArrowInvalid(f"row {int(text.argmax())} holds text {values[text.argmax()]!r}")
        return pa.array(values, type=kind, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(
            f"inventory: column {column.name!r} is not a list of {kind.value_type}: {exc}"
        ) from None


def layer_estimate(rows: pd.DataFrame, codes: np.ndarray, n: int) -> np.ndarray:
    """Per repository code: distinct layer bytes plus every row's bytes beyond its layers;
    -1 where a row of the repository has no (or inconsistent) layer data."""
    if "layer_digests" not in rows.columns or "layer_sizes" not in rows.columns or not len(rows):
        return np.full(n, -1, dtype="int64")
    digests = _list_array(rows["layer_digests"], pa.list_(pa.string()))
    sizes = _list_array(rows["layer_sizes"], pa.list_(pa.int64()))
    known = pc.and_(
        pc.and_(pc.is_valid(digests), pc.is_valid(sizes)),
        pc.equal(pc.list_value_length(digests), pc.list_value_length(sizes)),
    )
    known = pc.fill_null(known, False).to_numpy(zero_copy_only=False)
    flat_sizes = pc.list_flatten(sizes.filter(pa.array(known))).to_numpy(zero_copy_only=False)
    if (flat_sizes < 0).any():
        raise ValueError("inventory: column 'layer_sizes' holds a negative layer size")
    unknown_repos = np.bincount(codes[~known], minlength=n) > 0
    known_digests = digests.filter(pa.array(known))
    row_of = np.flatnonzero(known)[pc.list_parent_indices(known_digests).to_numpy()]
    repo_of = codes[row_of]
    encoded = pc.dictionary_encode(pc.list_flatten(known_digests))
    digest_code = encoded.indices.to_numpy().astype("int64")
    pair = repo_of.astype("int64") * max(len(encoded.dictionary), 1) + digest_code
    _, first = np.unique(pair, return_index=True)  # each layer once per repository
    distinct = _by(repo_of[first], flat_sizes[first], n)
    layer_sum = _by(row_of, flat_sizes, len(rows))
    rest = np.maximum(rows["size_bytes"].to_numpy(dtype="int64") - layer_sum, 0)
    rest_sum = _by(codes[known], rest[known], n)
    return np.where(unknown_repos, -1, distinct + rest_sum)


def cost_tables(
    inventory: pd.DataFrame, settings: ReportsConfig, price_per_gb_month: float | None = None
) -> dict[str, pd.DataFrame]:
    """``cost`` (per stored digest), ``cost_by_repository`` and ``cost_by_team`` of an inventory
    frame (a validated inventory, or a snapshot frame without the layer columns: estimate null)."""
    price = price_of(settings, price_per_gb_month)
    rows = stored(inventory)
    pair = rows["registry"].astype(str) + "\x00" + rows["repository"].astype(str)
    codes, uniques = pd.factorize(pair, sort=True)
    codes = np.asarray(codes, dtype="int64")
    names = [u.split("\x00", 1) for u in uniques]
    teams = np.array([settings.team_of(r, p) for r, p in names], dtype=object)
    n = len(names)
    size = rows["size_bytes"].to_numpy(dtype="int64")

    cost = pd.DataFrame(
        {
            "registry": rows["registry"].astype(str).to_numpy(),
            "repository": rows["repository"].astype(str).to_numpy(),
            "digest": rows["digest"].astype(str).to_numpy(),
            "kind": rows["kind"].astype(str).to_numpy(),
            "team": teams[codes] if n else np.array([], dtype=object),
            "size_bytes": size,
            "usd_month": usd(size.astype("float64"), price),
        }
    ).sort_values(list(tables.COST_KEY), kind="stable")

    stored_bytes = _by(codes, size, n)
    estimate = layer_estimate(rows, codes, n)
    estimate_col = pd.array(np.where(estimate < 0, 0, estimate), dtype="Int64")
    estimate_col[estimate < 0] = pd.NA
    by_repo = pd.DataFrame(
        {
            "registry": [r for r, _ in names],
            "repository": [p for _, p in names],
            "team": teams,
            "images": np.bincount(codes, minlength=n).astype("int64"),
            "stored_bytes": stored_bytes,
            "usd_month": usd(stored_bytes.astype("float64"), price),
            "unique_layer_bytes_estimate": estimate_col,
            "usd_month_estimate": np.where(estimate < 0, np.nan, usd(estimate.astype("float64"), price)),
        }
    )
    by_team = (
        by_repo.groupby("team", sort=True)
        .agg(
            repositories=("repository", "size"),
            images=("images", "sum"),
            stored_bytes=("stored_bytes", "sum"),
        )
        .reset_index()
    )
    by_team["usd_month"] = usd(by_team["stored_bytes"].astype("float64"), price)
    return {
        "cost": tables.conform(cost, "cost"),
        "cost_by_repository": tables.conform(by_repo, "cost_by_repository"),
        "cost_by_team": tables.conform(by_team.astype({"repositories": "int64"}), "cost_by_team"),
    }


def total_usd_month(built: dict[str, pd.DataFrame]) -> float:
    """The fleet's USD per month (sum over repositories), rounded to 4 decimals as in the JSON."""
    return round(float(built["cost_by_repository"]["usd_month"].sum()), USD_DECIMALS)


def cost_json(built: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The ``registry-ops report cost --format json`` document: one row per repository (sorted by
    registry, repository) and the total; USD rounded to 4 decimals (0.0001 USD), bytes exact."""
    frame = built["cost_by_repository"]
    rows = [
        {
            "registry": str(r.registry),
            "repository": str(r.repository),
            "team": str(r.team),
            "images": int(r.images),
            "stored_bytes": int(r.stored_bytes),
            "usd_month": round(float(r.usd_month), USD_DECIMALS),
        }
        for r in frame.itertuples(index=False)
    ]
    return {"by_repository": rows, "total_usd_month": total_usd_month(built)}
