"""``registry-ops scan``: count a scanner report, or run the scan DAG's steps outside Airflow."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ..config import load_config
from .options import CONFIG_HELP


def _load_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None


def count_report(path: str) -> dict[str, Any]:
    """Per-severity counts (entries and unique ids) of a Trivy report or an ECR findings response."""
    from ..scan.parsers import count, detect, parse_ecr, parse_trivy

    document = _load_json(path)
    kind = detect(document)
    out: dict[str, Any] = {"file": path}
    if kind == "trivy":
        rows = parse_trivy(document)
        out.update(
            format="trivy", artifact=document.get("ArtifactName"), results=len(document.get("Results") or [])
        )
    else:
        parsed = parse_ecr(document)
        rows = parsed.rows
        out.update(format=parsed.source, status=parsed.status, reported_counts=parsed.reported_counts)
        counted = count(rows)["source_severities"]
        if not parsed.next_token and parsed.reported_counts and parsed.reported_counts != counted:
            out["warning"] = "findingSeverityCounts differ from the findings in the file"
        if parsed.next_token:
            out["warning"] = "the response has a nextToken: this file holds only the first page"
    out.update(count(rows))
    return out


def _text(report: dict[str, Any]) -> str:
    from ..scan.severity import LEVELS

    head = f"{report['file']}: {report['format']}"
    if report.get("status"):
        head += f", scan status {report['status']}"
    lines = [head, f"{'severity':<10} {'entries':>8} {'unique':>8}"]
    for level in LEVELS:
        lines.append(f"{level:<10} {report['entries'][level]:>8} {report['unique'][level]:>8}")
    lines.append(f"{'total':<10} {report['total_entries']:>8} {report['total_unique']:>8}")
    if report["source_severities"]:
        words = ", ".join(f"{k} {v}" for k, v in report["source_severities"].items())
        lines.append(f"as the scanner named them: {words}")
    if report.get("reported_counts"):
        words = ", ".join(f"{k} {v}" for k, v in sorted(report["reported_counts"].items()))
        lines.append(f"findingSeverityCounts in the response: {words}")
    if report.get("warning"):
        lines.append(f"warning: {report['warning']}")
    return "\n".join(lines)


def import_report(args: argparse.Namespace) -> tuple[int, Any]:
    report = count_report(args.file)
    return 0, (report if args.format == "json" else _text(report))


def run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """plan -> every batch -> publish -> size and tag reports -> gate (exit 1 when it fails)."""
    from ..scan import jobs

    config = load_config(args.config)
    run_at = datetime.now(UTC)
    table = None
    if args.live:
        from ..clients import build_registry
        from ..inventory import run_inventory

        listing = run_inventory(config, build_registry, run_at)
        for err in listing.errors:
            print(f"error: registry {err['registry']}/{err['repository']}: {err['error']}", file=sys.stderr)
        table = listing.table
    elif args.inventory:
        from .. import schema
        from ..inventory_files import read_inventory

        table = schema.frame_to_table(read_inventory(args.inventory))
    run_id = f"cli__{run_at:%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:6]}"
    try:
        planned = jobs.plan_run(config, run_at, run_id, inventory=table, force=args.force)
        parts = [jobs.scan_batch(config, b, planned["parts_prefix"]) for b in planned["batches"]]
        manifest = jobs.publish(config, planned, parts)
        sizes = jobs.size_report(config, planned)
        tags = jobs.tag_report(config, planned)
        gate = jobs.gate(config, manifest)
    except jobs.ScanError as exc:
        raise ValueError(str(exc)) from None
    # with --notify this run is the one telling people: it emails what is new and records the
    # violations as reported; without it the gate is only looked at (the state stays as it was)
    notified = jobs.report_gate(config, gate, f"Run {run_id}.") if args.notify else None
    for err in manifest["errors"]:
        print(
            f"error: {err['registry']}/{err['repository']}@{err['digest']}: {err['error']}", file=sys.stderr
        )
    summary = {
        "findings": f"s3://{manifest['bucket']}/{manifest['findings_key']}",
        "images": manifest["images"],
        "digests": manifest["digests"],
        "fresh": manifest["fresh"],
        "imported": manifest["imported"],
        "scanned": manifest["scanned"],
        "scanner_invocations": manifest["scanner_invocations"],
        "errors": manifest["error_count"],
        "vulnerabilities_by_severity": manifest["vulnerabilities_by_severity"],
        "gate": {
            "passed": gate["passed"],
            "protected_violations": gate["protected_violations"],
            "new": gate["new"],
            "unacknowledged": gate["unacknowledged"],
            "acknowledged": gate["acknowledged"],
            "violations": len(gate["violations"]),
            "expired_allowlist": len(gate["allowlist_expired"]),
            "report": gate["key"],
        },
        "size_budget": {"over_budget": sizes["over_budget"], "report": sizes["key"]},
        "tags": {"by_rule": tags["by_rule"], "report": tags["key"]},
        "notified": notified,
    }
    return (0 if gate["passed"] and not manifest["error_count"] else 1), summary


def _until(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def ack(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Acknowledge a reported protected violation (its current CVE ids) until a date."""
    from ..scan import jobs

    config = load_config(args.config)
    by = args.by or getpass.getuser()
    return 0, jobs.acknowledge(
        config, args.registry, args.repository, args.digest, args.reason, args.until, by
    )


def list_acks(args: argparse.Namespace) -> tuple[int, list[dict[str, Any]]]:
    from ..scan import jobs

    return 0, jobs.list_acks(load_config(args.config), include_expired=args.all)


def unack(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from ..scan import jobs

    return 0, jobs.unacknowledge(load_config(args.config), args.registry, args.repository, args.digest)


def _image_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--registry", required=True, help="registry name from the config")
    parser.add_argument("--repository", required=True, help="repository of the violating image")
    parser.add_argument("--digest", required=True, help="sha256:... of the violating image (gate.json)")


def _add_ack_parsers(scan_sub: argparse._SubParsersAction) -> None:
    ackp = scan_sub.add_parser(
        "ack",
        help="acknowledge a reported violation: the gate stops failing on it until a date",
        description="Covers the CVE ids the image has in the last gate report, through --until (at most "
        "90 days ahead); a new CVE on the image fails the gate again. Stored in S3 next to the scan state: "
        "the next run applies it, no deploy needed.",
    )
    _image_args(ackp)
    ackp.add_argument("--reason", required=True, help="why it is accepted for now (shown in every report)")
    ackp.add_argument("--until", required=True, type=_until, help="last day it applies (YYYY-MM-DD)")
    ackp.add_argument("--by", help="who acknowledges (default: the login name)")
    ackp.set_defaults(func=ack)

    listp = scan_sub.add_parser("acks", help="list acknowledgements (JSON)")
    listp.add_argument("--config", help=CONFIG_HELP)
    listp.add_argument("--all", action="store_true", help="include expired ones")
    listp.set_defaults(func=list_acks)

    unp = scan_sub.add_parser("unack", help="remove an image's acknowledgement")
    _image_args(unp)
    unp.set_defaults(func=unack)


def add_parser(sub: argparse._SubParsersAction) -> None:
    scan = sub.add_parser("scan", help="vulnerability scans: count a report, or scan the fleet")
    scan_sub = scan.add_subparsers(dest="scan_command", required=True)

    rep = scan_sub.add_parser(
        "import-report", help="per-severity counts of a Trivy JSON report or ECR findings response"
    )
    rep.add_argument("file", help="trivy image --format json output, or aws ecr describe-image-scan-findings")
    rep.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    rep.set_defaults(func=import_report)

    runp = scan_sub.add_parser(
        "run",
        help="scan new digests, publish findings, gate, size and tag reports",
        description="The registry_scan DAG's steps in one process, same S3 state. Exit 1 when the gate "
        "fails or digests could not be scanned, 2 on bad input.",
    )
    runp.add_argument("--config", help=CONFIG_HELP)
    src = runp.add_mutually_exclusive_group()
    src.add_argument(
        "--inventory", help="inventory file (.parquet/.csv/.json) instead of the latest snapshot"
    )
    src.add_argument("--live", action="store_true", help="list the registries now instead")
    runp.add_argument("--force", action="store_true", help="ignore the freshness window: rescan every digest")
    runp.add_argument(
        "--notify",
        action="store_true",
        help="email (and Slack) what is new when the gate fails, and record the violations as reported",
    )
    runp.set_defaults(func=run)
    _add_ack_parsers(scan_sub)
