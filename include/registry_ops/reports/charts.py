"""The report's PNG charts: stored bytes by repository, the cost trend, pulls per day.

Drawn on matplotlib's object API (``Figure`` + ``FigureCanvasAgg``), never pyplot: no global
figure state, so two tasks in one worker can draw at once, and no display is needed. matplotlib is
imported inside the functions: its import takes long enough to slow DAG parsing. The size and DPI
are fixed (720 px wide: readable in a mail client, a few tens of KB) and the PNG carries no
metadata (no version, no time), so the same table gives the same bytes.
"""

from __future__ import annotations

import io
import math
from datetime import date, timedelta
from typing import Any

import pandas as pd

DPI = 100
WIDTH_PX = 720
HEIGHT_PX = 340
BAR_COLOR = "#4878a8"
FAIL_COLOR = "#c0392b"
MAX_SERIES = 8  # registries drawn one by one in the trend; the rest are summed as "other"
_UNITS = (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def human_bytes(n: float) -> str:
    """``1.2 GiB``: binary units (as AWS bills storage), one decimal; bytes below 1 KiB as is."""
    for unit, size in _UNITS:
        if abs(n) >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{int(n):,} B"


def _unit(largest: float) -> tuple[str, int]:
    """The one unit an axis is drawn in: the largest value's."""
    for unit, size in _UNITS:
        if largest >= size:
            return unit, size
    return "B", 1


def _text(value: str, limit: int = 48) -> str:
    """A label from data, drawn as written: ``$`` would start matplotlib's math mode; long names
    keep their start and end."""
    if len(value) > limit:
        value = value[: limit // 2 - 1] + "…" + value[-(limit - limit // 2) :]
    return value.replace("$", r"\$")


def _figure(height_px: int = HEIGHT_PX) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


def stored_bytes_by_repository(cost_by_repository: pd.DataFrame, top: int = 15) -> bytes:
    """Horizontal bars of the ``top`` repositories by stored bytes, largest first, each labelled
    in human units. ValueError on a table without rows (the email says so in words instead)."""
    if cost_by_repository.empty:
        raise ValueError("cost_by_repository: no repositories to chart")
    frame = cost_by_repository.assign(stored=cost_by_repository["stored_bytes"].astype("float64"))
    frame = frame.sort_values(["stored", "registry", "repository"], ascending=[False, True, True])
    shown = frame.head(top).iloc[::-1]  # barh draws bottom-up: the largest ends on top
    unit, size = _unit(float(shown["stored"].max()))
    fig = _figure(max(200, 70 + 24 * len(shown)))
    ax = fig.add_subplot()
    labels = [_text(f"{r}/{p}") for r, p in zip(shown["registry"], shown["repository"], strict=True)]
    bars = ax.barh(range(len(shown)), shown["stored"] / size, color=BAR_COLOR, height=0.7)
    ax.set_yticks(range(len(shown)), labels=labels, fontsize=8)
    ax.bar_label(bars, labels=[human_bytes(v) for v in shown["stored"]], padding=3, fontsize=7)
    ax.set_xlabel(f"stored ({unit})")
    ax.margins(x=0.15)
    more = f" (top {len(shown)} of {len(frame)})" if len(frame) > len(shown) else ""
    ax.set_title(f"Stored bytes by repository{more}", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def cost_trend(trend: pd.DataFrame) -> bytes | None:
    """USD per month per registry (and their total) at each inventory snapshot read; None when
    there are fewer than two snapshots (one point is no trend)."""
    if trend.empty:
        return None
    frame = trend.assign(at=pd.to_datetime(trend["snapshot_at"], utc=True).dt.tz_convert(None))
    table = frame.pivot_table(index="at", columns="registry", values="usd_month", aggfunc="sum").sort_index()
    if len(table) < 2:
        return None
    table = table.fillna(0.0)
    order = table.iloc[-1].sort_values(ascending=False).index.tolist()
    if len(order) > MAX_SERIES:
        keep, rest = order[: MAX_SERIES - 1], order[MAX_SERIES - 1 :]
        table = table[keep].assign(**{f"other ({len(rest)})": table[rest].sum(axis=1)})
    else:
        table = table[order]
    fig = _figure()
    ax = fig.add_subplot()
    when = table.index.to_pydatetime()
    for name in table.columns:
        ax.plot(when, table[name], marker="o", markersize=3, linewidth=1.5, label=_text(str(name), 30))
    if table.shape[1] > 1:
        ax.plot(when, table.sum(axis=1), color="black", linestyle="--", linewidth=1.2, label="total")
    _date_axis(ax)
    ax.set_ylabel("USD per month")
    ax.set_ylim(bottom=0)
    cents = float(table.sum(axis=1).max()) < 10  # small amounts keep their cents on the axis
    ax.yaxis.set_major_formatter(_formatter(lambda v: f"{v:,.2f}" if cents else f"{v:,.0f}"))
    fig.legend(fontsize=7, loc="outside lower center", frameon=False, ncols=min(5, len(ax.lines)))
    fig.suptitle("Storage cost by registry", fontsize=10)
    ax.spines[["top"]].set_visible(False)
    return _png(fig)


def pulls_per_day(
    pulls_by_repository_day: pd.DataFrame,
    start: date | None = None,
    end: date | None = None,
    success_target: float | None = None,
) -> bytes | None:
    """Pulls per UTC day as bars, the day's failure rate as a line on a second axis (and the
    limit the success target allows, when given); days from ``start`` to ``end`` (excluded)
    without a pull are drawn as zero, not left out. None when there is no pull."""
    frame = pulls_by_repository_day
    if frame.empty or float(frame["pulls"].sum()) <= 0:
        return None
    days = frame.assign(day=pd.to_datetime(frame["day"]).dt.date).groupby("day")[["pulls", "failed"]].sum()
    if start is not None and end is not None:
        every = [start + timedelta(days=i) for i in range((end - start).days)]
        days = days.reindex(sorted(set(every) | set(days.index)), fill_value=0)
    pulls = days["pulls"].astype("float64")
    rate = (days["failed"].astype("float64") / pulls.where(pulls > 0)) * 100
    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(list(days.index), pulls, width=0.8, color=BAR_COLOR, label="pulls")
    ax.set_ylabel("pulls per day")
    ax.yaxis.set_major_formatter(_formatter(lambda v: f"{v:,.0f}"))
    ax2 = ax.twinx()
    ax2.plot(list(days.index), rate, color=FAIL_COLOR, marker="o", markersize=3, label="failed (%)")
    top = float(rate.max()) if rate.notna().any() else 0.0
    if success_target is not None:
        limit = (1 - success_target) * 100
        ax2.axhline(limit, color=FAIL_COLOR, linestyle=":", linewidth=1, label=f"limit ({limit:g} %)")
        top = max(top, limit)
    ax2.set_ylim(0, max(1.0, math.ceil(top * 1.2)))
    ax2.set_ylabel("failed (%)", color=FAIL_COLOR)
    _date_axis(ax, list(days.index) if len(days) <= 8 else None)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", frameon=False, ncols=3)
    fig.suptitle("Pulls per day and failure rate (UTC days)", fontsize=10)
    return _png(fig)


def _date_axis(ax: Any, every: list[date] | None = None) -> None:
    """ISO days on the x axis: each of ``every`` (a week's days), else as many as fit."""
    import matplotlib.dates as mdates

    if every:
        ax.set_xticks(every)
    else:
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))  # as the report writes days
    ax.tick_params(axis="x", labelsize=8)


def _formatter(fn: Any) -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: fn(v))
