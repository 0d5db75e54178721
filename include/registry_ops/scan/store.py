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
written, so a run that dies half-way leaves the previous state in force. The run folders, the
manifest's ``kind`` and ``schema_version``, the pointer and the run-id cleaner are the shared
run layout of ``store.runs``; the object I/O is ``store.objects``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa

from ..config import Config
from ..store import objects
from ..store.objects import get_json_or_none as get_json_or_none  # acks, gate_state
from ..store.objects import list_keys as list_keys  # acks, uploads, publish
from ..store.runs import RunLayout
from . import findings
from .results import SCANS_SCHEMA

GATE_STATE = "gate/state.json"
ACKS = "gate/acks/"
RUN_KIND = "registry-ops/scan-run"
RUN_SCHEMA_VERSION = 1  # the manifest and pointer fields of ``jobs.publish``


def base(config: Config) -> str:
    return f"{config.storage.prefixes.reports}scan/"


def layout(config: Config) -> RunLayout:
    """The scan's runs: ``scan/runs/dt=.../``, ``scan/latest.json``, ``scan/_parts/<run id>/``."""
    return RunLayout(config.storage.bucket, base(config), RUN_KIND, RUN_SCHEMA_VERSION, runs="runs/")


def run_prefix(config: Config, run_at: datetime) -> str:
    return layout(config).run_prefix(run_at)


def parts_prefix(config: Config, run_id: str) -> str:
    return layout(config).parts_prefix(run_id)


def gate_state_key(config: Config) -> str:
    return base(config) + GATE_STATE


def acks_prefix(config: Config) -> str:
    return base(config) + ACKS


def ack_key(config: Config, registry: str, repository: str, digest: str) -> str:
    """One object per image, so two people acknowledging different images never overwrite each other."""
    return f"{acks_prefix(config)}{registry}/{repository}/{digest.replace(':', '-')}.json"


def latest_pointer(s3: Any, config: Config) -> dict[str, Any] | None:
    """The pointer to the last published run (None before the first); ``store.runs.ManifestError``
    when it is of a newer schema version than this code reads, or unreadable."""
    return layout(config).read_pointer(s3)


def previous(s3: Any, config: Config) -> tuple[pa.Table, pa.Table, dict[str, Any] | None]:
    """(findings, scans, pointer) of the newest published run; empty tables before the first."""
    pointer = latest_pointer(s3, config)
    if not pointer:
        return findings.empty_table(), SCANS_SCHEMA.empty_table(), None
    bucket = config.storage.bucket
    return (
        objects.get_table(s3, bucket, pointer["findings"]),
        objects.get_table(s3, bucket, pointer["scans"]),
        pointer,
    )
