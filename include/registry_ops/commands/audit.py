"""``registry-ops audit``: who can pull, push, delete and administer each ECR repository
(``audit iam``), and the age and last use of every access key (``audit keys``).

Exit 0 when every registry was read (findings or not), 1 when a registry could not be audited
(the JSON still carries the others and names the failure, e.g. a missing IAM permission), 2 on
bad input (config or access model)."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import load_config
from .options import CONFIG_HELP, parse_now


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    widths[-1] = 0  # the last column is not padded
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()  # noqa: E731
    return [line(columns), *(line(row) for row in cells)]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def iam_text(result: dict[str, Any]) -> str:
    lines = [f"ACCESS ({len(result['access'])} principal x repository rows)"]
    lines += _table(result["access"], ["registry", "principal", "repository", "capabilities", "conditional"])
    lines += ["", f"FINDINGS ({len(result['findings'])})"]
    lines += _table(
        result["findings"], ["severity", "id", "principal", "repository", "policy", "statement", "detail"]
    )
    if result["errors"]:
        lines += ["", "ERRORS", *(f"{e['registry']}: {e['error']}" for e in result["errors"])]
    return "\n".join(lines)


def keys_text(result: dict[str, Any]) -> str:
    cols = ["account", "user", "key", "active", "age_days", "last_used", "idle_days", "last_used_service"]
    lines = _table(result["keys"], cols)
    if result["errors"]:
        lines += ["", "ERRORS", *(f"{e['registry']}: {e['error']}" for e in result["errors"])]
    return "\n".join(lines)


def iam(args: argparse.Namespace) -> tuple[int, Any]:
    from ..audit.run import audit

    result = audit(load_config(args.config), parse_now(args.now)).as_dict()
    code = 1 if result["errors"] else 0
    return code, (result if args.format == "json" else iam_text(result))


def keys(args: argparse.Namespace) -> tuple[int, Any]:
    from ..audit.run import keys_report

    result = keys_report(load_config(args.config), parse_now(args.now))
    code = 1 if result["errors"] else 0
    return code, (result if args.format == "json" else keys_text(result))


def add_parser(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="access audit of the ECR registries: effective access, keys")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    for name, func, help_text in (
        ("iam", iam, "every principal's pull/push/delete/admin per repository, and the findings"),
        ("keys", keys, "age and last use of every IAM user's access keys (the credential report)"),
    ):
        p = audit_sub.add_parser(name, help=help_text, description=__doc__)
        p.add_argument("--config", help=CONFIG_HELP)
        p.add_argument("--format", choices=("json", "table"), default="json", help="output (default json)")
        p.add_argument("--now", help="ISO-8601 time the key ages are measured at (default: now)")
        p.set_defaults(func=func)
