"""What a built report is, between the builders, the checks, the rendering and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import pandas as pd

Period = Literal["weekly", "monthly", "manual"]


@dataclass
class Problem:
    """Input that could not be used: a file or record, counted and named in the report's
    data-quality section (never a crash, never silently dropped)."""

    source: str  # the file/object (or "<source>: record <id>")
    problem: str  # what was wrong, in words
    count: int = 1  # how many records/files this line stands for

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "problem": self.problem, "count": self.count}


@dataclass
class Report:
    """One report. ``start`` is the first UTC day of the window, ``end`` the day after its last
    (excluded). ``tables`` holds the frames named in ``tables.TABLES`` (each exactly those
    columns). ``headline`` holds the numbers of the subject and the summary:

    ``total_usd_month`` (float), ``previous_usd_month`` (float | None: the previous report's),
    ``usd_month_change`` (float | None: fraction, 0.05 = +5 %), ``stored_bytes`` (int),
    ``previous_stored_bytes`` (int | None), ``total_pulls`` (int), ``failed_pulls`` (int),
    ``pull_success_rate`` (float | None: None when no pulls), ``success_target`` (float),
    ``images`` (int), ``repositories`` (int), ``savings_made_usd_month`` (float),
    ``savings_projected_usd_month`` (float), ``s3_usd_month`` (float).
    """

    period: Period
    start: date
    end: date
    generated_at: datetime
    price_per_gb_month: float
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    headline: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # plain sentences shown in the summary
    snapshot_at: datetime | None = None  # the inventory snapshot the cost is built on

    @property
    def empty_window(self) -> bool:
        """No pull event in the window (the report says so instead of drawing empty charts)."""
        frame = self.tables.get("pulls_by_repository_day")
        return frame is None or frame.empty

    @property
    def label(self) -> str:
        """``2026-11-16..2026-11-22`` (the last day included)."""
        last = date.fromordinal(self.end.toordinal() - 1)
        return f"{self.start.isoformat()}..{last.isoformat()}"
