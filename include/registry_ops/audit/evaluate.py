"""Every principal x repository decision at once (numpy), as AWS's policy evaluation logic
decides within one account.

Each cell holds two bit sets over ``catalog.ACTIONS``: ``certain`` (allowed whatever the
request's conditions) and ``possible`` (allowed under some conditions). The columns are the
repositories and one more, ``*``, for actions AWS authorizes without a resource
(``ecr:GetAuthorizationToken``, per the catalogue's resource types). Per cell and action:

- allowed by an identity policy (the principal's inline and managed policies and its groups')
  AND by its permissions boundary, if it has one; OR by a resource policy (the repository's,
  or the registry policy) that reaches it directly; OR by one that reaches a role through its
  ARN, AND its boundary (``scope.reach``);
- then an explicit Deny anywhere (identity, group, boundary, repository or registry policy)
  wins: a Deny without a condition removes the action, one under a condition leaves it
  conditional.

So: ``certain = allow_certain & ~deny_possible`` and ``possible = allow_possible &
~deny_certain``.

Why it is fast: a statement's resource patterns are matched against the column ARNs once per
distinct pattern set; each policy becomes four bit vectors once, however many principals use
it; principals with the same set of identity policies share one row of work; the rest is
whole-array bit arithmetic. ``explain.decide`` is the same logic per pair, statement by
statement (the provenance of findings); the tests hold the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .catalog import ALL, CAPABILITIES, repository_bits
from .patterns import arn_regex
from .policy import EVERYONE, Statement
from .scope import LIMITED, Scope, root_of, session_role

DT = np.uint16


@dataclass
class Matrix:
    """``certain``/``possible``: (rows, repositories + 1) bit sets; the last column is ``*``."""

    scope: Scope
    certain: np.ndarray
    possible: np.ndarray
    evaluator: Evaluator

    def capability(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(certain, possible) boolean (rows, repositories) arrays of one capability."""
        bits, every = CAPABILITIES[name]
        c = self.certain[:, :-1] & DT(bits)
        p = self.possible[:, :-1] & DT(bits)
        if every:
            return c == bits, p == bits
        return c != 0, p != 0

    @cached_property
    def capabilities(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {name: self.capability(name) for name in CAPABILITIES}

    def public(self, name: str) -> np.ndarray:
        """(repositories,) bool: what ``*`` (anyone) may do, even conditionally. Other findings
        look beyond it: a public grant is the public-repository finding, not one per principal."""
        everyone = [i for i, r in enumerate(self.scope.rows) if r.kind == "everyone"]
        if not everyone:
            return np.zeros(len(self.scope.repos), bool)
        return self.capabilities[name][1][everyone[0]]

    def token(self) -> tuple[np.ndarray, np.ndarray]:
        """(certain, possible) per row: ecr:GetAuthorizationToken (the ``*`` column)."""
        from .catalog import TOKEN

        return (self.certain[:, -1] & DT(TOKEN)) != 0, (self.possible[:, -1] & DT(TOKEN)) != 0


class _Planes:
    """allow/deny x certain/possible bit vectors over the columns."""

    __slots__ = ("ac", "ap", "dc", "dp")

    def __init__(self, width: int) -> None:
        self.ac, self.ap, self.dc, self.dp = (np.zeros(width, DT) for _ in range(4))

    def add(self, st: Statement, where: np.ndarray) -> None:
        contrib = np.where(where, DT(st.bits), DT(0))
        if st.allow:
            self.ap |= contrib
            if not st.conditional:
                self.ac |= contrib
        else:
            self.dp |= contrib
            if not st.conditional:
                self.dc |= contrib


class Evaluator:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.arns = [r.arn for r in scope.repos] + ["*"]
        self.width = len(self.arns)
        repo = repository_bits()
        self.colmask = np.full(self.width, DT(repo))
        self.colmask[-1] = DT(ALL & ~repo)
        self._vectors: dict[tuple[tuple[str, ...], bool], np.ndarray] = {}
        self._policy: dict[str, _Planes] = {}

    # -- resources ---------------------------------------------------------------------------
    def columns(self, st: Statement, own: int | None = None) -> np.ndarray:
        """Columns a statement's Resource/NotResource covers; ``own``: the column of the
        repository whose policy holds it (a statement without Resource means that one)."""
        if st.resources is None:
            out = np.zeros(self.width, bool)
            if own is not None:
                out[own] = True
            return out
        key = (st.resources, st.not_resource)
        vec = self._vectors.get(key)
        if vec is None:
            vec = np.zeros(self.width, bool)
            for pattern in st.resources:
                if pattern == "*":
                    vec[:] = True
                    break
                rx = arn_regex(pattern)
                vec |= np.fromiter((rx.fullmatch(a) is not None for a in self.arns), bool, self.width)
            if st.not_resource:
                vec = ~vec
            self._vectors[key] = vec
        if own is not None:  # a repository policy never reaches another repository
            only = np.zeros(self.width, bool)
            only[own] = vec[own]
            return only
        return vec

    def policy(self, key: str) -> _Planes:
        planes = self._policy.get(key)
        if planes is None:
            planes = _Planes(self.width)
            for st in self.scope.policies.get(key, ()):
                planes.add(st, self.columns(st))
            for plane in (planes.ac, planes.ap, planes.dc, planes.dp):
                plane &= self.colmask
            self._policy[key] = planes
        return planes

    # -- the matrix --------------------------------------------------------------------------
    def run(self) -> Matrix:
        rows = self.scope.rows
        n = len(rows)
        shape = (n, self.width)
        ones = DT(0xFFFF)
        id_ac, id_ap, dc, dp = (np.zeros(shape, DT) for _ in range(4))
        b_ac, b_ap = np.full(shape, ones), np.full(shape, ones)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(tuple(sorted(set(row.policies))), []).append(i)
            if row.boundary is not None:
                bp = self.policy(row.boundary)
                b_ac[i], b_ap[i] = bp.ac, bp.ap
                dc[i] |= bp.dc
                dp[i] |= bp.dp
        for keys, members in groups.items():
            if not keys:
                continue
            acc = _Planes(self.width)
            for key in keys:
                p = self.policy(key)
                acc.ac |= p.ac
                acc.ap |= p.ap
                acc.dc |= p.dc
                acc.dp |= p.dp
            idx = np.asarray(members)
            id_ac[idx], id_ap[idx] = acc.ac, acc.ap
            dc[idx] |= acc.dc
            dp[idx] |= acc.dp
        r_ac, r_ap, l_ac, l_ap = (np.zeros(shape, DT) for _ in range(4))
        for col, repo in enumerate(self.scope.repos):
            for st in repo.statements:
                self._resource(st, self.columns(st, own=col), (r_ac, r_ap, l_ac, l_ap, dc, dp))
        for st in self.scope.registry_statements:
            repos_only = self.columns(st).copy()
            repos_only[-1] = False  # a resource policy never grants what is authorized against *
            self._resource(st, repos_only, (r_ac, r_ap, l_ac, l_ap, dc, dp))
        allow_c = (id_ac & b_ac) | r_ac | (l_ac & b_ac)
        allow_p = (id_ap & b_ap) | r_ap | (l_ap & b_ap)
        certain = allow_c & ~dp & self.colmask
        possible = allow_p & ~dc & self.colmask
        return Matrix(self.scope, certain, possible, self)

    def _resource(self, st: Statement, cols: np.ndarray, planes: tuple[np.ndarray, ...]) -> None:
        """Add one resource-policy statement to the planes of the rows it reaches."""
        if not cols.any():
            return
        r_ac, r_ap, l_ac, l_ap, dc, dp = planes
        bits = np.where(cols, DT(st.bits), DT(0)) & self.colmask
        direct, limited = self._rows(st)
        for rows, (pc, pp) in ((direct, (r_ac, r_ap)), (limited, (l_ac, l_ap))):
            if rows is None or not len(rows):
                continue
            if st.allow:
                pp[rows] |= bits
                if not st.conditional:
                    pc[rows] |= bits
            else:
                dp[rows] |= bits
                if not st.conditional:
                    dc[rows] |= bits

    def _rows(self, st: Statement) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(rows reached directly, role rows reached through their ARN), as index arrays."""
        s = self.scope
        n = len(s.rows)
        principals = st.principals or frozenset()
        if st.not_principal:
            listed = np.zeros(n, bool)
            for p in principals:
                listed[self._named(p, with_owner=True)] = True
            if not st.allow:
                listed &= np.array([r.boundary is None for r in s.rows], bool)
            return np.flatnonzero(~listed), None
        if EVERYONE in principals:
            return np.arange(n), None
        direct: set[int] = set()
        limited: set[int] = set()
        for p in principals:
            if root_of(p) == s.account:
                if not st.allow:
                    direct.update(i for i, r in enumerate(s.rows) if r.own)
                continue
            for i in self._named(p, with_owner=False):
                if st.allow and s.rows[i].kind == "role" and p == s.rows[i].arn:
                    limited.add(i)
                else:
                    direct.add(i)
        limited -= direct
        return np.fromiter(sorted(direct), int), np.fromiter(sorted(limited), int)

    def _named(self, p: str, with_owner: bool) -> list[int]:
        s = self.scope
        if p == EVERYONE:
            return list(range(len(s.rows)))
        root = root_of(p)
        if root is not None:
            if root == s.account:
                return [i for i, r in enumerate(s.rows) if r.own] if with_owner else []
            return list(s.by_account.get(root, ()))
        out = [s.by_arn[p]] if p in s.by_arn else []
        role = session_role(p, s.account)
        if role is not None and role in s.roles:
            out.append(s.roles[role])
        return out


def evaluate(scope: Scope) -> Matrix:
    return Evaluator(scope).run()


__all__ = ["LIMITED", "Evaluator", "Matrix", "evaluate"]
