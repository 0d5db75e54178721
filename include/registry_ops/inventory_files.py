"""Inventory files on disk: Parquet, CSV or JSON, chosen by extension.

Parquet keeps the schema exactly. CSV stores list columns as JSON arrays (``["v1", "latest"]``,
``[1024, 2048]`` for ``layer_sizes``) and times as ISO-8601 UTC; JSON is a list of records in the
same form (list columns as JSON arrays or as text holding one). An empty cell of a nullable list
column (``layer_digests``, ``layer_sizes``: not known) stays null, distinct from ``[]``; an empty
cell of a required one (``tags``) is ``[]``. Reading any of them returns a DataFrame with the
schema's columns (missing optional columns are added as nulls: files written before a column
existed still read), so the CLI and later commands (retention plan) accept all three. Every
read is validated (:mod:`schema`): a bad file raises ``schema.SchemaError`` naming the file, the
column, a sample row and the problem; text in a list column is an error, never split into
characters or guessed at.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import schema

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json"}


def file_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown inventory format {suffix!r} (use .parquet, .csv or .json)")
    return FORMATS[suffix]


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in schema.LIST_COLUMNS:
        out[col] = out[col].map(lambda v: json.dumps(list(v)) if v is not None else None)
    for col in schema.TIME_COLUMNS:
        out[col] = out[col].map(lambda v: v.isoformat() if pd.notna(v) else None)
    return out


def write_inventory(table: pa.Table, path: str | Path) -> None:
    fmt = file_format(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path, compression="zstd")
        return
    frame = _plain(schema.built_frame(table))
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        Path(path).write_text(json.dumps(frame.to_dict(orient="records"), indent=1))


def read_inventory(path: str | Path, lists: str = "python") -> pd.DataFrame:
    """Any of the three formats back to a validated, schema-typed DataFrame.

    ``lists="arrow"`` keeps a Parquet file's list columns as Arrow (``schema.built_frame``), for
    readers that take them (the retention planner and executor): a million images' tags as Python
    lists cost hundreds of MB. CSV and JSON are parsed into Python lists either way."""
    fmt, source = file_format(path), str(path)
    if fmt == "parquet":
        try:
            table = pq.read_table(path)
        except pa.ArrowInvalid as exc:
            raise schema.SchemaError(f"{source}: not a Parquet file: {exc}") from None
        return schema.table_to_frame(table, source, lists)
    frame = _read_csv(path, source) if fmt == "csv" else _read_json(path, source)
    if frame.empty and not len(frame.columns):  # an empty JSON list: an empty inventory
        frame = pd.DataFrame(columns=list(schema.COLUMNS))
    schema.require_columns(frame.columns, source)
    for col in schema.COLUMNS:
        if col not in frame.columns:
            frame[col] = None
    for col in schema.LIST_COLUMNS:
        nullable = schema.ARROW_SCHEMA.field(col).nullable
        frame[col] = frame[col].map(lambda v, nullable=nullable: _as_list(v, nullable))
    for col in schema.TIME_COLUMNS:
        frame[col] = _parsed(
            frame, col, source, pd.to_datetime(frame[col], utc=True, format="ISO8601", errors="coerce")
        )
    sizes = _parsed(frame, "size_bytes", source, pd.to_numeric(frame["size_bytes"], errors="coerce"))
    fractional = sizes.notna() & (sizes % 1 != 0)
    if fractional.any():
        raise schema.row_error(
            source, "size_bytes", "expected whole numbers", frame, int(fractional.argmax())
        )
    frame["size_bytes"] = sizes.astype("Int64")
    frame = frame[list(schema.COLUMNS)]
    schema.validate_frame(frame, source)
    return frame


def _read_csv(path: str | Path, source: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise schema.SchemaError(f"{source}: not an inventory: the file is empty") from None
    except pd.errors.ParserError as exc:
        raise schema.SchemaError(f"{source}: not a valid CSV file: {exc}") from None


def _read_json(path: str | Path, source: str) -> pd.DataFrame:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise schema.SchemaError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise schema.SchemaError(f"{source}: not an inventory: expected a JSON list of records (objects)")
    return pd.DataFrame(data)


def _parsed(frame: pd.DataFrame, col: str, source: str, parsed: pd.Series) -> pd.Series:
    """``parsed`` (coerced: unparsable values became null), or SchemaError at the first of them."""
    bad = parsed.isna() & frame[col].notna()
    if bad.any():
        problem = "not an ISO-8601 time" if col in schema.TIME_COLUMNS else "not a number"
        raise schema.row_error(source, col, problem, frame, int(bad.argmax()), int(bad.sum()))
    return parsed


def _as_list(v: object, nullable: bool = False) -> object:
    """A list cell: empty -> [] (None in a nullable column), a JSON array (text) -> the list;
    anything else is left as it is, for validation to refuse with the row named."""
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return None if nullable else []
    if isinstance(v, str) and v.strip().startswith("["):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v
