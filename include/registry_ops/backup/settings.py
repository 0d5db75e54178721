"""The ``backup:`` and ``dr:`` sections of the config file (owned by the backup package)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool

# When the quarterly restore drill runs (UTC): the drill DAG's schedule, and the Registry page's
# "next drill" date, from this one constant.
DRILL_SCHEDULE = "0 6 1 1,4,7,10 *"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackupConfig(_Strict):
    """Daily metadata snapshots of every registry, a full one (layers too) every few days."""

    registries: list[str] | None = Field(
        None, min_length=1, description="registries to back up (default: every configured one)"
    )
    full_every_days: int = Field(
        7,
        ge=0,
        description="a run is 'full' (stores layer blobs too) when the last full snapshot is at "
        "least this many days old, or there is none; 0: every run is full",
    )
    keep_daily: int = Field(30, ge=1, description="newest snapshot of each of the last N days kept")
    keep_monthly: int = Field(12, ge=0, description="newest snapshot of each of the last N months kept")
    prune_grace_hours: int = Field(
        48,
        ge=1,
        description="an unreferenced blob or pack younger than this is never deleted (a backup or "
        "an archive run may be writing the catalog that will name it)",
    )
    kms_key_id: str | None = Field(
        None, min_length=1, description="SSE-KMS key for backup objects; default SSE-S3 (AES256)"
    )
    workers: int = Field(8, ge=1, le=64, description="parallel registry reads and S3 writes")


class DrConfig(_Strict):
    """Quarterly restore drills into a scratch target (``dags/registry_dr_drill.py``)."""

    target: str | None = Field(
        None, description="registry (by config name) the drill restores into; the DAG Param overrides"
    )
    scratch_prefix: str = Field(
        "dr-drill/",
        pattern=r"^[a-z0-9][a-z0-9._/-]*/$",
        description="repositories the drill creates are named <scratch_prefix><source registry>/<repo>; "
        "only those are removed afterwards",
    )
    sample: int | None = Field(None, ge=1, description="repositories restored per drill (default: all)")
    rto_seconds: int = Field(4 * 3600, ge=1, description="recovery time objective (restore wall time)")
    rpo_seconds: int = Field(26 * 3600, ge=1, description="recovery point objective (snapshot age)")
    email: StrictBool = Field(True, description="email the drill report to notifications.recipients")
