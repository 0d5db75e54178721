"""The SLO arithmetic over probe rows built with PROBE_SCHEMA and pull events built with
EVENTS_SCHEMA: SLIs, budget left, burn rates on both windows, the alert condition, the
low-traffic rules. Every expected value is worked out by hand in the test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from include.registry_ops.health import slo
from include.registry_ops.health.schema import PROBE_SCHEMA
from include.registry_ops.health.settings import DEFAULT_ALERTS, Objective
from include.registry_ops.reports.events import EVENTS_SCHEMA

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
AVAIL = Objective(target=0.999)
PULLS = Objective(target=0.99)
PAGE, TICKET = DEFAULT_ALERTS


def probes(registry: str, count: int, bad: set[int] = frozenset(), end: datetime = NOW) -> list[dict]:
    """``count`` probes every 5 min, the newest at ``end - 5 min``; ``bad``: indexes counted back
    from the newest (0 = newest)."""
    rows = []
    for back in range(count):
        ok = back not in bad
        rows.append(
            {
                "at": end - STEP * (back + 1),
                "run_id": f"r{back}",
                "registry": registry,
                "kind": "oci",
                "api_ok": ok,
                "api_ms": 3.0 if ok else None,
                "canary_repository": None,
                "canary_digest": None,
                "canary_ok": None,
                "canary_ms": None,
                "good": ok,
                "error": None if ok else "ConnectionRefusedError",
            }
        )
    return rows


def table(*groups: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([r for g in groups for r in g], schema=PROBE_SCHEMA)


def pulls(registry: str | None, times: list[datetime], failed: list[bool | None]) -> pa.Table:
    rows = [
        {
            "event_id": f"e{i}",
            "source": "cloudtrail",
            "registry": registry,
            "repository": "app",
            "digest": None,
            "tag": None,
            "event_time": t,
            "day": t.date(),
            "principal": "ci",
            "failed": f,
            "error_code": "ImageNotFoundException" if f else None,
            "file": "f.json",
        }
        for i, (t, f) in enumerate(zip(times, failed, strict=True))
    ]
    return pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)


def alerts_of(result: dict, scope: str) -> dict[str, dict]:
    return {a["alert"]: a for a in result["scopes"][scope]["alerts"]}


def test_budget_left_and_burn_rate_formulas():
    # 995 good of 1000 against 99 %: 0.5 % bad of a 1 % budget -> half left, burning at 0.5x
    assert slo.budget_left(slo.Counts(995, 1000), 0.99) == pytest.approx(0.5, rel=1e-12)
    assert slo.burn_rate(slo.Counts(995, 1000), 0.99) == pytest.approx(0.5, rel=1e-12)
    # 2 bad of 1000 against 99.9 %: twice the budget spent -> -1 (overspent), burning at 2x
    assert slo.budget_left(slo.Counts(998, 1000), 0.999) == pytest.approx(-1.0, rel=1e-12)
    assert slo.burn_rate(slo.Counts(998, 1000), 0.999) == pytest.approx(2.0, rel=1e-12)
    # nothing bad: all of it left, no burn
    assert slo.budget_left(slo.Counts(10, 10), 0.999) == 1.0
    assert slo.burn_rate(slo.Counts(10, 10), 0.999) == 0.0
    # no data: no budget figure, no burn
    assert slo.budget_left(slo.Counts(0, 0), 0.999) is None
    assert slo.burn_rate(slo.Counts(0, 0), 0.999) == 0.0


def test_availability_per_registry_and_fleet_pooled_over_the_window():
    # a day of 5-minute probes each (288); oci-a has 4 bad (20 minutes down), ecr-b none; a probe
    # 31 days old is outside the 30-day window and must not count
    old = probes("oci-a", 1, {0}, end=NOW - timedelta(days=31))
    samples = slo.probe_samples(table(probes("oci-a", 288, {100, 101, 102, 103}), probes("ecr-b", 288), old))
    result = slo.evaluate_slo(samples, AVAIL, DEFAULT_ALERTS, NOW, ["oci-a", "ecr-b", "idle"])
    a, b, fleet = (result["scopes"][s] for s in ("oci-a", "ecr-b", slo.FLEET))
    assert (a["good"], a["total"]) == (284, 288)
    assert a["sli"] == pytest.approx(284 / 288)
    assert a["budget_left"] == pytest.approx(1 - (4 / 288) / 0.001)  # -12.888...
    assert (b["sli"], b["budget_left"]) == (1.0, 1.0)
    assert (fleet["good"], fleet["total"]) == (572, 576)
    assert fleet["budget_left"] == pytest.approx(1 - (4 / 576) / 0.001)
    idle = result["scopes"]["idle"]  # a configured registry with no probe: no data, said so
    assert (idle["total"], idle["sli"], idle["budget_left"]) == (0, None, None)
    assert all(x["long"]["no_data"] and x["long"]["burn"] == 0 for x in idle["alerts"])
    assert (result["target"], result["window_s"]) == (0.999, 30 * 86400)


def test_burn_rates_on_both_windows_and_the_page_condition():
    # the two newest probes failed (now-10m, now-5m): 10 minutes down
    samples = slo.probe_samples(table(probes("oci-a", 72, {0, 1})))
    result = slo.evaluate_slo(samples, AVAIL, DEFAULT_ALERTS, NOW)
    page, ticket = (alerts_of(result, "oci-a")[n] for n in ("page", "ticket"))
    # page: 1 h holds 12 probes, 2 bad -> (2/12)/0.001 = 166.67x; 5 min holds 1, bad -> 1000x
    assert (page["long"]["bad"], page["long"]["total"]) == (2, 12)
    assert page["long"]["burn"] == pytest.approx(2 / 12 / 0.001)
    assert (page["short"]["bad"], page["short"]["total"]) == (1, 1)
    assert page["short"]["burn"] == pytest.approx(1000.0)
    assert page["firing"] and not page["held_back"]
    # ticket: 6 h holds 72, 2 bad -> 27.78x; 30 min holds 6, 2 bad -> 333.3x; both >= 6
    assert ticket["long"]["burn"] == pytest.approx(2 / 72 / 0.001)
    assert ticket["short"]["burn"] == pytest.approx(2 / 6 / 0.001)
    assert ticket["firing"]


def test_both_windows_are_required():
    # 20 minutes down, over 30 minutes ago: the hour still burns (4/12 -> 333x) but the last
    # 5 minutes are good (0x): the page condition does not hold
    recovered = slo.probe_samples(table(probes("oci-a", 72, {6, 7, 8, 9})))
    page = alerts_of(slo.evaluate_slo(recovered, AVAIL, DEFAULT_ALERTS, NOW), "oci-a")["page"]
    assert page["long"]["burn"] == pytest.approx(4 / 12 / 0.001)
    assert page["short"]["burn"] == 0.0
    assert not page["over"] and not page["firing"]
    # the reverse: 100 good pulls over the hour, then 3 in the last 5 minutes of which 2 failed:
    # short (2/3)/0.01 = 66.7x, long (2/103)/0.01 = 1.94x < 14.4: no page
    times = [NOW - timedelta(minutes=59) + timedelta(seconds=30 * i) for i in range(100)]
    times += [NOW - timedelta(minutes=3), NOW - timedelta(minutes=2), NOW - timedelta(minutes=1)]
    events = pulls("ecr-b", times, [False] * 100 + [True, True, None])
    page = alerts_of(slo.evaluate_slo(slo.pull_samples(events), PULLS, DEFAULT_ALERTS, NOW), "ecr-b")["page"]
    assert page["short"]["burn"] == pytest.approx(2 / 3 / 0.01)
    assert page["long"]["burn"] == pytest.approx(2 / 103 / 0.01)
    assert not page["over"] and not page["firing"]


def test_one_failed_probe_never_pages_two_do():
    one = slo.probe_samples(table(probes("oci-a", 72, {0})))
    page = alerts_of(slo.evaluate_slo(one, AVAIL, DEFAULT_ALERTS, NOW), "oci-a")["page"]
    # both windows are over 14.4x (83.3x and 1000x) but one bad sample is held back
    assert page["long"]["burn"] == pytest.approx(1 / 12 / 0.001)
    assert page["over"] and page["held_back"] and not page["firing"]
    two = slo.probe_samples(table(probes("oci-a", 72, {0, 1})))
    assert alerts_of(slo.evaluate_slo(two, AVAIL, DEFAULT_ALERTS, NOW), "oci-a")["page"]["firing"]


def test_a_late_probe_keeps_the_last_known_state_in_the_short_window():
    # the newest probe is 7 minutes old (a late run): the 5-minute window is empty, so it takes
    # that newest (bad) probe; with nothing within the long window it stays empty (burn 0)
    late = slo.probe_samples(table(probes("oci-a", 12, {0, 1}, end=NOW - timedelta(minutes=2))))
    page = alerts_of(slo.evaluate_slo(late, AVAIL, DEFAULT_ALERTS, NOW), "oci-a")["page"]
    assert page["short"]["stretched"] and (page["short"]["bad"], page["short"]["total"]) == (1, 1)
    assert page["firing"]
    gone = slo.probe_samples(table(probes("oci-a", 2, {0, 1}, end=NOW - timedelta(hours=2))))
    page = alerts_of(slo.evaluate_slo(gone, AVAIL, DEFAULT_ALERTS, NOW), "oci-a")["page"]
    assert page["short"]["no_data"] and page["long"]["no_data"] and page["short"]["burn"] == 0.0
    assert not page["firing"]


def test_pull_samples_count_failed_pulls_as_bad_and_skip_unattributed_ones():
    t = NOW - timedelta(minutes=1)
    events = pa.concat_tables([pulls("ecr-b", [t, t, t], [True, False, None]), pulls(None, [t], [True])])
    samples = slo.pull_samples(events)
    assert list(samples["good"]) == [False, True, True]
    assert set(samples["registry"]) == {"ecr-b"}
    with pytest.raises(ValueError, match="event_time"):
        slo.pull_samples(pa.table({"registry": ["x"]}))


def test_cover_rules():
    def c(scope, severity, name):
        return {"slo": "availability", "scope": scope, "severity": severity, "alert": name}

    page, ticket = c("oci-a", "page", "page"), c("oci-a", "ticket", "ticket")
    fleet_page, fleet_ticket = c(slo.FLEET, "page", "page"), c(slo.FLEET, "ticket", "ticket")
    firing = [page, ticket, fleet_page, fleet_ticket]
    assert slo.coverer(page, firing) is None
    assert slo.coverer(ticket, firing) is page
    assert slo.coverer(fleet_page, firing) is page
    assert slo.coverer(fleet_ticket, firing) in (ticket, fleet_page, page)
    # a fleet page is not covered by a registry's ticket; another SLO covers nothing
    assert slo.coverer(fleet_page, [ticket, fleet_page]) is None
    assert slo.coverer(ticket, [{**page, "slo": "pull_success"}, ticket]) is None
