"""Planner extensions that veto or soften a rule's action: images in use, pulled recently,
excluded; protected tags, tags in use, newest semver releases; untag instead of delete."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import semver
from .in_use import index_references
from .planner_state import (
    D_EXCLUDED,
    D_IN_USE,
    D_PULLED,
    DAY_NS,
    KEEP,
    NAT,
    NEWEST,
    T_IN_USE,
    T_PROTECTED,
    T_SEMVER,
    UNTAG,
    Ctx,
    State,
    Vetoes,
    as_bool,
    take_index,
)
from .policy import ResolvedPolicy, Rule

# --------------------------------------------------------------------------- extensions


def excluded_rows(ctx: Ctx, resolved: list[ResolvedPolicy]) -> np.ndarray:
    """Rows with a tag matching their policy's ``exclude_tags`` (rules never see them)."""
    hit = np.zeros(len(ctx.flat), dtype=bool)
    for entries, pids in ctx.by_setting(resolved, "exclude_tags").items():
        if entries:
            hit |= ctx.matched_any("glob", entries) & ctx.rows_of(pids)[ctx.flat_row]
    return ctx.row_any(hit)


def semver_keep(ctx: Ctx, resolved: list[ResolvedPolicy]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
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


def in_use_marks(
    ctx: Ctx, resolved: list[ResolvedPolicy], in_use: set[str] | None
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
        cand = np.flatnonzero(as_bool(pc.is_in(ctx.flat, pa.array(sorted(index.tags), ctx.flat.type))))
        cand = cand[scope[ctx.flat_row[cand]]]
        # a tag reference names its repository: match (repository, tag) pairs, not tags alone
        # (a common tag such as "main" is in thousands of repositories)
        refs: dict[str, str] = {}
        for tag, entries in index.tags.items():
            for repo, raw in entries:
                refs.setdefault(f"{repo}\0{tag}", raw)
        names = pa.array(ctx.group_names, pa.large_string())
        keys = pc.binary_join_element_wise(
            names.take(take_index(ctx.group[ctx.flat_row[cand]])),
            ctx.flat.take(take_index(cand)).cast(pa.large_string()),
            pa.scalar("\0", pa.large_string()),
        )
        at = np.asarray(pc.fill_null(pc.index_in(keys, pa.array(list(refs), pa.large_string())), -1))
        hit = at >= 0
        flat[cand[hit]] = True
        flat_ref[cand[hit]] = np.array(list(refs.values()), dtype=object)[at[hit]]
    return rows, row_ref, flat, flat_ref


def compute_vetoes(
    ctx: Ctx, resolved: list[ResolvedPolicy], in_use: set[str] | None, excluded: np.ndarray
) -> Vetoes:
    n, nf = ctx.n, len(ctx.flat)
    used, used_ref, used_tag, used_tag_ref = in_use_marks(ctx, resolved, in_use)
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
    keep_flat, label, semver_text = semver_keep(ctx, resolved)
    tag_kind[keep_flat & (tag_kind == 0)] = T_SEMVER
    row_tag_kind = np.zeros(n, dtype=np.int8)
    row_tag_first = np.full(n, -1, dtype=np.int64)
    hits = np.flatnonzero(tag_kind > 0)
    if len(hits):  # per row: its first tag of the most important kind
        h = hits[np.lexsort((hits, tag_kind[hits], ctx.flat_row[hits]))]
        first = h[np.r_[True, ctx.flat_row[h][1:] != ctx.flat_row[h][:-1]]]
        row_tag_kind[ctx.flat_row[first]] = tag_kind[first]
        row_tag_first[ctx.flat_row[first]] = first
    return Vetoes(
        digest_kind, used_ref, tag_kind, used_tag_ref, row_tag_kind, row_tag_first, days, label, semver_text
    )


def keep_vetoed(st: State, v: Vetoes, ctx: Ctx, rows: np.ndarray) -> None:
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
        r,
        "; but protected tag ",
        ctx.flat.take(take_index(v.row_tag_first[r])).to_numpy(zero_copy_only=False),
    )
    sv = rest[tk == T_SEMVER]
    for p in np.unique(ctx.pid[sv]):
        r = sv[ctx.pid[sv] == p]
        lab = v.semver_label[v.row_tag_first[r]]
        st.note(r, v.semver_text[int(p)], semver_labels(lab[:, 0], lab[:, 1]))


def semver_labels(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """``"major.minor"`` (or ``"major"`` where minor is -1) per row, built by Arrow not a loop."""
    text = pc.cast(pa.array(major), pa.string())
    dotted = pc.binary_join_element_wise(text, pc.cast(pa.array(minor), pa.string()), ".")
    return pc.if_else(pa.array(minor >= 0), dotted, text).to_numpy(zero_copy_only=False)


def untag_or_veto(
    ctx: Ctx, resolved: list[ResolvedPolicy], st: State, v: Vetoes, rules: list[Rule], rule_pid: list[int]
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
                pa.array(np.r_[starts, len(owner)], pa.int32()), ctx.flat.take(take_index(st.untag_flat))
            )
            joined = pc.binary_join(lists, ", ").to_numpy(zero_copy_only=False)
            st.note(owner[starts], "; only these tags go, the image's other tags stay: ", joined)
            done[rows] = True
    vetoed = acting[(digest_veto | (v.row_tag_kind[acting] > 0)) & ~done[acting]]
    if len(vetoed):
        keep_vetoed(st, v, ctx, vetoed)
