"""The ``health:`` and ``slo:`` sections of the config file (owned by the health package).

The burn-rate defaults are the Google SRE workbook's (chapter 5, "Alerting on SLOs", the
multiwindow, multi-burn-rate table): page at 14.4x over 1 h and 5 min (2 % of a 30-day budget
in an hour), ticket at 6x over 6 h and 30 min (5 % in six hours).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .. import durations


def parse_span(value: object) -> timedelta:
    """``"5m"``, ``"1h"``, ``"6h"``, ``"30d"`` (or a timedelta) as a positive timedelta."""
    return durations.parse(value)


Span = Annotated[timedelta, BeforeValidator(parse_span)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Canary(_Strict):
    """An image every probe fetches by digest: a manifest that should always be there."""

    repository: str = Field(min_length=1)
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class HealthConfig(_Strict):
    """``registry_health``: what each probe asks, and how long it waits."""

    registries: list[str] | None = Field(
        None, min_length=1, description="registries probed (default: every configured one)"
    )
    canaries: dict[str, Canary] = Field(
        default_factory=dict,
        description="per registry name: the canary image; a registry without one has the newest "
        "image of its latest inventory snapshot picked (and named in each probe row)",
    )
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="each request's connect+read timeout")


class BurnRateAlert(_Strict):
    """Alert when the error budget burns ``burn_rate`` times too fast over both windows."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    severity: Literal["page", "ticket"]
    burn_rate: float = Field(gt=1)
    long_window: Span
    short_window: Span

    @model_validator(mode="after")
    def _short_is_shorter(self) -> BurnRateAlert:
        if self.short_window >= self.long_window:
            raise ValueError(
                f"alert {self.name!r}: short_window ({self.short_window}) must be shorter than "
                f"long_window ({self.long_window})"
            )
        return self


DEFAULT_ALERTS = (
    BurnRateAlert(name="page", severity="page", burn_rate=14.4, long_window="1h", short_window="5m"),
    BurnRateAlert(name="ticket", severity="ticket", burn_rate=6, long_window="6h", short_window="30m"),
)


class Objective(_Strict):
    target: float = Field(gt=0, lt=1, description="e.g. 0.999: the good fraction promised")
    window: Span = Field(timedelta(days=30), validate_default=True)


class SloConfig(_Strict):
    """The seed's targets: uptime above 99.9 %, pull success above 99 %, over 30 days."""

    availability: Objective = Objective(target=0.999)
    pull_success: Objective = Objective(target=0.99)
    alerts: tuple[BurnRateAlert, ...] = DEFAULT_ALERTS
    recipients: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] | None = Field(
        None, min_length=1, description="who gets burn-rate alerts; default: notifications.ops_recipients"
    )

    @model_validator(mode="after")
    def _unique_alerts(self) -> SloConfig:
        names = [a.name for a in self.alerts]
        if len(set(names)) != len(names):
            raise ValueError(f"slo.alerts: alert names must be unique, got {names}")
        return self
