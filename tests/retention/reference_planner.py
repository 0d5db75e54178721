"""The reference retention planner: a per-image loop with the same semantics as the vectorized
``include.registry_ops.retention.planner``, written as plainly as possible.

The differential tests (``test_planner_differential.py``, ``test_planner_graph_rules.py``)
check the real planner against it, and ``bench/retention_plan.py`` times it as the baseline.
It lives with the tests: it is a test oracle, never shipped.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from include.registry_ops.retention import semver
from include.registry_ops.retention.in_use import index_references
from include.registry_ops.retention.policy import PolicySet, ResolvedPolicy, Rule, matcher_regex, tag_matches

DAY_NS = 86_400 * 10**9
NEWEST = np.iinfo(np.int64).max


def _ns(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(pd.Timestamp(value).value)


def _glob_hit(entries: tuple[str, ...], tag: str) -> bool:
    return any(re.search(matcher_regex(e), tag) for e in entries)


def loop_plan(
    inventory: pd.DataFrame, policies: PolicySet, now: datetime, in_use: set[str] | None = None
) -> dict[tuple[str, str, str], tuple[str, int | None, list[str]]]:
    """(registry, repository, digest) -> (action, rule priority, untag tags), one image at a time."""
    now_ns = int(pd.Timestamp(now).value)
    refs = index_references(in_use or ())
    by_repo: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for rec in inventory.to_dict("records"):
        by_repo[(rec.get("registry") or "", rec["repository"])].append(rec)
    out: dict[tuple[str, str, str], tuple[str, int | None, list[str]]] = {}
    for (registry, repo), images in by_repo.items():
        policy = policies.resolve(repo, registry)
        if policy is not None:
            for digest, decision in _loop_repository(policy, repo, images, now_ns, refs).items():
                out[(registry, repo, digest)] = decision
    return out


def _loop_repository(
    pol: ResolvedPolicy, repo: str, images: list[dict[str, Any]], now: int, refs: Any
) -> dict[str, tuple[str, int | None, list[str]]]:
    info: dict[str, dict[str, Any]] = {}
    for im in images:
        pushed, created = _ns(im.get("pushed_at")), _ns(im.get("created_at"))
        activated = _ns(im.get("last_activated_at"))
        clock = activated if activated is not None else (pushed if pushed is not None else created)
        last_pull = _ns(im.get("last_pulled_at"))
        pulled = (
            last_pull if last_pull is not None and (activated is None or last_pull > activated) else clock
        )
        storage = str(im.get("storage_class") or "").lower()
        status = str(im.get("image_status") or "").upper()
        tags = list(im.get("tags") or [])
        kind = im.get("kind") or "image"
        info[im["digest"]] = {
            "tags": tags,
            "kind": kind,
            "clock": clock,
            "pulled": pulled,
            "last_pull": last_pull,
            "archived_at": _ns(im.get("last_archived_at")),
            "archived": storage.startswith("archive") or status == "ARCHIVED",
            "parents": list(im.get("parent_digests") or []),
            "subject": im.get("subject_digest") if isinstance(im.get("subject_digest"), str) else None,
            "excluded": any(_glob_hit(pol.exclude_tags, t) for t in tags),
        }
    newest_first = sorted(
        info, key=lambda d: (info[d]["clock"] if info[d]["clock"] is not None else NEWEST, d), reverse=True
    )
    gov: dict[str, Rule] = {}
    acts: dict[str, bool] = {}
    for rule in pol.rules:
        selected = []
        for d in newest_first:
            im = info[d]
            if (
                im["kind"] == "referrer"
                or im["excluded"]
                or im["archived"] != (rule.storage_class == "archive")
            ):
                continue
            if rule.tag_status == "untagged" and im["tags"]:
                continue
            if rule.tag_status == "tagged" and not all(
                any(tag_matches(rule.tag_list or "", e, t) for t in im["tags"]) for e in rule.tags
            ):
                continue
            selected.append(d)
        for i, d in enumerate(selected):
            if rule.count_type == "imageCountMoreThan":
                verdict = i >= rule.count_number
            else:
                t = {"sinceImagePushed": "clock", "sinceImagePulled": "pulled"}.get(
                    rule.count_type, "archived_at"
                )
                when = info[d][t]
                verdict = when is not None and now - when > rule.count_number * DAY_NS
            if d not in gov:
                gov[d], acts[d] = rule, verdict
    action = {d: "keep" for d in info}
    prio: dict[str, int | None] = {d: None for d in info}
    for d, rule in gov.items():
        prio[d] = rule.priority
        if acts[d]:
            action[d] = "transition" if rule.action == "transition" else "expire"

    # vetoes: digest level, then tag level
    def digest_veto(d: str) -> bool:
        im = info[d]
        if pol.keep_in_use and any(not r or r == repo for r, _ in refs.digests.get(d, [])):
            return True
        if im["excluded"]:
            return True
        days = pol.keep_pulled_within_days
        return bool(days and im["last_pull"] is not None and now - im["last_pull"] <= days * DAY_NS)

    semver_kept = _loop_semver(pol, info) if pol.keep_semver else set()

    def tag_protected(d: str, tag: str) -> bool:
        if pol.keep_in_use and any(r == repo for r, _ in refs.tags.get(tag, [])):
            return True
        if _glob_hit(pol.protect_tags, tag):
            return True
        return (
            d in semver_kept
            and semver.parse(tag) is not None
            and (pol.keep_semver.include_prerelease or semver.parse(tag).release)
        )

    untag: dict[str, list[str]] = {}
    for d, rule in gov.items():
        if action[d] == "keep":
            continue
        if digest_veto(d):
            action[d] = "keep"
            continue
        tags = info[d]["tags"]
        if rule.tag_status == "tagged" and rule.action == "expire" and pol.untag_partial:
            matched = [t for t in tags if any(tag_matches(rule.tag_list or "", e, t) for e in rule.tags)]
            removable = [t for t in matched if not tag_protected(d, t)]
            if removable and len(removable) < len(tags):
                action[d], untag[d] = "untag", removable
                continue
        if any(tag_protected(d, t) for t in tags):
            action[d] = "keep"

    def protected(d: str) -> bool:
        return digest_veto(d) or any(tag_protected(d, t) for t in info[d]["tags"])

    # indexes and their children
    followed: set[str] = set()
    for _ in range(8):
        changed = False
        for d, im in info.items():
            if not im["parents"]:
                continue
            live = [p for p in im["parents"] if p not in info or action[p] in ("keep", "untag")]
            if live and action[d] in ("expire", "transition"):
                action[d] = "keep"
                followed.discard(d)
                changed = True
            elif (
                not live
                and pol.children_follow_index
                and not im["tags"]
                and im["kind"] != "referrer"
                and action[d] == "keep"
                and not protected(d)
                and d not in followed
            ):
                gone = [p for p in im["parents"]]
                action[d] = "transition" if any(action[p] == "transition" for p in gone) else "expire"
                prio[d] = prio[gone[0]]
                followed.add(d)
                changed = True
        if not changed:
            break
    # referrers follow their subject
    refs_rows = [d for d, im in info.items() if im["kind"] == "referrer" and im["subject"]]
    for _ in range(8):
        changed = False
        for d in refs_rows:
            subject = info[d]["subject"]
            new = "expire" if subject not in info else action[subject]
            new = new if new in ("expire", "transition") else "keep"
            if new != "keep" and protected(d):
                new = "keep"
            if new != action[d]:
                action[d], changed = new, True
        if not changed:
            break
    for d in refs_rows:
        subject = info[d]["subject"]
        prio[d] = prio[subject] if subject in info and action[d] != "keep" else None
    return {d: (action[d], prio[d], untag.get(d, [])) for d in info}


def _loop_semver(pol: ResolvedPolicy, info: dict[str, dict[str, Any]]) -> set[str]:
    cfg = pol.keep_semver
    groups: dict[tuple[int, ...], list[tuple[Any, str]]] = defaultdict(list)
    for d, im in info.items():
        if im["kind"] == "referrer":
            continue
        versions = [v for v in map(semver.parse, im["tags"]) if v and (v.release or cfg.include_prerelease)]
        if versions:
            best = max(versions)
            groups[best.group(cfg.per)].append((best, d))
    kept: set[str] = set()
    for members in groups.values():
        members.sort(
            key=lambda vd: (
                vd[0].major,
                vd[0].minor,
                vd[0].patch,
                vd[0].release,
                info[vd[1]]["clock"] if info[vd[1]]["clock"] is not None else NEWEST,
            ),
            reverse=True,
        )
        kept.update(d for _, d in members[: cfg.keep])
    return kept


def decisions(result: pd.DataFrame) -> dict[tuple[str, str, str], tuple[str, int | None, list[str]]]:
    """The vectorized planner's result in :func:`loop_plan`'s shape, for comparing the two."""
    return {
        (r.registry, r.repository, r.digest): (
            r.action,
            None if pd.isna(r.rule_priority) else int(r.rule_priority),
            list(r.untag_tags),
        )
        for r in result.itertuples(index=False)
    }
