"""Fleet: per registry and repository, images (tagged and untagged), stored bytes and monthly
cost, last push and last pull, from the newest inventory snapshot; the snapshot's age and
completeness and which registries (or repositories) could not be listed.

Counting: ``images`` are the snapshot's manifests (images, indexes, referrers); ``tagged`` those
with a tag; ``untagged`` those with none that no index lists and that are no referrer (what an
untagged-image rule deletes; an index's children and signatures are neither). Bytes and USD are
the reports' cost rules (``reports.cost``: image and referrer sizes, an index adds nothing, at
``reports.price_per_gb_month`` per GiB-month), so the page and the cost report agree.

The snapshot (100,000 rows: about a second to read and sum) is computed once per pointer
version and kept in the memo; a warm request reads only ``latest.json``.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import schema
from ..inventory import snapshot_layout
from ..reports import cost
from ..store import objects
from . import _read
from .context import PageContext
from .model import Column, Figure, Section, Table, never_run, redact

ID, TITLE, DAG = "fleet", "Fleet", "registry_inventory"
# the snapshot's columns the section reads: the required ones (validated) and the times
READ = (*schema.REQUIRED, "size_bytes", "pushed_at", "last_pulled_at")
REPO_COLUMNS = [
    Column("registry", "Registry"),
    Column("repository", "Repository"),
    Column("images", "Images", "count"),
    Column("tagged", "Tagged", "count"),
    Column("untagged", "Untagged", "count"),
    Column("bytes", "Stored", "bytes"),
    Column("usd_month", "USD / month", "usd"),
    Column("last_push", "Last push", "time"),
    Column("last_pull", "Last pull", "time"),
]
REGISTRY_COLUMNS = [
    Column("registry", "Registry"),
    Column("status", "Listing", "status"),
    Column("repositories", "Repositories", "count"),
    Column("images", "Images", "count"),
    Column("bytes", "Stored", "bytes"),
    Column("usd_month", "USD / month", "usd"),
]
ERROR_COLUMNS = [
    Column("registry", "Registry"),
    Column("repository", "Repository"),
    Column("error", "Error"),
]


def load(ctx: PageContext) -> Section:
    layout = snapshot_layout(ctx.bucket, ctx.config.storage.prefixes.inventory)
    found = _read.read_pointer(ctx.s3, layout)
    if found is None:
        return never_run(ID, TITLE, DAG, "inventory snapshot")
    pointer, version = found
    price = cost.price_of(ctx.config.reports, None)
    built = ctx.memo.get(
        ("page.fleet", ctx.bucket, layout.latest_key, version, price),
        lambda: _build(ctx, layout, pointer, price),
    )
    return _section(built, ctx.now)


def _build(ctx: PageContext, layout: Any, pointer: dict[str, Any], price: float) -> dict[str, Any]:
    """Everything but the snapshot's age (which depends on the request's time)."""
    manifest = layout.read_manifest(ctx.s3, pointer["manifest"])
    key = pointer.get("key") or manifest.get("key")
    if not isinstance(key, str):
        raise _read.ArtefactError(f"{layout.url(layout.latest_key)} names no snapshot: {pointer}")
    uri = objects.url(ctx.bucket, key)
    try:
        body = objects.get_bytes(ctx.s3, ctx.bucket, key)
        if body is None:
            raise _read.ArtefactError(f"{uri} does not exist (named by {layout.url(layout.latest_key)})")
        source = pq.ParquetFile(io.BytesIO(body))
        present = set(source.schema_arrow.names)
        table = source.read(columns=[c for c in READ if c in present])  # not the layer lists
    except _read.ArtefactError:
        raise
    except Exception as exc:  # ArrowInvalid for garbage, ClientError for a missing object
        raise _read.ArtefactError(f"{uri}: cannot read the inventory snapshot: {exc}") from None
    table = schema.validate_table(table, uri)
    repos = _per_repository(table, price)
    return {
        "uri": uri,
        "manifest": manifest,
        "snapshot_at": manifest.get("snapshot_at"),
        "records": _records(repos),
        "repos": repos,
        "images": table.num_rows,
        "price": price,
    }


def _per_repository(table: pa.Table, price: float) -> pd.DataFrame:
    """One row per (registry, repository) with the counts, bytes, cost and times (list columns
    measured by Arrow: 100,000 rows of Python lists would cost more than the whole sum)."""
    keys = ["registry", "repository"]
    tags = pc.fill_null(pc.list_value_length(table["tags"]), 0).to_numpy() > 0
    children = pc.fill_null(pc.list_value_length(table["parent_digests"]), 0).to_numpy() > 0
    frame = table.select([*cost.NEEDED, "pushed_at", "last_pulled_at"]).to_pandas()
    referrer = (frame["kind"] == "referrer").to_numpy()
    frame["images"] = 1
    frame["tagged"] = tags.astype("int64")
    frame["untagged"] = (~tags & ~children & ~referrer).astype("int64")
    grouped = frame.groupby(keys, sort=True)
    counts = grouped[["images", "tagged", "untagged"]].sum()
    times = grouped.agg(last_push=("pushed_at", "max"), last_pull=("last_pulled_at", "max"))
    stored = cost.stored(frame[list(cost.NEEDED)])
    size = stored.groupby(keys, sort=True)["size_bytes"].sum().rename("bytes")
    out = counts.join(times).join(size).reset_index()
    out["bytes"] = out["bytes"].fillna(0).astype("int64")
    out["usd_month"] = cost.usd(out["bytes"].astype("float64"), price)
    return out


def _records(repos: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "registry": r.registry,
            "repository": r.repository,
            "images": int(r.images),
            "tagged": int(r.tagged),
            "untagged": int(r.untagged),
            "bytes": int(r.bytes),
            "usd_month": round(float(r.usd_month), 4),
            "last_push": _iso(r.last_push),
            "last_pull": _iso(r.last_pull),
        }
        for r in repos.itertuples(index=False)
    ]


def _iso(value: Any) -> str | None:
    when = _time(value)
    return None if when is None else when.isoformat()


def _time(value: Any) -> datetime | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).to_pydatetime()


def _section(built: dict[str, Any], now: datetime) -> Section:
    manifest, repos = built["manifest"], built["repos"]
    failed = [str(r) for r in manifest.get("registries_failed") or []]
    errors = [e for e in manifest.get("errors") or [] if isinstance(e, dict)]
    complete = bool(manifest.get("complete", not errors))
    snapshot_at = _time(built["snapshot_at"])
    age = (now - snapshot_at).total_seconds() if snapshot_at else None
    total_bytes = int(repos["bytes"].sum())
    figures = [
        Figure("Images", built["images"], "count"),
        Figure("Repositories", len(repos), "count"),
        Figure("Stored", total_bytes, "bytes"),
        Figure("USD / month", round(cost.usd(total_bytes, built["price"]), 2), "usd"),
        Figure("Snapshot taken", snapshot_at, "time"),
        Figure("Snapshot age", age, "seconds"),
        Figure("Complete", "yes" if complete else "no", "status", alert=not complete),
        Figure("Registries failed", failed, "list", alert=bool(failed)),
    ]
    records = built["records"]
    tables = [
        _registries(repos, manifest, failed, built["price"]),
        Table("repositories", "Repositories", REPO_COLUMNS, records),
    ]
    if errors:
        rows = [
            {
                "registry": e.get("registry"),
                "repository": e.get("repository"),
                "error": redact(e.get("error")),
            }
            for e in errors
        ]
        tables.append(Table("failures", "Not listed (left out of the snapshot)", ERROR_COLUMNS, rows))
    notes = []
    if not complete:
        notes.append(
            f"The snapshot is incomplete: {len(errors)} registr(y/ies) or repositories could not be listed "
            "and are left out whole; their images are not counted."
        )
    return Section(
        ID,
        TITLE,
        as_of=snapshot_at.isoformat() if snapshot_at else None,
        source=built["uri"],
        figures=figures,
        tables=tables,
        notes=notes,
    )


def _registries(repos: pd.DataFrame, manifest: dict[str, Any], failed: list[str], price: float) -> Table:
    expected = [str(r) for r in manifest.get("registries_expected") or []]
    per = repos.groupby("registry").agg(
        repositories=("repository", "size"), images=("images", "sum"), bytes=("bytes", "sum")
    )
    names = sorted(set(expected) | set(per.index) | set(failed))
    rows = []
    for name in names:
        have = name in per.index
        size = int(per.at[name, "bytes"]) if have else 0
        rows.append(
            {
                "registry": name,
                "status": "failed" if name in failed else "ok",
                "repositories": int(per.at[name, "repositories"]) if have else 0,
                "images": int(per.at[name, "images"]) if have else 0,
                "bytes": size,
                "usd_month": round(float(cost.usd(size, price)), 4),
            }
        )
    return Table("registries", "Registries", REGISTRY_COLUMNS, rows)
