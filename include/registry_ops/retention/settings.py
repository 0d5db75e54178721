"""The ``retention:`` section of the config file (owned by the retention package)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RetentionConfig(BaseModel):
    """Where policies live and the fleet-wide safety caps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy_file: str | None = Field(None, description="retention policy file (relative to the config file)")
    max_deletions_per_run: int = Field(500, ge=0)
    max_fraction_per_repository: float = Field(0.5, ge=0, le=1)
