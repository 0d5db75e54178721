"""``registry-ops report``: the storage-cost and pull report outside Airflow (the same code as
``registry_reports``).

- ``report pulls --events PATH [...] --since DAY --until DAY``: pulls per registry, repository
  and day from CloudTrail log files and distribution notification envelopes (a local directory
  or ``s3://bucket/prefix``; either kind; the until day is excluded). Unreadable files are
  counted and named under ``problems`` (exit 0: they are data, not a failure of the command).
- ``report cost --inventory FILE``: stored bytes and USD per month per repository.
- ``report send``: ingest, build, validate and email the full report (exit 1 when a Great
  Expectations suite fails: ops get the alert, stakeholders nothing).

``--format csv`` prints the main table as CSV; ``table`` as aligned columns; ``json`` (default)
the documented JSON.
"""

from __future__ import annotations

import argparse
import io
from datetime import UTC, date, datetime, time
from typing import Any

import pandas as pd

from .options import CONFIG_HELP, parse_now, text_table

FORMATS = ("json", "table", "csv")


def _day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{flag}: not a YYYY-MM-DD day: {text!r}") from None


def _render(rows: list[dict[str, Any]], columns: list[str], fmt: str, doc: dict[str, Any]) -> Any:
    if fmt == "json":
        return doc
    if fmt == "csv":
        out = io.StringIO()
        pd.DataFrame(rows, columns=columns).to_csv(out, index=False, lineterminator="\n")
        return out.getvalue().rstrip("\n")
    return "\n".join(text_table(rows, columns))


def _s3_for(config: Any) -> Any:
    """An S3 client for ``s3://`` event paths: the config's storage connection, else boto3's
    default chain (environment, profile, instance role)."""

    def factory(_url: str) -> Any:
        if config is not None:
            from ..store.clients import s3_client

            return s3_client(config)
        import boto3

        return boto3.client("s3")

    return factory


def pulls(args: argparse.Namespace) -> tuple[int, Any]:
    from ..config import load_config
    from ..reports import events, ingest
    from ..reports import pulls as metrics

    since, until = _day(args.since, "--since"), _day(args.until, "--until")
    if until <= since:
        raise ValueError(f"--until {until} must be after --since {since} (the until day is excluded)")
    config = load_config(args.config) if args.config else None
    attribution = events.Attribution.from_config(config) if config else events.Attribution.default()
    frame, problems = ingest.read_paths(args.events, attribution, _s3_for(config))
    frame = frame[(frame["day"] >= since) & (frame["day"] < until)] if len(frame) else frame
    tables = metrics.metrics(
        frame,
        None,
        start=since,
        end=until,
        success_target=config.reports.success_target if config else 0.99,
        never_pulled_days=config.reports.never_pulled_days if config else 30,
        now=datetime.combine(until, time(), UTC),
    )
    doc = metrics.pulls_json(tables, start=since, end=until)
    doc["problems"] = [p.as_dict() for p in problems]
    rows = doc["by_repository_day"]
    return 0, _render(
        rows, ["registry", "repository", "day", "pulls", "failed", "principals"], args.format, doc
    )


def cost(args: argparse.Namespace) -> tuple[int, Any]:
    from ..config import load_config
    from ..inventory_files import read_inventory
    from ..reports import cost as costs
    from ..reports.settings import ReportsConfig

    settings = load_config(args.config).reports if args.config else ReportsConfig()
    if args.price_per_gb_month is not None and args.price_per_gb_month < 0:
        raise ValueError(f"--price-per-gb-month {args.price_per_gb_month}: must not be negative")
    price = settings.price_per_gb_month if args.price_per_gb_month is None else args.price_per_gb_month
    tables = costs.cost_tables(read_inventory(args.inventory), settings, price)
    doc = costs.cost_json(tables)
    columns = ["registry", "repository", "team", "images", "stored_bytes", "usd_month"]
    return 0, _render(doc["by_repository"], columns, args.format, doc)


def send(args: argparse.Namespace) -> tuple[int, Any]:
    from ..config import load_config
    from ..reports import jobs

    config = load_config(args.config)
    out = jobs.run(config, args.window, parse_now(args.now), send=not args.no_email)
    return (0 if out["validation"].get("success") else 1), out


def add_parser(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="storage-cost and pull reports (the registry_reports DAG)")
    report_sub = report.add_subparsers(dest="report_command", required=True)

    p = report_sub.add_parser(
        "pulls", help="pulls per registry, repository and day from event files", description=__doc__
    )
    p.add_argument(
        "--events",
        action="append",
        required=True,
        metavar="PATH",
        help="directory or s3://bucket/prefix (repeatable)",
    )
    p.add_argument("--since", required=True, help="first day (YYYY-MM-DD, UTC)")
    p.add_argument("--until", required=True, help="day after the last (YYYY-MM-DD, excluded)")
    p.add_argument("--config", help="config file: names registries by account/region and host (optional)")
    p.add_argument("--format", choices=FORMATS, default="json")
    p.set_defaults(func=pulls)

    p = report_sub.add_parser(
        "cost", help="stored bytes and USD per month per repository", description=__doc__
    )
    p.add_argument("--inventory", required=True, help="inventory file (.parquet/.csv/.json)")
    p.add_argument(
        "--price-per-gb-month",
        type=float,
        help="USD per GiB-month (default: reports.price_per_gb_month, 0.10)",
    )
    p.add_argument("--config", help="config file: teams and price (optional)")
    p.add_argument("--format", choices=FORMATS, default="json")
    p.set_defaults(func=cost)

    p = report_sub.add_parser("send", help="build, validate and email the full report", description=__doc__)
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument(
        "--window", default="week", help="'week', 'month', 'auto' or 'YYYY-MM-DD..YYYY-MM-DD' (default week)"
    )
    p.add_argument("--now", help="ISO-8601 time the report is made at (default: now)")
    p.add_argument("--no-email", action="store_true", help="build and validate only")
    p.set_defaults(func=send)
