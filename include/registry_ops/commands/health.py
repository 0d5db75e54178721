"""``registry-ops health``: probe the registries now (as ``registry_health`` does) and compact the
probe dataset, outside Airflow."""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any

from ..config import Config
from .options import CONFIG_HELP, parse_now, with_s3


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


@with_s3
def run_probe(args: argparse.Namespace, config: Config, s3: Any) -> tuple[int, dict[str, Any]]:
    """Exit 0 when every probed registry is good, 1 when one is not (the rows say which and why)."""
    from ..health import dataset, probe

    at = parse_now(None)
    run_id = args.run_id or f"cli__{at:%Y-%m-%dT%H:%M:%S}Z"
    rows = probe.probe_all(config, s3, at, run_id, args.registry)
    key = dataset.append(s3, config, rows, run_id, at) if args.store else None
    return (0 if all(r["good"] for r in rows) else 1), {"rows": probe.jsonable(rows), "stored": key}


@with_s3
def run_compact(args: argparse.Namespace, config: Config, s3: Any) -> tuple[int, dict[str, Any]]:
    from ..health import dataset

    return 0, dataset.compact(s3, config, args.day, parse_now(args.now))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("health", help="availability probes: probe the registries now, compact the dataset")
    hsub = p.add_subparsers(dest="health_command", required=True)
    probe = hsub.add_parser(
        "probe",
        help="probe every registry of health.registries (API, canary by digest) and print the rows as "
        "JSON; exit 1 when one is down",
    )
    probe.add_argument("--registry", help="only this registry (a name from the config file)")
    probe.add_argument("--store", action="store_true", help="append the rows to the probe dataset in S3")
    probe.add_argument("--run-id", help="the run id of the rows (default: cli__<time>Z)")
    compact = hsub.add_parser(
        "compact", help="merge a finished UTC day's small probe objects into one (default: every such day)"
    )
    compact.add_argument("--day", type=_day, help="only this day (YYYY-MM-DD, UTC; must be over)")
    compact.add_argument("--now", help="the time to act as of (ISO-8601; default: now)")
    for q in (probe, compact):
        q.add_argument("--config", help=CONFIG_HELP)
    probe.set_defaults(func=run_probe)
    compact.set_defaults(func=run_compact)
