"""The inventory schema: one row per (registry, repository, digest), shared by every DAG.

This module is the single place the columns are defined and documented; the inventory
writer, the command line and every later DAG (scan, retention, reports) read them from here.
Every read of an inventory (a file, an S3 snapshot) goes through :func:`table_to_frame` or
:func:`validate_frame`: a table that does not match is refused with a :class:`SchemaError` that
names the source, the column, a sample row and the problem, before any planner sees it (a
comma-joined string read as a list of characters once turned protected images into deletions).
The checks are vectorised (Arrow kernels, a byte view of the digests for the key check).

| column | type | meaning |
|---|---|---|
| registry | string | registry name from the config file |
| registry_kind | string | `ecr`, `oci` (a distribution-API registry) or `ocilayout` (an OCI image layout directory) |
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
| layer_digests | list<string> | layer blob digests, where the manifest was read (unique-layer cost reports); null for indexes and where the manifest was not read |
| layer_sizes | list<int64> | compressed bytes of each layer, in the order of `layer_digests` and as long (the manifest's descriptor sizes), where the manifest was read; null otherwise (older snapshots lack the column: read as null) |
| snapshot_at | timestamp[UTC] | when the listing ran |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

KINDS = ("image", "index", "referrer")
REGISTRY_KINDS = ("ecr", "oci", "ocilayout")
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"

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
        pa.field("layer_sizes", pa.list_(pa.int64())),
        pa.field("snapshot_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
COLUMNS: tuple[str, ...] = tuple(ARROW_SCHEMA.names)
LIST_COLUMNS = tuple(f.name for f in ARROW_SCHEMA if pa.types.is_list(f.type))
TIME_COLUMNS = tuple(f.name for f in ARROW_SCHEMA if pa.types.is_timestamp(f.type))
# A file without these is not an inventory; the nullable columns may be left out (read as null).
REQUIRED: tuple[str, ...] = tuple(f.name for f in ARROW_SCHEMA if not f.nullable)
KEY = ("registry", "repository", "digest")
_DIGEST_LEN = len("sha256:") + 64

Columns = Mapping[str, pa.Array | pa.ChunkedArray]


class SchemaError(ValueError):
    """A frame or file does not follow the inventory schema (the message names where and why)."""


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
    """Records from a fresh listing to a DataFrame with the schema's dtypes (built, not read)."""
    return built_frame(to_table(records))


LIST_MODES = ("python", "arrow")


def table_to_frame(table: pa.Table, source: str = "inventory", lists: str = "python") -> pd.DataFrame:
    """A read inventory table to pandas, validated first (``source`` names it in errors);
    timestamps stay tz-aware; lists become Python lists, or stay Arrow with ``lists="arrow"``
    (see :func:`built_frame`)."""
    return built_frame(validate_table(table, source), lists)


def built_frame(table: pa.Table, lists: str = "python") -> pd.DataFrame:
    """A table this code built (a listing, being written out) to pandas, without validation:
    writing must not lose a listing; reading it back is what is checked.

    ``lists="arrow"`` keeps the list columns as ``pd.ArrowDtype(list<...>)`` columns over the
    table's own buffers: a million rows of Python lists cost ~400 MB and seconds to build, the
    Arrow columns a few MB and no copy. For readers that take Arrow lists (the retention planner);
    elements still read back as Python lists (``tolist``, iteration)."""
    if lists not in LIST_MODES:
        raise ValueError(f"lists={lists!r}: expected one of {', '.join(LIST_MODES)}")
    if lists == "python":
        frame = table.to_pandas()
        for name in LIST_COLUMNS:
            frame[name] = table[name].to_pylist()
        return frame
    present = [c for c in LIST_COLUMNS if c in table.column_names]
    frame = table.drop_columns(present).to_pandas()
    for name in present:
        column = pd.array(table[name], dtype=pd.ArrowDtype(table.schema.field(name).type))
        frame.insert(table.column_names.index(name), name, pd.Series(column, index=frame.index, copy=False))
    return frame


def frame_to_table(frame: pd.DataFrame, source: str = "inventory") -> pa.Table:
    """A DataFrame (e.g. read back from CSV/JSON) to an Arrow table checked against the schema."""
    columns = _frame_columns(frame, source)
    _check_values(columns, source)
    return pa.Table.from_arrays([columns[c] for c in COLUMNS], schema=ARROW_SCHEMA)


def validate_frame(frame: pd.DataFrame, source: str = "inventory") -> None:
    """Raise SchemaError unless the frame is an inventory: types, values and unique keys."""
    _check_values(_frame_columns(frame, source), source)


def validate_table(table: pa.Table, source: str = "inventory") -> pa.Table:
    """The table in exactly the schema (optional columns added as null, extra ones dropped),
    or SchemaError: types are checked before any conversion, then the values."""
    require_columns(table.column_names, source)
    columns: dict[str, pa.ChunkedArray] = {}
    for field in ARROW_SCHEMA:
        if field.name not in table.column_names:
            columns[field.name] = pa.chunked_array([pa.nulls(table.num_rows, field.type)])
            continue
        column = table[field.name]
        if not _type_fits(field.type, column.type):
            row = max(pc.index(pc.is_valid(column), True).as_py(), 0)  # a sample value, if any
            hint = _NOT_SPLIT if _is_text_type(column.type) else ""
            problem = f"stored as {column.type}, expected {_describe(field.type)}{hint}"
            raise row_error(source, field.name, problem, table, row)
        try:
            columns[field.name] = column.cast(field.type, safe=not pa.types.is_timestamp(field.type))
        except pa.ArrowInvalid as exc:
            raise SchemaError(f"{source}: column {field.name!r}: {exc}") from None
    _check_values(columns, source)
    return pa.Table.from_arrays([columns[c] for c in COLUMNS], schema=ARROW_SCHEMA)


def require_columns(names: Iterable[str], source: str) -> None:
    """SchemaError naming every required column that is missing (not an inventory at all)."""
    present = set(names)
    missing = [c for c in REQUIRED if c not in present]
    if missing:
        raise SchemaError(f"{source}: not an inventory: missing columns {', '.join(missing)}")


def row_error(source: str, column: str, problem: str, rows: Any, row: int, count: int = 1) -> SchemaError:
    """The one error format: source, column, problem, then the sample row's key and bad value.

    ``rows`` is a table, a frame or a mapping of column arrays."""
    key = (
        "/".join(_cell(rows, c, row, 60) for c in ("registry", "repository"))
        + "@"
        + _cell(rows, "digest", row, 80)
    )
    more = f" ({count} rows)" if count > 1 else ""
    return SchemaError(
        f"{source}: column {column!r}: {problem}{more}; "
        f"e.g. row {row} ({key}): {column} = {_cell(rows, column, row, 100)}"
    )


def _cell(rows: Any, column: str, row: int, width: int) -> str:
    try:
        value = rows[column].iloc[row] if isinstance(rows, pd.DataFrame) else rows[column][row].as_py()
    except (KeyError, IndexError):
        return "?"
    text = value if column in KEY and isinstance(value, str) else repr(_plain(value))
    return text if len(text) <= width else text[: width - 3] + "..."


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def _describe(kind: pa.DataType) -> str:
    if pa.types.is_list(kind):
        if pa.types.is_integer(kind.value_type):
            return "a list of whole numbers (list<int64>)"
        return "a list of strings (list<string>)"
    if pa.types.is_timestamp(kind):
        return "timestamps (UTC)"
    if pa.types.is_integer(kind):
        return "whole numbers"
    return "text (string)"


_NOT_SPLIT = "; text is never split into a list"


def _is_text_type(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _type_fits(expected: pa.DataType, actual: pa.DataType) -> bool:
    """Whether a stored type casts losslessly to the schema's (null: every value missing)."""
    if pa.types.is_null(actual):
        return True
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    if pa.types.is_list(expected):
        return (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and _type_fits(
            expected.value_type, actual.value_type
        )
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(actual)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(actual)
    return _is_text_type(actual)


# -- frames (CSV, JSON, built in code) -----------------------------------------------------------
def _frame_columns(frame: pd.DataFrame, source: str) -> dict[str, pa.Array]:
    """Each schema column as an Arrow array of the schema's type, or SchemaError at the first
    value that does not fit (a string in a list column is an error, never a list of characters)."""
    require_columns(frame.columns, source)
    columns: dict[str, pa.Array] = {}
    for field in ARROW_SCHEMA:
        if field.name not in frame.columns:
            columns[field.name] = pa.nulls(len(frame), field.type)
        else:
            columns[field.name] = _from_pandas(frame, field, source)
    return columns


def _from_pandas(frame: pd.DataFrame, field: pa.Field, source: str) -> pa.Array:
    series = frame[field.name]
    if series.empty:  # an empty snapshot's frame: its columns may have any dtype (Arrow refuses some)
        return pa.array([], type=field.type)
    fits = _VALUE_FITS[_family(field.type)]
    if pa.types.is_list(field.type):  # Arrow would split a string into characters: refuse first
        text = np.fromiter(map(str.__instancecheck__, series.to_numpy(dtype=object)), bool, len(series))
        if text.any():
            example = '(in CSV/JSON a JSON array such as ["1.0.0", "latest"])'
            problem = f"holds text, expected {_describe(field.type)} {example}{_NOT_SPLIT}"
            raise row_error(source, field.name, problem, frame, int(text.argmax()), int(text.sum()))
    try:
        if pa.types.is_timestamp(field.type):
            array = pa.array(series, from_pandas=True)
            if not (pa.types.is_timestamp(array.type) or pa.types.is_null(array.type)):
                raise pa.ArrowTypeError(str(array.type))
            return array.cast(field.type, safe=False)
        if _family(field.type) == "integer_list":  # inferred, then cast: 1.5 is refused, not cut to 1
            return pa.array(series, from_pandas=True).cast(field.type)
        return pa.array(series, type=field.type, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        values = series.to_numpy(dtype=object)
        row = next((i for i, v in enumerate(values) if not (_missing(v) or fits(v))), None)
        if row is None:
            raise SchemaError(f"{source}: column {field.name!r}: {exc}") from None
        raise row_error(source, field.name, f"expected {_describe(field.type)}", frame, row) from None


def _family(kind: pa.DataType) -> str:
    if pa.types.is_list(kind) and pa.types.is_integer(kind.value_type):
        return "integer_list"
    for name in ("list", "timestamp", "integer"):
        if getattr(pa.types, f"is_{name}")(kind):
            return name
    return "string"


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value)


def _whole(v: object) -> bool:
    return (isinstance(v, int | np.integer) and not isinstance(v, bool)) or (
        isinstance(v, float) and v.is_integer()
    )


_VALUE_FITS = {
    "string": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list | tuple | np.ndarray) and all(isinstance(t, str) for t in v),
    "integer_list": lambda v: isinstance(v, list | tuple | np.ndarray) and all(map(_whole, v)),
    "timestamp": lambda v: isinstance(v, datetime),
    "integer": _whole,
}


# -- value checks, on Arrow arrays ---------------------------------------------------------------
def _check_values(columns: Columns, source: str) -> None:
    """Non-null required columns, digest format, known kinds, size >= 0, unique keys."""
    for name in REQUIRED:
        _refuse(columns, source, name, pc.is_null(columns[name]), "is null; the column is required")
    _refuse(
        columns,
        source,
        "digest",
        pc.invert(pc.match_substring_regex(columns["digest"], DIGEST_PATTERN)),
        "is not a digest of the form sha256:<64 lowercase hex>",
    )
    for name, known in (("kind", KINDS), ("registry_kind", REGISTRY_KINDS)):
        bad = pc.invert(pc.is_in(columns[name], value_set=pa.array(known)))
        _refuse(columns, source, name, bad, f"unknown value, expected one of {', '.join(known)}")
    _refuse(columns, source, "size_bytes", pc.less(columns["size_bytes"], 0), "is negative")
    _check_layer_sizes(columns, source)
    dupe = _first_duplicate(columns)
    if dupe is not None:
        later, first = dupe
        raise row_error(
            source,
            "digest",
            f"the key (registry, repository, digest) is not unique: it repeats row {first}",
            columns,
            later,
        )


def _check_layer_sizes(columns: Columns, source: str) -> None:
    """``layer_sizes`` describes ``layer_digests``: set only beside it, as long, every size a
    number >= 0 (a cost report adds them up per distinct digest)."""
    sizes, digests = columns["layer_sizes"], columns["layer_digests"]
    _refuse(
        columns,
        source,
        "layer_sizes",
        pc.and_(pc.is_valid(sizes), pc.is_null(digests)),
        "is set but layer_digests is not: sizes describe the layers layer_digests names",
    )
    _refuse(
        columns,
        source,
        "layer_sizes",
        pc.not_equal(pc.list_value_length(sizes), pc.list_value_length(digests)),
        "does not have one size per layer digest (its length differs from layer_digests')",
    )
    flat = _combined(sizes)
    values = pc.list_flatten(flat)
    bad_values = pc.fill_null(pc.less(values, 0), True)  # a null size is as bad as a negative one
    rows = np.zeros(len(flat), dtype=bool)
    parents = pc.list_parent_indices(flat).to_numpy()
    rows[parents[bad_values.to_numpy(zero_copy_only=False)]] = True
    _refuse(columns, source, "layer_sizes", pa.array(rows), "holds a negative or missing layer size")


def _refuse(columns: Columns, source: str, name: str, bad: Any, problem: str) -> None:
    bad = pc.fill_null(bad, False)
    row = pc.index(bad, True).as_py()
    if row >= 0:
        raise row_error(source, name, problem, columns, row, pc.sum(bad).as_py())


def _first_duplicate(columns: Columns) -> tuple[int, int] | None:
    """(row, earlier row) of the first repeated key, or None.

    Hashes each row's key (registry and repository codes, 16 hex digits of the digest, read as
    bytes) with numpy, then compares exact keys only among rows whose hashes collide: about
    0.1 s for a million rows where a pandas ``duplicated`` on the strings takes several times
    that. Needs digests already checked (all ``sha256:`` + 64 hex, so 71 bytes each)."""
    n = len(columns["digest"])
    if n < 2:
        return None
    digest = _combined(columns["digest"])
    start = np.frombuffer(digest.buffers()[1], np.int32, count=1, offset=4 * digest.offset)[0]
    raw = np.frombuffer(digest.buffers()[2], np.uint8, count=n * _DIGEST_LEN, offset=start)
    words = np.ascontiguousarray(raw.reshape(n, _DIGEST_LEN)[:, 7:23]).view("<u8")
    hashed = words[:, 0] * np.uint64(0x9E3779B97F4A7C15) ^ words[:, 1]
    for name, mix in (("registry", 0xC2B2AE3D27D4EB4F), ("repository", 0x165667B19E3779F9)):
        codes = pc.dictionary_encode(_combined(columns[name])).indices.to_numpy().astype(np.uint64)
        hashed = hashed ^ (codes + np.uint64(1)) * np.uint64(mix)
    maybe = np.flatnonzero(pd.Series(hashed).duplicated(keep=False).to_numpy())
    if not len(maybe):
        return None
    keys = pd.DataFrame(
        {c: _combined(columns[c]).take(pa.array(maybe)).to_pylist() for c in KEY}, index=maybe
    )
    repeated = keys.duplicated(keep="first")
    if not repeated.any():
        return None
    later = int(keys.index[repeated.to_numpy().argmax()])
    same = (keys == keys.loc[later]).all(axis=1)
    return later, int(keys.index[same.to_numpy().argmax()])


def _combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def empty_table() -> pa.Table:
    return ARROW_SCHEMA.empty_table()
