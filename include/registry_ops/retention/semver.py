"""Semantic-version tags (``v1.2.3``, ``1.2.3-rc.1``): scalar and vectorized parsing.

The ``keep_semver`` extension keeps the newest N releases per major or per minor, ordered by
version rather than push time (a hotfix 1.4.7 pushed after 2.0.0 is still the newest 1.4).
Numbers longer than 9 digits are not treated as versions. Pre-release ordering is simplified:
a release sorts above its pre-releases, and pre-releases of the same version are ordered by
push time, not by their identifiers.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEMVER = (
    r"^v?(?P<major>\d{1,9})\.(?P<minor>\d{1,9})\.(?P<patch>\d{1,9})"
    r"(?P<pre>-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)
_SEMVER = re.compile(SEMVER)


class Version(NamedTuple):
    major: int
    minor: int
    patch: int
    release: bool  # False for pre-releases

    def group(self, per: str) -> tuple[int, ...]:
        return (self.major,) if per == "major" else (self.major, self.minor)


def parse(tag: str) -> Version | None:
    m = _SEMVER.match(tag)
    if not m:
        return None
    return Version(int(m["major"]), int(m["minor"]), int(m["patch"]), m["pre"] is None)


def parse_many(tags: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(valid, major, minor, patch, release) arrays for an Arrow string array, via RE2."""
    n = len(tags)
    valid = np.zeros(n, dtype=bool)
    major = np.zeros(n, dtype=np.int64)
    minor = np.zeros(n, dtype=np.int64)
    patch = np.zeros(n, dtype=np.int64)
    release = np.zeros(n, dtype=bool)
    if n == 0:
        return valid, major, minor, patch, release
    hit = np.asarray(pc.fill_null(pc.match_substring_regex(tags, SEMVER), False))
    idx = np.flatnonzero(hit)
    if len(idx) == 0:
        return valid, major, minor, patch, release
    parts = pc.extract_regex(pc.take(tags, pa.array(idx)), SEMVER)
    valid[idx] = True
    major[idx] = np.asarray(pc.cast(parts.field("major"), pa.int64()))
    minor[idx] = np.asarray(pc.cast(parts.field("minor"), pa.int64()))
    patch[idx] = np.asarray(pc.cast(parts.field("patch"), pa.int64()))
    release[idx] = np.asarray(pc.equal(pc.utf8_length(parts.field("pre")), 0))
    return valid, major, minor, patch, release
