"""One principal x repository x action decided statement by statement: the provenance of a
finding (which policy and statement grant or deny it) and the reference ``evaluate`` is tested
against. Same rules as ``evaluate`` (see its docstring), no precomputation."""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalog import ALL, repository_bits
from .patterns import arn_matches
from .policy import Statement
from .scope import DIRECT, LIMITED, Scope, reach

NONE, CONDITIONAL, CERTAIN = 0, 1, 2


@dataclass
class Decision:
    level: int  # NONE, CONDITIONAL or CERTAIN
    allows: list[Statement] = field(default_factory=list)  # the Allow statements that count
    denies: list[Statement] = field(default_factory=list)


def _level(sts: list[Statement]) -> int:
    return max((CONDITIONAL if s.conditional else CERTAIN for s in sts), default=NONE)


def covers(st: Statement, arn: str, own: bool) -> bool:
    """Does the statement's Resource cover ``arn``? ``own``: the policy is this repository's."""
    if st.resources is None:
        return own
    hit = any(p == "*" or arn_matches(p, arn) for p in st.resources)
    return hit != st.not_resource


def decide(scope: Scope, row: int, column: int, bit: int) -> Decision:
    """``column`` == len(scope.repos) is ``*`` (actions without a resource)."""
    mask = 1 << bit
    on_repo = bool(repository_bits() & mask)
    star = column == len(scope.repos)
    if on_repo == star or not ALL & mask:
        return Decision(NONE)
    principal = scope.rows[row]
    arn = "*" if star else scope.repos[column].arn

    def hits(sts: list[Statement], own: bool) -> list[Statement]:
        return [s for s in sts if s.bits & mask and covers(s, arn, own)]

    identity = [
        s for key in dict.fromkeys(principal.policies) for s in hits(scope.policies.get(key, []), False)
    ]
    boundary = hits(scope.policies.get(principal.boundary, []), False) if principal.boundary else None
    direct: list[Statement] = []
    limited: list[Statement] = []
    resource_deny: list[Statement] = []
    if not star:
        candidates = [(s, True) for s in scope.repos[column].statements]
        candidates += [(s, False) for s in scope.registry_statements]
        for s, own in candidates:
            if not (s.bits & mask and covers(s, arn, own)):
                continue
            way = reach(s, principal, scope.account)
            if way is None:
                continue
            if not s.allow:
                resource_deny.append(s)
            elif way == DIRECT:
                direct.append(s)
            elif way == LIMITED:
                limited.append(s)
    id_allow = [s for s in identity if s.allow]
    b_allow = [s for s in boundary if s.allow] if boundary is not None else None
    b_level = CERTAIN if b_allow is None else _level(b_allow)
    ways = [  # (level, the grants behind it); the boundary only limits, it grants nothing
        (min(_level(id_allow), b_level), id_allow),
        (_level(direct), direct),
        (min(_level(limited), b_level), limited),
    ]
    allow_level = max(level for level, _ in ways)
    allows = [s for level, sts in ways if level for s in sts]
    denies = [s for s in identity + (boundary or []) + resource_deny if not s.allow]
    deny_level = _level(denies)
    if deny_level == CERTAIN or allow_level == NONE:
        level = NONE
    elif allow_level == CERTAIN and deny_level == NONE:
        level = CERTAIN
    else:
        level = CONDITIONAL
    return Decision(level, allows, denies)


def bits_of(scope: Scope, row: int, column: int) -> tuple[int, int]:
    """(certain, possible) bit sets of one cell: ``evaluate``'s answer, pair by pair."""
    certain = possible = 0
    for bit in range(ALL.bit_length()):
        level = decide(scope, row, column, bit).level
        if level == CERTAIN:
            certain |= 1 << bit
        if level >= CONDITIONAL:
            possible |= 1 << bit
    return certain, possible
