"""The inventory schema: one row per (registry, repository, digest), shared by every DAG.

This module is the single place the columns are defined and documented; the inventory
writer, the command line and every later DAG (scan, retention, reports) read them from here.
A snapshot that does not match is refused by :func:`validate_frame` with the column named.

| column | type | meaning |
|---|---|---|
| registry | string | registry name from the config file |
| registry_kind | string | `ecr` or `oci` |
| repository | string | repository name inside the registry |
| digest | string | manifest digest, `sha256:<64 hex>` |
| tags | list<string> | tags pointing at this digest, sorted; empty for untagged images |
| kind | string | `image` (single manifest), `index` (image index / manifest list) or `referrer` (signature, SBOM, attestation: has a subject or a cosign-style tag) |
| media_type | string | manifest media type |
| artifact_type | string | OCI `artifactType` or ECR `artifactMediaType`, else the config media type of referrers; null otherwise |
| size_bytes | int64 | compressed bytes: config + layers for an image; for an index the largest child (ECR's rule) |
| pushed_at | timestamp[UTC] | push time where the registry records it (ECR `imagePushedAt`); null for the distribution registry, which records none |
| created_at | timestamp[UTC] | image config `created` (build time) where the manifest's config was read (an index: its newest child's); null otherwise |
| last_pulled_at | timestamp[UTC] | last pull where the registry knows it (ECR `lastRecordedPullTime`, lags up to 24 h); null otherwise |
| platform | string | `os/arch[/variant]` for platform images; null for indexes and artifacts |
| parent_digests | list<string> | digests of the indexes in the same repository that list this manifest |
| child_digests | list<string> | for an index: the manifests it lists |
| subject_digest | string | for a referrer: the digest it refers to |
| config_digest | string | config blob digest, where the manifest was read |
| layer_digests | list<string> | layer blob digests, where the manifest was read (unique-layer cost reports) |
| snapshot_at | timestamp[UTC] | when the listing ran |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
import pyarrow as pa

KINDS = ("image", "index", "referrer")

ARROW_SCHEMA = pa.schema(
    [
        pa.field("registry", pa.string(), nullable=False),
        pa.field("registry_kind", pa.string(), nullable=False),
        pa.field("repository", pa.string(), nullable=False),
        pa.field("digest", pa.string(), nullable=False),
        pa.field("tags", pa.list_(pa.string()), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("media_type", pa.string()),
        pa.field("artifact_type", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("pushed_at", pa.timestamp("us", tz="UTC")),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("last_pulled_at", pa.timestamp("us", tz="UTC")),
        pa.field("platform", pa.string()),
        pa.field("parent_digests", pa.list_(pa.string()), nullable=False),
        pa.field("child_digests", pa.list_(pa.string()), nullable=False),
        pa.field("subject_digest", pa.string()),
        pa.field("config_digest", pa.string()),
        pa.field("layer_digests", pa.list_(pa.string())),
        pa.field("snapshot_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
COLUMNS: tuple[str, ...] = tuple(ARROW_SCHEMA.names)
LIST_COLUMNS = tuple(f.name for f in ARROW_SCHEMA if pa.types.is_list(f.type))
TIME_COLUMNS = tuple(f.name for f in ARROW_SCHEMA if pa.types.is_timestamp(f.type))
KEY = ("registry", "repository", "digest")


class SchemaError(ValueError):
    """A frame or file does not follow the inventory schema."""


def to_table(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build an Arrow table in schema order from dict records (missing keys become null)."""
    rows = list(records)
    columns = {}
    for field in ARROW_SCHEMA:
        values = [r.get(field.name) for r in rows]
        if field.name in LIST_COLUMNS and not field.nullable:
            values = [sorted(v) if field.name == "tags" else list(v) if v else [] for v in values]
        columns[field.name] = pa.array(values, type=field.type)
    return pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)


def to_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Records to a DataFrame with the schema's dtypes."""
    return table_to_frame(to_table(records))


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow table to pandas, keeping timestamps tz-aware and lists as Python lists."""
    frame = table.to_pandas()
    for name in LIST_COLUMNS:
        frame[name] = frame[name].map(lambda v: list(v) if v is not None else None)
    return frame


def frame_to_table(frame: pd.DataFrame) -> pa.Table:
    """A DataFrame (e.g. read back from CSV/JSON) to an Arrow table checked against the schema."""
    validate_frame(frame)
    return pa.Table.from_pandas(frame[list(COLUMNS)], schema=ARROW_SCHEMA, preserve_index=False)


def validate_frame(frame: pd.DataFrame) -> None:
    """Raise SchemaError naming the first missing column, bad kind or duplicate key."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(f"inventory is missing column(s): {', '.join(missing)}")
    bad_kind = set(frame["kind"].dropna()) - set(KINDS)
    if bad_kind:
        raise SchemaError(f"inventory column 'kind' has unknown value(s): {sorted(bad_kind)}")
    dupes = frame.duplicated(list(KEY))
    if dupes.any():
        first = frame.loc[dupes, list(KEY)].iloc[0].tolist()
        raise SchemaError(f"inventory has duplicate (registry, repository, digest): {first}")


def empty_table() -> pa.Table:
    return ARROW_SCHEMA.empty_table()
