"""Policy documents parsed into statements over the audit's actions (``catalog.ACTIONS``).

A statement keeps what evaluation needs: effect, the action bits it covers (``NotAction``
already inverted: the catalogue's actions minus those it names), the bits that come only from
a wildcard or from ``NotAction`` (for the ``wildcard-write`` finding), the resource patterns or
``NotResource``, the principals of a resource policy, and whether a ``Condition`` (or a policy
variable in a resource) makes it conditional. The audit does not evaluate conditions: it cannot
know the request context, so a grant under one is reported as conditional and a Deny under one
as a possible deny.

A document AWS could not have meant (not JSON, no ``Statement``, an ``Effect`` other than Allow
or Deny, both or neither of ``Action``/``NotAction``, an identity statement without a resource
or with a principal, a resource statement without a principal, an element of the wrong type) is
refused with :class:`PolicyError` naming the policy and statement; the caller reports it as a
finding and goes on without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from .catalog import ALL, expand
from .patterns import VARIABLE, has_wildcard

Kind = Literal["identity", "resource"]
KEYS = frozenset(
    {
        "Sid",
        "Effect",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Principal",
        "NotPrincipal",
        "Condition",
    }
)
VERSIONS = ("2012-10-17", "2008-10-17")
EVERYONE = "*"


class PolicyError(ValueError):
    """A policy document that cannot be evaluated; ``policy`` names it, ``statement`` the part."""

    def __init__(self, policy: str, statement: str | None, problem: str) -> None:
        where = f" statement {statement}" if statement is not None else ""
        super().__init__(f"{policy}{where}: {problem}")
        self.policy, self.statement, self.problem = policy, statement, problem


@dataclass(frozen=True, slots=True)
class Statement:
    policy: str  # the policy's label (ARN, or "inline policy P of user/U", "repository policy of R")
    index: int
    sid: str | None
    allow: bool
    bits: int
    wild_bits: int  # bits granted only through a wildcard or NotAction
    not_action: bool
    resources: tuple[str, ...] | None  # None: the resource the policy is attached to
    not_resource: bool
    principals: frozenset[str] | None  # resource policies: "*" or normalized ARNs / service names
    not_principal: bool
    conditional: bool
    unknown_actions: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.sid if self.sid else f"#{self.index}"

    @property
    def star_resource(self) -> bool:
        return not self.not_resource and self.resources is not None and "*" in self.resources


def _strings(value: Any, policy: str, label: str, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise PolicyError(policy, label, f"{key} must be a non-empty string or list of strings")
    return tuple(items)


def normalize_principal(value: str) -> str:
    """An account id means the account (its root ARN); ``*`` stays ``*``."""
    if value.isdigit() and len(value) == 12:
        return f"arn:aws:iam::{value}:root"
    return value


def _principals(value: Any, policy: str, label: str, key: str) -> frozenset[str]:
    if value == EVERYONE:
        return frozenset({EVERYONE})
    if not isinstance(value, dict) or not value:
        raise PolicyError(policy, label, f'{key} must be "*" or a map of principal types')
    out: set[str] = set()
    for kind, names in value.items():
        if kind not in ("AWS", "Service", "Federated", "CanonicalUser"):
            raise PolicyError(policy, label, f"{key}: unknown principal type {kind!r}")
        for name in _strings(names, policy, label, f"{key}.{kind}"):
            out.add(normalize_principal(name) if kind == "AWS" else name)
    return frozenset(out)


def _actions(values: tuple[str, ...], negate: bool) -> tuple[int, int, tuple[str, ...]]:
    exact = wild = 0
    unknown = []
    for pattern in values:
        bits, known = expand(pattern)
        if not known:
            unknown.append(pattern)
        if has_wildcard(pattern):
            wild |= bits
        else:
            exact |= bits
    if negate:
        bits = ALL & ~(exact | wild)
        return bits, bits, tuple(unknown)
    return exact | wild, wild & ~exact, tuple(unknown)


def _statement(raw: Any, index: int, policy: str, kind: Kind) -> Statement:
    label = f"#{index}"
    if not isinstance(raw, dict):
        raise PolicyError(policy, label, "a statement must be a JSON object")
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise PolicyError(policy, label, "Sid must be a string")
    label = sid or label
    extra = sorted(set(raw) - KEYS)
    if extra:
        raise PolicyError(policy, label, f"unknown element(s) {', '.join(extra)}")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(policy, label, f"Effect must be Allow or Deny, got {effect!r}")
    if ("Action" in raw) == ("NotAction" in raw):
        raise PolicyError(policy, label, "exactly one of Action and NotAction is required")
    not_action = "NotAction" in raw
    key = "NotAction" if not_action else "Action"
    bits, wild, unknown = _actions(_strings(raw[key], policy, label, key), not_action)
    if "Resource" in raw and "NotResource" in raw:
        raise PolicyError(policy, label, "Resource and NotResource cannot both be given")
    not_resource = "NotResource" in raw
    resources: tuple[str, ...] | None = None
    if "Resource" in raw or not_resource:
        rkey = "NotResource" if not_resource else "Resource"
        resources = _strings(raw[rkey], policy, label, rkey)
    has_principal = "Principal" in raw or "NotPrincipal" in raw
    principals: frozenset[str] | None = None
    not_principal = "NotPrincipal" in raw
    if kind == "identity":
        if has_principal:
            raise PolicyError(policy, label, "an identity policy cannot name a Principal")
        if resources is None:
            raise PolicyError(policy, label, "Resource or NotResource is required")
    else:
        if "Principal" in raw and not_principal:
            raise PolicyError(policy, label, "Principal and NotPrincipal cannot both be given")
        if not has_principal:
            raise PolicyError(policy, label, "a resource policy statement needs Principal or NotPrincipal")
        pkey = "NotPrincipal" if not_principal else "Principal"
        principals = _principals(raw[pkey], policy, label, pkey)
    condition = raw.get("Condition")
    if condition is not None and not isinstance(condition, dict):
        raise PolicyError(policy, label, "Condition must be a map")
    variables = any(VARIABLE.search(r) for r in resources or ())
    return Statement(
        policy=policy,
        index=index,
        sid=sid,
        allow=effect == "Allow",
        bits=bits,
        wild_bits=wild,
        not_action=not_action,
        resources=resources,
        not_resource=not_resource,
        principals=principals,
        not_principal=not_principal,
        conditional=bool(condition) or variables,
        unknown_actions=unknown,
    )


def parse(document: Any, policy: str, kind: Kind) -> list[Statement]:
    """Statements of one document (a JSON text or the map boto3 already decoded)."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as exc:
            raise PolicyError(policy, None, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(document, dict):
        raise PolicyError(policy, None, "a policy document must be a JSON object")
    version = document.get("Version")
    if version is not None and version not in VERSIONS:
        raise PolicyError(policy, None, f"unknown Version {version!r}")
    raw = document.get("Statement")
    if raw is None:
        raise PolicyError(policy, None, "no Statement")
    items = [raw] if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise PolicyError(policy, None, "Statement must be an object or a list")
    return [_statement(item, i, policy, kind) for i, item in enumerate(items)]
