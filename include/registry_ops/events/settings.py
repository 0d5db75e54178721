"""The ``events:`` section of the config file (owned by the events package)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool

MIB = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EcrEventsConfig(_Strict):
    """ECR pushes reach Airflow through EventBridge -> SQS -> an ``AssetWatcher`` (ECR sends no
    webhooks): the queue the rule targets, read with the registry's own connection."""

    registry: str = Field(min_length=1, description="the ECR registry (by config name) the queue carries")
    queue_url: str = Field(min_length=1, description="SQS queue URL the EventBridge rule targets")
    poll_seconds: int = Field(20, ge=1, le=20, description="SQS long-poll wait (at most 20 s)")


class EventsConfig(_Strict):
    """Where notifications are received and what a push sets off."""

    token_conn_id: str = Field(
        "registry_events",
        min_length=1,
        description="Airflow connection whose password is the bearer token registries send "
        "(notifications.endpoints[].headers.Authorization: Bearer <token>)",
    )
    max_body_bytes: int = Field(
        MIB, ge=1024, le=64 * MIB, description="an envelope larger than this is refused (413)"
    )
    scan_on_push: StrictBool = Field(
        True,
        description="a push records an asset event (registry_pushed_images) through Airflow's REST "
        "API (notifications.airflow_api_conn_id), and registry_scan scans the pushed digests",
    )
    ecr: list[EcrEventsConfig] = Field(
        default_factory=list, description="ECR registries whose pushes arrive on an SQS queue"
    )
