"""Inventory files on disk: Parquet, CSV or JSON, chosen by extension.

Parquet keeps the schema exactly. CSV stores list columns as JSON arrays and times as
ISO-8601 UTC; JSON is a list of records in the same form. Reading any of them returns a
DataFrame with the schema's columns (missing optional columns are added as nulls), so the
CLI and later commands (retention plan) accept all three.
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
    frame = _plain(schema.table_to_frame(table))
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        Path(path).write_text(json.dumps(frame.to_dict(orient="records"), indent=1))


def read_inventory(path: str | Path) -> pd.DataFrame:
    """Any of the three formats back to a schema-typed DataFrame."""
    fmt = file_format(path)
    if fmt == "parquet":
        return schema.table_to_frame(pq.read_table(path))
    if fmt == "csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    else:
        frame = pd.DataFrame(json.loads(Path(path).read_text()))
    for col in schema.COLUMNS:
        if col not in frame.columns:
            frame[col] = None
    for col in schema.LIST_COLUMNS:
        frame[col] = frame[col].map(_as_list)
    for col in schema.TIME_COLUMNS:
        frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    frame["size_bytes"] = pd.to_numeric(frame["size_bytes"]).astype("Int64")
    return frame[list(schema.COLUMNS)]


def _as_list(v: object) -> list[str]:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return []
    if isinstance(v, list):
        return v
    text = str(v).strip()
    if text.startswith("["):
        return json.loads(text)
    return [t for t in text.replace(";", ",").split(",") if t] if text else []
