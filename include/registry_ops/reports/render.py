"""The report as people read it: the email's subject, HTML (inline CSS, tables, cid: charts), its
plain-text alternative, and a CSV attachment per table; and the ops alert when validation failed.

Why this shape: stakeholders read the email, not Airflow, in Outlook and Gmail. Those clients drop
``<style>`` blocks, classes, scripts and external images, so every style is inline, the layout is
tables, and the charts travel inside the message (``multipart/related``, ``src="cid:..."``). The
HTML shows the first rows of each table in human units; the CSVs hold every row with exact values
(bytes as integers, USD with all their decimals) for whoever wants to compute. Every value that
comes from data is escaped: a repository name is text, never markup.
"""

from __future__ import annotations

import csv
import gzip
import html
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from ..notify import Attachment, InlineImage, Message
from . import charts, tables
from .charts import human_bytes
from .model import Problem, Report

MAX_ATTACHMENT_BYTES = 15 * 2**20  # the CSVs of one email; base64 makes ~20 MB on the wire
TOP = 10  # rows of the "top" and "worst" tables (the config's reports.top, when the caller passes it)
NEVER_PULLED_ROWS = 20
MAX_PROBLEMS = 200  # problem lines in the body; every one is in problems.csv
CHART_ALT = {
    "stored_bytes_by_repository": "Stored bytes by repository",
    "cost_trend": "Storage cost per month by registry at each inventory snapshot",
    "pulls_per_day": "Pulls per day with the daily failure rate",
}
_COUNT_COLUMNS = {"pulls", "failed", "principals", "images", "repositories", "objects"}

# Inline styles (mail clients drop <style> blocks and classes).
_FONT = "font-family:Arial,Helvetica,sans-serif;"
_TABLE = (
    'border="1" cellpadding="4" cellspacing="0" '
    f'style="border-collapse:collapse;border-color:#cccccc;{_FONT}font-size:13px;margin:4px 0 8px"'
)
_H2 = f'style="{_FONT}font-size:20px;margin:0 0 12px;color:#222222"'
_H3 = f'style="{_FONT}font-size:16px;margin:20px 0 6px;color:#222222;border-bottom:1px solid #cccccc"'
_H4 = f'style="{_FONT}font-size:14px;margin:12px 0 4px;color:#222222"'
_P = f'style="{_FONT}font-size:14px;margin:4px 0 8px;color:#222222"'
_SMALL = f'style="{_FONT}font-size:12px;margin:12px 0 4px;color:#666666"'
_GOOD, _BAD = "#1e7b34", "#b3261e"


# -- numbers for people -----------------------------------------------------------------------------
def usd(value: float) -> str:
    """``$1,234.56``; a cost above zero that rounds to nothing is ``<$0.01``, not ``$0.00``."""
    if 0 < abs(value) < 0.005:
        return "<$0.01" if value > 0 else "-<$0.01"
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def percent(rate: float, space: bool = True) -> str:
    """``99.7 %`` of a fraction; 99.96 % with failures is never shown as 100 % (nor a few
    successes as 0 %): more decimals are used, up to three."""
    value, text = rate * 100, ""
    for decimals in (1, 2, 3):
        text = f"{value:.{decimals}f}"
        if not ((rate < 1 and float(text) >= 100) or (rate > 0 and float(text) <= 0)):
            break
    else:
        text = ">99.999" if rate < 1 and value > 50 else "<0.001"
    return text + (" %" if space else "%")


def change(fraction: float, space: bool = True) -> str:
    """``+4.2 %`` / ``-3.1 %``."""
    text = f"{fraction * 100:+.1f}"
    text = "+0.0" if text == "-0.0" else text
    return text + (" %" if space else "%")


def target(rate: float) -> str:
    """``99 %`` (a configured target, as written)."""
    return f"{rate * 100:g} %"


def count(value: Any) -> str:
    return "-" if _blank(value) else f"{int(value):,}"


def size(value: Any) -> str:
    return "-" if _blank(value) else human_bytes(float(value))


def signed_size(value: Any) -> str:
    return (
        "-" if _blank(value) else ("+" if value > 0 else "-" if value < 0 else "") + human_bytes(abs(value))
    )


def signed_usd(value: Any) -> str:
    return "-" if _blank(value) else ("+" if value > 0 else "") + usd(float(value))


def _blank(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


# -- the result -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rendered:
    """The rendered report: what the email carries, and the charts by name (``<name>.png`` in S3)."""

    subject: str
    text: str
    html: str
    images: tuple[InlineImage, ...]
    attachments: tuple[Attachment, ...]
    charts: dict[str, bytes] = field(default_factory=dict)
    csvs: dict[str, bytes] = field(default_factory=dict)  # every table's full CSV, attached or not

    def message(self, recipients: Sequence[str]) -> Message:
        """The email to ``recipients`` (at least one: a report is never sent to a default)."""
        if not recipients:
            raise ValueError(f"report email {self.subject!r}: no recipients")
        return Message(
            subject=self.subject,
            text=self.text,
            html=self.html,
            images=self.images,
            attachments=self.attachments,
            recipients=tuple(recipients),
        )


def render(
    report: Report,
    quality: dict[str, Any] | None = None,
    *,
    top: int = TOP,
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES,
) -> Rendered:
    """Subject, HTML, text, inline charts and CSVs of ``report``. ``quality`` is the validation
    summary (``{"success": bool, "failures": [...]}``; None: not validated) shown in the
    data-quality section; ``top`` is how many rows the "top" and "worst" tables show; the CSVs
    attached stay under ``max_attachment_bytes`` (see :func:`fit_attachments`)."""
    frames = {name: _table(report, name) for name in tables.TABLES}
    pngs = _charts(report, frames)
    cids = {name: f"{name.replace('_', '-')}.{report.start:%Y%m%d}@registry-ops" for name in pngs}
    sections = [
        *_cost_sections(report, frames, cids, top),
        _change_section(report, frames, cids),
        _growers_section(frames, top),
        _savings_section(report, frames, top),
        _s3_section(frames),
        *_pull_sections(report, frames, cids, top),
        _never_pulled_section(report, frames),
        _quality_section(report, quality),
    ]
    attachments = [
        Attachment(f"{name}.csv", table_csv(_exact_table(name, frame)), "text/csv")
        for name, frame in report.tables.items()
    ]
    if report.problems:
        attachments.append(Attachment("problems.csv", problems_csv(report.problems), "text/csv"))
    csvs = {a.name: a.data for a in attachments}
    attachments, left_out = fit_attachments(attachments, max_attachment_bytes)
    return Rendered(
        subject=subject(report),
        text=_text_document(report, sections, attachments, left_out),
        html=_html_document(report, sections, attachments, left_out),
        images=tuple(InlineImage(cids[name], png, f"{name}.png") for name, png in pngs.items()),
        attachments=tuple(attachments),
        charts=pngs,
        csvs=csvs,
    )


def fit_attachments(attachments: Sequence[Attachment], limit: int) -> tuple[list[Attachment], list[str]]:
    """The attachments, fitted under ``limit`` bytes in all: above it the largest CSVs are gzipped
    (``<name>.gz``) one by one, and when even that is not enough the largest are left out (their
    names returned: the email says they are stored beside the report). Why: a fleet of 100,000
    images makes ~70 MB of CSV, and mail servers commonly refuse messages above 20-25 MB
    (base64 adds a third on the wire)."""
    out = list(attachments)
    left_out: list[str] = []
    for att in sorted(attachments, key=lambda a: len(a.data), reverse=True):
        if sum(len(a.data) for a in out) <= limit:
            return out, left_out
        data = gzip.compress(att.data, compresslevel=6, mtime=0)
        packed = Attachment(att.name + ".gz", data, "application/gzip")
        out[out.index(att)] = packed
    for att in sorted(out, key=lambda a: len(a.data), reverse=True):
        if sum(len(a.data) for a in out) <= limit:
            break
        out.remove(att)
        left_out.append(att.name.removesuffix(".gz"))
    return out, left_out


def quality_alert(
    report: Report, alert_text: str, recipients: Sequence[str], failures: int | Sequence[Any]
) -> Message:
    """The ops alert sent instead of the report when validation failed: the text the checks wrote
    (each failed expectation with sample rows), no charts, no tables. ``failures``: the failed
    expectations (or their number) for the subject."""
    n = failures if isinstance(failures, int) else len(failures)
    if not recipients:
        raise ValueError(f"report {report.label}: validation alert has no recipients")
    return Message(
        subject=f"Registry report {report.label} NOT SENT: {n} expectation(s) failed",
        text=alert_text,
        recipients=tuple(recipients),
    )


# -- subject and headline ---------------------------------------------------------------------------
def _headline(report: Report, key: str) -> Any:
    if key not in report.headline:
        raise ValueError(f"report {report.label}: headline has no {key!r}")
    return report.headline[key]


def _pull_rate(report: Report) -> float | None:
    rate = _headline(report, "pull_success_rate")
    return None if report.empty_window or rate is None else float(rate)


def subject(report: Report) -> str:
    """``Registry report 2026-11-16..2026-11-22 (weekly): $123.45/month (+4.2% vs previous), pulls
    99.7% successful`` (no change without a previous report; ``no pulls recorded`` for an empty
    window; ``(below 99 % target)`` when the success rate misses it)."""
    cost = f"{usd(float(_headline(report, 'total_usd_month')))}/month"
    moved = report.headline.get("usd_month_change")
    if moved is not None:
        cost += f" ({change(float(moved), space=False)} vs previous)"
    rate = _pull_rate(report)
    if rate is None:
        pulls = "no pulls recorded"
    else:
        pulls = f"pulls {percent(rate, space=False)} successful"
        goal = float(_headline(report, "success_target"))
        if rate < goal:
            pulls += f" (below {target(goal).replace(' ', '')} target)"
    return f"Registry report {report.label} ({report.period}): {cost}, {pulls}"


def _utc(when: datetime) -> str:
    """``2026-11-23 07:00 UTC`` (a naive time is taken for UTC, as the report's times are)."""
    return f"{when.astimezone(UTC) if when.tzinfo else when:%Y-%m-%d %H:%M} UTC"


def _last_day(report: Report) -> date:
    return report.end - timedelta(days=1)


def empty_window_sentence(report: Report) -> str:
    return f"No pull events were recorded between {report.start} and {_last_day(report)}."


@dataclass
class _Raw:
    """Markup made here (never from data): put into a cell as is."""

    html: str
    text: str


def _headline_cells(report: Report) -> list[tuple[str, str, _Raw]]:
    """(title, big number, detail) of the four headline boxes."""
    h = report.headline
    total = float(_headline(report, "total_usd_month"))
    prev, moved = h.get("previous_usd_month"), h.get("usd_month_change")
    detail = "no previous report"
    if moved is not None:
        detail = f"{change(float(moved))} vs previous" + (f" {usd(float(prev))}" if prev is not None else "")
    stored = int(_headline(report, "stored_bytes"))
    prev_bytes = h.get("previous_stored_bytes")
    stored_detail = "no previous report"
    if prev_bytes is not None:
        stored_detail = f"{signed_size(stored - int(prev_bytes))} vs previous"
    repos = h.get("repositories")
    images = f"{count(_headline(report, 'images'))}"
    in_repos = f"in {count(repos)} repositories" if repos is not None else "image(s) and referrer(s)"
    rate, goal = _pull_rate(report), float(_headline(report, "success_target"))
    if rate is None:
        pull_big, mark = "-", _Raw("no pulls recorded", "no pulls recorded")
    else:
        pulls, failed = int(_headline(report, "total_pulls")), int(_headline(report, "failed_pulls"))
        pull_big = percent(rate)
        of = f"{count(failed)} of {count(pulls)} failed; "
        if rate >= goal:
            words = f"target {target(goal)}: met"
            mark = _Raw(
                f'{of}<span style="color:{_GOOD};font-weight:bold">&#10003; {words}</span>', of + words
            )
        else:
            words = f"BELOW TARGET {target(goal)}"
            mark = _Raw(
                f'{of}<span style="color:#ffffff;background:{_BAD};font-weight:bold;padding:1px 4px">'
                f"&#9888; {words}</span>",
                of + words,
            )
    return [
        ("Storage cost", f"{usd(total)}/month", _Raw(html.escape(detail), detail)),
        ("Stored", human_bytes(stored), _Raw(html.escape(stored_detail), stored_detail)),
        ("Images", images, _Raw(html.escape(in_repos), in_repos)),
        ("Pull success", pull_big, mark),
    ]


def _headline_html(report: Report) -> str:
    rate, goal = _pull_rate(report), float(_headline(report, "success_target"))
    cells = []
    for title, big, detail in _headline_cells(report):
        below = title == "Pull success" and rate is not None and rate < goal
        background = "#fdecea" if below else "#f7f7f7"
        cells.append(
            f'<td width="25%" valign="top" style="border:1px solid #cccccc;background:{background};'
            f'padding:8px;{_FONT}">'
            f'<div style="font-size:12px;color:#666666">{title}</div>'
            '<div style="font-size:20px;font-weight:bold;color:#222222;margin:2px 0">'
            f"{html.escape(big)}</div>"
            f'<div style="font-size:12px;color:#444444">{detail.html}</div></td>'
        )
    return (
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" '
        f'style="border-collapse:collapse;margin:0 0 8px"><tr>{"".join(cells)}</tr></table>'
    )


def _headline_text(report: Report) -> list[str]:
    return [f"{title}: {big} ({detail.text})" for title, big, detail in _headline_cells(report)]


# -- tables as both HTML and text -------------------------------------------------------------------
@dataclass
class _Grid:
    """A table for the body: header, rows of display strings (escaped when written), which
    columns are numbers (right-aligned), and a line under it."""

    head: Sequence[str]
    rows: list[list[Any]]
    numeric: Sequence[bool]
    more: str = ""

    def html(self) -> str:
        heads = "".join(
            f'<th style="background:#f0f0f0;text-align:{"right" if num else "left"}">{html.escape(h)}</th>'
            for h, num in zip(self.head, self.numeric, strict=True)
        )
        body = "".join(
            "<tr>" + "".join(_td(value, num) for value, num in zip(row, self.numeric, strict=True)) + "</tr>"
            for row in self.rows
        )
        more = f"<p {_SMALL}>{html.escape(self.more)}</p>" if self.more else ""
        return f"<table {_TABLE}><tr>{heads}</tr>{body}</table>{more}"

    def text(self) -> list[str]:
        lines = ["  " + " | ".join(self.head)]
        lines += [
            "  " + " | ".join(v.text if isinstance(v, _Raw) else str(v) for v in row) for row in self.rows
        ]
        return lines + ([f"  {self.more}"] if self.more else [])


def _td(value: Any, numeric: bool) -> str:
    align = "text-align:right;white-space:nowrap" if numeric else "text-align:left"
    inner = value.html if isinstance(value, _Raw) else html.escape(str(value))
    return f'<td style="{align};vertical-align:top">{inner}</td>'


@dataclass
class _Section:
    """A heading with paragraphs, tables and charts in order; ``level`` 3 or 4."""

    title: str
    parts: list[Any] = field(default_factory=list)  # str (a sentence), _Grid, or ("img", cid, alt)
    level: int = 3

    def html(self) -> str:
        out = [f"<h{self.level} {_H3 if self.level == 3 else _H4}>{html.escape(self.title)}</h{self.level}>"]
        for part in self.parts:
            if isinstance(part, _Grid):
                out.append(part.html())
            elif isinstance(part, tuple):
                _, cid, alt = part
                out.append(
                    f'<p {_P}><img src="cid:{html.escape(cid)}" alt="{html.escape(alt)}" '
                    f'width="{charts.WIDTH_PX}" '
                    'style="display:block;border:0;max-width:100%;height:auto"></p>'
                )
            else:
                out.append(_paragraph(part))
        return "\n".join(out)

    def text(self) -> list[str]:
        out = ["", f"{'==' if self.level == 3 else '--'} {self.title} {'==' if self.level == 3 else '--'}"]
        for part in self.parts:
            if isinstance(part, _Grid):
                out += part.text()
            elif isinstance(part, tuple):
                out.append(f"  [chart: {part[2]}]")
            else:
                out.append(part)
        return out


def _paragraph(text: str) -> str:
    """A sentence of the body (it may quote data: always escaped)."""
    return f"<p {_P}>{html.escape(text)}</p>"


def _more(shown: int, total: int, name: str, what: str = "rows") -> str:
    """The line under a table that shows the first rows only."""
    if total <= shown:
        return ""
    return f"... and {total - shown:,} more {what}; every row is in {name}.csv (attached)."


# -- sections ---------------------------------------------------------------------------------------
def _cost_sections(
    report: Report, t: dict[str, pd.DataFrame], cids: dict[str, str], top: int
) -> list[_Section]:
    repos, teams = t["cost_by_repository"], t["cost_by_team"]
    cost = _Section("Storage cost")
    if repos.empty:
        when = f" of {_utc(report.snapshot_at)}" if report.snapshot_at else ""
        cost.parts.append(
            f"The cost table is empty: the inventory snapshot{when} holds no image or referrer to cost."
        )
        return [cost]
    cost.parts.append(
        f"Stored bytes are priced at ${report.price_per_gb_month:g} per GiB-month (GiB = 2^30 bytes, "
        "as AWS bills storage); an index adds nothing, its images are counted."
    )
    if "stored_bytes_by_repository" in cids:
        cost.parts.append(("img", cids["stored_bytes_by_repository"], _bytes_alt(repos)))
    by_team = teams.sort_values(["usd_month", "team"], ascending=[False, True])
    team_grid = _Grid(
        ("Team", "Repositories", "Images", "Stored", "USD/month"),
        [
            [r.team, count(r.repositories), count(r.images), size(r.stored_bytes), usd(r.usd_month)]
            for r in by_team.itertuples()
        ],
        (False, True, True, True, True),
    )
    shown = repos.sort_values(["usd_month", "registry", "repository"], ascending=[False, True, True]).head(
        top
    )
    repo_grid = _Grid(
        ("Registry", "Repository", "Team", "Images", "Stored", "USD/month", "Unique layers*", "USD/month*"),
        [
            [
                r.registry,
                r.repository,
                r.team,
                count(r.images),
                size(r.stored_bytes),
                usd(r.usd_month),
                size(r.unique_layer_bytes_estimate),
                "-" if _blank(r.usd_month_estimate) else usd(r.usd_month_estimate),
            ]
            for r in shown.itertuples()
        ],
        (False, False, False, True, True, True, True, True),
        _more(len(shown), len(repos), "cost_by_repository", "repositories"),
    )
    estimate = (
        "* Estimate: layers shared by images of one repository counted once, where the layer digests "
        "are known ('-' where they are not)."
    )
    return [
        cost,
        _Section("Cost by team", [team_grid], level=4),
        _Section(f"Top {len(shown)} repositories by cost", [repo_grid, estimate], level=4),
    ]


def _bytes_alt(repos: pd.DataFrame) -> str:
    biggest = repos.loc[repos["stored_bytes"].astype("float64").idxmax()]
    return (
        f"{CHART_ALT['stored_bytes_by_repository']}: {len(repos):,} repositories; the largest is "
        f"{biggest['registry']}/{biggest['repository']} with {size(biggest['stored_bytes'])}"
    )


_Compared = tuple[float | None, float, float | None]  # USD/month before, now, change (fraction)


def _change_entry(value: Any, now: float) -> _Compared | None:
    """A headline change entry: a fraction, or a mapping as ``trend.changes`` makes it
    (``usd_month_before``, ``usd_month_now``, ``change``; or ``previous_usd_month`` and
    ``usd_month_change``). None: nothing to compare with."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return None, now, float(value)
    if not isinstance(value, dict):
        raise ValueError(f"report headline change entry {value!r}: expected a fraction or a mapping")
    before = _first(value, "usd_month_before", "previous_usd_month")
    now = _first(value, "usd_month_now") if value.get("usd_month_now") is not None else now
    moved = _first(value, "change", "usd_month_change")
    if moved is None and before:
        moved = (now - before) / before
    return None if before is None and moved is None else (before, now, moved)


def _first(mapping: dict[str, Any], *keys: str) -> float | None:
    return next((float(mapping[k]) for k in keys if mapping.get(k) is not None), None)


def _trend_change(trend: pd.DataFrame, days: int) -> tuple[_Compared, str] | None:
    """Against the newest snapshot at least ``days`` before the trend table's latest one, and
    that snapshot's day."""
    if trend.empty:
        return None
    at = pd.to_datetime(trend["snapshot_at"], utc=True)
    totals = trend.assign(at=at).groupby("at")["usd_month"].sum().sort_index()
    earlier = totals[totals.index <= totals.index[-1] - pd.Timedelta(days=days)]
    if earlier.empty:
        return None
    before, now = float(earlier.iloc[-1]), float(totals.iloc[-1])
    return (before, now, (now - before) / before if before else None), f"{earlier.index[-1]:%Y-%m-%d}"


def _change_section(report: Report, t: dict[str, pd.DataFrame], cids: dict[str, str]) -> _Section:
    """The trend chart, then the cost against the previous report, a week and a month ago (the
    headline's entries; without them, the trend table's snapshots)."""
    section = _Section("Trend")
    if "cost_trend" in cids:
        section.parts.append(("img", cids["cost_trend"], _trend_alt(t["trend"])))
    else:
        section.parts.append("Fewer than two inventory snapshots were read: no trend to draw yet.")
    h, now = report.headline, float(_headline(report, "total_usd_month"))
    previous = {
        "previous_usd_month": h.get("previous_usd_month"),
        "usd_month_change": h.get("usd_month_change"),
    }
    compared = [("vs previous report", _change_entry(previous, now))]
    for key, label, days in (
        ("week_over_week", "week over week", 7),
        ("month_over_month", "month over month", 30),
    ):
        if key in h:
            compared.append((label, _change_entry(h[key], now)))
        else:
            found = _trend_change(t["trend"], days)
            compared.append((f"{label} (snapshot of {found[1]})", found[0]) if found else (label, None))
    rows = [
        [label, "-", usd(now), "no earlier data"]
        if entry is None
        else [
            label,
            "-" if entry[0] is None else usd(entry[0]),
            usd(entry[1]),
            "-" if entry[2] is None else change(entry[2]),
        ]
        for label, entry in compared
    ]
    section.parts.append(
        _Grid(("Compared", "USD/month then", "USD/month now", "Change"), rows, (False, True, True, True))
    )
    return section


def _trend_alt(trend: pd.DataFrame) -> str:
    points = pd.to_datetime(trend["snapshot_at"], utc=True)
    return (
        f"{CHART_ALT['cost_trend']}: {points.nunique()} snapshots from {points.min():%Y-%m-%d} "
        f"to {points.max():%Y-%m-%d}, {trend['registry'].nunique()} registries"
    )


def _growers_section(t: dict[str, pd.DataFrame], top: int) -> _Section:
    growers = t["growers"]
    grew = growers[growers["bytes_change"].astype("float64") > 0]
    section = _Section("Top growers")
    if grew.empty:
        section.parts.append("No repository grew since the previous report's snapshot.")
        return section
    shown = grew.sort_values(["bytes_change", "registry", "repository"], ascending=[False, True, True]).head(
        top
    )
    section.parts.append(
        _Grid(
            ("Registry", "Repository", "Team", "Before", "Now", "Change", "USD/month change"),
            [
                [
                    r.registry,
                    r.repository,
                    r.team,
                    size(r.bytes_before),
                    size(r.bytes_now),
                    signed_size(r.bytes_change),
                    signed_usd(r.usd_month_change),
                ]
                for r in shown.itertuples()
            ],
            (False, False, False, True, True, True, True),
            _more(len(shown), len(grew), "growers", "repositories that grew"),
        )
    )
    return section


def _savings_section(report: Report, t: dict[str, pd.DataFrame], top: int) -> _Section:
    saved = t["savings"]
    section = _Section("Savings by retention")
    made = report.headline.get("savings_made_usd_month")
    projected = report.headline.get("savings_projected_usd_month")
    if made is None:
        made = float(saved.loc[saved["kind"] == "made", "usd_month"].sum())
    if projected is None:
        projected = float(saved.loc[saved["kind"] == "projected", "usd_month"].sum())
    if saved.empty:
        section.parts.append("Retention removed nothing in this window, and its latest plan removes nothing.")
        return section
    section.parts.append(
        f"Made in this window: {usd(float(made))}/month. Projected by the latest retention plan: "
        f"{usd(float(projected))}/month more."
    )
    shown = saved.sort_values(["kind", "usd_month"], ascending=[True, False]).head(top)
    section.parts.append(
        _Grid(
            ("Kind", "Run", "Registry", "Images", "Bytes", "USD/month"),
            [
                [r.kind, r.run_id, r.registry, count(r.images), size(r.bytes), usd(r.usd_month)]
                for r in shown.itertuples()
            ],
            (False, False, False, True, True, True),
            _more(len(shown), len(saved), "savings"),
        )
    )
    return section


def _s3_section(t: dict[str, pd.DataFrame]) -> _Section:
    s3 = t["s3_storage"]
    section = _Section("S3 archive and backups by storage class")
    if s3.empty:
        section.parts.append("No archive or backup object was found in the bucket.")
        return section
    rows = [
        [r.area, r.storage_class, count(r.objects), size(r.bytes), usd(r.usd_month)]
        for r in s3.sort_values(["area", "storage_class"]).itertuples()
    ]
    rows.append(
        [
            _Raw("<b>total</b>", "total"),
            "",
            count(s3["objects"].sum()),
            size(s3["bytes"].sum()),
            usd(float(s3["usd_month"].sum())),
        ]
    )
    section.parts.append(
        _Grid(
            ("Area", "Storage class", "Objects", "Bytes", "USD/month"), rows, (False, False, True, True, True)
        )
    )
    return section


def _pull_sections(
    report: Report, t: dict[str, pd.DataFrame], cids: dict[str, str], top: int
) -> list[_Section]:
    section = _Section("Pulls")
    if report.empty_window:
        section.parts.append(empty_window_sentence(report))
        return [section]
    days = t["pulls_by_repository_day"]
    section.parts.append(
        f"{count(days['pulls'].sum())} pull(s) between {report.start} and {_last_day(report)} (UTC days), "
        f"{count(days['failed'].sum())} failed."
    )
    if "pulls_per_day" in cids:
        section.parts.append(
            (
                "img",
                cids["pulls_per_day"],
                f"{CHART_ALT['pulls_per_day']}, {report.start} to {_last_day(report)}",
            )
        )
    goal = float(_headline(report, "success_target"))
    success = t["pull_success"].sort_values("registry")
    rows = []
    for r in success.itertuples():
        ok = bool(r.meets_target) if not _blank(r.meets_target) else _meets(r.success_rate, goal)
        mark = (
            _Raw(f'<span style="color:{_GOOD}">&#10003; met</span>', "met")
            if ok
            else _Raw(f'<span style="color:{_BAD};font-weight:bold">&#9888; BELOW</span>', "BELOW TARGET")
        )
        rate = "-" if _blank(r.success_rate) else percent(float(r.success_rate))
        rows.append([r.registry, count(r.pulls), count(r.failed), rate, mark])
    per_registry = _Section(
        f"Pull success per registry (target {target(goal)})",
        [_Grid(("Registry", "Pulls", "Failed", "Success", "Target"), rows, (False, True, True, True, False))],
        level=4,
    )
    by_repo = days.groupby(["registry", "repository"], as_index=False)[["pulls", "failed"]].sum()
    bad = by_repo[by_repo["failed"] > 0]
    worst = _Section("Worst repositories", level=4)
    if bad.empty:
        worst.parts.append("No pull failed in the window.")
    else:
        bad = bad.assign(rate=1 - bad["failed"] / bad["pulls"].where(bad["pulls"] > 0))
        shown = bad.sort_values(
            ["rate", "failed", "registry", "repository"], ascending=[True, False, True, True]
        )
        shown = shown.head(top)
        worst.parts.append(
            _Grid(
                ("Registry", "Repository", "Pulls", "Failed", "Success"),
                [
                    [
                        r.registry,
                        r.repository,
                        count(r.pulls),
                        count(r.failed),
                        "-" if _blank(r.rate) else percent(r.rate),
                    ]
                    for r in shown.itertuples()
                ],
                (False, False, True, True, True),
                _more(len(shown), len(bad), "pulls_by_repository_day", "repositories with failed pulls"),
            )
        )
    return [section, per_registry, worst]


def _meets(rate: Any, goal: float) -> bool:
    return not _blank(rate) and float(rate) >= goal


def _never_pulled_section(report: Report, t: dict[str, pd.DataFrame]) -> _Section:
    frame = t["never_pulled"]
    days = report.headline.get("never_pulled_days")
    title = f"Images not pulled in {days} days" if days else "Images without a recent pull"
    section = _Section(title)
    if frame.empty:
        section.parts.append("Every image was pulled recently.")
        return section
    section.parts.append(f"{count(len(frame))} image(s), {size(frame['size_bytes'].sum())} stored.")
    shown = frame.sort_values(["size_bytes", "registry", "repository"], ascending=[False, True, True])
    shown = shown.head(NEVER_PULLED_ROWS)
    rows = [
        [
            r.registry,
            r.repository,
            _short_digest(r.digest),
            _tags(r.tags),
            size(r.size_bytes),
            "never" if _blank(r.last_pull) else _day(r.last_pull),
            "-" if _blank(r.last_pull_source) else r.last_pull_source,
        ]
        for r in shown.itertuples()
    ]
    section.parts.append(
        _Grid(
            ("Registry", "Repository", "Digest", "Tags", "Size", "Last pull", "From"),
            rows,
            (False, False, False, False, True, False, False),
            _more(len(shown), len(frame), "never_pulled", "images"),
        )
    )
    return section


def _short_digest(digest: Any) -> str:
    text = "" if _blank(digest) else str(digest)
    return text[:19] + "…" if len(text) > 19 else text


def _tags(tags: Any) -> str:
    if isinstance(tags, list | tuple | np.ndarray):
        names = [str(t) for t in tags]
        return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "") or "-"
    return "-" if _blank(tags) or tags == "" else str(tags)


def _day(value: Any) -> str:
    if isinstance(value, datetime | pd.Timestamp):
        return f"{value:%Y-%m-%d}"
    return str(value)[:10]


def _quality_section(report: Report, quality: dict[str, Any] | None) -> _Section:
    section = _Section("Data quality")
    problems = report.problems
    if not problems:
        section.parts.append("Every input file and record could be read.")
    else:
        total = sum(p.count for p in problems)
        section.parts.append(
            f"{len(problems)} input problem(s) standing for {total:,} file(s) or record(s) that could not be "
            "used (they are left out of the numbers above):"
        )
        shown = problems[:MAX_PROBLEMS]
        section.parts.append(
            _Grid(
                ("Source", "Problem", "Count"),
                [[p.source, p.problem, count(p.count)] for p in shown],
                (False, False, True),
                _more(len(shown), len(problems), "problems", "problems"),
            )
        )
    if quality is None:
        section.parts.append("Validation: not run on this report.")
    elif quality.get("success"):
        section.parts.append("Validation: every expectation was met.")
    else:
        failures = list(quality.get("failures") or [])
        section.parts.append(f"Validation: {len(failures)} expectation(s) failed.")
        if failures:
            section.parts.append(
                _Grid(
                    ("Table", "Expectation", "Details"),
                    [_failure_row(f) for f in failures],
                    (False, False, False),
                )
            )
    return section


def _failure_row(failure: Any) -> list[str]:
    if not isinstance(failure, dict):
        return ["-", str(failure), ""]
    rest = {k: v for k, v in failure.items() if k not in ("table", "expectation")}
    details = json.dumps(rest, default=str, sort_keys=True) if rest else ""
    details = details if len(details) <= 300 else details[:299] + "…"
    return [str(failure.get("table", "-")), str(failure.get("expectation", "-")), details]


# -- documents --------------------------------------------------------------------------------------
def _notes(report: Report) -> list[str]:
    """The report's notes, without the sentences the sections already say."""
    said = {empty_window_sentence(report)}
    return [n for n in report.notes if n not in said]


def _footer(report: Report, attachments: Sequence[Attachment], left_out: Sequence[str] = ()) -> str:
    made = f"Generated {_utc(report.generated_at)}"
    if report.snapshot_at is not None:
        made += f" from the inventory snapshot of {_utc(report.snapshot_at)}"
    names = ", ".join(a.name for a in attachments)
    out = f"{made}. Attached (every row, exact values): {names or 'nothing'}."
    if left_out:
        out += f" Too large to attach, stored beside the report in S3 (email/): {', '.join(left_out)}."
    return out


def _html_document(
    report: Report,
    sections: Sequence[_Section],
    attachments: Sequence[Attachment],
    left_out: Sequence[str] = (),
) -> str:
    title = f"Registry report {report.label} ({report.period})"
    notes = "".join(_paragraph(n) for n in _notes(report))
    body = "\n".join(s.html() for s in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>\n"
        '<body style="margin:0;padding:0;background:#ffffff">\n'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">'
        '<tr><td align="center">\n'
        '<table role="presentation" width="760" cellpadding="0" cellspacing="0" border="0" '
        f'style="width:760px;max-width:100%;{_FONT}font-size:14px;color:#222222">'
        '<tr><td style="padding:16px" align="left">\n'
        f"<h2 {_H2}>{html.escape(title)}</h2>\n"
        f"{_headline_html(report)}\n{notes}\n{body}\n"
        f"<p {_SMALL}>{html.escape(_footer(report, attachments, left_out))}</p>\n"
        "</td></tr></table>\n</td></tr></table>\n</body></html>\n"
    )


def _text_document(
    report: Report,
    sections: Sequence[_Section],
    attachments: Sequence[Attachment],
    left_out: Sequence[str] = (),
) -> str:
    lines = [f"Registry report {report.label} ({report.period})", "", *_headline_text(report)]
    lines += ["", *_notes(report)] if _notes(report) else []
    for section in sections:
        lines += section.text()
    lines += ["", _footer(report, attachments, left_out)]
    return "\n".join(lines) + "\n"


# -- charts -----------------------------------------------------------------------------------------
def _charts(report: Report, t: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    """The charts there is something to draw for: no bars of an empty cost table, no trend of
    one point, no pull chart of an empty window."""
    out: dict[str, bytes] = {}
    if not t["cost_by_repository"].empty:
        out["stored_bytes_by_repository"] = charts.stored_bytes_by_repository(t["cost_by_repository"])
    trend = charts.cost_trend(t["trend"])
    if trend is not None:
        out["cost_trend"] = trend
    pulls = charts.pulls_per_day(  # None for an empty window
        t["pulls_by_repository_day"], report.start, report.end, report.headline.get("success_target")
    )
    if pulls is not None:
        out["pulls_per_day"] = pulls
    return out


def _table(report: Report, name: str) -> pd.DataFrame:
    """Table ``name`` of the report with the contract's columns (an empty one when absent)."""
    columns, _ = tables.TABLES[name]
    frame = report.tables.get(name)
    return tables.empty(columns) if frame is None else tables.conform(frame, name)


def _exact_table(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    return tables.conform(frame, name) if name in tables.TABLES else frame


# -- CSV --------------------------------------------------------------------------------------------
def table_csv(frame: pd.DataFrame) -> bytes:
    """``frame`` as UTF-8 CSV with a header row: counts and bytes as integers, USD and rates with
    every decimal they have (USD with at least two), days and times in ISO 8601, lists joined
    with ``,``, missing values empty."""
    columns = [_column_text(frame[c], str(c)) for c in frame.columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([str(c) for c in frame.columns])
    writer.writerows(zip(*columns, strict=True))
    return out.getvalue().encode("utf-8")


def problems_csv(problems: Iterable[Problem]) -> bytes:
    """Every input problem (the body lists the first ``MAX_PROBLEMS``)."""
    rows = [p.as_dict() for p in problems]
    return table_csv(pd.DataFrame(rows, columns=["source", "problem", "count"]))


def _column_text(series: pd.Series, name: str) -> list[str]:
    """One column's cells; the common column types in bulk (100,000 rows stay under a second)."""
    kind = series.dtype.kind
    if kind in "iu":
        return series.astype(str).tolist()
    if kind == "b":
        return np.where(series.to_numpy(), "true", "false").tolist()
    if isinstance(series.dtype, pd.StringDtype):  # text as it is, missing as empty: no per-cell test
        return series.fillna("").tolist()
    values = series.tolist()
    if kind == "O" and all(type(v) is str for v in values):
        return values
    if kind == "O" and all(type(v) is date for v in values):
        return [v.isoformat() for v in values]
    if "usd" in name:
        fmt: Callable[[Any], str] = _usd_cell
    elif name in _COUNT_COLUMNS or "bytes" in name:
        fmt = _count_cell
    else:
        fmt = _cell
    return [fmt(v) for v in values]


def _exact(value: float) -> str:
    """The shortest decimal that reads back as the same float, never in exponent form."""
    text = repr(value)
    if "e" in text and math.isfinite(value):
        text = np.format_float_positional(value, unique=True, trim="-")
    return text


def _usd_cell(value: Any) -> str:
    if not isinstance(value, float | int) or isinstance(value, bool) or value != value:  # NaN
        return _cell(value)
    whole, _, decimals = _exact(float(value)).partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}" if whole.lstrip("-").isdigit() else whole


def _count_cell(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return _cell(value)


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple | np.ndarray):
        return ",".join(str(v) for v in value)
    if _blank(value):
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float):
        return _exact(value)
    if isinstance(value, date):  # datetime and Timestamp too
        return value.isoformat()
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)
