"""What one evaluation covers: an account's principals (rows), its repositories (columns) and
every policy statement that applies, plus the one rule of who a resource-policy statement
names (:func:`reach`), written once for the per-pair evaluator (``explain``) and mirrored by
the vectorized one (``evaluate``), which the tests hold equal.

Who a resource-policy statement reaches, within the account that owns the repository (IAM User
Guide, "Policy evaluation for requests within a single account" and "Permissions boundaries"):

- ``*`` reaches everyone, directly: not limited by a permissions boundary;
- an IAM user ARN reaches that user directly (a boundary's implicit deny does not limit it);
- an IAM role ARN reaches the role **limited** by its boundary ("resource-based policies that
  grant permissions to an IAM role ARN are limited by an implicit deny in a permissions
  boundary"); a role session ARN (``arn:aws:sts::A:assumed-role/R/S``) reaches role R directly;
- the owning account (``arn:aws:iam::A:root`` or ``A``) grants nothing by itself (an identity
  policy must allow) but a Deny naming it denies every principal of the account;
- another account's root reaches every principal of that account named in the policies (and
  the account's own row); other ARNs and service principals reach their own rows;
- ``NotPrincipal`` reaches everyone not listed; with Deny it also reaches every principal that
  has a permissions boundary, listed or not ("The NotPrincipal element with a Deny effect will
  always deny any IAM principal that has a permissions boundary policy attached").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from .policy import EVERYONE, Statement

RowKind = Literal["user", "role", "external", "everyone", "service"]
DIRECT, LIMITED = "direct", "limited"
_ARN = re.compile(r"^arn:aws[\w-]*:(iam|sts)::(\d{12}):(.+)$")


@dataclass(frozen=True)
class Row:
    """A principal: an IAM user or role of the account, or one a resource policy names."""

    arn: str
    kind: RowKind
    account: str | None
    name: str = ""
    policies: tuple[str, ...] = ()  # identity policy keys, the user's groups' included
    boundary: str | None = None  # managed policy key of the permissions boundary
    groups: tuple[str, ...] = ()
    console: bool = False  # users: has a password (login profile)

    @property
    def own(self) -> bool:
        return self.kind in ("user", "role")


@dataclass
class Repository:
    name: str
    arn: str
    statements: list[Statement] = field(default_factory=list)  # its repository policy
    scan_on_push: bool = False
    tag_mutability: str | None = None
    encryption_type: str | None = None
    lifecycle_policy: bool = False


@dataclass
class Scope:
    account: str
    rows: list[Row]
    policies: dict[str, list[Statement]]
    repos: list[Repository]
    registry_statements: list[Statement] = field(default_factory=list)
    registry: str = ""

    def __post_init__(self) -> None:
        self.by_arn = {r.arn: i for i, r in enumerate(self.rows)}
        self.roles = {r.name: i for i, r in enumerate(self.rows) if r.kind == "role"}
        self.by_account: dict[str, list[int]] = {}
        for i, r in enumerate(self.rows):
            if r.account:
                self.by_account.setdefault(r.account, []).append(i)

    def resource_statements(self, column: int) -> list[Statement]:
        """The repository policy's statements and the registry policy's (for the repository)."""
        return self.repos[column].statements + self.registry_statements


def root_of(principal: str) -> str | None:
    """The account id of an account principal (``arn:aws:iam::A:root``), else None."""
    m = _ARN.match(principal)
    return m.group(2) if m and m.group(1) == "iam" and m.group(3) == "root" else None


def session_role(principal: str, account: str) -> str | None:
    """The role name of one of ``account``'s role session ARNs, else None."""
    m = _ARN.match(principal)
    if m and m.group(1) == "sts" and m.group(2) == account and m.group(3).startswith("assumed-role/"):
        parts = m.group(3).split("/")
        return parts[1] if len(parts) >= 3 else None
    return None


def account_of(principal: str) -> str | None:
    m = _ARN.match(principal)
    return m.group(2) if m else None


def _named(principal: str, row: Row, account: str) -> str | None:
    """How one named principal reaches ``row`` (DIRECT, LIMITED or None)."""
    if principal == EVERYONE:
        return DIRECT
    root = root_of(principal)
    if root is not None:
        return None if root == account or row.account != root else DIRECT
    if principal == row.arn:
        return LIMITED if row.kind == "role" else DIRECT
    if row.kind == "role" and session_role(principal, account) == row.name:
        return DIRECT
    return None


def reach(st: Statement, row: Row, account: str) -> str | None:
    """DIRECT, LIMITED (by the row's boundary) or None: does resource statement ``st`` apply to
    ``row``? See the module docstring for the rules."""
    assert st.principals is not None
    if st.not_principal:
        if not st.allow and row.boundary is not None:
            return DIRECT
        listed = any(_named(p, row, account) or _owner_deny(p, row, account) for p in st.principals)
        return None if listed else DIRECT
    if not st.allow and any(_owner_deny(p, row, account) for p in st.principals):
        return DIRECT
    ways = {_named(p, row, account) for p in st.principals} - {None}
    if not ways:
        return None
    return DIRECT if DIRECT in ways or not st.allow else LIMITED


def _owner_deny(principal: str, row: Row, account: str) -> bool:
    """The owning account named: reaches every principal of the account (for a Deny)."""
    return root_of(principal) == account and row.own
