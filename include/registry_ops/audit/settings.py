"""The ``audit:`` section of the config file (owned by the audit package).

Everything has a default: without the section the audit reads every ECR registry, with no
access model (no ``model-*`` findings) and the 90-day key limits of the issue.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuditConfig(_Strict):
    """Access audit of the ECR registries (``registry-ops audit``)."""

    model: str | None = Field(
        None,
        min_length=1,
        description="the declared access model (YAML); a relative path is read from the config "
        "file's directory",
    )
    registries: list[str] | None = Field(
        None, min_length=1, description="ECR registries to audit (default: every configured ECR one)"
    )
    key_max_age_days: int = Field(90, ge=1, description="an active access key older than this is stale")
    key_unused_days: int = Field(90, ge=1, description="an active access key unused this long is unused")
    repository_settings: StrictBool = Field(
        True,
        description="check scan on push, tag immutability, lifecycle policy and KMS encryption "
        "(one GetLifecyclePolicy per repository more)",
    )
    workers: int = Field(8, ge=1, le=64, description="parallel ECR reads")
    report_wait_seconds: float = Field(
        120.0, ge=0, description="how long to wait for IAM to generate the credential report"
    )
    fail_severity: Literal["critical", "high", "medium", "low"] = Field(
        "high",
        description="registry_iam_audit (and audit run) fail on a finding this severe or worse that "
        "is new or stands unacknowledged",
    )
