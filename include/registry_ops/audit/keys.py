"""Access keys, passwords and MFA of every IAM user from one credential report
(``GenerateCredentialReport`` until it is complete, then ``GetCredentialReport``): one report
for all users instead of ``ListAccessKeys``, ``GetAccessKeyLastUsed``, ``ListMFADevices`` and
``GetLoginProfile`` per user. The report names keys by position (``access_key_1``/``_2``, at
most two per user); a key's id is looked up (``ListAccessKeys``) only for a user with a key
finding, so the finding can name the key to rotate or revoke. No secret is ever read.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .aws import AuditError, call

ROOT = "<root_account>"


@dataclass(frozen=True)
class Key:
    user: str
    arn: str
    slot: int  # 1 or 2, as the report names it
    active: bool
    created: datetime | None  # the report's last_rotated: when the key was created
    last_used: datetime | None
    service: str | None

    def age_days(self, now: datetime) -> int | None:
        return None if self.created is None else (now - self.created).days

    def idle_days(self, now: datetime) -> int | None:
        """Days since last use, or since creation for a key never used."""
        since = self.last_used or self.created
        return None if since is None else (now - since).days


@dataclass(frozen=True)
class UserCredentials:
    user: str
    arn: str
    password_enabled: bool
    mfa_active: bool
    keys: tuple[Key, ...]


def _time(value: str | None) -> datetime | None:
    if not value or value in ("N/A", "not_supported", "no_information"):
        return None
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_report(content: bytes | str) -> list[UserCredentials]:
    text = content.decode("utf-8") if isinstance(content, bytes) else content
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        keys = tuple(
            Key(
                user=row["user"],
                arn=row["arn"],
                slot=n,
                active=row.get(f"access_key_{n}_active") == "true",
                created=_time(row.get(f"access_key_{n}_last_rotated")),
                last_used=_time(row.get(f"access_key_{n}_last_used_date")),
                service=(row.get(f"access_key_{n}_last_used_service") or None),
            )
            for n in (1, 2)
            if _time(row.get(f"access_key_{n}_last_rotated")) is not None
        )
        out.append(
            UserCredentials(
                user=row["user"],
                arn=row["arn"],
                password_enabled=row.get("password_enabled") == "true",
                mfa_active=row.get("mfa_active") == "true",
                keys=keys,
            )
        )
    return out


def credential_report(iam: Any, wait_seconds: float = 120.0, poll: float = 2.0) -> list[UserCredentials]:
    """Generate (IAM makes a new one at most every 4 hours) and read the report."""
    deadline = time.monotonic() + wait_seconds
    while True:
        state = (call(iam, "generate_credential_report") or {}).get("State")
        if state == "COMPLETE":
            break
        if time.monotonic() >= deadline:
            raise AuditError(
                f"the IAM credential report was not ready within {wait_seconds:.0f} s (state {state})"
            )
        time.sleep(poll)
    got = call(iam, "get_credential_report") or {}
    return parse_report(got.get("Content") or b"")


def key_ids(iam: Any, user: str) -> dict[datetime, str]:
    """AccessKeyId by creation time (to the second) of one user's keys."""
    if user == ROOT:
        return {}
    listed = call(iam, "list_access_keys", UserName=user) or {}
    out = {}
    for k in listed.get("AccessKeyMetadata") or []:
        created = k["CreateDate"].astimezone(UTC).replace(microsecond=0)
        out[created] = k["AccessKeyId"]
    return out


def key_rows(users: list[UserCredentials], now: datetime) -> list[dict[str, Any]]:
    """``registry-ops audit keys``: one row per access key."""
    rows = []
    for u in users:
        for k in u.keys:
            rows.append(
                {
                    "user": u.user,
                    "arn": u.arn,
                    "key": f"access_key_{k.slot}",
                    "active": k.active,
                    "created": k.created.isoformat() if k.created else None,
                    "age_days": k.age_days(now),
                    "last_used": k.last_used.isoformat() if k.last_used else None,
                    "last_used_service": k.service if k.service not in ("N/A", "not_supported") else None,
                    "idle_days": k.idle_days(now),
                }
            )
    return rows
