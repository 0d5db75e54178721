"""A secret's versions and the staging labels Secrets Manager's own rotation uses.

A new credential is stored as a new version labelled ``AWSPENDING``; once proven it gets
``AWSCURRENT`` (``UpdateSecretVersionStage`` moves the label, and Secrets Manager moves
``AWSPREVIOUS`` to the version it came from, so the old credential stays readable); then the
``AWSPENDING`` label is taken off. The labels are the rotation's durable state: a run reads
them back (``DescribeSecret``) instead of remembering anything.

Values are JSON documents. Errors name the secret, the version and the field, never a value.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from .common import OnSecret, RotationError, Secret

CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"


@dataclass(frozen=True)
class Versions:
    """Which version holds which label (``DescribeSecret``'s ``VersionIdsToStages``)."""

    secret_id: str
    stages: dict[str, tuple[str, ...]]

    def holding(self, label: str) -> str | None:
        return next((v for v, labels in self.stages.items() if label in labels), None)

    @property
    def current(self) -> str | None:
        return self.holding(CURRENT)

    @property
    def pending(self) -> str | None:
        """The pending version, unless the label sits on the current one (a finished rotation)."""
        version = self.holding(PENDING)
        return None if version is None or version == self.current else version

    @property
    def pending_on_current(self) -> bool:
        return self.holding(PENDING) is not None and self.holding(PENDING) == self.current


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _aws(exc: ClientError) -> str:
    err = exc.response.get("Error", {})
    return f"{err.get('Code', '')}: {err.get('Message', '')}"


def read_versions(sm: Any, secret_id: str) -> Versions:
    try:
        answer = sm.describe_secret(SecretId=secret_id)
    except ClientError as exc:
        if _code(exc) == "ResourceNotFoundException":
            raise RotationError(
                f"secret {secret_id!r} does not exist: create it holding the account's current "
                "credential (docs/runbooks/rotate-registry-credentials.md)"
            ) from None
        raise RotationError(f"secret {secret_id!r}: DescribeSecret failed ({_aws(exc)})") from None
    stages = {v: tuple(labels) for v, labels in (answer.get("VersionIdsToStages") or {}).items()}
    versions = Versions(secret_id, stages)
    if versions.current is None:
        raise RotationError(f"secret {secret_id!r} has no {CURRENT} version")
    return versions


def read_document(sm: Any, secret_id: str, version_id: str) -> dict[str, Any]:
    """The version's JSON document (the caller wraps the secret fields in :class:`Secret`)."""
    try:
        answer = sm.get_secret_value(SecretId=secret_id, VersionId=version_id)
    except ClientError as exc:
        raise RotationError(
            f"secret {secret_id!r} version {version_id}: GetSecretValue failed ({_aws(exc)})"
        ) from None
    text = answer.get("SecretString")
    try:
        document = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise RotationError(f"secret {secret_id!r} version {version_id}: SecretString is not a JSON object")
    return document


def field(document: dict[str, Any], name: str, secret_id: str, version_id: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise RotationError(
            f"secret {secret_id!r} version {version_id}: field {name!r} is missing or not a string"
        )
    return value


def secret_field(
    document: dict[str, Any], name: str, secret_id: str, version_id: str, on_secret: OnSecret
) -> Secret:
    value = field(document, name, secret_id, version_id)
    on_secret(value)
    return Secret(value)


def created(sm: Any, secret_id: str, version_id: str) -> datetime | None:
    """When a version was stored (``ListSecretVersionIds``' ``CreatedDate``)."""
    kwargs: dict[str, Any] = {"SecretId": secret_id, "IncludeDeprecated": True}
    while True:
        page = sm.list_secret_version_ids(**kwargs)
        for version in page.get("Versions", []):
            if version.get("VersionId") == version_id:
                return version.get("CreatedDate")
        if not page.get("NextToken"):
            return None
        kwargs["NextToken"] = page["NextToken"]


def put_pending(sm: Any, secret_id: str, document: dict[str, Any]) -> str:
    """Store ``document`` as a new version labelled AWSPENDING only; the new version id."""
    answer = sm.put_secret_value(
        SecretId=secret_id,
        ClientRequestToken=str(uuid.uuid4()),
        SecretString=json.dumps(document),
        VersionStages=[PENDING],
    )
    return str(answer["VersionId"])


def promote(sm: Any, versions: Versions, version_id: str) -> None:
    """AWSCURRENT onto ``version_id`` (Secrets Manager moves AWSPREVIOUS to the old current)."""
    kwargs: dict[str, Any] = {"SecretId": versions.secret_id, "VersionStage": CURRENT}
    kwargs["MoveToVersionId"] = version_id
    if versions.current and versions.current != version_id:
        kwargs["RemoveFromVersionId"] = versions.current
    sm.update_secret_version_stage(**kwargs)


def clear_pending(sm: Any, secret_id: str, version_id: str) -> None:
    """Take the AWSPENDING label off ``version_id`` (the version itself stays, as history)."""
    sm.update_secret_version_stage(SecretId=secret_id, VersionStage=PENDING, RemoveFromVersionId=version_id)
