"""The ``rotation:`` section of the config file (owned by the rotation package).

Which CI service accounts' IAM access keys rotate, in which Secrets Manager secret each one's
key lives, and which htpasswd users of the deployment's own OCI registries rotate their
password. Credentials are never here: only names (IAM user, secret id, Airflow connection).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# IAM user names: letters, digits and _+=,.@- (up to 64); secret ids: a name or an ARN.
IAM_USER = r"^[A-Za-z0-9_+=,.@-]{1,64}$"
SECRET_ID = r"^[A-Za-z0-9/_+=.@:-]{1,2048}$"


class ServiceAccount(_Strict):
    """A CI service account: an IAM user whose access key is handed out by one secret."""

    user: str = Field(pattern=IAM_USER, description="IAM user name")
    secret_id: str = Field(
        pattern=SECRET_ID,
        description="Secrets Manager secret holding {AccessKeyId, SecretAccessKey} of the user",
    )


class HtpasswdAccount(_Strict):
    """A basic-auth user of an OCI registry that reads an htpasswd file this deployment owns."""

    path: str = Field(min_length=1, description="the htpasswd file the registry reads (bcrypt lines)")
    user: str = Field(pattern=r"^[^:\s#]{1,128}$", description="the user whose password rotates")
    secret_id: str = Field(
        pattern=SECRET_ID,
        description="Secrets Manager secret holding the password (JSON with a 'password' field; "
        "other fields, e.g. an Airflow connection's, are kept)",
    )
    registry: str | None = Field(None, description="a configured OCI registry: where the password is proven")
    url: str | None = Field(
        None, pattern=r"^https?://[^/\s@]+/?$", description="registry base URL (instead of 'registry')"
    )

    @model_validator(mode="after")
    def _one_target(self) -> HtpasswdAccount:
        if (self.registry is None) == (self.url is None):
            raise ValueError("give exactly one of 'registry' (a configured OCI registry) or 'url'")
        return self


class RotationConfig(_Strict):
    """Credential rotation (``registry_credential_rotation``, ``registry-ops rotate``)."""

    conn_id: str = Field(
        "aws_default",
        min_length=1,
        description="Airflow connection for IAM, STS and Secrets Manager (not a rotated account's)",
    )
    region: str | None = Field(None, description="Secrets Manager region (default: the connection's)")
    service_accounts: list[ServiceAccount] = Field(default_factory=list)
    htpasswd: list[HtpasswdAccount] = Field(default_factory=list)
    grace_days: int = Field(
        7, ge=0, description="an old key stays inactive this long before it is deleted (a rollback window)"
    )
    min_age_days: int = Field(
        20,
        ge=0,
        description="a credential younger than this is not rotated again (a rerun of a finished "
        "rotation only finishes its grace deletions); --force overrides",
    )
    verify_timeout_seconds: float = Field(
        60.0, gt=0, le=900, description="how long a new credential may take to work (IAM propagates keys)"
    )
    bcrypt_rounds: int = Field(
        5,
        ge=4,
        le=14,
        description="bcrypt cost of a new htpasswd line; the registry pays it on every request, "
        "and a 256-bit random password needs no stretching (htpasswd -B uses 5)",
    )

    @model_validator(mode="after")
    def _unique(self) -> RotationConfig:
        for key, names in (
            ("service_accounts", [a.user for a in self.service_accounts]),
            ("service_accounts (secret_id)", [a.secret_id for a in self.service_accounts]),
            ("htpasswd", [f"{h.path}:{h.user}" for h in self.htpasswd]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{key}: listed twice: {', '.join(dupes)}")
        return self
