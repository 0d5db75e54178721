"""The ``reports:`` section of the config file (owned by the reports package).

Prices are in USD. Storage is billed per GB-month with GB = 2^30 bytes, as AWS bills it; the
default price is ECR's (0.10 USD per GB-month). The S3 prices per storage class are us-east-1's
list prices for the first 50 TB, used for the archive and backup cost lines; set your own.
"""

from __future__ import annotations

import fnmatch
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..retention.settings import BUCKET_PATTERN, CloudTrailSource

GIB = 2**30
UNASSIGNED = "unassigned"
S3_PRICES = {
    "STANDARD": 0.023,
    "INTELLIGENT_TIERING": 0.023,
    "STANDARD_IA": 0.0125,
    "ONEZONE_IA": 0.01,
    "GLACIER_IR": 0.004,
    "GLACIER": 0.0036,
    "DEEP_ARCHIVE": 0.00099,
    "REDUCED_REDUNDANCY": 0.024,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NotificationSource(_Strict):
    """Distribution-registry notification envelopes (``{"events": [...]}``, one per object) under a
    prefix, as the registry POSTed them; ``registry`` names the config registry they belong to
    (default: the one ``oci`` registry whose URL host matches the event's ``request.host``)."""

    prefix: str = Field(min_length=1)
    bucket: str | None = Field(None, pattern=BUCKET_PATTERN, description="default: storage.bucket")
    conn_id: str | None = Field(None, min_length=1, description="default: storage.conn_id")
    registry: str | None = Field(None, min_length=1)

    @field_validator("prefix")
    @classmethod
    def _folder(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"


class EventSources(_Strict):
    """Where pull events are read from (CloudTrail for ECR, notifications for distribution)."""

    cloudtrail: list[CloudTrailSource] = Field(default_factory=list)
    notifications: list[NotificationSource] = Field(default_factory=list)


class ReportsConfig(_Strict):
    """Weekly and monthly storage-cost and pull reports (``include/registry_ops/reports``)."""

    events: EventSources | None = Field(
        None, description="pull event sources; default: retention.pulls' sources"
    )
    price_per_gb_month: float = Field(0.10, ge=0, description="registry storage, USD per GiB-month")
    s3_prices: dict[str, float] = Field(
        default_factory=lambda: dict(S3_PRICES),
        description="S3 USD per GiB-month by storage class (archive and backups)",
    )
    teams: dict[str, list[str]] = Field(
        default_factory=dict,
        description="team -> globs on repository names ('registry/repository' globs match with the "
        "registry name); the first team in file order whose glob matches wins; else 'unassigned'",
    )
    success_target: float = Field(
        0.99, ge=0, le=1, description="pull success rate each registry should exceed"
    )
    never_pulled_days: int = Field(30, ge=1, le=3650, description="images not pulled in N days are listed")
    window_days: int = Field(7, ge=1, le=366, description="the weekly report's window")
    max_bytes_change: float = Field(
        0.5, gt=0, description="stored bytes may move this fraction against the previous report"
    )
    top: int = Field(10, ge=1, le=100, description="rows in the 'top' and 'worst' lists")
    max_attachments_mb: float = Field(
        15,
        gt=0,
        le=100,
        description="CSV bytes one email may carry: above it the largest are gzipped, then left out "
        "(every CSV is stored beside the report in S3 either way)",
    )

    @field_validator("teams")
    @classmethod
    def _team_names(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for team, globs in value.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,62}", team) or team == UNASSIGNED:
                raise ValueError(
                    f"team name {team!r}: letters, digits, ' ', '_', '.', '-' (and not {UNASSIGNED!r})"
                )
            if not globs:
                raise ValueError(f"team {team!r}: give at least one repository glob")
        return value

    def team_of(self, registry: str, repository: str) -> str:
        """The first team whose glob matches ``repository`` or ``registry/repository``."""
        for team, globs in self.teams.items():
            for glob in globs:
                if fnmatch.fnmatchcase(repository, glob) or fnmatch.fnmatchcase(
                    f"{registry}/{repository}", glob
                ):
                    return team
        return UNASSIGNED
