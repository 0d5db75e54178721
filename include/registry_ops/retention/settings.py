"""The ``retention:`` section of the config file (owned by the retention package)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class RetentionConfig(BaseModel):
    """Where policies live and the fleet-wide safety caps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
