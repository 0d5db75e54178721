"""The ``scan:`` section of the config file (owned by the scan package).

Everything has a default, so a config without ``scan:`` scans with the seed's standard: 0
critical and at most 3 high vulnerabilities per image, a 200 MB size budget, a 24 h freshness
window, ECR registries through ECR's own scanning and OCI registries through Trivy.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

ScannerName = Literal["trivy", "ecr"]

# `latest` and semver releases (no pre-release part), with an optional leading "v".
DEFAULT_PROTECTED = (r"^latest$", r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(\+[0-9A-Za-z.-]+)?$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AllowEntry(_Section):
    """One accepted vulnerability: it stops counting against the gate until ``expires``."""

    id: str = Field(min_length=1, description="vulnerability id, e.g. CVE-2019-5188")
    reason: str = Field(min_length=3, description="why it is accepted (shown in every report)")
    expires: date = Field(description="last day the entry applies; from the next day it is reported")
    repositories: list[str] = Field(default_factory=lambda: ["*"], description="repository globs")


class TrivyConfig(_Section):
    """How the Trivy CLI is run (credentials always come from the registry's connection)."""

    binary: str = Field("trivy", description="executable name or path")
    server: str | None = Field(None, pattern=r"^https?://\S+$", description="Trivy server (client mode)")
    server_token_conn_id: str | None = Field(
        None, description="connection whose password is the Trivy server token (passed as TRIVY_TOKEN)"
    )
    timeout_seconds: int = Field(600, ge=10, le=7200)
    concurrency: int = Field(
        1,
        ge=1,
        le=32,
        description="parallel trivy processes per task; >1 only with a server (standalone trivy "
        "instances lock each other's cache)",
    )


class EcrScanConfig(_Section):
    """Waiting for ECR's own scans (basic scanning is asynchronous)."""

    poll_seconds: float = Field(5.0, ge=0)
    wait_seconds: float = Field(900.0, ge=0, description="give up on a scan still running after this")


class ScanConfig(_Section):
    """Gate thresholds, scanners and windows; defaults from the seed's standard."""

    max_critical: int = Field(0, ge=0)
    max_high: int = Field(3, ge=0)
    size_budget_mb: int = Field(200, ge=1)
    freshness_hours: int = Field(24, ge=0)
    batch_size: int = Field(50, ge=1, le=5000, description="digests per mapped scan task")
    scan_untagged: StrictBool = Field(
        True, description="also scan untagged images (deployments may pin them by digest)"
    )
    scanners: dict[str, ScannerName] = Field(
        default_factory=dict, description="registry name -> scanner; default ecr for ECR, trivy for OCI"
    )
    protected_tags: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PROTECTED),
        min_length=1,
        description="regexes; an image with a matching tag fails the gate when it violates",
    )
    allowlist: list[AllowEntry] = Field(default_factory=list)
    largest_layers: int = Field(5, ge=1, le=50, description="layers listed per over-budget image")
    uploads_prefix: str = Field(
        "scan-uploads/",
        pattern=r"^([A-Za-z0-9!_.*'()-]+/)+$",
        description="S3 prefix (storage bucket) where build pipelines upload Trivy JSON reports",
    )
    slack_webhook_conn_id: str | None = Field(None, description="Slack incoming-webhook connection")
    trivy: TrivyConfig = TrivyConfig()
    ecr: EcrScanConfig = EcrScanConfig()

    @field_validator("protected_tags")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        import re

        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"protected_tags: {pattern!r} is not a valid regex: {exc}") from None
        return value

    def scanner_for(self, registry: str, kind: str) -> ScannerName:
        return self.scanners.get(registry) or ("ecr" if kind == "ecr" else "trivy")
