"""The one config file (YAML), validated by a pydantic model.

pydantic (already an Airflow dependency) gives typed, documented fields and error locations
for free; :func:`load_config` turns its errors into one message that names the file, the key
path (``registries[1].kind``) and the problem, so ops see exactly what to fix.

Secrets never live here: registries name an Airflow connection id, and credentials come from
that connection (or a secrets backend). A URL with user-info (``https://user:pass@host``) is
refused, without echoing it: the URL shows up in logs and summaries. Booleans are strict
(``StrictBool``): ``"yes"`` or ``1`` is an error, not true.
"""

from __future__ import annotations

import fnmatch
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import durations
from .audit.settings import AuditConfig
from .backup.settings import BackupConfig, DrConfig
from .events.settings import EventsConfig
from .health.settings import HealthConfig, SloConfig
from .reports.settings import ReportsConfig
from .retention.settings import RetentionConfig
from .rotation.settings import RotationConfig
from .scan.settings import ScanConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "registry-ops.yaml"
CONFIG_ENV = "REGISTRY_OPS_CONFIG"

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


class ConfigError(ValueError):
    """The config file is missing, unreadable or invalid; the message names file, key and problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistryConfig(_Strict):
    """One registry of the fleet."""

    name: Name
    kind: Literal["ocilayout", "ecr", "oci"]
    conn_id: str | None = Field(
        None,
        min_length=1,
        validate_default=True,
        description="ECR, OCI: Airflow connection id holding credentials",
    )
    path: str | None = Field(
        None, min_length=1, description="ocilayout: root directory, one OCI image layout per repository"
    )
    region: str | None = Field(None, description="ECR: AWS region (default: the connection's)")
    registry_id: str | None = Field(None, pattern=r"^\d{12}$", description="ECR: account id of the registry")
    url: str | None = Field(
        None,
        pattern=r"^https?://[^/\s]+/?$",
        description="OCI: base URL; default: the connection's schema://host:port",
    )
    include: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    exclude: list[str] = Field(default_factory=list)
    read_configs: StrictBool = Field(
        True, description="OCI: read each image's config blob for platform and created time"
    )
    concurrency: int = Field(8, ge=1, le=64, description="OCI: parallel manifest requests")
    read_manifests: StrictBool = Field(
        False,
        description="ECR only: read every image's manifest during the inventory (BatchGetImage, "
        "100 per call) for config_digest, layer_digests and layer_sizes (created_at and platform "
        "stay as without it: config blobs are not read). Off by default because a BatchGetImage "
        "is what ECR calls a pull: AWS documents that a pull calls BatchGetImage once for the "
        "manifest and that lastRecordedPullTime is updated on every pull but Inspector's (within "
        "24 h); CloudTrail records each call. Take it that with it on each inventory run makes "
        "every image look pulled: keep_pulled_within_days and sinceImagePulled rules (ours and "
        "ECR lifecycle policies) then keep every image, and retention.pulls' CloudTrail source "
        "counts the inventory's reads as pulls, unless the inventory's IAM role is registered "
        "with ECR's pull-time update exclusions (RegisterPullTimeUpdateExclusion) and listed in "
        "retention.pulls.exclude_principals. The indexes' manifests are read with or without it.",
    )

    @field_validator("url", mode="before")
    @classmethod
    def _no_credentials(cls, value: object) -> object:
        # The message must not repeat the value: it holds the secret.
        if isinstance(value, str) and "@" in value:
            raise ValueError(
                "credentials (user-info before '@') are not allowed in a registry URL, where they "
                "would be logged: give the URL without them and put the username and password in "
                "the registry's Airflow connection (conn_id)"
            )
        return value

    @field_validator("conn_id")
    @classmethod
    def _conn_for_remote(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("kind") in ("ecr", "oci"):
            raise ValueError("Field required (kinds 'ecr' and 'oci' take credentials from a connection)")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> RegistryConfig:
        if self.kind == "ocilayout" and (self.conn_id or self.url or self.region or self.registry_id):
            raise ValueError("kind 'ocilayout' takes 'path' only (no conn_id, url, region or registry_id)")
        if (self.kind == "ocilayout") != bool(self.path):
            raise ValueError("'path' is required for kind 'ocilayout' and applies to it only")
        if self.kind == "oci" and (self.region or self.registry_id):
            raise ValueError("'region' and 'registry_id' apply to kind 'ecr' only")
        if self.kind == "ecr" and self.url:
            raise ValueError("'url' applies to kind 'oci' only (ECR uses the connection)")
        if self.kind != "ecr" and "read_manifests" in self.model_fields_set:
            raise ValueError(
                f"'read_manifests' applies to kind 'ecr' only (kind {self.kind!r} reads every "
                "manifest anyway: its layer sizes are always in the inventory)"
            )
        return self

    def wants(self, repository: str) -> bool:
        """Include/exclude globs (fnmatch, case-sensitive) applied to a repository name."""
        inc = any(fnmatch.fnmatchcase(repository, g) for g in self.include)
        return inc and not any(fnmatch.fnmatchcase(repository, g) for g in self.exclude)


class Prefixes(_Strict):
    inventory: str = "inventory/"
    archive: str = "archive/"
    backup: str = "backup/"
    reports: str = "reports/"
    events: str = "events/"
    health: str = "health/"


class StorageConfig(_Strict):
    """Where snapshots, archives, backups and reports go."""

    conn_id: str = "aws_default"
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefixes: Prefixes = Prefixes()


MAX_DEADLINE = timedelta(days=7)


def parse_duration(value: object) -> timedelta:
    """``"2h"``, ``"90m"``, ``"1d"``, ``"1h30m"`` as a timedelta (positive, at most 7 days)."""
    return durations.parse(value, MAX_DEADLINE, "a deadline")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class DeadlineConfig(_Strict):
    """How long after a run was queued it must have finished before ops get a deadline notice
    (Airflow ``DeadlineAlert``, ``dag_support.deadline_alert``)."""

    registry_inventory: Duration = Field(timedelta(hours=2), validate_default=True)
    registry_backup: Duration = Field(timedelta(hours=6), validate_default=True)


class NotificationConfig(_Strict):
    """Where every capability's messages go (``include/registry_ops/notify``)."""

    smtp_conn_id: str = "smtp_default"
    sender: str | None = None
    recipients: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(default_factory=list)
    security_recipients: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] | None = Field(
        None,
        min_length=1,
        description="who gets security reports (the access audit's); default: recipients",
    )
    stakeholder_recipients: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] | None = Field(
        None,
        min_length=1,
        description="who gets the storage-cost and pull reports; default: recipients",
    )
    ops_recipients: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] | None = Field(
        None,
        min_length=1,
        description="who gets operational alerts (a report that failed validation); default: recipients",
    )
    slack_webhook_conn_id: str | None = Field(
        None,
        description="Slack incoming-webhook connection for every capability (replaces the "
        "deprecated scan.slack_webhook_conn_id, which the scan gate still honours)",
    )
    deadlines: DeadlineConfig = Field(
        default_factory=DeadlineConfig,
        description="per DAG id: the time a run may take from queued to finished, e.g. '2h'",
    )
    airflow_api_conn_id: str = Field(
        "airflow_api",
        min_length=1,
        description="HTTP connection to Airflow's REST API (host = base URL, login, password) that "
        "registry_watch asks for DAGs the scheduler paused",
    )


class InventoryConfig(_Strict):
    batch_size: int = Field(10, ge=1, le=1000, description="repositories per mapped task")
    full_every_days: int = Field(
        7,
        ge=1,
        le=365,
        description="OCI registries list incrementally (the previous snapshot is the cache); a full "
        "listing runs at least this often, in case the cache went wrong",
    )


class Config(_Strict):
    """The whole file. ``source`` records where it was read from (for messages)."""

    registries: list[RegistryConfig] = Field(min_length=1)
    storage: StorageConfig
    notifications: NotificationConfig = NotificationConfig()
    inventory: InventoryConfig = InventoryConfig()
    retention: RetentionConfig = RetentionConfig()
    scan: ScanConfig = ScanConfig()
    backup: BackupConfig = BackupConfig()
    dr: DrConfig = DrConfig()
    audit: AuditConfig = AuditConfig()
    rotation: RotationConfig = RotationConfig()
    reports: ReportsConfig = ReportsConfig()
    events: EventsConfig = EventsConfig()
    health: HealthConfig = HealthConfig()
    slo: SloConfig = SloConfig()
    source: str = "<memory>"

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [r.name for r in self.registries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"registry names must be unique; repeated: {', '.join(dupes)}")
        known = set(names)
        for key, named in (
            ("backup.registries", self.backup.registries or []),
            ("dr.target", [self.dr.target]),
            ("health.registries", self.health.registries or []),
            ("health.canaries", list(self.health.canaries)),
            ("events.ecr[].registry", [e.registry for e in self.events.ecr]),
        ):
            unknown = [n for n in named if n is not None and n not in known]
            if unknown:
                raise ValueError(f"{key}: unknown registry {unknown[0]!r} (configured: {', '.join(names)})")
        return self

    def registry(self, name: str) -> RegistryConfig:
        for reg in self.registries:
            if reg.name == name:
                return reg
        known = ", ".join(r.name for r in self.registries)
        raise ConfigError(f"{self.source}: unknown registry {name!r} (configured: {known})")


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Explicit path, else $REGISTRY_OPS_CONFIG, else the shipped local-stack config."""
    return Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def parse_config(data: object, source: str = "<memory>") -> Config:
    """Validate an already-loaded mapping; errors name the source, key and problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        # Only key and message: pydantic's own text repeats the input (a URL with a password).
        problems = [f"{source}: {_loc(e['loc'])}: {e['msg']}" for e in exc.errors()]
    raise ConfigError("invalid config\n  " + "\n  ".join(problems))  # outside: no chained input


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config file (see :func:`config_path` for which one)."""
    file = config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{file}: not valid YAML{where}: {problem}") from None
    return parse_config(data, str(file))
