"""The SLO arithmetic, pure (no I/O): SLIs, error budgets, burn rates and the multiwindow,
multi-burn-rate alert condition of the Google SRE workbook (chapter 5, "Alerting on SLOs").

Samples are one row per event with ``at`` (UTC), ``registry`` and ``good``:

* availability: ``registry_health``'s probe rows (``schema.PROBE_SCHEMA``, ``good`` as stored);
* pull success: the reports' pull events (``reports.events.EVENTS_SCHEMA``): a pull is good
  unless it ``failed``.

Every sample counts once: a registry's SLI is its good / its total, the fleet's is all good / all
total (pooled, so a registry's probes count as much as another's: they are all every 5 min).

Windows are half-open, ``until - span <= at < until`` (as ``health.dataset.read``). Formulas,
with ``bad_fraction = bad / total``:

* error budget left over the objective's window = ``1 - bad_fraction / (1 - target)`` (1: nothing
  spent, 0: all spent, negative: overspent); ``None`` when the window holds no sample;
* burn rate over a window = ``bad_fraction / (1 - target)``; a window with no sample burns 0
  (and says ``samples: 0``): no data is not an outage;
* an alert condition holds when BOTH its long and short windows burn at >= its ``burn_rate``.

Two rules for sparse samples (the workbook's "low-traffic services" note: with 12 probes an
hour, ONE failed probe is a 1/12 error rate, an 83x burn of a 99.9 % objective, and would page):

* **minimum bad samples**: a condition only fires when its long window holds at least
  ``MIN_BAD`` (2) bad samples; one failed probe (or pull) alone is recorded as ``held_back``,
  never paged. Two failed probes in a row (5 to 10 min of a registry down) do page.
* **last known state**: a short window shorter than the sampling gap can hold no sample when a
  probe run came late; it then takes the newest sample within the long window (the last known
  state), so a registry that is still down keeps its episode open rather than closing and
  re-opening it (which would email again).

An alert of one SLO and scope may be *covered* by another that holds at the same time (the
episode opens without an email): a ticket by the page alert of the same scope, a fleet alert by
a registry's alert of at least its severity (the registry's email already names the outage).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa

FLEET = "_fleet"  # the fleet-wide scope (registry names start with [a-z0-9], never with "_")
MIN_BAD = 2
SEVERITY_RANK = {"ticket": 1, "page": 2}
SAMPLE_COLUMNS = ["at", "registry", "good"]


@dataclass(frozen=True)
class Counts:
    good: int
    total: int

    @property
    def bad(self) -> int:
        return self.total - self.good

    @property
    def bad_fraction(self) -> float | None:
        return None if self.total == 0 else self.bad / self.total

    @property
    def sli(self) -> float | None:
        return None if self.total == 0 else self.good / self.total


# -- samples -------------------------------------------------------------------------------------
def _frame(data: pa.Table | pd.DataFrame) -> pd.DataFrame:
    return data.to_pandas() if isinstance(data, pa.Table) else data


def _utc(series: pd.Series) -> pd.Series:
    times = pd.to_datetime(series)
    return times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")


def probe_samples(probes: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Probe rows (``PROBE_SCHEMA``) as samples; ``good`` is the probe's stored verdict."""
    df = _frame(probes)
    missing = [c for c in SAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"probe rows lack column(s) {missing}: not PROBE_SCHEMA rows")
    out = pd.DataFrame({"at": _utc(df["at"]), "registry": df["registry"].astype(str)})
    out["good"] = df["good"].fillna(False).astype(bool).to_numpy()
    return out


def pull_samples(events: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Pull events (``EVENTS_SCHEMA``) as samples: good unless ``failed`` (null: not failed);
    events no registry was credited with are not counted."""
    df = _frame(events)
    missing = [c for c in ("event_time", "registry", "failed") if c not in df.columns]
    if missing:
        raise ValueError(f"pull events lack column(s) {missing}: not EVENTS_SCHEMA rows")
    df = df[df["registry"].notna()]
    out = pd.DataFrame({"at": _utc(df["event_time"]), "registry": df["registry"].astype(str)})
    out["good"] = ~df["failed"].fillna(False).astype(bool).to_numpy()
    return out.reset_index(drop=True)


def empty_samples() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "at": pd.Series([], dtype="datetime64[us, UTC]"),
            "registry": pd.Series([], dtype=object),
            "good": pd.Series([], dtype=bool),
        }
    )


def scoped(samples: pd.DataFrame, scope: str) -> pd.DataFrame:
    """The samples of one registry, or all of them for ``FLEET``."""
    return samples if scope == FLEET else samples[samples["registry"] == scope]


def count(samples: pd.DataFrame, since: datetime, until: datetime) -> Counts:
    """Good and total samples with ``since <= at < until``."""
    inside = samples[(samples["at"] >= since) & (samples["at"] < until)]
    return Counts(int(inside["good"].sum()), len(inside))


# -- formulas ------------------------------------------------------------------------------------
def budget_left(counts: Counts, target: float) -> float | None:
    """``1 - bad_fraction / (1 - target)``; None without samples."""
    fraction = counts.bad_fraction
    return None if fraction is None else 1 - fraction / (1 - target)


def burn_rate(counts: Counts, target: float) -> float:
    """``bad_fraction / (1 - target)``; 0 without samples (no data burns nothing)."""
    fraction = counts.bad_fraction
    return 0.0 if fraction is None else fraction / (1 - target)


# -- windows and alerts --------------------------------------------------------------------------
def window(samples: pd.DataFrame, until: datetime, span: timedelta, reach: timedelta) -> dict[str, Any]:
    """Counts over ``[until - span, until)``; when that holds no sample, the newest sample in
    ``[until - reach, until)`` (the last known state, ``stretched``)."""
    counts = count(samples, until - span, until)
    stretched = False
    if counts.total == 0 and reach > span:
        earlier = samples[(samples["at"] >= until - reach) & (samples["at"] < until)]
        if len(earlier):
            newest = earlier.sort_values("at").iloc[-1]
            counts, stretched = Counts(int(bool(newest["good"])), 1), True
    return {"good": counts.good, "total": counts.total, "bad": counts.bad, "stretched": stretched}


def alert_condition(samples: pd.DataFrame, alert: Any, target: float, until: datetime) -> dict[str, Any]:
    """One ``BurnRateAlert`` over one scope's samples: both windows' burn rates, whether both
    reach the threshold (``over``) and whether it ``firing`` (``over`` and not ``held_back`` by
    the minimum-bad-samples rule)."""
    long = window(samples, until, alert.long_window, alert.long_window)
    short = window(samples, until, alert.short_window, alert.long_window)
    long_burn = burn_rate(Counts(long["good"], long["total"]), target)
    short_burn = burn_rate(Counts(short["good"], short["total"]), target)
    over = long_burn >= alert.burn_rate and short_burn >= alert.burn_rate
    held_back = over and long["bad"] < MIN_BAD
    return {
        "alert": alert.name,
        "severity": alert.severity,
        "burn_rate": alert.burn_rate,
        "long_window_s": int(alert.long_window.total_seconds()),
        "short_window_s": int(alert.short_window.total_seconds()),
        "long": {**long, "burn": long_burn, "no_data": long["total"] == 0},
        "short": {**short, "burn": short_burn, "no_data": short["total"] == 0},
        "over": over,
        "held_back": held_back,
        "firing": over and not held_back,
    }


def evaluate_slo(
    samples: pd.DataFrame,
    objective: Any,
    alerts: Sequence[Any],
    now: datetime,
    registries: Iterable[str] = (),
) -> dict[str, Any]:
    """One SLO (an ``Objective``) per registry (those given and those with samples) and fleet:
    counts over its window, SLI, budget left and every alert's condition."""
    names = sorted(set(registries) | set(samples["registry"].unique()))
    out: dict[str, Any] = {}
    for scope in [FLEET, *names]:
        mine = scoped(samples, scope)
        counts = count(mine, now - objective.window, now)
        out[scope] = {
            "good": counts.good,
            "total": counts.total,
            "sli": counts.sli,
            "budget_left": budget_left(counts, objective.target),
            "alerts": [alert_condition(mine, a, objective.target, now) for a in alerts],
        }
    return {"target": objective.target, "window_s": int(objective.window.total_seconds()), "scopes": out}


def coverer(condition: dict[str, Any], firing: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The firing condition (of the same SLO) whose email already covers ``condition``: for a
    ticket, the page alert of its scope; for a fleet alert, a registry's alert of at least its
    severity. None: ``condition`` is emailed itself."""
    rank = SEVERITY_RANK[condition["severity"]]
    for other in firing:
        if other is condition or other["slo"] != condition["slo"]:
            continue
        same_scope = other["scope"] == condition["scope"]
        if same_scope and SEVERITY_RANK[other["severity"]] > rank:
            return other
        by_registry = condition["scope"] == FLEET and other["scope"] != FLEET
        if by_registry and SEVERITY_RANK[other["severity"]] >= rank:
            return other
    return None
