"""The retention planner: ECR lifecycle semantics plus the platform's extensions, vectorized.

``plan(inventory, policies, now, in_use)`` returns one row per inventory row of the repositories
a policy governs, in inventory order (index kept), with the action and a human-readable reason.

How ECR evaluates (ecr-lifecycle.md §3), and how that is computed here without a per-image loop:

1. Rows are sorted once by (policy, repository, clock newest first, digest descending): every
   repository is a contiguous block, so "rank among the images a rule selects" is a cumsum.
2. Every rule is evaluated on every image at once: selection (tag status, tag lists matched on
   the exploded tags with Arrow's RE2 kernels, storage class) and its own verdict (count rank or
   age, strictly "more than N days").
3. The rule that governs an image is the first (lowest rulePriority) whose *selection* contains
   it; only that rule may act on it, even if it keeps it (it shields the image from later rules).
   Later rules still count it, because each rule's verdict was computed over its full selection.
4. Extensions then veto or soften actions: images in use, pulled recently, excluded (digest
   level); protected tags, tags in use, newest semver releases (tag level); and "untag instead
   of delete" when the rule matched only some of an image's tags.
5. The graph: a child of a kept index is kept (ECR rule 7); an untagged child whose indexes all
   go follows them (``children_follow_index``); referrers follow their subject (rule 8), and a
   referrer whose subject is not in the repository is expired.

The clock is ``pushed_at``, else ``created_at`` (the distribution registry records no push time),
replaced by ``last_activated_at`` for images restored from the archive when that column exists.
Images with no clock sort as newest and are never "older than N days" (never deleted on a guess).
Referrers never take part in rules: they only follow their subject.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..registries.base import INDEX_TYPES
from . import semver
from .in_use import index_references
from .policy import PolicySet, ResolvedPolicy, Rule, ecr_pattern_regex, matcher_regex

log = logging.getLogger("airflow.task")
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
REASON_CHUNK = 65_536


# --------------------------------------------------------------------------- column access


def _times(frame: pd.DataFrame, name: str) -> np.ndarray:
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


def _strings(frame: pd.DataFrame, name: str) -> pa.Array:
    if name not in frame.columns:
        return pa.nulls(len(frame), pa.large_string())
    arr = pa.array(frame[name], from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    if pa.types.is_null(arr.type):
        return pa.nulls(len(frame), pa.large_string())
    return arr.cast(pa.large_string())


def _lists(frame: pd.DataFrame, name: str) -> pa.Array:
    """A list<string> column as Arrow (Python lists, arrays or an ArrowDtype column)."""
    if name not in frame.columns:
        return pa.ListArray.from_arrays(
            pa.array(np.zeros(len(frame) + 1, np.int32)), pa.array([], pa.string())
        )
    s = frame[name]
    if isinstance(s.dtype, pd.ArrowDtype):
        arr = pa.array(s)
    else:
        arr = pa.array(s.to_numpy(dtype=object), type=pa.list_(pa.string()), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr


def _now_ns(now: datetime) -> int:
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return int(pd.Timestamp(now).tz_convert("UTC").value)


def _np(arr: Any) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False), dtype=bool)


def _short(arr: pa.Array) -> np.ndarray:
    """``sha256:`` + 12 hex digits of each digest, for reasons."""
    return np.asarray(pc.utf8_slice_codeunits(arr, 0, 19).to_numpy(zero_copy_only=False), dtype=object)


def _idx(positions: np.ndarray) -> pa.Array:
    return pa.array(positions, type=pa.int64())


# --------------------------------------------------------------------------- evaluation state


@dataclass
class _Ctx:
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
            self._cache[key] = _np(hit)
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
        return self.digest_full.take(_idx(self.src[positions]))

    def digest_in(self, values: pa.Array) -> np.ndarray:
        """Per evaluation position: is the row's digest one of ``values``."""
        return _np(pc.is_in(self.digest_full, values.cast(self.digest_full.type)))[self.src]

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
class _State:
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

    def acting(self) -> np.ndarray:
        return (self.action == EXPIRE) | (self.action == TRANSITION)


@dataclass
class _Vetoes:
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


# --------------------------------------------------------------------------- preparation


def _assign(inv: pd.DataFrame, policies: PolicySet) -> tuple[np.ndarray, np.ndarray, list, list[str]]:
    """Policy id per row (-1 none), repository group per row, resolved policies, group names."""
    registry = inv["registry"].fillna("") if "registry" in inv.columns else pd.Series("", index=inv.index)
    reg_codes, reg_names = pd.factorize(registry)
    repo_codes, repo_names = pd.factorize(inv["repository"])
    width = max(len(repo_names), 1)
    group, pairs = pd.factorize(reg_codes.astype(np.int64) * width + repo_codes)
    resolved: list[ResolvedPolicy] = []
    keys: dict[tuple, int] = {}
    group_pid = np.full(len(pairs), -1, dtype=np.int32)
    names: list[str] = []
    for g, code in enumerate(np.asarray(pairs)):
        registry_name, repo = str(reg_names[code // width]), str(repo_names[code % width])
        names.append(repo)
        policy = policies.resolve(repo, registry_name)
        if policy is not None:
            group_pid[g] = keys.setdefault(policy.key, len(resolved))
            if group_pid[g] == len(resolved):
                resolved.append(policy)
    return group_pid[group], group.astype(np.int64), resolved, names


def _context(
    inv: pd.DataFrame, pid_all: np.ndarray, group_all: np.ndarray, names: list[str], now: int
) -> _Ctx:
    """Evaluation arrays for the planned rows. Columns are read whole and indexed through
    ``src``: taking a subset of the inventory (``iloc``) would copy every column."""
    pushed = _times(inv, "pushed_at")
    created = _times(inv, "created_at")
    activated = _times(inv, "last_activated_at")
    clock = np.where(pushed != NAT, pushed, created)
    clock = np.where(activated != NAT, activated, clock)
    digest = _strings(inv, "digest")
    table = pa.table({"p": pid_all, "g": group_all, "c": np.where(clock != NAT, clock, NEWEST), "d": digest})
    order = pc.sort_indices(
        table, sort_keys=[("p", "ascending"), ("g", "ascending"), ("c", "descending"), ("d", "descending")]
    ).to_numpy()
    src = order[pid_all[order] >= 0]
    n = len(src)
    evalpos = np.full(len(inv), -1, dtype=np.int64)
    evalpos[src] = np.arange(n)
    last_pulled = _times(inv, "last_pulled_at")
    # sinceImagePulled: the last pull unless restored later (then the restore time), else the clock
    pulled = np.where(
        (last_pulled != NAT) & ((activated == NAT) | (last_pulled > activated)), last_pulled, clock
    )
    archived = np.zeros(len(inv), dtype=bool)
    if "storage_class" in inv.columns:
        archived |= inv["storage_class"].astype("str").str.lower().str.startswith("archive").to_numpy(bool)
    if "image_status" in inv.columns:
        archived |= inv["image_status"].astype("str").str.upper().eq("ARCHIVED").to_numpy(bool)
    subject = _strings(inv, "subject_digest")
    if "kind" in inv.columns:
        kinds = _strings(inv, "kind")
        kind = np.where(_np(pc.equal(kinds, "index")), 1, np.where(_np(pc.equal(kinds, "referrer")), 2, 0))
    else:
        media = _strings(inv, "media_type")
        kind = np.where(_np(pc.is_in(media, pa.array(sorted(INDEX_TYPES), media.type))), 1, 0)
        kind = np.where(_np(pc.is_valid(subject)), 2, kind)
    tags = _lists(inv, "tags")
    flat = pc.list_flatten(tags)
    flat_row = evalpos[np.asarray(pc.list_parent_indices(tags))] if len(flat) else np.zeros(0, np.int64)
    planned = flat_row >= 0
    if not planned.all():
        flat, flat_row = flat.filter(pa.array(planned)), flat_row[planned]
    tag_count = np.asarray(pc.fill_null(pc.list_value_length(tags), 0), dtype=np.int64)
    pid = pid_all[src]
    bounds = np.flatnonzero(np.diff(pid)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, n]
    return _Ctx(
        n=n,
        src=src,
        evalpos=evalpos,
        pid=pid,
        group=group_all[src],
        group_names=names,
        clock=clock[src],
        pulled=pulled[src],
        last_pulled=last_pulled[src],
        archived_at=_times(inv, "last_archived_at")[src],
        archived=archived[src],
        kind=kind[src],
        digest_full=digest,
        subject_full=subject,
        tag_count=tag_count[src],
        flat=flat,
        flat_row=flat_row,
        blocks={int(pid[a]): (int(a), int(b)) for a, b in zip(starts, ends, strict=True)},
        now=now,
    )


# --------------------------------------------------------------------------- rules


def _selection(ctx: _Ctx, rule: Rule, a: int, b: int) -> np.ndarray:
    sel = ctx.archived[a:b] if rule.storage_class == "archive" else ~ctx.archived[a:b]
    if rule.tag_status == "untagged":
        return sel & (ctx.tag_count[a:b] == 0)
    if rule.tag_status == "tagged":
        for entry in rule.tags:  # entries are AND-combined, each matched by any tag
            sel = sel & ctx.row_any(ctx.flat_match(rule.tag_list or "", entry))[a:b]
    return sel


def _verdict(ctx: _Ctx, rule: Rule, sel: np.ndarray, a: int, b: int) -> np.ndarray:
    """Which selected images the rule would act on, before priorities."""
    if rule.count_type == "imageCountMoreThan":
        cs = np.cumsum(sel, dtype=np.int64)
        starts = np.r_[0, np.flatnonzero(np.diff(ctx.group[a:b])) + 1]
        before = cs[starts] - sel[starts]
        rank = cs - np.repeat(before, np.diff(np.r_[starts, b - a]))  # 1 = newest selected
        return sel & (rank > rule.count_number)
    if rule.count_type == "sinceImagePushed":
        t = ctx.clock[a:b]
    elif rule.count_type == "sinceImagePulled":
        t = ctx.pulled[a:b]
    else:
        t = ctx.archived_at[a:b]
    return sel & (t != NAT) & (ctx.now - t > rule.count_number * DAY_NS)  # strictly more than N days


def _evaluate_rules(
    ctx: _Ctx, resolved: list[ResolvedPolicy], st: _State, excluded: np.ndarray
) -> tuple[list[Rule], list[int]]:
    """ECR semantics; returns the global rule table and each rule's policy id."""
    rules: list[Rule] = []
    rule_pid: list[int] = []
    eligible = (ctx.kind != 2) & ~excluded
    for p, (a, b) in ctx.blocks.items():
        gov, acts = st.gov[a:b], st.acts[a:b]
        verdicts = []
        for rule in resolved[p].rules:
            gid = len(rules)
            rules.append(rule)
            rule_pid.append(p)
            sel = _selection(ctx, rule, a, b) & eligible[a:b]
            verdict = _verdict(ctx, rule, sel, a, b)
            new = sel & (gov < 0)
            gov[new] = gid
            acts[new] = verdict[new]
            verdicts.append((gid, verdict))
        # shielded: a lower-priority rule would have acted, but a higher one claimed and kept it
        shield = np.full(b - a, -1, dtype=np.int32)
        for gid, verdict in verdicts:
            shield[verdict & (gov >= 0) & (gov < gid) & ~acts & (shield < 0)] = gid
        for gid in np.unique(shield[shield >= 0]):
            st.note(np.flatnonzero(shield == gid) + a, f"; shields it from rule {rules[gid].priority}")
    claimed = st.gov >= 0
    st.prefix[claimed] = P_RULES + 2 * st.gov[claimed] + st.acts[claimed]
    st.prio[claimed] = np.array([r.priority for r in rules], dtype=np.int64)[st.gov[claimed]]
    kinds = np.array([TRANSITION if r.action == "transition" else EXPIRE for r in rules], dtype=np.int8)
    acting = claimed & st.acts
    st.action[acting] = kinds[st.gov[acting]]
    st.prefix[excluded & (ctx.kind != 2)] = P_EXCLUDED
    st.prefix[ctx.kind == 2] = P_REFERRER
    return rules, rule_pid


# --------------------------------------------------------------------------- extensions


def _excluded(ctx: _Ctx, resolved: list[ResolvedPolicy]) -> np.ndarray:
    """Rows with a tag matching their policy's ``exclude_tags`` (rules never see them)."""
    hit = np.zeros(len(ctx.flat), dtype=bool)
    for entries, pids in ctx.by_setting(resolved, "exclude_tags").items():
        if entries:
            hit |= ctx.matched_any("glob", entries) & ctx.rows_of(pids)[ctx.flat_row]
    return ctx.row_any(hit)


def _semver_keep(ctx: _Ctx, resolved: list[ResolvedPolicy]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Flat tags of the releases ``keep_semver`` keeps, their (major, minor|-1) group, reason texts."""
    keep_flat = np.zeros(len(ctx.flat), dtype=bool)
    label = np.full((len(ctx.flat), 2), -1, dtype=np.int64)
    texts: dict[int, str] = {}
    settings = {k: v for k, v in ctx.by_setting(resolved, "keep_semver").items() if k is not None}
    if not settings or not len(ctx.flat):
        return keep_flat, label, texts
    valid, major, minor, patch, release = semver.parse_many(ctx.flat)
    for cfg, pids in settings.items():
        cand = valid & ctx.rows_of(pids)[ctx.flat_row] & (ctx.kind[ctx.flat_row] != 2)
        if not cfg.include_prerelease:
            cand &= release
        f = np.flatnonzero(cand)
        if not len(f):
            continue
        rows = ctx.flat_row[f]
        o = np.lexsort((release[f], patch[f], minor[f], major[f], rows))  # each row's best version last
        f, rows = f[o], rows[o]
        last = np.r_[rows[1:] != rows[:-1], True]
        bf, br = f[last], rows[last]
        mi = minor[bf] if cfg.per == "minor" else np.zeros(len(bf), dtype=np.int64)
        newest = np.where(ctx.clock[br] == NAT, NEWEST, ctx.clock[br])
        # per (repository, major[, minor]): highest version first, releases before pre-releases
        o = np.lexsort((-newest, ~release[bf], -patch[bf], -minor[bf], mi, major[bf], ctx.group[br]))
        key = np.stack([ctx.group[br], major[bf], mi])[:, o]
        starts = np.flatnonzero(np.r_[True, (key[:, 1:] != key[:, :-1]).any(axis=0)])
        pos = np.arange(len(o)) - np.repeat(starts, np.diff(np.r_[starts, len(o)]))
        kept = np.zeros(ctx.n, dtype=bool)
        kept[br[o][pos < cfg.keep]] = True
        sel = cand & kept[ctx.flat_row]
        keep_flat |= sel
        label[sel, 0] = major[sel]
        label[sel, 1] = minor[sel] if cfg.per == "minor" else -1
        for p in pids:
            texts[p] = f"; but among the newest {cfg.keep} releases of "
    return keep_flat, label, texts


def _in_use(
    ctx: _Ctx, resolved: list[ResolvedPolicy], in_use: set[str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row in use by digest, its reference, flat tag in use, its reference)."""
    rows, row_ref = np.zeros(ctx.n, dtype=bool), np.full(ctx.n, None, dtype=object)
    flat, flat_ref = np.zeros(len(ctx.flat), dtype=bool), np.full(len(ctx.flat), None, dtype=object)
    scope = ctx.rows_of([p for p in ctx.blocks if resolved[p].keep_in_use])
    if not in_use or not scope.any():
        return rows, row_ref, flat, flat_ref
    index = index_references(in_use)
    if index.digests:
        cand = np.flatnonzero(ctx.digest_in(pa.array(sorted(index.digests))) & scope)
        for r, d in zip(cand, ctx.digests_at(cand).to_pylist(), strict=True):
            for repo, raw in index.digests[d]:
                if not repo or repo == ctx.group_names[ctx.group[r]]:
                    rows[r], row_ref[r] = True, raw
                    break
    if index.tags and len(ctx.flat):
        cand = np.flatnonzero(_np(pc.is_in(ctx.flat, pa.array(sorted(index.tags), ctx.flat.type))))
        cand = cand[scope[ctx.flat_row[cand]]]
        for f, tag in zip(cand, ctx.flat.take(_idx(cand)).to_pylist(), strict=True):
            for repo, raw in index.tags[tag]:
                if repo == ctx.group_names[ctx.group[ctx.flat_row[f]]]:
                    flat[f], flat_ref[f] = True, raw
                    break
    return rows, row_ref, flat, flat_ref


def _vetoes(
    ctx: _Ctx, resolved: list[ResolvedPolicy], in_use: set[str] | None, excluded: np.ndarray
) -> _Vetoes:
    n, nf = ctx.n, len(ctx.flat)
    used, used_ref, used_tag, used_tag_ref = _in_use(ctx, resolved, in_use)
    digest_kind = np.zeros(n, dtype=np.int8)
    digest_kind[used] = D_IN_USE
    digest_kind[(digest_kind == 0) & excluded] = D_EXCLUDED
    days = np.zeros(n, dtype=np.int64)
    for value, pids in ctx.by_setting(resolved, "keep_pulled_within_days").items():
        if value:
            days[ctx.rows_of(pids)] = value
    recent = (days > 0) & (ctx.last_pulled != NAT) & (ctx.now - ctx.last_pulled <= days * DAY_NS)
    digest_kind[(digest_kind == 0) & recent] = D_PULLED
    tag_kind = np.zeros(nf, dtype=np.int8)
    tag_kind[used_tag] = T_IN_USE
    for entries, pids in ctx.by_setting(resolved, "protect_tags").items():
        if entries and nf:
            hit = ctx.matched_any("glob", entries) & ctx.rows_of(pids)[ctx.flat_row] & (tag_kind == 0)
            tag_kind[hit] = T_PROTECTED
    keep_flat, label, semver_text = _semver_keep(ctx, resolved)
    tag_kind[keep_flat & (tag_kind == 0)] = T_SEMVER
    row_tag_kind = np.zeros(n, dtype=np.int8)
    row_tag_first = np.full(n, -1, dtype=np.int64)
    hits = np.flatnonzero(tag_kind > 0)
    if len(hits):  # per row: its first tag of the most important kind
        h = hits[np.lexsort((hits, tag_kind[hits], ctx.flat_row[hits]))]
        first = h[np.r_[True, ctx.flat_row[h][1:] != ctx.flat_row[h][:-1]]]
        row_tag_kind[ctx.flat_row[first]] = tag_kind[first]
        row_tag_first[ctx.flat_row[first]] = first
    return _Vetoes(
        digest_kind, used_ref, tag_kind, used_tag_ref, row_tag_kind, row_tag_first, days, label, semver_text
    )


def _keep_vetoed(st: _State, v: _Vetoes, ctx: _Ctx, rows: np.ndarray) -> None:
    """Keep ``rows`` and say why: digest-level reasons first, then tag-level ones."""
    st.action[rows] = KEEP
    dk = v.digest_kind[rows]
    st.note(rows[dk == D_IN_USE], "; but in use as ", v.digest_detail[rows[dk == D_IN_USE]])
    st.note(rows[dk == D_EXCLUDED], "; but excluded by exclude_tags")
    pulled = rows[dk == D_PULLED]
    for days in np.unique(v.pulled_days[pulled]):
        st.note(pulled[v.pulled_days[pulled] == days], f"; but pulled within the last {days} days")
    rest = rows[dk == 0]
    tk = v.row_tag_kind[rest]
    r = rest[tk == T_IN_USE]
    st.note(r, "; but tag in use as ", v.tag_ref[v.row_tag_first[r]])
    r = rest[tk == T_PROTECTED]
    st.note(
        r, "; but protected tag ", np.array(ctx.flat.take(_idx(v.row_tag_first[r])).to_pylist(), dtype=object)
    )
    sv = rest[tk == T_SEMVER]
    for p in np.unique(ctx.pid[sv]):
        r = sv[ctx.pid[sv] == p]
        lab = v.semver_label[v.row_tag_first[r]]
        st.note(r, v.semver_text[int(p)], [f"{a}.{b}" if b >= 0 else str(a) for a, b in lab])


def _untag_or_veto(
    ctx: _Ctx, resolved: list[ResolvedPolicy], st: _State, v: _Vetoes, rules: list[Rule], rule_pid: list[int]
) -> None:
    """Vetoes on rule actions, and untag-instead-of-delete where the rule matched only some tags."""
    acting = np.flatnonzero(st.acting())
    if not len(acting):
        return
    untaggable = np.array(
        [
            r.tag_status == "tagged" and r.action == "expire" and resolved[p].untag_partial
            for r, p in zip(rules, rule_pid, strict=True)
        ],
        dtype=bool,
    )
    digest_veto = v.digest_kind[acting] > 0
    cand = acting[~digest_veto & untaggable[st.gov[acting]]]
    done = np.zeros(ctx.n, dtype=bool)
    if len(cand) and len(ctx.flat):
        in_cand = np.zeros(ctx.n, dtype=bool)
        in_cand[cand] = True
        flat_gid = np.where(in_cand[ctx.flat_row], st.gov[ctx.flat_row], -1)
        matched = np.zeros(len(ctx.flat), dtype=bool)  # tags the governing rule's selectors match
        for gid in np.unique(flat_gid[flat_gid >= 0]):
            m = flat_gid == gid
            matched[m] = ctx.matched_any(rules[gid].tag_list or "", rules[gid].tags)[m]
        removable = matched & (v.tag_kind == 0)
        n_remove = np.bincount(ctx.flat_row[removable], minlength=ctx.n)
        partial = in_cand & (n_remove > 0) & (n_remove < ctx.tag_count)
        rows = np.flatnonzero(partial)
        if len(rows):
            st.action[rows] = UNTAG
            # flat tags are grouped by inventory row, in each row's tag order
            st.untag_flat = np.flatnonzero(removable & partial[ctx.flat_row])
            owner = ctx.flat_row[st.untag_flat]
            starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
            lists = pa.ListArray.from_arrays(
                pa.array(np.r_[starts, len(owner)], pa.int32()), ctx.flat.take(_idx(st.untag_flat))
            )
            joined = pc.binary_join(lists, ", ").to_numpy(zero_copy_only=False)
            st.note(owner[starts], "; only these tags go, the image's other tags stay: ", joined)
            done[rows] = True
    vetoed = acting[(digest_veto | (v.row_tag_kind[acting] > 0)) & ~done[acting]]
    if len(vetoed):
        _keep_vetoed(st, v, ctx, vetoed)


# --------------------------------------------------------------------------- graph


def _lookup(ctx: _Ctx, rows: np.ndarray, wanted: pa.Array) -> np.ndarray:
    """Evaluation position of digest ``wanted[i]`` in the repository of ``rows[i]``, -1 if absent."""
    if not len(rows):
        return np.zeros(0, dtype=np.int64)
    cand = np.flatnonzero(ctx.digest_in(pc.unique(wanted)))
    if not len(cand):
        return np.full(len(rows), -1, dtype=np.int64)
    both = pa.concat_arrays([ctx.digests_at(cand), wanted.cast(ctx.digest_full.type)])
    codes = np.asarray(pc.dictionary_encode(both).indices, dtype=np.int64)
    width = int(codes.max()) + 1
    have = ctx.group[cand] * width + codes[: len(cand)]
    want = ctx.group[rows] * width + codes[len(cand) :]
    keys, first = np.unique(have, return_index=True)
    at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    return np.where(keys[at] == want, cand[first[at]], -1)


def _edges(ctx: _Ctx, inv: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """(child position, parent position or -1, parent digest) for every index -> child link;
    from ``parent_digests``, or from ``child_digests`` when the inventory has no parent links."""
    parents = _lists(inv, "parent_digests")
    flat = pc.list_flatten(parents)
    if len(flat):
        child = ctx.evalpos[np.asarray(pc.list_parent_indices(parents))]
        keep = child >= 0
        child, flat = child[keep], flat.filter(pa.array(keep))
        return child, _lookup(ctx, child, flat), flat
    kids = _lists(inv, "child_digests")
    flat = pc.list_flatten(kids)
    parent = ctx.evalpos[np.asarray(pc.list_parent_indices(kids))] if len(flat) else np.zeros(0, np.int64)
    keep = parent >= 0
    parent, flat = parent[keep], flat.filter(pa.array(keep)) if len(flat) else flat
    child = _lookup(ctx, parent, flat)
    found = child >= 0
    return child[found], parent[found], ctx.digests_at(parent[found])


def _children(ctx: _Ctx, inv: pd.DataFrame, resolved: list[ResolvedPolicy], st: _State, v: _Vetoes) -> None:
    """Children of kept indexes stay (ECR rule 7); orphaned untagged children follow their indexes."""
    child, parent, parent_digest = _edges(ctx, inv)
    if not len(child):
        return
    follow = np.zeros(ctx.n, dtype=bool)
    for value, pids in ctx.by_setting(resolved, "children_follow_index").items():
        if value:
            follow |= ctx.rows_of(pids)
    short = _short(parent_digest)
    has_parent = np.zeros(ctx.n, dtype=bool)
    has_parent[child] = True
    can_follow = has_parent & follow & (ctx.tag_count == 0) & (ctx.kind != 2) & ~v.protected()
    followed = np.zeros(ctx.n, dtype=bool)
    edges = np.arange(len(child))
    for _ in range(MAX_GRAPH_DEPTH):  # nested indexes settle in a few rounds
        p_action = np.where(parent >= 0, st.action[np.maximum(parent, 0)], KEEP)
        live = (p_action == KEEP) | (p_action == UNTAG)  # a parent missing from the inventory counts as live
        first_live = np.full(ctx.n, -1, dtype=np.int64)
        first_live[child[edges[live][::-1]]] = edges[live][::-1]  # the first live edge of each child
        changed = False
        blocked = np.flatnonzero((first_live >= 0) & st.acting())
        if len(blocked):
            st.action[blocked] = KEEP
            st.note(blocked, "; but it is a child of the kept index ", short[first_live[blocked]])
            followed[blocked] = False
            changed = True
        goes = np.flatnonzero(can_follow & (first_live < 0) & (st.action == KEEP) & ~followed)
        if len(goes):
            first = np.full(ctx.n, -1, dtype=np.int64)
            first[child[edges[::-1]]] = edges[::-1]
            transition = np.zeros(ctx.n, dtype=bool)
            transition[child[p_action == TRANSITION]] = True
            st.action[goes] = np.where(transition[goes], TRANSITION, EXPIRE)
            st.prio[goes] = st.prio[parent[first[goes]]]
            st.note(goes, "; goes with its index ", short[first[goes]])
            followed[goes] = True
            changed = True
        if not changed:
            break


def _referrers(ctx: _Ctx, st: _State, v: _Vetoes) -> None:
    """Referrers follow their subject; one whose subject is not in the repository is expired."""
    rows = np.flatnonzero((ctx.kind == 2) & _np(pc.is_valid(ctx.subject_full))[ctx.src])
    if not len(rows):
        return
    wanted = ctx.subject_full.take(_idx(ctx.src[rows]))
    subject = _lookup(ctx, rows, wanted)
    found = subject >= 0
    protected = v.protected(rows)
    vetoed = np.zeros(len(rows), dtype=bool)
    for _ in range(MAX_GRAPH_DEPTH):  # referrers of referrers settle in a few rounds
        s_action = np.where(found, st.action[np.maximum(subject, 0)], EXPIRE)
        new = np.where((s_action == EXPIRE) | (s_action == TRANSITION), s_action, KEEP).astype(np.int8)
        vetoed = protected & (new != KEEP)
        new[vetoed] = KEEP
        if np.array_equal(new, st.action[rows]):
            break
        st.action[rows] = new
    going = st.action[rows] != KEEP
    st.prio[rows] = np.where(found & going, st.prio[np.maximum(subject, 0)], -1)
    short = _short(wanted)
    st.note(rows[~found], " whose subject is not in the repository: ", short[~found])
    st.note(rows[found & going], " follows its subject ", short[found & going])
    staying = found & ~going & ~vetoed
    st.note(rows[staying], " stays with its subject ", short[staying])
    if vetoed.any():
        _keep_vetoed(st, v, ctx, rows[vetoed])


# --------------------------------------------------------------------------- result


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in RESULT_COLUMNS})
    frame["rule_priority"] = frame["rule_priority"].astype("Int64")
    frame["dry_run"] = frame["dry_run"].astype(bool)
    frame["untag_tags"] = frame["untag_tags"].astype(LIST_OF_STR)
    return frame


def _str(arr: pa.Array | pa.ChunkedArray) -> Any:
    """An Arrow string array as pandas' default string dtype (``str``), without copying."""
    return pd.array(arr.cast(pa.large_string()), dtype=pd.StringDtype("pyarrow", na_value=np.nan))


def _reasons(st: _State, at: np.ndarray, rules: list[Rule]) -> pa.ChunkedArray:
    """Reason strings: prefix (who decided) + middle (why not) + detail + " -> " + action.

    Rows without a per-row detail share one string per distinct combination; only rows with a
    detail are joined one by one, in chunks, so the transient memory stays small next to the
    result (about 100 bytes per image)."""
    prefixes = list(PREFIXES)
    for rule in rules:
        prefixes += [rule.explain(False), rule.explain(True)]
    mids = sorted(st.mids, key=st.mids.__getitem__)
    pre, mid, act = (
        st.prefix[at].astype(np.int64),
        st.mid[at].astype(np.int64),
        st.action[at].astype(np.int64),
    )
    detailed = st.has_detail[at]
    index = np.zeros(len(at), dtype=np.int64)
    codes, combos = pd.factorize(((pre * len(mids) + mid) * len(ACTIONS) + act)[~detailed])
    index[~detailed] = codes
    plain = []
    for k in np.asarray(combos).tolist():
        combo, a = divmod(k, len(ACTIONS))
        p, m = divmod(combo, len(mids))
        plain.append(f"{prefixes[p]}{mids[m]} -> {ACTIONS[a]}")
    shared = pa.array(plain, pa.large_string())
    prefix_arr, mid_arr = pa.array(prefixes, pa.large_string()), pa.array(mids, pa.large_string())
    action_arr = pa.array(ACTIONS, pa.large_string())
    chunks = []
    for start in range(0, len(at), REASON_CHUNK):
        stop = min(start + REASON_CHUNK, len(at))
        d = np.flatnonzero(detailed[start:stop]) + start
        idx = index[start:stop].copy()
        table = shared
        if len(d):
            joined = pc.binary_join_element_wise(
                prefix_arr.take(_idx(pre[d])),
                mid_arr.take(_idx(mid[d])),
                pa.array(st.detail[at[d]], type=pa.large_string()),
                pa.scalar(" -> ", pa.large_string()),
                action_arr.take(_idx(act[d])),
                pa.scalar("", pa.large_string()),
            )
            table = pa.concat_arrays([shared, joined])
            idx[d - start] = len(plain) + np.arange(len(d))
        chunks.append(table.take(_idx(idx)))
    return pa.chunked_array(chunks, type=pa.large_string())


def _result(
    inv: pd.DataFrame, ctx: _Ctx, st: _State, resolved: list[ResolvedPolicy], rules: list[Rule]
) -> pd.DataFrame:
    """The plan in inventory order (the evaluation order is undone here)."""
    rows = np.sort(ctx.src)  # planned inventory positions, in inventory order
    at = ctx.evalpos[rows]
    # untag_tags: an Arrow list column; flat tags are already in inventory (= output) order
    out_of = np.empty(ctx.n, dtype=np.int64)
    out_of[at] = np.arange(ctx.n)
    counts = np.bincount(out_of[ctx.flat_row[st.untag_flat]], minlength=ctx.n)
    untag = pa.ListArray.from_arrays(
        pa.array(np.r_[0, np.cumsum(counts)], pa.int32()),
        ctx.flat.take(_idx(st.untag_flat)).cast(pa.string()),
    )
    action = pa.array(ACTIONS, pa.large_string()).take(_idx(st.action[at].astype(np.int64)))
    prio = st.prio[at]
    pid = ctx.pid[at].astype(np.int64)
    whole = len(rows) == len(inv)
    columns: dict[str, Any] = {}
    for col in RESULT_COLUMNS[:8]:
        if col not in inv.columns:
            columns[col] = pd.array([None] * ctx.n, dtype=object)
        else:
            columns[col] = inv[col].array if whole else inv[col].array.take(rows)
    columns["action"] = _str(action)
    columns["rule_priority"] = pd.arrays.IntegerArray(np.where(prio >= 0, prio, 0), prio < 0)
    columns["reason"] = _str(_reasons(st, at, rules))
    columns["untag_tags"] = pd.array(untag, dtype=LIST_OF_STR)
    columns["dry_run"] = np.array([p.dry_run for p in resolved], dtype=bool)[pid]
    columns["policy"] = _str(pa.array([p.name for p in resolved], pa.large_string()).take(_idx(pid)))
    return pd.DataFrame(columns, index=inv.index if whole else inv.index[rows], copy=False)


# --------------------------------------------------------------------------- entry point


def plan(
    inventory: pd.DataFrame, policies: PolicySet, now: datetime, in_use: set[str] | None = None
) -> pd.DataFrame:
    """Decide keep / expire / transition / untag for every image a policy governs.

    ``inventory`` follows ``schema`` (one row per digest; at least repository, digest, tags);
    ``now`` makes age rules reproducible; ``in_use`` holds image references that must survive.
    The result keeps the inventory's row order and index (see RESULT_COLUMNS and
    docs/retention-policies.md); ``untag_tags`` is an Arrow list column whose elements read back
    as Python lists.
    """
    for col in ("repository", "digest", "tags"):
        if col not in inventory.columns:
            raise ValueError(f"inventory is missing column {col!r} (required by the retention planner)")
    if not len(inventory):
        return _empty()
    pid, group, resolved, names = _assign(inventory, policies)
    if not (pid >= 0).any():
        return _empty()
    unguarded = sorted({p.name for p in resolved if p.enabled and p.keep_in_use})
    if in_use is None and unguarded:
        log.warning("retention plan: no in-use references; keep_in_use protects nothing in %s", unguarded)
    ctx = _context(inventory, pid, group, names, _now_ns(now))
    st = _State(ctx.n)
    excluded = _excluded(ctx, resolved)
    rules, rule_pid = _evaluate_rules(ctx, resolved, st, excluded)
    vetoes = _vetoes(ctx, resolved, in_use, excluded)
    _untag_or_veto(ctx, resolved, st, vetoes, rules, rule_pid)
    _children(ctx, inventory, resolved, st, vetoes)
    _referrers(ctx, st, vetoes)
    return _result(inventory, ctx, st, resolved, rules)
