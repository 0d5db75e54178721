"""``registry-ops retention plan``: what a policy would do to an inventory snapshot, offline.

``commands/retention.py`` (owned by the executor side) calls :func:`add_plan_parser` with its
``retention`` subparsers; :func:`plan_command` returns ``(exit_code, result)`` like every
subcommand: a list of records (printed as JSON) or a rendered table (``--format table``).
Nothing is deleted: the plan is the dry run.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import pandas as pd

from ..commands.options import parse_now

RECORD_FIELDS = (
    "registry",
    "repository",
    "digest",
    "tags",
    "action",
    "rule_priority",
    "reason",
    "untag_tags",
    "policy",
    "dry_run",
)


def records(result: pd.DataFrame) -> list[dict[str, Any]]:
    """Plan rows as JSON-ready records, ordered by registry, repository, push time, digest."""
    if result.empty:
        return []
    ordered = result.sort_values(
        ["registry", "repository", "pushed_at", "digest"], na_position="first", kind="stable"
    )
    out = []
    for row in ordered[list(RECORD_FIELDS)].itertuples(index=False):
        rec = dict(zip(RECORD_FIELDS, row, strict=True))
        rec["tags"] = list(rec["tags"] or [])
        rec["untag_tags"] = list(rec["untag_tags"] or [])
        rec["rule_priority"] = None if pd.isna(rec["rule_priority"]) else int(rec["rule_priority"])
        rec["dry_run"] = bool(rec["dry_run"])
        out.append(rec)
    return out


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(recs: list[dict[str, Any]]) -> str:
    """A fixed-width table for people; the reason column is last and never cut."""
    head = ("REPOSITORY", "DIGEST", "TAGS", "ACTION", "RULE", "REASON")
    rows = [
        (
            _cut(r["repository"], 40),
            r["digest"][:19],
            _cut(",".join(r["tags"]) or "-", 32),
            r["action"] + (" (dry run)" if r["dry_run"] and r["action"] != "keep" else ""),
            "-" if r["rule_priority"] is None else str(r["rule_priority"]),
            r["reason"],
        )
        for r in recs
    ]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(head[:-1])]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in [head, *rows]
    ]
    counts = Counter(r["action"] for r in recs)
    lines.append("")
    lines.append(
        f"{len(recs)} image(s): "
        + ", ".join(f"{counts.get(a, 0)} {a}" for a in ("keep", "expire", "transition", "untag"))
    )
    return "\n".join(lines)


def plan_command(args: argparse.Namespace) -> tuple[int, str | list]:
    """Load the policy and the inventory, plan at ``--now``, return records or a table."""
    from ..inventory_files import read_inventory
    from .in_use import user_references
    from .planner import plan
    from .policy import load_policies

    policies = load_policies(args.policy)
    now = parse_now(getattr(args, "now", None))
    try:
        inventory = read_inventory(args.inventory, lists="arrow")  # the planner reads Arrow lists
    except (OSError, ValueError) as exc:
        raise ValueError(f"{args.inventory}: cannot read inventory: {exc}") from None
    refs: set[str] = set()
    for path in getattr(args, "in_use", None) or []:
        try:
            refs |= user_references(path).refs
        except OSError as exc:
            raise ValueError(f"{path}: cannot read in-use list: {exc.strerror or exc}") from None
    recs = records(plan(inventory, policies, now, refs or None))
    if getattr(args, "format", "json") == "table":
        return 0, table(recs)
    return 0, recs


def add_plan_parser(retention_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``plan`` to the ``retention`` subcommand's subparsers."""
    parser = retention_subparsers.add_parser(
        "plan", help="show what a retention policy would do to an inventory (nothing is deleted)"
    )
    parser.add_argument(
        "--policy", required=True, help="policy file: ECR lifecycle JSON or the wrapper format"
    )
    parser.add_argument("--inventory", required=True, help="inventory file: .parquet, .csv or .json")
    parser.add_argument(
        "--now", help="evaluate ages at this ISO-8601 time (default: now), for reproducible plans"
    )
    parser.add_argument(
        "--format", choices=("json", "table"), default="json", help="output format (default json)"
    )
    parser.add_argument(
        "--in-use",
        action="append",
        metavar="FILE",
        help="image references in use, one per line (repeatable); those images are kept",
    )
    parser.set_defaults(func=plan_command)
    return parser
