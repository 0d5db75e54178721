"""Findings: what the audit reports, each with the policy and statement that causes it.

A finding is ``{id, severity, principal, repository, registry, detail, policy, statement}``;
``repository`` is null where none applies (a user's keys, a statement granting everywhere),
``policy``/``statement`` where no policy causes it (keys, repository settings). Severities:
critical, high, medium, low. ``SEVERITY`` gives each id's; a few depend on the case (a public
grant without a condition is critical, with one high; excess write access high, excess pull
medium).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .catalog import ACTIONS, CAPABILITIES
from .explain import decide
from .policy import Statement
from .scope import Scope

RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
SEVERITY = {
    "model-excess": "high",  # medium when only pull is in excess
    "model-missing": "medium",
    "human-write-access": "high",
    "wildcard-write": "high",
    "not-action-allow": "high",  # medium when it grants nothing in ECR
    "public-repository": "critical",  # high when the grant is under a condition
    "cross-account-principal": "high",
    "no-auth-token": "low",
    "stale-access-key": "medium",
    "unused-access-key": "medium",
    "no-mfa-writer": "high",
    "scan-on-push-off": "high",
    "mutable-tags": "medium",
    "no-lifecycle-policy": "low",
    "no-kms-encryption": "low",
    "malformed-policy": "high",
    "unknown-action": "low",
}
LIST = 10  # repositories named in a detail before "and N more"


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    registry: str
    detail: str
    principal: str | None = None
    repository: str | None = None
    policy: str | None = None
    statement: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {
            k: d[k]
            for k in (
                "id",
                "severity",
                "principal",
                "repository",
                "registry",
                "detail",
                "policy",
                "statement",
            )
        }


def finding(fid: str, registry: str, detail: str, severity: str | None = None, **kw: Any) -> Finding:
    return Finding(fid, severity or SEVERITY[fid], registry, detail, **kw)


def sort(findings: list[Finding]) -> list[Finding]:
    return sorted(
        findings,
        key=lambda f: (RANK[f.severity], f.id, f.principal or "", f.repository or "", f.policy or ""),
    )


def count(n: int, noun: str) -> str:
    """'1 repository', '3 repositories'."""
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n} {noun if n == 1 else plural}"


def names(items: list[str]) -> str:
    shown = ", ".join(items[:LIST])
    return shown + (f" and {len(items) - LIST} more" if len(items) > LIST else "")


def grants(scope: Scope, row: int, column: int, capability: str) -> list[Statement]:
    """The Allow statements behind one capability of one cell (statement by statement)."""
    bits, _ = CAPABILITIES[capability]
    out: dict[tuple[str, int], Statement] = {}
    for bit in range(len(ACTIONS)):
        if bits & (1 << bit):
            for s in decide(scope, row, column, bit).allows:
                out.setdefault((s.policy, s.index), s)
    return list(out.values())


def cause(statements: list[Statement]) -> dict[str, str | None]:
    """``policy``/``statement`` of the first cause; the detail names the others."""
    if not statements:
        return {"policy": None, "statement": None}
    return {"policy": statements[0].policy, "statement": statements[0].label}


def also(statements: list[Statement]) -> str:
    more = [f"{s.policy} {s.label}" for s in statements[1:]]
    return f" (also: {names(more)})" if more else ""
