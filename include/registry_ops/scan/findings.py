"""The findings table: one row per (image location, vulnerability, package), every scanner alike.

| column | type | meaning |
|---|---|---|
| registry | string | registry name from the config file |
| repository | string | repository inside the registry |
| digest | string | the scanned image manifest (a platform image, never an index) |
| vulnerability_id | string | CVE/GHSA/... id (ECR basic: ``name``; Inspector: ``vulnerabilityId``) |
| package | string | package name; null for findings that are not about a package |
| installed_version | string | version found in the image (Inspector: ``[epoch:]version-release``) |
| fixed_version | string | first fixed version; null when none is known (Inspector ``NotAvailable``) |
| severity | string | CRITICAL, HIGH, MEDIUM, LOW or UNKNOWN (see ``severity.py``) |
| source_severity | string | the scanner's own word, e.g. UNTRIAGED |
| source | string | ``trivy``, ``trivy-report`` (uploaded by a pipeline), ``ecr-basic``, ``ecr-enhanced`` |
| first_seen | timestamp[UTC] | when this vulnerability was first found in this digest by any run |
| scanned_at | timestamp[UTC] | when the scan that produced the row ran |

The same digest in several repositories (or registries) is scanned once and its rows are
copied to each location, so a gate or report can work per repository.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

ARROW_SCHEMA = pa.schema(
    [
        pa.field("registry", pa.string(), nullable=False),
        pa.field("repository", pa.string(), nullable=False),
        pa.field("digest", pa.string(), nullable=False),
        pa.field("vulnerability_id", pa.string(), nullable=False),
        pa.field("package", pa.string()),
        pa.field("installed_version", pa.string()),
        pa.field("fixed_version", pa.string()),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("source_severity", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("first_seen", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("scanned_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
COLUMNS = tuple(ARROW_SCHEMA.names)
# Columns a scanner fills; location and times are added when rows are placed.
FINDING_FIELDS = (
    "vulnerability_id",
    "package",
    "installed_version",
    "fixed_version",
    "severity",
    "source_severity",
)
# What identifies "the same vulnerability in the same image" across runs (for first_seen).
IDENTITY = ("digest", "vulnerability_id", "package", "installed_version")


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts) to a table in schema order; missing optional keys become null."""
    rows = list(rows)
    return pa.Table.from_pydict(
        {f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in ARROW_SCHEMA},
        schema=ARROW_SCHEMA,
    )


def empty_table() -> pa.Table:
    return ARROW_SCHEMA.empty_table()
