"""Great Expectations checks of the report tables: one suite per table in ``report.tables``, run
in process on an ephemeral GX context (GX core 1.x; no GX Cloud, nothing written to the
project or the home directory). A report whose suites do not all pass never reaches
stakeholders: ops get ``alert_text`` and the task fails.

The rules, derived from ``tables.TABLES`` so that a new table gets them too:

- the frame has exactly the table's columns, in order (then the derived ``*_error`` columns);
- key columns are not null, and the key is unique (``(registry, repository, digest)`` in
  ``cost``, ``(registry, repository, day)`` in ``pulls_by_repository_day``, every other key alike);
- bytes and counts are not negative (``non_negative_columns``: every column naming bytes, and
  pulls/failed/principals/images/objects/repositories; ``bytes_change`` may be negative);
- ``failed <= pulls`` wherever both columns exist;
- ``success_rate`` within [0, 1];
- cost equals bytes x price within 0.01 USD (``PRICED``: ``cost``, ``cost_by_repository`` with
  its shared-layer estimate, ``cost_by_team``, ``trend``, ``growers``, ``savings``; every table
  priced at the report's price): GX has no expectation comparing a
  column with an arithmetic of another, so a derived column ``<usd column>_error`` =
  ``|usd - bytes / 2**30 * report.price_per_gb_month|`` is added to a COPY of the frame and
  expected between 0 and 0.01. A row where either side is null has a null error, which GX skips;
  the required pairs' columns are expected not null as well;
- ``day`` between ``report.start`` and ``report.end - 1 day`` (pandas datetimes are compared as
  their dates);
- at least one row: always in ``cost``, ``cost_by_repository`` and ``cost_by_team`` (an empty
  inventory is a broken report); in the pull tables only when the window has events, which is
  when ``headline["total_pulls"]`` is above 0 or ``pulls_by_repository_day`` has rows; an empty
  window is allowed (the report says so instead of drawing charts of nothing);
- the total stored bytes (sum of ``cost.size_bytes``) within ``stored_bytes_bounds``.

A missing ``cost`` table is checked as an empty one (so it fails); other missing tables are not
checked. GX is imported inside ``validate`` only: its import takes seconds and DAG files must
parse fast.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import tables
from .model import Report
from .settings import GIB

SAMPLES = 5  # offending rows named per failed expectation
USD_TOLERANCE = 0.01
COUNT_COLUMNS = frozenset({"pulls", "failed", "principals", "images", "objects", "repositories"})
SIGNED_COLUMNS = frozenset({"bytes_change"})  # growers: a repository may shrink
# table -> (bytes column, USD column, required): USD per month = bytes / 2**30 * the report's price.
# s3_storage is priced per storage class, not at the registry price: not here.
PRICED: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "cost": (("size_bytes", "usd_month", True),),
    "cost_by_repository": (
        ("stored_bytes", "usd_month", True),
        ("unique_layer_bytes_estimate", "usd_month_estimate", False),  # null when layers are unknown
    ),
    "cost_by_team": (("stored_bytes", "usd_month", True),),
    "trend": (("stored_bytes", "usd_month", True),),
    "growers": (("bytes_change", "usd_month_change", True),),
    "savings": (("bytes", "usd_month", True),),
}
ALWAYS_ROWS = ("cost", "cost_by_repository", "cost_by_team")
PULL_TABLES = ("pulls_by_repository_day", "pulls_by_image_day", "pull_success")
DOCS_SITE = "registry_reports"

Spec = tuple[str, dict[str, Any]]  # (GX expectation class name, its keyword arguments)


@dataclass
class QualityResult:
    """The outcome of every suite. ``failures``: one dict per failed expectation with ``table``,
    ``expectation`` (GX type name), ``kwargs`` (column(s) and bounds), ``observed`` and ``samples``
    (up to 5 offending rows). ``results``: table -> GX validation result as JSON. ``data_docs``:
    GX's HTML site for these validations, relative path -> bytes (stored beside the report)."""

    success: bool
    failures: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    data_docs: dict[str, bytes] = field(default_factory=dict)


def non_negative_columns(columns: Iterable[str]) -> list[str]:
    """The bytes and count columns among ``columns``."""
    return [c for c in columns if (c in COUNT_COLUMNS or "bytes" in c) and c not in SIGNED_COLUMNS]


def error_column(usd_column: str) -> str:
    """The derived column holding ``usd_column``'s distance from bytes x price."""
    return f"{usd_column}_error"


def stored_bytes_bounds(
    previous: int | None, *, explained_drop_bytes: int = 0, max_change: float = 0.5
) -> tuple[float, float] | None:
    """The range the total stored bytes must fall in: ``previous * (1 + max_change)`` at most and
    ``previous * (1 - max_change) - explained_drop_bytes`` at least (what retention deleted since
    the previous report explains that much more of a drop). None (no check) when there is no
    previous report, or it stored nothing (no base for a relative change)."""
    if previous is None or previous == 0:
        return None
    return (previous - max_change * previous - explained_drop_bytes, previous + max_change * previous)


def has_pull_events(report: Report) -> bool:
    """Whether the window has pull events (then every pull table must have rows)."""
    return (report.headline.get("total_pulls") or 0) > 0 or not report.empty_window


def plan(name: str, report: Report, *, bounds: tuple[float, float] | None = None) -> list[Spec]:
    """The expectations of table ``name``'s suite, as (GX class name, kwargs)."""
    columns, key = tables.TABLES[name]
    derived = [error_column(usd) for _, usd, _ in PRICED.get(name, ())]
    specs: list[Spec] = [("ExpectTableColumnsToMatchOrderedList", {"column_list": [*columns, *derived]})]
    specs += [_not_null(c) for c in key]
    if len(key) > 1:
        specs.append(("ExpectCompoundColumnsToBeUnique", {"column_list": list(key)}))
    else:
        specs.append(("ExpectColumnValuesToBeUnique", {"column": key[0]}))
    specs += [_between(c, 0, None) for c in non_negative_columns(columns)]
    if "pulls" in columns and "failed" in columns:
        pair = {"column_A": "pulls", "column_B": "failed", "or_equal": True}
        specs.append(("ExpectColumnPairValuesAToBeGreaterThanB", pair))
    if "success_rate" in columns:
        specs.append(_between("success_rate", 0, 1))
    for bytes_column, usd_column, required in PRICED.get(name, ()):
        if required:
            specs += [_not_null(bytes_column), _not_null(usd_column)]
        specs.append(_between(error_column(usd_column), 0, USD_TOLERANCE))
    if "day" in columns:
        specs.append(_between("day", report.start, report.end - timedelta(days=1)))
    if name in ALWAYS_ROWS or (name in PULL_TABLES and has_pull_events(report)):
        specs.append(("ExpectTableRowCountToBeBetween", {"min_value": 1}))
    if name == "cost" and bounds is not None:
        total = {"column": "size_bytes", "min_value": bounds[0], "max_value": bounds[1]}
        specs.append(("ExpectColumnSumToBeBetween", total))
    return specs


def _not_null(column: str) -> Spec:
    return ("ExpectColumnValuesToNotBeNull", {"column": column})


def _between(column: str, low: Any, high: Any) -> Spec:
    bounds = {"min_value": low} | ({} if high is None else {"max_value": high})
    return ("ExpectColumnValuesToBeBetween", {"column": column, **bounds})


def prepared(name: str, frame: pd.DataFrame, price_per_gb_month: float) -> pd.DataFrame:
    """A copy of ``frame`` to validate: a fresh 0..n-1 index (GX names offending rows by it),
    the derived ``*_error`` columns of ``PRICED``, and ``day`` as dates. ``frame`` is untouched."""
    out = frame.reset_index(drop=True)  # a new frame: the columns added below do not reach `frame`
    for bytes_column, usd_column, _ in PRICED.get(name, ()):
        if bytes_column in out.columns and usd_column in out.columns:
            size = pd.to_numeric(out[bytes_column], errors="coerce").astype("float64")
            usd = pd.to_numeric(out[usd_column], errors="coerce").astype("float64")
            out[error_column(usd_column)] = (usd - size / GIB * price_per_gb_month).abs()
    if "day" in out.columns and pd.api.types.is_datetime64_any_dtype(out["day"]):
        out["day"] = out["day"].dt.date
    return out


def validate(
    report: Report,
    *,
    previous_stored_bytes: int | None,
    explained_drop_bytes: int = 0,
    max_change: float = 0.5,
) -> QualityResult:
    """Run one GX suite per table of ``report`` (see the module docstring for the rules) and
    build GX's data docs for them. ``previous_stored_bytes``: the previous report's total (None:
    there is none); ``explained_drop_bytes``: bytes retention deleted since then."""
    if previous_stored_bytes is not None and previous_stored_bytes < 0:
        raise ValueError(f"previous_stored_bytes: {previous_stored_bytes} is negative")
    if explained_drop_bytes < 0:
        raise ValueError(f"explained_drop_bytes: {explained_drop_bytes} is negative")
    if not max_change > 0:
        raise ValueError(f"max_change: {max_change} must be above 0")
    unknown = sorted(set(report.tables) - set(tables.TABLES))
    if unknown:
        raise ValueError(f"report table(s) {', '.join(unknown)}: not in tables.TABLES")
    frames = dict(report.tables)
    frames.setdefault("cost", tables.empty(tables.COST))
    bounds = stored_bytes_bounds(
        previous_stored_bytes, explained_drop_bytes=explained_drop_bytes, max_change=max_change
    )
    with tempfile.TemporaryDirectory(prefix="gx-docs-") as docs_dir:
        context = _context(Path(docs_dir))
        run_id = _run_id(report)
        result = QualityResult(success=True)
        for name, frame in frames.items():
            data = prepared(name, frame, report.price_per_gb_month)
            outcome = _run_suite(context, name, plan(name, report, bounds=bounds), data, run_id)
            result.results[name] = outcome.to_json_dict()
            result.failures += _failures(name, outcome, data)
            result.success = result.success and bool(outcome.success)
        context.build_data_docs(site_names=[DOCS_SITE])
        result.data_docs = _read_tree(Path(docs_dir))
    return result


def _context(docs_dir: Path) -> Any:
    """An ephemeral context (in-memory stores, no progress bars) with one filesystem docs site."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    context = gx.get_context(project_config=config, mode="ephemeral")
    context.add_data_docs_site(
        DOCS_SITE,
        {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    context.data_sources.add_pandas(DOCS_SITE)
    return context


def _run_id(report: Report) -> Any:
    from great_expectations.core.run_identifier import RunIdentifier

    last = report.end - timedelta(days=1)
    name = f"{report.period}_{report.start.isoformat()}_{last.isoformat()}"
    return RunIdentifier(run_name=name, run_time=report.generated_at)


def _run_suite(context: Any, name: str, specs: Sequence[Spec], frame: pd.DataFrame, run_id: Any) -> Any:
    import great_expectations as gx

    expectations = [getattr(gx.expectations, cls)(**kwargs) for cls, kwargs in specs]
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    asset = context.data_sources.get(DOCS_SITE).add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe("whole table")
    definition = gx.ValidationDefinition(name=name, data=batch, suite=suite)
    definition = context.validation_definitions.add(definition)
    return definition.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLES},
        run_id=run_id,
    )


def _failures(name: str, outcome: Any, frame: pd.DataFrame) -> list[dict[str, Any]]:
    failures = []
    for item in outcome.results:
        if item.success:
            continue
        as_json = item.to_json_dict()
        kwargs = {k: v for k, v in as_json["expectation_config"]["kwargs"].items() if k != "batch_id"}
        found = as_json.get("result") or {}
        indexes = found.get("partial_unexpected_index_list") or []
        failures.append(
            {
                "table": name,
                "expectation": item.expectation_config.type,
                "kwargs": kwargs,
                "observed": _observed(found, item.exception_info),
                "samples": [_row(frame, index) for index in indexes[:SAMPLES] if index in frame.index],
            }
        )
    return failures


def _observed(found: dict[str, Any], exception_info: Any) -> Any:
    """What GX observed: the table-level value, the unexpected count and values, or its error."""
    errors = [
        info.get("exception_message")
        for info in (exception_info.values() if _nested(exception_info) else [exception_info or {}])
        if isinstance(info, dict) and info.get("raised_exception")
    ]
    if errors:
        return {"error": "; ".join(dict.fromkeys(str(e) for e in errors))}
    if "observed_value" in found:
        return found["observed_value"]
    return {
        "unexpected_count": found.get("unexpected_count"),
        "element_count": found.get("element_count"),
        "unexpected_values": found.get("partial_unexpected_list", []),
    }


def _nested(exception_info: Any) -> bool:
    """GX keys exception_info by metric when a metric raised, else it is one flat dict."""
    return isinstance(exception_info, dict) and "raised_exception" not in exception_info


def _row(frame: pd.DataFrame, index: Any) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in frame.loc[index].items()}


def _plain(value: Any) -> Any:
    """A JSON value for a cell: None for missing, ISO text for times, Python numbers."""
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value if isinstance(value, str | int | float | bool) else str(value)


def _read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def alert_text(result: QualityResult, report: Report) -> str:
    """The plain text ops get when a suite fails: each failed expectation with its table,
    column(s), bounds, what GX observed and sample rows."""
    failed_tables = list(dict.fromkeys(f["table"] for f in result.failures))
    lines = [
        f"Registry report {report.period} {report.label}: {len(result.failures)} data-quality "
        f"expectation(s) failed in {', '.join(failed_tables) or 'no table'}.",
        "The stakeholder email is held back until every suite passes.",
        "",
    ]
    for number, failure in enumerate(result.failures, 1):
        kwargs = dict(failure["kwargs"])
        columns = _columns(kwargs)
        lines.append(
            f"{number}. table {failure['table']}: {failure['expectation']}"
            + (f" on {', '.join(columns)}" if columns else " (whole table)")
        )
        if kwargs:
            lines.append("   expected: " + ", ".join(f"{k}={_text(v)}" for k, v in kwargs.items()))
        lines.append(f"   observed: {_observed_text(failure['observed'])}")
        if failure["samples"]:
            lines.append(f"   sample rows ({len(failure['samples'])}):")
            lines += [f"     {_text(row)}" for row in failure["samples"]]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _columns(kwargs: dict[str, Any]) -> list[str]:
    """Pop the column arguments of an expectation's kwargs; what remains are its bounds."""
    found = [kwargs.pop(k) for k in ("column", "column_A", "column_B") if k in kwargs]
    if "column_list" in kwargs:
        found += list(kwargs.pop("column_list"))
    return [str(c) for c in found]


def _observed_text(observed: Any) -> str:
    if isinstance(observed, dict) and "unexpected_count" in observed:
        return (
            f"{observed['unexpected_count']} of {observed['element_count']} row(s) unexpected, "
            f"values {_text(observed['unexpected_values'])}"
        )
    return _text(observed)


def _text(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=False)
