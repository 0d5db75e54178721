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

import itertools
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..registries.base import INDEX_TYPES
from .planner_graph import (
    children_follow,
    referrers_follow,
)
from .planner_protect import (
    compute_vetoes,
    excluded_rows,
    untag_or_veto,
)
from .planner_state import (
    ACTIONS,
    DAY_NS,
    EXPIRE,
    LIST_OF_STR,
    NAT,
    NEWEST,
    P_EXCLUDED,
    P_REFERRER,
    P_RULES,
    PREFIXES,
    RESULT_COLUMNS,
    TRANSITION,
    Ctx,
    State,
    as_bool,
    col_lists,
    col_strings,
    col_times,
    log,
    now_ns,
    take_index,
    take_pieces,
)
from .policy import PolicySet, ResolvedPolicy, Rule

__all__ = ["RESULT_COLUMNS", "plan"]


# --------------------------------------------------------------------------- preparation


def _codes(inv: pd.DataFrame, name: str) -> tuple[np.ndarray, list[str]]:
    """Dictionary codes (int32, first appearance first) and values ("" for null) of a string
    column: Arrow's encoder grows with the distinct values, not the rows (no copy, no 1M table)."""
    encoded = pc.dictionary_encode(col_strings(inv, name), null_encoding="encode")
    return np.asarray(encoded.indices), ["" if v is None else v for v in encoded.dictionary.to_pylist()]


def _assign(inv: pd.DataFrame, policies: PolicySet) -> tuple[np.ndarray, np.ndarray, list, list[str]]:
    """Policy id per row (-1 none), repository group per row, resolved policies, group names."""
    reg_codes, reg_list = _codes(inv, "registry")
    repo_codes, repo_list = _codes(inv, "repository")
    width = max(len(repo_list), 1)
    pairs = pc.dictionary_encode(pa.array(reg_codes.astype(np.int64) * width + repo_codes))
    del reg_codes, repo_codes
    group = np.asarray(pairs.indices).astype(np.int64)
    resolved: list[ResolvedPolicy] = []
    keys: dict[tuple, int] = {}
    group_pid = np.full(len(pairs.dictionary), -1, dtype=np.int32)
    names: list[str] = []
    for g, code in enumerate(pairs.dictionary.to_pylist()):
        registry_name, repo = reg_list[code // width], repo_list[code % width]
        names.append(repo)
        policy = policies.resolve(repo, registry_name)
        if policy is not None:
            group_pid[g] = keys.setdefault(policy.key, len(resolved))
            if group_pid[g] == len(resolved):
                resolved.append(policy)
    return group_pid[group], group, resolved, names


def _context(
    inv: pd.DataFrame, pid_all: np.ndarray, group_all: np.ndarray, names: list[str], now: int
) -> Ctx:
    """Evaluation arrays for the planned rows. Columns are read whole and indexed through
    ``src``: taking a subset of the inventory (``iloc``) would copy every column."""
    pushed = col_times(inv, "pushed_at")
    created = col_times(inv, "created_at")
    activated = col_times(inv, "last_activated_at")
    clock = np.where(pushed != NAT, pushed, created)
    clock = np.where(activated != NAT, activated, clock)
    digest = col_strings(inv, "digest")
    table = pa.table({"p": pid_all, "g": group_all, "c": np.where(clock != NAT, clock, NEWEST), "d": digest})
    order = pc.sort_indices(
        table, sort_keys=[("p", "ascending"), ("g", "ascending"), ("c", "descending"), ("d", "descending")]
    ).to_numpy()
    src = order[pid_all[order] >= 0]
    n = len(src)
    evalpos = np.full(len(inv), -1, dtype=np.int64)
    evalpos[src] = np.arange(n)
    last_pulled = col_times(inv, "last_pulled_at")
    # sinceImagePulled: the last pull unless restored later (then the restore time), else the clock
    pulled = np.where(
        (last_pulled != NAT) & ((activated == NAT) | (last_pulled > activated)), last_pulled, clock
    )
    archived = np.zeros(len(inv), dtype=bool)
    if "storage_class" in inv.columns:
        archived |= inv["storage_class"].astype("str").str.lower().str.startswith("archive").to_numpy(bool)
    if "image_status" in inv.columns:
        archived |= inv["image_status"].astype("str").str.upper().eq("ARCHIVED").to_numpy(bool)
    subject = col_strings(inv, "subject_digest")
    if "kind" in inv.columns:
        kinds = col_strings(inv, "kind")
        kind = as_bool(pc.equal(kinds, "index")).astype(np.int8)  # 0 image, 1 index, 2 referrer
        kind[as_bool(pc.equal(kinds, "referrer"))] = 2
    else:
        media = col_strings(inv, "media_type")
        kind = as_bool(pc.is_in(media, pa.array(sorted(INDEX_TYPES), media.type))).astype(np.int8)
        kind[as_bool(pc.is_valid(subject))] = 2
    tags = col_lists(inv, "tags")
    flat = pc.list_flatten(tags)
    flat_row = evalpos[np.asarray(pc.list_parent_indices(tags))] if len(flat) else np.zeros(0, np.int64)
    planned = flat_row >= 0
    if not planned.all():
        flat, flat_row = flat.filter(pa.array(planned)), flat_row[planned]
    tag_count = np.asarray(pc.fill_null(pc.list_value_length(tags), 0), dtype=np.int64)
    pid = pid_all[src]
    bounds = np.flatnonzero(np.diff(pid)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, n]
    return Ctx(
        n=n,
        src=src,
        evalpos=evalpos,
        pid=pid,
        group=group_all[src],
        group_names=names,
        clock=clock[src],
        pulled=pulled[src],
        last_pulled=last_pulled[src],
        archived_at=col_times(inv, "last_archived_at")[src],
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


def _selection(ctx: Ctx, rule: Rule, a: int, b: int) -> np.ndarray:
    sel = ctx.archived[a:b] if rule.storage_class == "archive" else ~ctx.archived[a:b]
    if rule.tag_status == "untagged":
        return sel & (ctx.tag_count[a:b] == 0)
    if rule.tag_status == "tagged":
        for entry in rule.tags:  # entries are AND-combined, each matched by any tag
            sel = sel & ctx.row_any(ctx.flat_match(rule.tag_list or "", entry))[a:b]
    return sel


def _verdict(ctx: Ctx, rule: Rule, sel: np.ndarray, a: int, b: int) -> np.ndarray:
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
    ctx: Ctx, resolved: list[ResolvedPolicy], st: State, excluded: np.ndarray
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


def _reasons(st: State, at: np.ndarray, rules: list[Rule]) -> pa.ChunkedArray:
    """Reason strings: prefix (who decided) + middle (why not) + detail + " -> " + action.

    Rows without a per-row detail share one string per distinct combination; only rows with a
    detail are joined one by one. The strings are written once, by one ``take`` from the
    distinct strings followed by the joined ones (about 100 bytes per image)."""
    prefixes = list(PREFIXES)
    for rule in rules:
        prefixes += [rule.explain(False), rule.explain(True)]
    mids = sorted(st.mids, key=st.mids.__getitem__)
    pre, mid, act = st.prefix[at], st.mid[at], st.action[at]
    detailed = st.has_detail[at]

    def combo(rows: np.ndarray) -> np.ndarray:
        """(prefix, middle, action) of ``rows`` as one integer each."""
        return (pre[rows].astype(np.int64) * len(mids) + mid[rows]) * len(ACTIONS) + act[rows]

    def head_and_action(k: int) -> tuple[str, str]:
        rest, a = divmod(int(k), len(ACTIONS))
        p, m = divmod(rest, len(mids))
        return prefixes[p] + mids[m], ACTIONS[a]

    plain_rows = np.flatnonzero(~detailed)
    codes, uniq = pd.factorize(combo(plain_rows))
    plain = ["{} -> {}".format(*head_and_action(k)) for k in np.asarray(uniq).tolist()]
    index = np.empty(len(at), dtype=np.int64)
    index[plain_rows] = codes
    del plain_rows, codes
    parts = [pa.array(plain, pa.large_string())]
    done = len(plain)
    d = np.flatnonzero(detailed)
    if len(d):
        # detailed rows grouped by their (prefix, middle, action): each group is one scalar head,
        # its details and one scalar tail, so the bytes are written once before the final take
        keys = combo(d)
        order = np.argsort(keys, kind="stable")
        d, keys = d[order], keys[order]
        cuts = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1, len(d)]
        details = pa.array(st.detail[at[d]], type=pa.large_string())
        for lo, hi in itertools.pairwise(cuts.tolist()):
            head, action = head_and_action(keys[lo])
            parts.append(
                pc.binary_join_element_wise(
                    pa.scalar(head, pa.large_string()),
                    details.slice(lo, hi - lo),
                    pa.scalar(f" -> {action}", pa.large_string()),
                    pa.scalar("", pa.large_string()),
                )
            )
        index[d] = done + np.arange(len(d))
        del details, keys, order
    values = pa.concat_arrays(parts) if len(parts) > 1 else parts[0]
    del parts
    return take_pieces(values, index)


def _decisions(
    ctx: Ctx, st: State, resolved: list[ResolvedPolicy], rules: list[Rule]
) -> tuple[np.ndarray, dict[str, Any]]:
    """The planned-row mask (inventory order) and the columns the planner computed, in
    inventory order (the evaluation order is undone here)."""
    planned = ctx.evalpos >= 0  # planned inventory positions, a mask in inventory order
    at = ctx.evalpos[planned]
    # reasons first, while the other columns do not exist yet: their transient parts then
    # never coincide with the rest of the result (a lower peak)
    reason = _str(_reasons(st, at, rules))
    st.release_details()
    # untag_tags: an Arrow list column; flat tags are already in inventory (= output) order
    out_of = np.empty(ctx.n, dtype=np.int64)
    out_of[at] = np.arange(ctx.n)
    counts = np.bincount(out_of[ctx.flat_row[st.untag_flat]], minlength=ctx.n)
    del out_of
    untag = pa.ListArray.from_arrays(
        pa.array(np.r_[0, np.cumsum(counts)], pa.int32()),
        ctx.flat.take(take_index(st.untag_flat)).cast(pa.string()),
    )
    action = take_pieces(pa.array(ACTIONS, pa.large_string()), st.action[at])
    prio = st.prio[at]
    pid = ctx.pid[at].astype(np.int64)
    return planned, {
        "action": _str(action),
        "rule_priority": pd.arrays.IntegerArray(np.where(prio >= 0, prio, 0), prio < 0),
        "reason": reason,
        "untag_tags": pd.array(untag, dtype=LIST_OF_STR),
        "dry_run": np.array([p.dry_run for p in resolved], dtype=bool)[pid],
        "policy": _str(take_pieces(pa.array([p.name for p in resolved], pa.large_string()), pid)),
    }


MAX_SHARED_RUNS = 1024  # more runs of planned rows than this: copy (a chunk per run is too many)


def _planned_runs(planned: np.ndarray) -> list[tuple[int, int]] | None:
    """The planned rows as [start, end) runs, or None when there are too many to share."""
    edges = np.flatnonzero(np.diff(planned.view(np.int8), prepend=0, append=0))
    if len(edges) > 2 * MAX_SHARED_RUNS:
        return None
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _planned_column(values: Any, planned: np.ndarray, runs: list[tuple[int, int]] | None) -> Any:
    """``values[planned]``. An Arrow-backed column (strings, lists) is sliced per run of planned
    rows, sharing the inventory's buffers: the unplanned repositories are whole blocks, so a few
    slices instead of ~250 MB of copied strings at 1M images. Other columns: a boolean filter."""
    if runs is None or not hasattr(values, "__arrow_array__"):
        return values[planned]
    whole = values.__arrow_array__()
    chunks = [c for a, b in runs for c in whole.slice(a, b - a).chunks]
    return pd.array(pa.chunked_array(chunks, type=whole.type), dtype=values.dtype)


def _result(inv: pd.DataFrame, planned: np.ndarray, decided: dict[str, Any]) -> pd.DataFrame:
    """The plan: the planned rows' inventory columns (shared with the inventory where they can
    be, see ``_planned_column``), then the decisions. Called after the evaluation state is gone,
    so copied inventory columns never coincide with it."""
    n = int(np.count_nonzero(planned))
    whole = n == len(inv)
    runs = None if whole else _planned_runs(planned)
    columns: dict[str, Any] = {}
    for col in RESULT_COLUMNS[:8]:
        if col not in inv.columns:
            columns[col] = pd.array([None] * n, dtype=object)
        else:
            columns[col] = inv[col].array if whole else _planned_column(inv[col].array, planned, runs)
    columns.update(decided)
    return pd.DataFrame(columns, index=inv.index if whole else inv.index[planned], copy=False)


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
    ctx = _context(inventory, pid, group, names, now_ns(now))
    st = State(ctx.n)
    excluded = excluded_rows(ctx, resolved)
    rules, rule_pid = _evaluate_rules(ctx, resolved, st, excluded)
    vetoes = compute_vetoes(ctx, resolved, in_use, excluded)
    untag_or_veto(ctx, resolved, st, vetoes, rules, rule_pid)
    children_follow(ctx, inventory, resolved, st, vetoes)
    referrers_follow(ctx, st, vetoes)
    del vetoes, excluded
    ctx.release_evaluation()
    planned, decided = _decisions(ctx, st, resolved, rules)
    del ctx, st
    return _result(inventory, planned, decided)
