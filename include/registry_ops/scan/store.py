"""Where the scan keeps things in S3 (storage bucket, under ``<reports prefix>scan/``).

| key | what |
|---|---|
| ``scan/runs/dt=YYYY-MM-DD/HHMMSSZ/findings.parquet`` | the run's findings table (``findings.py``) |
| ``scan/runs/.../scans.parquet`` | incremental state: last scan per digest (``results.SCANS_SCHEMA``) |
| ``scan/runs/.../manifest.json`` | counts, scanner invocations, errors, keys |
| ``scan/runs/.../gate.json``, ``sizes.json``, ``tags.json`` | the policy gate, size budget and tag reports |
| ``scan/latest.json`` | pointer to the newest run (findings, scans, manifest); written last |
| ``scan/_parts/<run id>/`` | targets and mapped-task outputs; deleted when the run is published |
| ``scan/gate/state.json`` | protected violations already reported: CVE ids, first reported, last seen |
| ``scan/gate/acks/<registry>/<repository>/sha256-<hex>.json`` | one acknowledgement per image |

The state lives with the findings it describes and the pointer moves only after both are
written, so a run that dies half-way leaves the previous state in force.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pyarrow as pa

from .. import storage
from ..config import Config
from . import findings
from .results import SCANS_SCHEMA

LATEST = "latest.json"
GATE_STATE = "gate/state.json"
ACKS = "gate/acks/"


def base(config: Config) -> str:
    return f"{config.storage.prefixes.reports}scan/"


def run_prefix(config: Config, run_at: datetime) -> str:
    return f"{base(config)}runs/dt={run_at:%Y-%m-%d}/{run_at:%H%M%SZ}/"


def parts_prefix(config: Config, run_id: str) -> str:
    return f"{base(config)}_parts/{re.sub(r'[^A-Za-z0-9_.-]+', '_', run_id)}/"


def gate_state_key(config: Config) -> str:
    return base(config) + GATE_STATE


def acks_prefix(config: Config) -> str:
    return base(config) + ACKS


def ack_key(config: Config, registry: str, repository: str, digest: str) -> str:
    """One object per image, so two people acknowledging different images never overwrite each other."""
    return f"{acks_prefix(config)}{registry}/{repository}/{digest.replace(':', '-')}.json"


def get_json_or_none(s3: Any, bucket: str, key: str) -> Any | None:
    """The object's JSON, or None when there is no such object (never written yet)."""
    try:
        return storage.get_json(s3, bucket, key)
    except s3.exceptions.NoSuchKey:
        return None


def latest_pointer(s3: Any, config: Config) -> dict[str, Any] | None:
    try:
        return storage.get_json(s3, config.storage.bucket, base(config) + LATEST)
    except s3.exceptions.NoSuchKey:
        return None


def previous(s3: Any, config: Config) -> tuple[pa.Table, pa.Table, dict[str, Any] | None]:
    """(findings, scans, pointer) of the newest published run; empty tables before the first."""
    pointer = latest_pointer(s3, config)
    if not pointer:
        return findings.empty_table(), SCANS_SCHEMA.empty_table(), None
    bucket = config.storage.bucket
    return (
        storage.get_table(s3, bucket, pointer["findings"]),
        storage.get_table(s3, bucket, pointer["scans"]),
        pointer,
    )


def list_keys(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under a prefix (Key, ETag, LastModified, Size), all pages."""
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(page.get("Contents", []))
    return out
