"""The planner's image graph: a child of a kept index is kept (ECR rule 7), untagged children
follow their indexes, referrers follow their subject (rule 8)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .planner_protect import keep_vetoed
from .planner_state import (
    EXPIRE,
    KEEP,
    MAX_GRAPH_DEPTH,
    TRANSITION,
    UNTAG,
    Ctx,
    State,
    Vetoes,
    as_bool,
    col_lists,
    short_digests,
    take_index,
)
from .policy import ResolvedPolicy

# --------------------------------------------------------------------------- graph


def lookup_rows(ctx: Ctx, rows: np.ndarray, wanted: pa.Array) -> np.ndarray:
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


def graph_edges(ctx: Ctx, inv: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """(child position, parent position or -1, parent digest) for every index -> child link;
    from ``parent_digests``, or from ``child_digests`` when the inventory has no parent links."""
    parents = col_lists(inv, "parent_digests")
    flat = pc.list_flatten(parents)
    if len(flat):
        child = ctx.evalpos[np.asarray(pc.list_parent_indices(parents))]
        keep = child >= 0
        child, flat = child[keep], flat.filter(pa.array(keep))
        return child, lookup_rows(ctx, child, flat), flat
    kids = col_lists(inv, "child_digests")
    flat = pc.list_flatten(kids)
    parent = ctx.evalpos[np.asarray(pc.list_parent_indices(kids))] if len(flat) else np.zeros(0, np.int64)
    keep = parent >= 0
    parent, flat = parent[keep], flat.filter(pa.array(keep)) if len(flat) else flat
    child = lookup_rows(ctx, parent, flat)
    found = child >= 0
    return child[found], parent[found], ctx.digests_at(parent[found])


def children_follow(
    ctx: Ctx, inv: pd.DataFrame, resolved: list[ResolvedPolicy], st: State, v: Vetoes
) -> None:
    """Children of kept indexes stay (ECR rule 7); orphaned untagged children follow their indexes."""
    child, parent, parent_digest = graph_edges(ctx, inv)
    if not len(child):
        return
    follow = np.zeros(ctx.n, dtype=bool)
    for value, pids in ctx.by_setting(resolved, "children_follow_index").items():
        if value:
            follow |= ctx.rows_of(pids)
    short = short_digests(parent_digest)
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


def referrers_follow(ctx: Ctx, st: State, v: Vetoes) -> None:
    """Referrers follow their subject; one whose subject is not in the repository is expired."""
    rows = np.flatnonzero((ctx.kind == 2) & as_bool(pc.is_valid(ctx.subject_full))[ctx.src])
    if not len(rows):
        return
    wanted = ctx.subject_full.take(take_index(ctx.src[rows]))
    subject = lookup_rows(ctx, rows, wanted)
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
    short = short_digests(wanted)
    st.note(rows[~found], " whose subject is not in the repository: ", short[~found])
    st.note(rows[found & going], " follows its subject ", short[found & going])
    staying = found & ~going & ~vetoed
    st.note(rows[staying], " stays with its subject ", short[staying])
    if vetoed.any():
        keep_vetoed(st, v, ctx, rows[vetoed])
