"""Findings about who can do what: human-write-access, wildcard-write, not-action-allow,
public-repository, cross-account-principal, no-auth-token, malformed-policy, unknown-action."""

from __future__ import annotations

import numpy as np

from .catalog import CAPABILITIES, WRITE
from .evaluate import Matrix
from .findings import Finding, also, cause, count, finding, grants, names
from .model import AccessModel
from .policy import EVERYONE, PolicyError, Statement
from .scope import Scope

WRITE_BITS = 0
for _cap in WRITE:
    WRITE_BITS |= CAPABILITIES[_cap][0]


def _resource_statements(s: Scope, col: int) -> list[tuple[Statement, int | None]]:
    """A repository's policy statements (own column) and the registry policy's."""
    return [(st, col) for st in s.repos[col].statements] + [(st, None) for st in s.registry_statements]


def _where(s: Scope, cols: np.ndarray) -> str:
    """'2 repositories: a, b'."""
    return f"{count(len(cols), 'repository')}: {names([s.repos[c].name for c in cols])}"


def _caps_on(m: Matrix, row: int, col: int, only: tuple[str, ...] = tuple(CAPABILITIES)) -> list[str]:
    return [c for c in only if m.capabilities[c][1][row, col]]


def _written(
    m: Matrix, caps: tuple[str, ...] = ("push", "delete"), beyond_public: bool = False
) -> np.ndarray:
    """(rows, repositories): any of ``caps``, even conditionally (``beyond_public``: only where
    ``*`` may not do it too)."""
    out = np.zeros(m.certain[:, :-1].shape, bool)
    for c in caps:
        out |= m.capabilities[c][1] & ~m.public(c)[None, :] if beyond_public else m.capabilities[c][1]
    return out


def human_write(m: Matrix, model: AccessModel | None, registry: str) -> list[Finding]:
    s = m.scope
    written = _written(m)
    out = []
    for i, row in enumerate(s.rows):
        if row.kind != "user" or not written[i].any() or (model and model.is_service_account(row)):
            continue
        cols = np.flatnonzero(written[i])
        first = int(cols[0])
        caps = _caps_on(m, i, first, ("push", "delete"))
        why = grants(s, i, first, caps[0])
        out.append(
            finding(
                "human-write-access",
                registry,
                f"IAM user {row.name} (not a role, not a declared service account) can "
                f"{'/'.join(caps)} in {_where(s, cols)}" + also(why),
                principal=row.arn,
                repository=s.repos[first].name if len(cols) == 1 else None,
                **cause(why),
            )
        )
    return out


def _wild_caps(st: Statement) -> list[str]:
    """Write capabilities a statement grants through a wildcard action or resource ``*``."""
    out = []
    for c in WRITE:
        bits = CAPABILITIES[c][0]
        if st.allow and st.bits & bits and (st.wild_bits & bits or st.star_resource):
            out.append(c)
    return out


def wildcard_write(m: Matrix, registry: str) -> list[Finding]:
    s, ev = m.scope, m.evaluator
    out = []
    for i, row in enumerate(s.rows):
        if not row.own:
            continue
        seen: set[tuple[str, int]] = set()
        for key in dict.fromkeys(row.policies):
            for st in s.policies.get(key, []):
                caps = _wild_caps(st)
                if not caps or (st.policy, st.index) in seen:
                    continue
                seen.add((st.policy, st.index))
                cols = ev.columns(st)[:-1]
                hit = [c for c in caps if (m.capabilities[c][1][i] & cols).any()]
                if hit:
                    repos = [s.repos[c].name for c in np.flatnonzero(cols & _written(m, tuple(hit))[i])]
                    out.append(_wild_finding(st, hit, row.arn, None, repos, registry))
    for col, repo in enumerate(s.repos):
        for st, own in _resource_statements(s, col):
            caps = _wild_caps(st)
            if not caps or not ev.columns(st, own=own)[col]:
                continue
            direct, limited = ev._rows(st)
            reached = [int(r) for r in (direct if direct is not None else [])] + [
                int(r) for r in (limited if limited is not None else [])
            ]
            if EVERYONE in (st.principals or ()) or st.not_principal:
                if any(m.capabilities[c][1][r, col] for c in caps for r in reached):
                    out.append(_wild_finding(st, caps, EVERYONE, repo.name, [repo.name], registry))
                continue
            for r in reached:
                hit = [c for c in caps if m.capabilities[c][1][r, col]]
                if hit:
                    out.append(_wild_finding(st, hit, s.rows[r].arn, repo.name, [repo.name], registry))
    return out


def _wild_finding(
    st: Statement, caps: list[str], principal: str, repository: str | None, repos: list[str], registry: str
) -> Finding:
    how = []
    if any(st.wild_bits & CAPABILITIES[c][0] for c in caps):
        how.append("NotAction" if st.not_action else "a wildcard action")
    if st.star_resource:
        how.append('Resource "*"')
    return finding(
        "wildcard-write",
        registry,
        f"{'/'.join(caps)} granted through {' and '.join(how)} on "
        f"{count(len(repos), 'repository')}: {names(repos)}",
        principal=principal,
        repository=repository,
        policy=st.policy,
        statement=st.label,
    )


def not_action(m: Matrix, registry: str, identity: bool = True) -> list[Finding]:
    """Allow statements with NotAction: in the identity policies principals use (``identity``:
    account-wide, reported once per account), the repository policies and the registry policy."""
    s = m.scope
    out = []
    for row in s.rows:
        if not row.own or not identity:
            continue
        for key in dict.fromkeys(row.policies):
            for st in s.policies.get(key, []):
                if st.allow and st.not_action:
                    out.append(_not_action_finding(st, row.arn, None, registry))
    for repo in s.repos:
        for st in repo.statements:
            if st.allow and st.not_action:
                out.append(_not_action_finding(st, _principal_text(st), repo.name, registry))
    for st in s.registry_statements:
        if st.allow and st.not_action:
            out.append(_not_action_finding(st, _principal_text(st), None, registry))
    return out


def _not_action_finding(st: Statement, principal: str, repository: str | None, registry: str) -> Finding:
    return finding(
        "not-action-allow",
        registry,
        "an Allow with NotAction grants every action it does not name, including actions AWS adds "
        "later" + ("" if st.bits else " (none of the audited ECR actions here)"),
        severity=None if st.bits else "medium",
        principal=principal,
        repository=repository,
        policy=st.policy,
        statement=st.label,
    )


def _principal_text(st: Statement) -> str:
    names_ = sorted(st.principals or ())
    return ("NotPrincipal " if st.not_principal else "") + ", ".join(names_)


def public(m: Matrix, registry: str) -> list[Finding]:
    s, ev = m.scope, m.evaluator
    out = []
    for col, repo in enumerate(s.repos):
        for st, own in _resource_statements(s, col):
            if not st.allow or not (EVERYONE in (st.principals or ()) or st.not_principal):
                continue
            if not st.bits or not ev.columns(st, own=own)[col]:
                continue
            caps = [c for c in CAPABILITIES if CAPABILITIES[c][0] & st.bits]
            out.append(
                finding(
                    "public-repository",
                    registry,
                    f"{_principal_text(st)} may {'/'.join(caps) or 'use ECR actions on'} {repo.name}"
                    + (" under a condition" if st.conditional else " (any AWS account)"),
                    severity="high" if st.conditional else None,
                    principal=EVERYONE,
                    repository=repo.name,
                    policy=st.policy,
                    statement=st.label,
                )
            )
    return out


def cross_account(m: Matrix, model: AccessModel | None, registry: str) -> list[Finding]:
    s = m.scope
    out = []
    has = _written(m, tuple(CAPABILITIES), beyond_public=True)
    for i, row in enumerate(s.rows):
        if row.kind != "external" or not has[i].any():
            continue
        if model is not None and model.allowlisted(row) is not None:
            continue  # named in the allowlist: what exceeds it is model-excess
        for col in np.flatnonzero(has[i]):
            caps = _caps_on(m, i, int(col))
            why = grants(s, i, int(col), caps[0])
            out.append(
                finding(
                    "cross-account-principal",
                    registry,
                    f"{row.arn} (account {row.account}) may {'/'.join(caps)} {s.repos[col].name} and is not "
                    "in the access model's cross-account allowlist" + also(why),
                    principal=row.arn,
                    repository=s.repos[col].name,
                    **cause(why),
                )
            )
    return out


def no_auth_token(m: Matrix, registry: str) -> list[Finding]:
    s = m.scope
    has = _written(m, tuple(CAPABILITIES), beyond_public=True)
    _, token = m.token()
    out = []
    for i, row in enumerate(s.rows):
        if row.own and has[i].any() and not token[i]:
            cols = np.flatnonzero(has[i])
            out.append(
                finding(
                    "no-auth-token",
                    registry,
                    f"grants in {_where(s, cols)}; but no "
                    "ecr:GetAuthorizationToken: docker and other registry clients cannot log in, so the "
                    "grants are either unused or used through the API only",
                    principal=row.arn,
                )
            )
    return out


def malformed(
    problems: list[PolicyError],
    attachments: dict[str, list[str]],
    registry: str,
    owners: dict[str, str] | None = None,
) -> list[Finding]:
    """Each policy that could not be evaluated, with who uses it (``owners``: the principal of
    an inline policy)."""
    out = []
    for p in problems:
        users = attachments.get(p.policy, [])
        where = f"; used by {names(users)}" if users else ""
        out.append(
            finding(
                "malformed-policy",
                registry,
                f"{p.problem}: the policy is left out of the evaluation, so access may be under- or "
                f"overstated{where}",
                principal=(owners or {}).get(p.policy),
                policy=p.policy,
                statement=p.statement,
            )
        )
    return out


def unknown_actions(scope: Scope, registry: str, identity: bool = True) -> list[Finding]:
    """Statements naming actions the catalogue does not know (identity ones: see not_action)."""
    out = []
    seen: set[tuple[str, int]] = set()
    used = {k for row in scope.rows for k in (*row.policies, row.boundary) if k} if identity else set()
    statements = [st for k in sorted(used) for st in scope.policies.get(k, [])]
    statements += [st for r in scope.repos for st in r.statements] + scope.registry_statements
    for st in statements:
        if st.unknown_actions and (st.policy, st.index) not in seen:
            seen.add((st.policy, st.index))
            out.append(
                finding(
                    "unknown-action",
                    registry,
                    f"{', '.join(st.unknown_actions)} match(es) no action in the IAM catalogue: "
                    "a typo grants or denies nothing",
                    policy=st.policy,
                    statement=st.label,
                )
            )
    return out
