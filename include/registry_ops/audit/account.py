"""An account's IAM in one sweep: ``GetAccountAuthorizationDetails`` pages (users with their
groups, inline and attached policies and boundaries; groups; roles; customer managed policies
with every version) rather than a call per principal or per policy.

The filter leaves out AWS managed policies (over a thousand, with every version: many pages);
those actually attached or used as a boundary are read one by one (``GetPolicy`` and
``GetPolicyVersion`` of the default version), usually a handful. A policy that is not valid
(``policy.PolicyError``) or cannot be found is kept as a problem, contributes no statement, and
the rest of the account is evaluated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .aws import call, pages
from .policy import PolicyError, Statement, parse
from .scope import Row

log = logging.getLogger(__name__)
FILTER = ["User", "Role", "Group", "LocalManagedPolicy"]
PAGE = 1000  # GetAccountAuthorizationDetails' largest MaxItems


@dataclass
class Account:
    account_id: str
    rows: list[Row]
    policies: dict[str, list[Statement]]
    problems: list[PolicyError] = field(default_factory=list)
    attachments: dict[str, list[str]] = field(default_factory=dict)  # policy label -> entities
    owners: dict[str, str] = field(default_factory=dict)  # inline policy label -> its entity's ARN


def account_id(sts: Any) -> str:
    return str(call(sts, "get_caller_identity")["Account"])  # type: ignore[index]


def _inline_key(entity_arn: str, name: str) -> str:
    return f"{entity_arn}#inline/{name}"


class _Reader:
    def __init__(self, iam: Any) -> None:
        self.iam = iam
        self.policies: dict[str, list[Statement]] = {}
        self.problems: list[PolicyError] = []
        self.attachments: dict[str, list[str]] = {}
        self.owners: dict[str, str] = {}  # inline policy label -> the user, group or role ARN

    def add(self, key: str, document: Any, label: str) -> None:
        try:
            self.policies[key] = parse(document, label, "identity")
        except PolicyError as exc:
            self.problems.append(exc)
            self.policies[key] = []

    def inline(self, entity: dict[str, Any], kind: str, listed: str) -> list[str]:
        keys = []
        name = entity[f"{kind.title()}Name"]
        for p in entity.get(listed) or []:
            key = _inline_key(entity["Arn"], p["PolicyName"])
            label = f"inline policy {p['PolicyName']} of {kind}/{name}"
            self.attachments[label] = [f"{kind}/{name}"]
            self.owners[label] = entity["Arn"]
            self.add(key, p.get("PolicyDocument"), label)
            keys.append(key)
        return keys

    def attached(self, entity: dict[str, Any], label: str) -> list[str]:
        arns = [p["PolicyArn"] for p in entity.get("AttachedManagedPolicies") or []]
        for arn in arns:
            self.attachments.setdefault(arn, []).append(label)
        return arns

    def managed(self, policy: dict[str, Any]) -> None:
        versions = policy.get("PolicyVersionList") or []
        default = next((v for v in versions if v.get("IsDefaultVersion")), None)
        if default is None:
            self.problems.append(
                PolicyError(policy["Arn"], None, "no default version in the account details")
            )
            self.policies[policy["Arn"]] = []
            return
        self.add(policy["Arn"], default.get("Document"), policy["Arn"])

    def fetch(self, arn: str) -> None:
        """A policy the sweep did not return (AWS managed): GetPolicy, GetPolicyVersion."""
        meta = call(self.iam, "get_policy", ("NoSuchEntity",), PolicyArn=arn)
        if meta is None:
            self.problems.append(PolicyError(arn, None, "attached to principals but not found"))
            self.policies[arn] = []
            return
        version = meta["Policy"]["DefaultVersionId"]
        got = call(self.iam, "get_policy_version", ("NoSuchEntity",), PolicyArn=arn, VersionId=version)
        if got is None:
            self.problems.append(PolicyError(arn, None, f"default version {version} not found"))
            self.policies[arn] = []
            return
        self.add(arn, got["PolicyVersion"].get("Document"), arn)


def read_account(iam: Any, sts: Any, page_size: int = PAGE) -> Account:
    """Users and roles as evaluation rows, every policy they use parsed."""
    account = account_id(sts)
    users: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    roles: list[dict[str, Any]] = []
    managed: list[dict[str, Any]] = []
    for page in pages(
        iam, "get_account_authorization_details", Filter=FILTER, PaginationConfig={"PageSize": page_size}
    ):
        users += page.get("UserDetailList") or []
        groups.update({g["GroupName"]: g for g in page.get("GroupDetailList") or []})
        roles += page.get("RoleDetailList") or []
        managed += page.get("Policies") or []
    reader = _Reader(iam)
    for policy in managed:
        reader.managed(policy)
    group_keys: dict[str, list[str]] = {}
    for name, g in groups.items():
        group_keys[name] = reader.inline(g, "group", "GroupPolicyList") + reader.attached(g, f"group/{name}")
    rows: list[Row] = []
    for u in users:
        label = f"user/{u['UserName']}"
        keys = reader.inline(u, "user", "UserPolicyList") + reader.attached(u, label)
        member = tuple(u.get("GroupList") or [])
        for gname in member:
            keys += group_keys.get(gname, [])
        rows.append(
            Row(
                arn=u["Arn"],
                kind="user",
                account=account,
                name=u["UserName"],
                policies=tuple(keys),
                boundary=_boundary(u, reader, label),
                groups=member,
            )
        )
    for r in roles:
        label = f"role/{r['RoleName']}"
        keys = reader.inline(r, "role", "RolePolicyList") + reader.attached(r, label)
        rows.append(
            Row(
                arn=r["Arn"],
                kind="role",
                account=account,
                name=r["RoleName"],
                policies=tuple(keys),
                boundary=_boundary(r, reader, label),
            )
        )
    wanted = {k for row in rows for k in (*row.policies, row.boundary) if k and "#inline/" not in k}
    for arn in sorted(wanted - set(reader.policies)):
        reader.fetch(arn)
    return Account(account, rows, reader.policies, reader.problems, reader.attachments, reader.owners)


def _boundary(entity: dict[str, Any], reader: _Reader, label: str) -> str | None:
    arn = (entity.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
    if arn:
        reader.attachments.setdefault(arn, []).append(f"{label} (permissions boundary)")
    return arn or None
