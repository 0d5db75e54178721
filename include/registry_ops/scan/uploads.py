"""Trivy JSON reports that build pipelines upload to S3, imported as scan results.

A pipeline that already ran ``trivy image --format json`` on what it pushed uploads the report
to ``s3://<storage bucket>/<scan.uploads_prefix><registry>/<repository>/sha256-<hex>.json``
(``sha256:<hex>.json`` works too): the key names the registry (as in the config file), the
repository and the digest, because a report's ``ArtifactName`` may be a tarball path, not a
registry reference. The upload time counts as the scan time.

A report is imported when its digest is at that location in the inventory, it is younger than
the freshness window and newer than the digest's last scan. Its digest is then not scanned
again this run. Reports for images not in the inventory yet stay where they are and are
imported by a later run; unreadable reports are listed as problems and the digest is scanned.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from .parsers import ReportError, parse_trivy
from .scanners.base import ScanResult, Target
from .store import list_keys

log = logging.getLogger(__name__)

NAME = re.compile(r"^sha256[-:]([0-9a-f]{64})\.json$")
SOURCE = "trivy-report"


@dataclass
class Imported:
    results: list[ScanResult] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # keys of reports whose image is not inventoried
    problems: list[dict[str, str]] = field(default_factory=list)
    skipped: int = 0  # already imported, superseded by a later scan, or stale


def locate(prefix: str, key: str) -> Target | None:
    """(registry, repository, digest) from an upload key, or None if it does not follow the layout."""
    parts = key[len(prefix) :].split("/")
    if len(parts) < 3 or not all(parts):
        return None
    m = NAME.match(parts[-1])
    if not m:
        return None
    return Target(f"sha256:{m.group(1)}", parts[0], "/".join(parts[1:-1]))


def import_reports(
    s3: Any,
    bucket: str,
    prefix: str,
    locations: pd.DataFrame,
    state: pd.DataFrame,
    now: datetime,
    freshness_hours: float,
) -> Imported:
    """Parse the uploads worth importing (see the module docstring)."""
    out = Imported()
    known = set(zip(locations["registry"], locations["repository"], locations["digest"], strict=True))
    last_scan = dict(zip(state["digest"], state["scanned_at"], strict=True)) if not state.empty else {}
    cutoff = now - timedelta(hours=freshness_hours)
    newest: dict[Target, dict[str, Any]] = {}
    for obj in list_keys(s3, bucket, prefix):
        target = locate(prefix, obj["Key"])
        if target is None:
            out.problems.append(
                {"key": obj["Key"], "error": "key does not follow <registry>/<repository>/sha256-<hex>.json"}
            )
            continue
        if target not in newest or obj["LastModified"] > newest[target]["LastModified"]:
            newest[target] = obj
    for target, obj in sorted(newest.items(), key=lambda kv: kv[1]["Key"]):
        uploaded = obj["LastModified"]
        previous = last_scan.get(target.digest)
        if uploaded < cutoff or (previous is not None and uploaded <= previous):
            out.skipped += 1
            continue
        if (target.registry, target.repository, target.digest) not in known:
            out.pending.append(obj["Key"])
            continue
        try:
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            rows = parse_trivy(json.loads(body))
        except (ValueError, ReportError) as exc:
            out.problems.append({"key": obj["Key"], "error": f"not a usable Trivy report: {exc}"[:300]})
            continue
        out.results.append(ScanResult(target, SOURCE, "ok", uploaded, rows))
    log.info(
        "scan: uploads: %d imported, %d pending (not inventoried), %d skipped, %d problems",
        len(out.results),
        len(out.pending),
        out.skipped,
        len(out.problems),
    )
    return out
