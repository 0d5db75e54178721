"""The probe rows ``registry_health`` appends and the SLOs read: one row per registry per run.

A probe is *good* when the API answered and the canary manifest (when the registry has one)
came back with its digest; ``good`` is stored so readers never re-derive it differently.
"""

from __future__ import annotations

import pyarrow as pa

PROBE_SCHEMA = pa.schema(
    [
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),  # when the probe started
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("registry", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # ecr, oci
        pa.field("api_ok", pa.bool_(), nullable=False),  # /v2/ answered (2xx/401), DescribeRegistry
        pa.field("api_ms", pa.float64()),  # null when no answer came
        pa.field("canary_repository", pa.string()),  # null: no canary known for this registry
        pa.field("canary_digest", pa.string()),
        pa.field("canary_ok", pa.bool_()),  # null when there is no canary
        pa.field("canary_ms", pa.float64()),
        pa.field("good", pa.bool_(), nullable=False),  # api_ok and canary_ok is not False
        pa.field("error", pa.string()),  # the first problem, redacted; null when good
    ]
)
