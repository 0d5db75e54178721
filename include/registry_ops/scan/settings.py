"""The ``scan:`` section of the config file (owned by the scan package)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ScanConfig(BaseModel):
    """Gate thresholds and scanning windows; defaults from the seed's standard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_critical: int = Field(0, ge=0)
    max_high: int = Field(3, ge=0)
    size_budget_mb: int = Field(200, ge=1)
    freshness_hours: int = Field(24, ge=0)
