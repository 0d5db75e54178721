"""Tag conventions: what a tag is, which tag of an image is its newest, and the fleet's rules.

The seed's scheme, which build pipelines follow (``registry-ops tag`` applies it):

| kind | pattern | example |
|---|---|---|
| semver | ``MAJOR.MINOR.PATCH[-pre][+build]``, optional leading ``v`` | ``1.4.2``, ``v2.0.0-rc.1`` |
| commit | 7 to 40 lowercase hex characters | ``3f9c2ab`` |
| latest | exactly ``latest`` | ``latest`` |
| timestamp | ``YYYYMMDD-HHMMSS`` (a real UTC date and time) | ``20261127-134502`` |

Releases are semver tags without a pre-release part. Rules checked per repository: every tag
is one of the kinds above (cosign-style referrer tags are not image tags and are ignored);
``latest`` points at the digest of the newest release; every release also has a commit tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

SEMVER = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
TIMESTAMP = re.compile(r"^\d{8}-\d{6}$")
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"
LATEST = "latest"
KINDS = ("semver", "commit", "latest", "timestamp")


def is_timestamp(tag: str) -> bool:
    if not TIMESTAMP.match(tag):
        return False
    try:
        datetime.strptime(tag, TIMESTAMP_FORMAT)
    except ValueError:
        return False
    return True


def kind(tag: str) -> str:
    """``semver``, ``commit``, ``latest``, ``timestamp`` or ``other``."""
    if tag == LATEST:
        return "latest"
    if SEMVER.match(tag):
        return "semver"
    if is_timestamp(tag):
        return "timestamp"
    if COMMIT.match(tag):
        return "commit"
    return "other"


def semver_key(tag: str) -> tuple[Any, ...] | None:
    """A sort key with semver precedence (1.0.0-rc.1 < 1.0.0 < 1.0.1), or None if not semver."""
    m = SEMVER.match(tag)
    if not m:
        return None
    core = (int(m["major"]), int(m["minor"]), int(m["patch"]))
    if m["pre"] is None:
        return (*core, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in m["pre"].split("."))
    return (*core, 0, parts)


def is_release(tag: str) -> bool:
    m = SEMVER.match(tag)
    return bool(m) and m["pre"] is None


def newest_tag(tags: Iterable[str]) -> str | None:
    """The tag to name an image by: highest release, else highest pre-release, else newest
    timestamp, else ``latest``, else a commit, else any tag (sorted)."""
    tags = sorted(set(tags))
    if not tags:
        return None
    semvers = [t for t in tags if SEMVER.match(t)]
    releases = [t for t in semvers if is_release(t)]
    for group in (releases, semvers):
        if group:
            return max(group, key=lambda t: semver_key(t) or ())
    stamps = [t for t in tags if is_timestamp(t)]
    if stamps:
        return max(stamps)
    if LATEST in tags:
        return LATEST
    commits = [t for t in tags if COMMIT.match(t)]
    return (commits or tags)[0]


def check_repository(registry: str, repository: str, tags_by_digest: dict[str, list[str]]) -> list[dict]:
    """Rule violations of one repository (image and index manifests only, referrers excluded)."""
    issues: list[dict[str, Any]] = []

    def issue(rule: str, digest: str | None, tag: str | None, detail: str) -> None:
        issues.append(
            {
                "registry": registry,
                "repository": repository,
                "rule": rule,
                "digest": digest,
                "tag": tag,
                "detail": detail,
            }
        )

    releases: dict[str, str] = {}  # release tag -> digest
    latest_digest = None
    for digest, tags in sorted(tags_by_digest.items()):
        for tag in tags:
            k = kind(tag)
            if k == "other":
                issue("nonconforming_tag", digest, tag, "not semver, commit, latest or YYYYMMDD-HHMMSS")
            elif k == "latest":
                latest_digest = digest
            elif k == "semver" and is_release(tag):
                releases[tag] = digest
        has_commit = any(kind(t) == "commit" for t in tags)
        for tag in sorted(t for t in tags if is_release(t)):
            if not has_commit:
                issue("release_without_commit", digest, tag, "release has no commit tag on the same digest")
    if releases:
        newest = max(releases, key=lambda t: semver_key(t) or ())
        if latest_digest is None:
            issue("latest_missing", None, LATEST, f"no 'latest' tag; newest release is {newest}")
        elif releases[newest] != latest_digest:
            issue(
                "latest_not_newest_release",
                latest_digest,
                LATEST,
                f"'latest' is not on the newest release {newest} ({releases[newest]})",
            )
    return issues
