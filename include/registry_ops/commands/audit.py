"""``registry-ops audit``: who can pull, push, delete and administer each ECR repository
(``audit iam``), and the age and last use of every access key (``audit keys``).

Exit 0 when every registry was read (findings or not), 1 when a registry could not be audited
(the JSON still carries the others and names the failure, e.g. a missing IAM permission), 2 on
bad input (config or access model).

``audit run`` is the ``registry_iam_audit`` DAG outside Airflow (stored runs, the change since
the last audit, the gate: exit 1 when it fails); ``audit ack|acks|unack`` manage the gate's
acknowledgements."""

from __future__ import annotations

import argparse
import getpass
from datetime import date
from typing import Any

from ..config import load_config
from .options import CONFIG_HELP, parse_now
from .options import text_table as _table


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


def run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """The DAG's steps: audit, store, diff, (email), publish, gate."""
    from ..audit import jobs

    out = jobs.run(load_config(args.config), parse_now(args.now), notify=args.notify)
    ok = out["gate"]["passed"] and out["complete"] and not out["email_error"]
    return (0 if ok else 1), out


def _until(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def ack(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Accept a finding of the last audit until a date (the gate stops failing on it)."""
    from ..audit import jobs

    by = args.by or getpass.getuser()
    return 0, jobs.acknowledge(load_config(args.config), args.finding, args.reason, args.until, by)


def list_acks(args: argparse.Namespace) -> tuple[int, list[dict[str, Any]]]:
    from ..audit import jobs

    return 0, jobs.list_acks(load_config(args.config), include_expired=args.all)


def unack(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from ..audit import jobs

    return 0, jobs.unacknowledge(load_config(args.config), args.finding)


def _add_run_parsers(audit_sub: argparse._SubParsersAction) -> None:
    runp = audit_sub.add_parser(
        "run",
        help="the weekly audit outside Airflow: store, compare with the last audit, gate",
        description="registry_iam_audit's steps in one process, same S3 runs and acknowledgements. "
        "With --notify the report is emailed and the run becomes the baseline (latest.json); without "
        "it the run is stored but the next run still compares with the last reported one. Exit 1 when "
        "the gate fails, a registry could not be audited or the email failed; 2 on bad input.",
    )
    runp.add_argument("--config", help=CONFIG_HELP)
    runp.add_argument("--now", help="ISO-8601 time of the run (key ages, the run's date; default: now)")
    runp.add_argument(
        "--notify", action="store_true", help="email the report and make this run the baseline (latest)"
    )
    runp.set_defaults(func=run)

    ackp = audit_sub.add_parser(
        "ack",
        help="accept a finding for now: the gate stops failing on it until a date",
        description="Covers the one finding (its key, from the report) of the last audit, at its current "
        "severity, through --until (at most 90 days ahead). Stored in S3: the next run applies it.",
    )
    ackp.add_argument("--config", help=CONFIG_HELP)
    ackp.add_argument("--finding", required=True, help="the finding's key (16 hex digits, in the report)")
    ackp.add_argument("--reason", required=True, help="why it is accepted for now (shown in every report)")
    ackp.add_argument("--until", required=True, type=_until, help="last day it applies (YYYY-MM-DD)")
    ackp.add_argument("--by", help="who acknowledges (default: the login name)")
    ackp.set_defaults(func=ack)

    listp = audit_sub.add_parser("acks", help="list the acknowledgements (JSON)")
    listp.add_argument("--config", help=CONFIG_HELP)
    listp.add_argument("--all", action="store_true", help="include expired ones")
    listp.set_defaults(func=list_acks)

    unp = audit_sub.add_parser("unack", help="remove a finding's acknowledgement")
    unp.add_argument("--config", help=CONFIG_HELP)
    unp.add_argument("--finding", required=True, help="the finding's key")
    unp.set_defaults(func=unack)


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
    _add_run_parsers(audit_sub)
