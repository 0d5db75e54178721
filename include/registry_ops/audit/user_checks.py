"""Findings about IAM users' credentials (from the credential report): stale-access-key,
unused-access-key and no-mfa-writer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np

from .evaluate import Matrix
from .findings import Finding, count, finding, names
from .keys import Key, UserCredentials


def keys(
    users: list[UserCredentials],
    now: datetime,
    max_age: int,
    unused: int,
    registry: str,
    key_id: Callable[[Key], str | None],
) -> list[Finding]:
    """Active keys older than ``max_age`` days (stale) or unused for ``unused`` days."""
    out = []
    for u in users:
        for k in u.keys:
            if not k.active:
                continue
            age, idle = k.age_days(now), k.idle_days(now)
            stale = age is not None and age > max_age
            idle_long = idle is not None and idle > unused
            if not (stale or idle_long):
                continue
            name = key_id(k) or f"access_key_{k.slot}"
            used = f"last used {k.last_used.date().isoformat()}" if k.last_used else "never used"
            if stale:
                out.append(
                    finding(
                        "stale-access-key",
                        registry,
                        f"access key {name} of {u.user} is {age} days old (limit {max_age}); {used}: "
                        "rotate it",
                        principal=u.arn,
                    )
                )
            if idle_long:
                out.append(
                    finding(
                        "unused-access-key",
                        registry,
                        f"access key {name} of {u.user} is active and {used} ({idle} days; limit {unused}): "
                        "deactivate it",
                        principal=u.arn,
                    )
                )
    return out


def no_mfa_writer(m: Matrix, users: list[UserCredentials], registry: str) -> list[Finding]:
    """Users who can sign in to the console, push or delete, and have no MFA device."""
    s = m.scope
    creds = {u.arn: u for u in users}
    write = m.capabilities["push"][1] | m.capabilities["delete"][1]
    out = []
    for i, row in enumerate(s.rows):
        u = creds.get(row.arn)
        if row.kind != "user" or u is None or not u.password_enabled or u.mfa_active or not write[i].any():
            continue
        cols = np.flatnonzero(write[i])
        out.append(
            finding(
                "no-mfa-writer",
                registry,
                f"{row.name} has a console password and no MFA device, and can push or delete in "
                f"{count(len(cols), 'repository')}: {names([s.repos[int(c)].name for c in cols])}",
                principal=row.arn,
            )
        )
    return out
