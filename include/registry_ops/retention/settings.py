"""The ``retention:`` section of the config file (owned by the retention package)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PullSource(_Strict):
    """Objects under an S3 prefix holding pull events (``retention/pull_sources.py`` reads them)."""

    prefix: str = Field(min_length=1)
    bucket: str | None = Field(None, pattern=BUCKET_PATTERN, description="default: storage.bucket")
    conn_id: str | None = Field(None, min_length=1, description="default: storage.conn_id")
    registries: list[str] | None = Field(
        None,
        min_length=1,
        description="registries the pulls are credited to (default: every registry of the source's kind)",
    )

    @field_validator("prefix")
    @classmethod
    def _folder(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"


class CloudTrailSource(PullSource):
    """CloudTrail's own delivery layout: ``<prefix><region>/YYYY/MM/DD/*.json.gz``."""

    @field_validator("prefix")
    @classmethod
    def _cloudtrail_folder(cls, value: str) -> str:
        if not value.endswith("CloudTrail/"):
            raise ValueError(
                f"{value!r} must be the trail's CloudTrail folder, ending in 'CloudTrail/' "
                "(e.g. 'AWSLogs/123456789012/CloudTrail/'): the region and day folders are found under it"
            )
        return value


class PullsConfig(_Strict):
    """Where pull events are kept; merged into ``last_pulled_at`` before planning (latest wins)."""

    cloudtrail: list[CloudTrailSource] = Field(default_factory=list)
    notifications: list[PullSource] = Field(default_factory=list)
    lookback_days: int = Field(
        90,
        ge=1,
        le=3650,
        description="read the events of this many days before the plan's time; a policy's "
        "keep_pulled_within_days may not exceed it",
    )
    exclude_principals: list[str] = Field(
        default_factory=lambda: ["inspector2.amazonaws.com"],
        description="globs of callers whose pulls do not count (replaces the default, the scanner)",
    )

    @property
    def configured(self) -> bool:
        return bool(self.cloudtrail or self.notifications)


class RetentionConfig(_Strict):
    """Where policies live and the fleet-wide safety caps."""

    policy_file: str | None = Field(None, description="retention policy file (relative to the config file)")
    max_deletions_per_run: int = Field(500, ge=0)
    max_fraction_per_repository: float = Field(0.5, ge=0, le=1)
    # -- execution (archive before delete, audit, restore) --------------------------------------
    archive_layers: StrictBool = Field(
        False,
        description="archive layers too, so archived images restore even after registry GC "
        "(default for policies that do not set archive_layers themselves)",
    )
    archive_batch: int = Field(1000, ge=1, le=10000, description="images per archive pack (one S3 object)")
    delete_batch: int = Field(100, ge=1, le=100, description="digests per delete call (ECR allows 100)")
    runs_prefix: str = Field("retention/runs/", description="S3 prefix of per-run plans, journals, results")
    audit_prefix: str = Field("retention/audit/", description="S3 prefix of the JSON-lines audit records")
    usd_per_gb_month: float = Field(0.10, ge=0, description="storage price used for the savings figure")
    in_use_file: str | None = Field(
        None,
        description="image references in use, one per line (relative to the config file); "
        "the retention DAG and `retention apply` keep those images",
    )
    in_use_discovery: list[Literal["ecs", "lambda"]] = Field(
        default_factory=lambda: ["ecs", "lambda"],
        description="find images in use in the account and region of each ECR registry (its connection): "
        "ECS task definitions, services and running tasks, Lambda image functions; [] turns it off",
    )
    checkpoint_seconds: float = Field(
        2.0, ge=0, description="journal saves between delete batches at most this often (0: every batch)"
    )
    enable_policies: list[str] = Field(
        default_factory=list,
        description="policy names to execute although the policy file does not set `enabled: true`; "
        "the way to enable a plain ECR lifecycle file (its one policy is named after the file's stem)",
    )
    lease_seconds: float = Field(
        300.0,
        ge=5,
        le=3600,
        description="a registry's lease (one executing run at a time) expires this long after its "
        "last renewal; runs renew it every third of that while they work",
    )
    pulls: PullsConfig = Field(
        default_factory=PullsConfig,
        description="CloudTrail logs and registry notifications whose pulls keep_pulled_within_days "
        "sees (none configured: the inventory's last_pulled_at only)",
    )
