"""Every configured account, one after the other: one account's failure is recorded and the
others go on. Used by ``registry-ops rotate`` and the ``registry_credential_rotation`` DAG.

The AWS clients come from ``rotation.conn_id`` (IAM, Secrets Manager, STS: the rotation's
own identity, never a rotated account's); a new key is proven at that connection's STS
endpoint. Results carry key ids, version ids and steps, never a secret.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..config import Config, ConfigError
from . import htpasswd, keys
from .common import OnSecret, RotationError, no_mask, quiet_wire_logs
from .settings import HtpasswdAccount
from .verify import sts_identity

log = logging.getLogger(__name__)


def key_clients(config: Config) -> keys.Clients:
    """IAM, Secrets Manager and the STS prover from the rotation's connection."""
    from ..clients import aws_client

    r = config.rotation
    return keys.Clients(
        iam=aws_client("iam", r.conn_id, r.region),
        sm=aws_client("secretsmanager", r.conn_id, r.region),
        identity=sts_identity(aws_client("sts", r.conn_id, r.region)),
    )


def secrets_client(config: Config) -> Any:
    from ..clients import aws_client

    return aws_client("secretsmanager", config.rotation.conn_id, config.rotation.region)


def _select(names: list[str], wanted: Iterable[str] | None, what: str) -> set[str]:
    if wanted is None:
        return set(names)
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        known = ", ".join(names) or "none"
        raise ValueError(f"--user: {unknown[0]!r} is not in rotation.{what} (configured: {known})")
    return set(wanted)


def _failure(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        op = exc.operation_name
        return f"{op} failed ({err.get('Code')}: {err.get('Message')})"
    if isinstance(exc, BotoCoreError):
        return f"AWS unreachable ({type(exc).__name__})"
    return str(exc)


def _summary(records: list[dict[str, Any]], dry_run: bool) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {"dry_run": dry_run, "counts": counts, "errors": counts.get("error", 0)}


def rotate_keys(
    config: Config,
    now: datetime,
    *,
    force: bool = False,
    dry_run: bool = False,
    users: Iterable[str] | None = None,
    clients: keys.Clients | None = None,
    on_secret: OnSecret = no_mask,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Rotate (or, dry, plan) the access key of each configured service account."""
    r = config.rotation
    chosen = _select([a.user for a in r.service_accounts], users, "service_accounts")
    records: list[dict[str, Any]] = []
    with quiet_wire_logs():
        clients = clients or (key_clients(config) if chosen else None)
        for account in r.service_accounts:
            if account.user not in chosen:
                continue
            assert clients is not None
            ctx = keys.Context(clients, account, now, r.verify_timeout_seconds, on_secret, sleep)
            try:
                record = keys.rotate_account(
                    ctx, timedelta(days=r.grace_days), timedelta(days=r.min_age_days), force, dry_run
                )
            except (RotationError, ClientError, BotoCoreError) as exc:
                log.error("rotate %s: %s", account.user, _failure(exc))
                record = {"user": account.user, "secret_id": account.secret_id, "status": "error"}
                record["error"] = _failure(exc)
            records.append(record)
    return {"kind": "keys", "accounts": records, "summary": _summary(records, dry_run)}


def registry_target(config: Config, entry: HtpasswdAccount) -> tuple[str, bool | str]:
    """Where the password is proven: (base URL, TLS verification) of the entry."""
    if entry.url:
        return entry.url.rstrip("/"), True
    reg = config.registry(entry.registry or "")
    if reg.kind != "oci":
        raise ConfigError(
            f"{config.source}: rotation.htpasswd: registry {reg.name!r} is of kind {reg.kind!r}; "
            "an htpasswd user belongs to an 'oci' registry"
        )
    from ..clients import get_connection, oci_url

    conn = get_connection(reg.conn_id or "")
    return (reg.url or oci_url(conn)).rstrip("/"), conn.extra_dejson.get("verify", True)


def rotate_htpasswd(
    config: Config,
    now: datetime,
    *,
    force: bool = False,
    dry_run: bool = False,
    users: Iterable[str] | None = None,
    sm: Any = None,
    on_secret: OnSecret = no_mask,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Rotate (or, dry, plan) the password of each configured htpasswd user."""
    r = config.rotation
    chosen = _select([h.user for h in r.htpasswd], users, "htpasswd")
    entries = [h for h in r.htpasswd if h.user in chosen]
    targets = [registry_target(config, h) for h in entries]  # config errors before any change
    records: list[dict[str, Any]] = []
    with quiet_wire_logs():
        sm = sm or (secrets_client(config) if entries else None)
        for entry, (url, verify_tls) in zip(entries, targets, strict=True):
            ctx = htpasswd.Context(
                sm, entry, url, verify_tls, r.bcrypt_rounds, r.verify_timeout_seconds, on_secret, sleep
            )
            try:
                record = htpasswd.rotate_user(ctx, now, timedelta(days=r.min_age_days), force, dry_run)
            except (RotationError, ClientError, BotoCoreError) as exc:
                log.error("rotate htpasswd %s in %s: %s", entry.user, entry.path, _failure(exc))
                record = {"user": entry.user, "path": entry.path, "secret_id": entry.secret_id}
                record.update(status="error", error=_failure(exc))
            records.append(record)
    return {"kind": "htpasswd", "accounts": records, "summary": _summary(records, dry_run)}
