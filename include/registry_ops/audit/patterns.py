"""AWS's wildcard rules for action names and resource ARNs, compiled to regular expressions.

Actions (``ecr:Get*``): ``*`` any run of characters, ``?`` one character, and "the prefix and
the action name are case insensitive" (IAM User Guide, Action element).

Resource ARNs (IAM User Guide, Resource element): ``*`` and ``?`` work within the segments of
an ARN (the parts between colons); a ``*`` that is the last character of a segment may match
past the colon boundary; ``*`` within a segment also matches ``/``. Matching is case
sensitive. ``*`` alone matches every resource. Policy variables (``${aws:username}``) depend on
the request, so they match anything and the statement counts as conditional (``policy.py``).
"""

from __future__ import annotations

import re
from functools import lru_cache

VARIABLE = re.compile(r"\$\{[^}]*\}")


def _glob(text: str, star: str, one: str) -> str:
    out = []
    for ch in text:
        out.append(star if ch == "*" else one if ch == "?" else re.escape(ch))
    return "".join(out)


@lru_cache(maxsize=65536)
def action_regex(pattern: str) -> re.Pattern[str]:
    """``service:Action`` glob, case-insensitive, whole name."""
    return re.compile(_glob(pattern, ".*", "."), re.IGNORECASE | re.DOTALL)


@lru_cache(maxsize=65536)
def arn_regex(pattern: str) -> re.Pattern[str]:
    """A Resource glob as AWS reads it, case-sensitive, whole ARN."""
    pattern = VARIABLE.sub("*", pattern)
    if pattern == "*":
        return re.compile(".*", re.DOTALL)
    segments = pattern.split(":")
    parts = []
    for segment in segments:
        body = segment[:-1] if segment.endswith("*") else segment
        regex = _glob(body, "[^:]*", "[^:]")
        parts.append(regex + (".*" if segment.endswith("*") else ""))
    return re.compile(":".join(parts), re.DOTALL)


def arn_matches(pattern: str, arn: str) -> bool:
    return arn_regex(pattern).fullmatch(arn) is not None


def has_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern
