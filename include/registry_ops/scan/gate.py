"""The policy gate: per image, count CRITICAL and HIGH vulnerabilities against the limits.

- Counted per image location (registry, repository, digest) as **unique vulnerability ids**:
  a CVE found in three packages of one image is one vulnerability to fix, not three.
- Only CRITICAL and HIGH count (UNKNOWN, i.e. unrated, does not; see ``severity.py``).
- An allowlist entry suppresses its id in the repositories its globs match through its
  ``expires`` date inclusive. From the next day it no longer suppresses and is reported as
  expired (with the images it would have covered), so an exception cannot outlive its review.
- An image **violates** when unique CRITICAL > ``max_critical`` or HIGH > ``max_high``. It is
  **protected** when one of its tags (own or of an index listing it) matches
  ``protected_tags`` (default ``latest`` and semver releases). Violations are all reported,
  each with the image's newest tag; only protected ones can fail the gate.
- What fails the gate is decided with what was reported before and what ops acknowledged
  (``gate_state.classify``): a violation reported and acknowledged does not fail it again.
  ``evaluate`` alone treats every protected violation as new.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import date
from typing import Any

import pandas as pd

from .settings import AllowEntry, ScanConfig

COUNTED = ("CRITICAL", "HIGH")
FAILING = ("new", "unacknowledged")


def _applies(entry: AllowEntry, repository: str) -> bool:
    return any(fnmatch.fnmatchcase(repository, g) for g in entry.repositories)


def _entry_json(entry: AllowEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "reason": entry.reason,
        "expires": entry.expires.isoformat(),
        "repositories": entry.repositories,
    }


def evaluate(findings: pd.DataFrame, images: pd.DataFrame, policy: ScanConfig, today: date) -> dict[str, Any]:
    """The gate result (JSON-safe). ``images``: ``plan.candidates`` rows (tags, newest_tag)."""
    protected_res = [re.compile(p) for p in policy.protected_tags]
    active = [e for e in policy.allowlist if e.expires >= today]
    expired = [e for e in policy.allowlist if e.expires < today]
    counted = findings[findings["severity"].isin(COUNTED)]
    by_image: dict[tuple[str, str, str], dict[str, set[str]]] = {}
    for row in counted[["registry", "repository", "digest", "vulnerability_id", "severity"]].itertuples(
        index=False
    ):
        sev = by_image.setdefault((row.registry, row.repository, row.digest), {s: set() for s in COUNTED})
        sev[row.severity].add(row.vulnerability_id)
    expired_hits: dict[str, set[str]] = {e.id: set() for e in expired}
    violations = []
    for img in images.itertuples(index=False):
        ids = by_image.get((img.registry, img.repository, img.digest))
        if not ids:
            continue
        suppressed: list[dict[str, str]] = []
        left = {s: set(v) for s, v in ids.items()}
        for sev, vids in ids.items():
            for vid in sorted(vids):
                entry = next((e for e in active if e.id == vid and _applies(e, img.repository)), None)
                if entry:
                    left[sev].discard(vid)
                    suppressed.append(
                        {"id": vid, "reason": entry.reason, "expires": entry.expires.isoformat()}
                    )
                for e in expired:
                    if e.id == vid and _applies(e, img.repository):
                        expired_hits[e.id].add(f"{img.registry}/{img.repository}@{img.digest}")
        critical, high = len(left["CRITICAL"]), len(left["HIGH"])
        if critical <= policy.max_critical and high <= policy.max_high:
            continue
        tags = list(img.image_tags)
        violations.append(
            {
                "registry": img.registry,
                "repository": img.repository,
                "digest": img.digest,
                "newest_tag": img.newest_tag,
                "tags": tags,
                "platform": img.platform,
                "protected": any(r.search(t) for r in protected_res for t in tags),
                "critical": critical,
                "high": high,
                "critical_ids": sorted(left["CRITICAL"]),
                "high_ids": sorted(left["HIGH"]),
                "suppressed": suppressed,
            }
        )
    violations.sort(
        key=lambda v: (
            not v["protected"],
            -v["critical"],
            -v["high"],
            v["registry"],
            v["repository"],
            v["digest"],
        )
    )
    protected = [v for v in violations if v["protected"]]
    return {
        "policy": {
            "max_critical": policy.max_critical,
            "max_high": policy.max_high,
            "protected_tags": list(policy.protected_tags),
        },
        "today": today.isoformat(),
        "images_checked": len(images),
        "violations": violations,
        "protected_violations": len(protected),
        "allowlist_active": [_entry_json(e) for e in active],
        "allowlist_expired": [{**_entry_json(e), "would_cover": sorted(expired_hits[e.id])} for e in expired],
        "passed": not protected,
    }


def top_ids(v: dict[str, Any], n: int = 4) -> str:
    """The first ids of a violation, criticals first: "CVE-a, CVE-b (+3 more)"."""
    ids = list(v["critical_ids"]) + list(v["high_ids"])
    more = f" (+{len(ids) - n} more)" if len(ids) > n else ""
    return ", ".join(ids[:n]) + more


def _image(v: dict[str, Any]) -> str:
    return f"{v['registry']}/{v['repository']}"


def table(result: dict[str, Any], limit: int = 15) -> str:
    """The top violating images as a fixed-width table for the task log (failing ones first)."""
    head = ("status", "image", "newest tag", "digest", "critical", "high", "top CVE ids")
    rows = [
        (
            v.get("status", "protected" if v["protected"] else "unprotected"),
            _image(v),
            v["newest_tag"] or "-",
            v["digest"][:19],
            str(v["critical"]),
            str(v["high"]),
            top_ids(v),
        )
        for v in result["violations"][:limit]
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in [head, *rows]
    ]
    more = len(result["violations"]) - limit
    if more > 0:
        lines.append(f"... and {more} more violation(s) in gate.json")
    return "\n".join(lines)


def summary(result: dict[str, Any]) -> str:
    """One line for logs and the task's failure message, naming the top failing images."""
    policy = result["policy"]
    protected = result["protected_violations"]
    counts = (
        f"{result.get('new', protected)} new, {result.get('unacknowledged', 0)} unacknowledged, "
        f"{result.get('acknowledged', 0)} acknowledged"
    )
    text = (
        f"gate {'passed' if result['passed'] else 'failed'}: {protected} protected image(s) violate the "
        f"policy (max {policy['max_critical']} critical, {policy['max_high']} high per image): {counts}; "
        f"{len(result['violations']) - protected} unprotected violation(s), "
        f"{len(result['allowlist_expired'])} expired allowlist entr(y/ies)"
    )
    failing = [v for v in result["violations"] if v["protected"] and v.get("status", "new") in FAILING]
    if failing:
        shown = "; ".join(f"{_image(v)}:{v['newest_tag']} {top_ids(v, 2)}" for v in failing[:3])
        text += f"; failing: {shown}" + (f"; and {len(failing) - 3} more" if len(failing) > 3 else "")
    return text
