"""Findings against the declared access model: ``model-excess`` (a grant the model does not
allow) and ``model-missing`` (a grant the model requires that the account does not give).

Both are computed as whole arrays: for each model entry, the rows it names x the repositories
its globs match, OR-ed into an "allowed" array per capability; excess is what the matrix grants
(even conditionally) outside it, beyond what ``*`` may do anyway. The ``*`` principal and what
it may do are left to ``public-repository``, and a cross-account principal not in the allowlist
at all to ``cross-account-principal``.
"""

from __future__ import annotations

import fnmatch

import numpy as np

from .catalog import CAPABILITIES, WRITE
from .evaluate import Matrix
from .findings import Finding, also, cause, finding, grants
from .model import AccessModel, cross_names, names


def _repos(m: Matrix, globs: list[str]) -> np.ndarray:
    return np.array([any(fnmatch.fnmatchcase(r.name, g) for g in globs) for r in m.scope.repos], bool)


def allowed(m: Matrix, model: AccessModel, registry: str) -> dict[str, np.ndarray]:
    """capability -> (rows, repositories) bool: what the model allows."""
    rows = m.scope.rows
    shape = m.certain[:, :-1].shape
    out = {c: np.zeros(shape, bool) for c in CAPABILITIES}
    for g in model.grants:
        if g.registries is not None and registry not in g.registries:
            continue
        who = np.array([any(names(p, r) for p in g.principals) for r in rows], bool)
        cells = np.outer(who, _repos(m, g.repositories))
        for c in g.capabilities:
            out[c] |= cells
    for e in model.cross_account:
        if e.registries is not None and registry not in e.registries:
            continue
        who = np.array([cross_names(e.principal, r) for r in rows], bool)
        cells = np.outer(who, _repos(m, e.repositories))
        for c in e.capabilities:
            out[c] |= cells
    return out


def excess(m: Matrix, model: AccessModel, registry: str) -> list[Finding]:
    s = m.scope
    ok = allowed(m, model, registry)
    judged = np.array(
        [
            r.own or r.kind == "service" or (r.kind == "external" and model.allowlisted(r) is not None)
            for r in s.rows
        ],
        bool,
    )
    over = {c: m.capabilities[c][1] & ~ok[c] & ~m.public(c)[None, :] & judged[:, None] for c in CAPABILITIES}
    anyover = np.zeros(m.certain[:, :-1].shape, bool)
    for c in CAPABILITIES:
        anyover |= over[c]
    out = []
    for i, col in zip(*np.nonzero(anyover), strict=True):
        caps = [c for c in CAPABILITIES if over[c][i, col]]
        why = grants(s, int(i), int(col), caps[0])
        conditional = [c for c in caps if not m.capabilities[c][0][i, col]]
        out.append(
            finding(
                "model-excess",
                registry,
                f"{'/'.join(caps)} on {s.repos[col].name} is beyond the access model"
                + (f" ({'/'.join(conditional)} only under a condition)" if conditional else "")
                + also(why),
                severity=None if set(caps) & set(WRITE) else "medium",
                principal=s.rows[i].arn,
                repository=s.repos[col].name,
                **cause(why),
            )
        )
    return out


def missing(m: Matrix, model: AccessModel, registry: str) -> list[Finding]:
    s = m.scope
    out = []
    for g in model.grants:
        if not g.required or (g.registries is not None and registry not in g.registries):
            continue
        repos = _repos(m, g.repositories)
        for ref in g.principals:
            who = [i for i, r in enumerate(s.rows) if r.own and names(ref, r)]
            if not who:
                out.append(
                    finding(
                        "model-missing",
                        registry,
                        f"the access model requires {'/'.join(g.capabilities)} for {ref} on "
                        f"{', '.join(g.repositories)}, and no principal of account {s.account} is {ref}",
                        principal=ref,
                    )
                )
                continue
            if not repos.any():
                out.append(
                    finding(
                        "model-missing",
                        registry,
                        f"the access model requires {'/'.join(g.capabilities)} for {ref} on "
                        f"{', '.join(g.repositories)}, and no repository of {registry} matches",
                        principal=ref,
                    )
                )
                continue
            for i in who:
                for col in np.flatnonzero(repos):
                    lacking = [c for c in g.capabilities if not m.capabilities[c][1][i, col]]
                    if lacking:
                        out.append(
                            finding(
                                "model-missing",
                                registry,
                                f"the access model requires {'/'.join(lacking)} ({ref}) and the "
                                "account does not grant it",
                                principal=s.rows[i].arn,
                                repository=s.repos[col].name,
                            )
                        )
    return out


__all__ = ["allowed", "also", "excess", "missing"]
