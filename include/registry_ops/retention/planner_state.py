"""Shared parts of the retention planner: constants, column access and the evaluation state
(arrays in evaluation order, decisions, vetoes). See ``planner.py`` for the semantics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .policy import ResolvedPolicy, ecr_pattern_regex, matcher_regex

log = logging.getLogger(__name__)
DAY_NS = 86_400 * 10**9
NAT = np.iinfo(np.int64).min
NEWEST = np.iinfo(np.int64).max
KEEP, EXPIRE, TRANSITION, UNTAG = 0, 1, 2, 3
ACTIONS = ("keep", "expire", "transition", "untag")
RESULT_COLUMNS = (
    "registry",
    "repository",
    "digest",
    "tags",
    "kind",
    "media_type",
    "size_bytes",
    "pushed_at",
    "action",
    "rule_priority",
    "reason",
    "untag_tags",
    "dry_run",
    "policy",
)
LIST_OF_STR = pd.ArrowDtype(pa.list_(pa.string()))
# Fixed reason prefixes; rule prefixes follow at P_RULES + 2 * rule id + acts.
P_NO_RULE, P_EXCLUDED, P_REFERRER, P_RULES = 0, 1, 2, 3
PREFIXES = ("no rule selects this image", "not seen by rules: excluded by exclude_tags", "referrer")
# Veto kinds. Digest level: in use, excluded, pulled recently. Tag level: in use, protected, semver.
D_IN_USE, D_EXCLUDED, D_PULLED = 1, 2, 3
T_IN_USE, T_PROTECTED, T_SEMVER = 1, 2, 3
MAX_GRAPH_DEPTH = 8


# --------------------------------------------------------------------------- column access


def col_times(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A time column as int64 ns since the epoch (UTC), NAT where missing."""
    if name not in frame.columns:
        return np.full(len(frame), NAT, dtype=np.int64)
    s = frame[name]
    if not isinstance(s.dtype, pd.DatetimeTZDtype):
        s = (
            pd.to_datetime(s, utc=True, format="ISO8601")
            if s.dtype == object
            else pd.to_datetime(s, utc=True)
        )
    return np.asarray(s.dt.tz_convert("UTC").dt.as_unit("ns").array.asi8, dtype=np.int64)


def col_strings(frame: pd.DataFrame, name: str) -> pa.Array:
    if name not in frame.columns:
        return pa.nulls(len(frame), pa.large_string())
    arr = pa.array(frame[name], from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    if pa.types.is_null(arr.type):
        return pa.nulls(len(frame), pa.large_string())
    return arr.cast(pa.large_string())


def col_lists(frame: pd.DataFrame, name: str) -> pa.Array:
    """A list<string> column as Arrow (Python lists, arrays or an ArrowDtype column)."""
    if name not in frame.columns:
        return pa.ListArray.from_arrays(
            pa.array(np.zeros(len(frame) + 1, np.int32)), pa.array([], pa.string())
        )
    s = frame[name]
    if isinstance(s.dtype, pd.ArrowDtype):  # the table's own buffers: no copy for one chunk
        arr = s.array.__arrow_array__()
    else:
        arr = pa.array(s.to_numpy(dtype=object), type=pa.list_(pa.string()), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    if not pa.types.is_list(arr.type) or not pa.types.is_string(arr.type.value_type):
        arr = arr.cast(pa.list_(pa.string()))  # large_list / large_string from other writers
    return arr


def now_ns(now: datetime) -> int:
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return int(pd.Timestamp(now).tz_convert("UTC").value)


def as_bool(arr: Any) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False), dtype=bool)


def short_digests(arr: pa.Array) -> np.ndarray:
    """``sha256:`` + 12 hex digits of each digest, for reasons."""
    return np.asarray(pc.utf8_slice_codeunits(arr, 0, 19).to_numpy(zero_copy_only=False), dtype=object)


def take_index(positions: np.ndarray) -> pa.Array:
    return pa.array(positions, type=pa.int64())


TAKE_STEP = 1 << 16


def take_pieces(values: pa.Array, positions: np.ndarray) -> pa.ChunkedArray:
    """``values.take(positions)`` for the result's large string columns, written in pieces from
    the system allocator: the evaluation arrays numpy freed are reused for them, where one
    ~100 MB Arrow buffer is fresh pages (time spent zeroing them, and a higher peak)."""
    pool = pa.system_memory_pool()
    pieces = [
        pc.take(values, take_index(positions[k : k + TAKE_STEP]), memory_pool=pool)
        for k in range(0, len(positions), TAKE_STEP)
    ]
    return pa.chunked_array(pieces, type=values.type)


DIGEST_BYTES = len("sha256:") + 64


def digest_keys(arr: pa.Array) -> np.ndarray | None:
    """A 64-bit key per digest (16 of its hex digits, read as bytes), or None unless every value
    is a non-null 71-byte string (a large_string array). Equal digests have equal keys; unequal
    ones may collide, so a key match is only a candidate (confirmed by comparing the text)."""
    n = len(arr)
    if arr.null_count or not n or not pa.types.is_large_string(arr.type):
        return None
    offsets = np.frombuffer(arr.buffers()[1], np.int64, count=n + 1, offset=8 * arr.offset)
    if offsets[-1] - offsets[0] != DIGEST_BYTES * n or (np.diff(offsets) != DIGEST_BYTES).any():
        return None
    raw = np.frombuffer(arr.buffers()[2], np.uint8, count=DIGEST_BYTES * n, offset=int(offsets[0]))
    words = np.ascontiguousarray(raw.reshape(n, DIGEST_BYTES)[:, 7:23]).view("<u8")
    return words[:, 0] * np.uint64(0x9E3779B97F4A7C15) ^ words[:, 1]


# --------------------------------------------------------------------------- evaluation state


@dataclass
class Ctx:
    """Arrays of the planned rows in evaluation order (policy, repository, newest first)."""

    n: int
    src: np.ndarray  # evaluation position -> inventory position (the inventory is never copied)
    evalpos: np.ndarray  # inventory position -> evaluation position, -1 when not planned
    pid: np.ndarray
    group: np.ndarray  # (registry, repository) code
    group_names: list[str]  # group code -> repository name
    clock: np.ndarray
    pulled: np.ndarray  # clock of sinceImagePulled (falls back to the push/restore clock)
    last_pulled: np.ndarray  # real pulls only
    archived_at: np.ndarray
    archived: np.ndarray  # storage class archive
    kind: np.ndarray  # 0 image, 1 index, 2 referrer
    digest_full: pa.Array  # inventory order
    subject_full: pa.Array  # inventory order
    tag_count: np.ndarray
    flat: pa.Array  # every tag of every planned row
    flat_row: np.ndarray  # evaluation position of each flat tag's row
    blocks: dict[int, tuple[int, int]]  # policy id -> [start, end)
    now: int
    _cache: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    _digest_keys: np.ndarray | None = None

    def release_evaluation(self) -> None:
        """Drop the arrays only rule evaluation and the graph read, before the result is built
        (the result needs n, src/evalpos, pid and the flat tags): a lower peak at 1M images."""
        empty = np.zeros(0, dtype=np.int64)
        self.group = self.clock = self.pulled = self.last_pulled = self.archived_at = empty
        self.archived, self.kind, self.tag_count = empty.astype(bool), empty, empty
        self._cache.clear()
        self._digest_keys = None

    def flat_match(self, kind: str, entry: str) -> np.ndarray:
        """Which flat tags an entry matches (cached: rules and policies share entries)."""
        key = (kind, entry)
        if key not in self._cache:
            if kind == "tagPrefixList":
                hit = pc.starts_with(self.flat, entry)
            elif kind == "tagPatternList":
                hit = pc.match_substring_regex(self.flat, ecr_pattern_regex(entry))
            elif kind == "tagRegexList":
                hit = pc.match_substring_regex(self.flat, entry)
            else:  # extension matcher: glob or re:
                hit = pc.match_substring_regex(self.flat, matcher_regex(entry))
            self._cache[key] = as_bool(hit)
        return self._cache[key]

    def matched_any(self, kind: str, entries: tuple[str, ...]) -> np.ndarray:
        hit = np.zeros(len(self.flat), dtype=bool)
        for entry in entries:
            hit |= self.flat_match(kind, entry)
        return hit

    def row_any(self, flat_hit: np.ndarray) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        out[self.flat_row[flat_hit]] = True
        return out

    def digests_at(self, positions: np.ndarray) -> pa.Array:
        return self.digest_full.take(take_index(self.src[positions]))

    def digest_in(self, values: pa.Array) -> np.ndarray:
        """Per evaluation position: is the row's digest one of ``values``.

        Exact: rows whose 64-bit digest key is among the values' keys are the candidates (an
        integer hash lookup, several times cheaper than hashing a million digests as text), and only they
        are compared as text. Without keys (digests not all 71 bytes), every row is compared."""
        values = values.cast(self.digest_full.type)
        if self._digest_keys is None:
            self._digest_keys = digest_keys(self.digest_full)
        sized = values.filter(pc.equal(pc.binary_length(values), DIGEST_BYTES))  # others match no key
        wanted = digest_keys(sized) if len(sized) else np.zeros(0, np.uint64)
        if self._digest_keys is None or wanted is None:
            return as_bool(pc.is_in(self.digest_full, values))[self.src]
        cand = np.flatnonzero(pd.Index(np.unique(wanted)).get_indexer(self._digest_keys) >= 0)
        hit = np.zeros(len(self.digest_full), dtype=bool)
        hit[cand[as_bool(pc.is_in(self.digest_full.take(take_index(cand)), values))]] = True
        return hit[self.src]

    def rows_of(self, pids: list[int]) -> np.ndarray:
        mask = np.zeros(self.n, dtype=bool)
        for p in pids:
            a, b = self.blocks[p]
            mask[a:b] = True
        return mask

    def by_setting(self, resolved: list[ResolvedPolicy], attr: str) -> dict[Any, list[int]]:
        """Policy ids grouped by one extension setting, so each distinct value is computed once."""
        out: dict[Any, list[int]] = {}
        for p in self.blocks:
            out.setdefault(getattr(resolved[p], attr), []).append(p)
        return out


@dataclass
class State:
    """Decisions in evaluation order; reasons are assembled from codes at the end."""

    n: int
    action: np.ndarray = field(init=False)
    gov: np.ndarray = field(init=False)  # global rule id governing the row, -1 none
    acts: np.ndarray = field(init=False)
    prio: np.ndarray = field(init=False)  # reported rulePriority, -1 = null
    prefix: np.ndarray = field(init=False)
    mid: np.ndarray = field(init=False)
    detail: np.ndarray = field(init=False)
    has_detail: np.ndarray = field(init=False)
    untag_flat: np.ndarray = field(init=False)  # flat positions of the tags to remove (untag rows)
    mids: dict[str, int] = field(default_factory=lambda: {"": 0})

    def __post_init__(self) -> None:
        self.action = np.zeros(self.n, dtype=np.int8)
        self.gov = np.full(self.n, -1, dtype=np.int32)
        self.acts = np.zeros(self.n, dtype=bool)
        self.prio = np.full(self.n, -1, dtype=np.int64)
        self.prefix = np.full(self.n, P_NO_RULE, dtype=np.int32)
        self.mid = np.zeros(self.n, dtype=np.int32)
        self.detail = np.full(self.n, None, dtype=object)
        self.has_detail = np.zeros(self.n, dtype=bool)
        self.untag_flat = np.zeros(0, dtype=np.int64)

    def note(self, rows: np.ndarray, mid: str, detail: Any = None) -> None:
        """Set the reason's middle part (and per-row detail) for ``rows``."""
        self.mid[rows] = self.mids.setdefault(mid, len(self.mids))
        self.detail[rows] = detail
        self.has_detail[rows] = detail is not None

    def release_details(self) -> None:
        """Drop the per-row detail strings once the reasons are built (they are ~40 MB at 1M)."""
        self.detail = np.full(0, None, dtype=object)
        self.has_detail = np.zeros(0, dtype=bool)

    def acting(self) -> np.ndarray:
        return (self.action == EXPIRE) | (self.action == TRANSITION)


@dataclass
class Vetoes:
    digest_kind: np.ndarray  # per row: 0 or D_*
    digest_detail: np.ndarray
    tag_kind: np.ndarray  # per flat tag: 0 or T_*
    tag_ref: np.ndarray  # per flat tag: the in-use reference, where T_IN_USE
    row_tag_kind: np.ndarray  # per row: the most important tag-level kind, 0 if none
    row_tag_first: np.ndarray  # per row: flat position of that tag, -1 if none
    pulled_days: np.ndarray
    semver_label: np.ndarray  # per flat tag: (major, minor or -1) of kept releases
    semver_text: dict[int, str]

    def protected(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        return (self.digest_kind[rows] > 0) | (self.row_tag_kind[rows] > 0)
