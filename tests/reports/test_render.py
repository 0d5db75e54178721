"""Rendering the report: the email's MIME as a client parses it (HTML referencing each PNG by its
Content-ID, valid PNGs, CSV attachments whose totals match hand-computed ones), the subject,
escaping of hostile names, the empty window, the data-quality section, the ops alert; charts
drawn alike in parallel threads; and the time to render 100,000-row tables.

The reports are built here from small frames with exactly the columns of ``reports/tables.py``:
this is a unit test of rendering (the end-to-end test against the services is the DAG's)."""

from __future__ import annotations

import csv
import email
import gzip
import io
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from email import policy
from email.message import EmailMessage
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from include.registry_ops import notify
from include.registry_ops.reports import charts, render, tables
from include.registry_ops.reports.model import Problem, Report

GIB, MIB = 2**30, 2**20
PRICE = 0.10
START, END = date(2026, 11, 16), date(2026, 11, 23)
HOSTILE = "<script>alert(1)</script>"  # the largest repository: its name is in the chart's alt text
HOSTILE_SOURCE = "events/<img src=http://evil.example/x.png>.json"
TOOLS_BYTES = 1_234_567
TOOLS_USD = TOOLS_BYTES / GIB * PRICE  # 0.000114978..., many decimals
LABEL = "2026-11-16..2026-11-22"


def usd(size: int) -> float:
    return size / GIB * PRICE


def frame(name: str, rows: list[tuple]) -> pd.DataFrame:
    """Table ``name`` with exactly the contract's columns."""
    columns, _ = tables.TABLES[name]
    return pd.DataFrame(rows, columns=list(columns)) if rows else tables.empty(columns)


def d(day: int) -> date:
    return date(2026, 11, day)


def at(month: int, day: int) -> datetime:
    return datetime(2026, month, day, 6, 0, tzinfo=UTC)


def sample_tables() -> dict[str, pd.DataFrame]:
    """Stored: team-a/api 3 GiB + 512 MiB, the hostile one 4 GiB, tools 1,234,567 bytes.
    Pulls: 360, 6 failed (98.3 %, below the 99 % target)."""
    api_image, api_ref, big = 3 * GIB, 512 * MIB, 4 * GIB
    return {
        "cost": frame(
            "cost",
            [
                ("ecr-prod", "team-a/api", "sha256:a1", "image", "team-a", api_image, usd(api_image)),
                ("ecr-prod", "team-a/api", "sha256:a2", "referrer", "team-a", api_ref, usd(api_ref)),
                ("oci-local", HOSTILE, "sha256:b1", "image", "unassigned", big, usd(big)),
                ("oci-local", "tools", "sha256:c1", "image", "platform", TOOLS_BYTES, TOOLS_USD),
            ],
        ),
        "cost_by_repository": frame(
            "cost_by_repository",
            [
                ("ecr-prod", "team-a/api", "team-a", 2, api_image + api_ref, 0.35, 3 * GIB, 0.30),
                ("oci-local", HOSTILE, "unassigned", 1, big, 0.40, np.nan, np.nan),
                ("oci-local", "tools", "platform", 1, TOOLS_BYTES, TOOLS_USD, np.nan, np.nan),
            ],
        ),
        "cost_by_team": frame(
            "cost_by_team",
            [
                ("team-a", 1, 2, api_image + api_ref, 0.35),
                ("unassigned", 1, 1, big, 0.40),
                ("platform", 1, 1, TOOLS_BYTES, TOOLS_USD),
            ],
        ),
        "trend": frame(
            "trend",
            [
                (at(10, 23), "ecr-prod", 2, 2 * GIB, 0.20),
                (at(10, 23), "oci-local", 1, 2 * GIB, 0.20),
                (at(11, 15), "ecr-prod", 2, 3 * GIB, 0.30),
                (at(11, 15), "oci-local", 2, 4 * GIB, 0.40),
                (at(11, 22), "ecr-prod", 2, api_image + api_ref, 0.35),
                (at(11, 22), "oci-local", 2, big + TOOLS_BYTES, 0.40 + TOOLS_USD),
            ],
        ),
        "growers": frame(
            "growers",
            [
                ("ecr-prod", "team-a/api", "team-a", 3 * GIB, api_image + api_ref, api_ref, 0.05),
                ("oci-local", "tools", "platform", 2 * TOOLS_BYTES, TOOLS_BYTES, -TOOLS_BYTES, -TOOLS_USD),
            ],
        ),
        "s3_storage": frame(
            "s3_storage",
            [
                ("archive", "STANDARD", 10, 2 * GIB, 0.046),
                ("backup", "GLACIER_IR", 5, 10 * GIB, 0.04),
            ],
        ),
        "savings": frame(
            "savings",
            [
                ("made", "run-1", "ecr-prod", 3, GIB, 0.10),
                ("projected", "plan-2", "oci-local", 2, 512 * MIB, 0.05),
            ],
        ),
        "pulls_by_repository_day": frame(
            "pulls_by_repository_day",
            [
                ("ecr-prod", "team-a/api", d(16), 100, 1, 3),
                ("ecr-prod", "team-a/api", d(18), 200, 0, 4),
                ("oci-local", HOSTILE, d(17), 50, 5, 2),
                ("oci-local", "tools", d(22), 10, 0, 1),
            ],
        ),
        "pulls_by_image_day": frame(
            "pulls_by_image_day",
            [
                ("ecr-prod", "team-a/api", "sha256:a1", d(16), 100, 1, 3),
                ("ecr-prod", "team-a/api", "sha256:a1", d(18), 200, 0, 4),
                ("oci-local", HOSTILE, "tag:v1", d(17), 50, 5, 2),
                ("oci-local", "tools", "sha256:c1", d(22), 10, 0, 1),
            ],
        ),
        "pull_success": frame(
            "pull_success",
            [
                ("ecr-prod", 300, 1, 299 / 300, True),
                ("oci-local", 60, 5, 55 / 60, False),
            ],
        ),
        "never_pulled": frame(
            "never_pulled",
            [
                ("oci-local", HOSTILE, "sha256:" + "b" * 64, ["v1", "latest"], big, None, None),
                ("ecr-prod", "team-a/api", "sha256:" + "a" * 64, [], 2 * GIB, d(1), "inventory"),
            ],
        ),
    }


def sample_report(**changes: Any) -> Report:
    t = sample_tables()
    total = float(t["cost"]["usd_month"].sum())
    headline = {
        "total_usd_month": total,
        "previous_usd_month": 0.48,
        "usd_month_change": (total - 0.48) / 0.48,  # +56.3 %
        "stored_bytes": int(t["cost"]["size_bytes"].sum()),
        "previous_stored_bytes": 7 * GIB,
        "total_pulls": 360,
        "failed_pulls": 6,
        "pull_success_rate": 354 / 360,
        "success_target": 0.99,
        "images": 4,
        "repositories": 3,
        "savings_made_usd_month": 0.10,
        "savings_projected_usd_month": 0.05,
        "s3_usd_month": 0.086,
        "never_pulled_days": 30,
    }
    report = Report(
        period="weekly",
        start=START,
        end=END,
        generated_at=datetime(2026, 11, 23, 7, 0, tzinfo=UTC),
        price_per_gb_month=PRICE,
        tables=t,
        headline=headline,
        problems=[
            Problem("s3://bucket/AWSLogs/1/CloudTrail/us-east-1/2026/11/17/x.json.gz", "truncated gzip"),
            Problem(HOSTILE_SOURCE, "unknown event file shape", 3),
        ],
        snapshot_at=at(11, 22),
    )
    for key, value in changes.items():
        if hasattr(report, key):
            setattr(report, key, value)
        else:
            report.headline[key] = value
    return report


def empty_window_report() -> Report:
    report = sample_report(total_pulls=0, failed_pulls=0, pull_success_rate=None)
    for name in ("pulls_by_repository_day", "pulls_by_image_day", "pull_success"):
        report.tables[name] = frame(name, [])
    report.notes.append(render.empty_window_sentence(report))  # as the builder adds it
    return report


def as_received(rendered: render.Rendered) -> EmailMessage:
    """The email as a client parses it from the wire."""
    mime = notify.to_mime(
        rendered.message(("team@example.com",)), "reports@example.com", ["team@example.com"]
    )
    return email.message_from_bytes(notify.to_bytes(mime), policy=policy.default)


def html_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("html",)).get_content()


def text_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")


def pngs(message: EmailMessage) -> dict[str, bytes]:
    return {
        part["Content-ID"].strip("<>"): part.get_content()
        for part in message.walk()
        if part.get_content_type() == "image/png"
    }


def csvs(message: EmailMessage) -> dict[str, list[dict[str, str]]]:
    out = {}
    for part in message.iter_attachments():
        assert part.get_content_type() == "text/csv"
        data = part.get_payload(decode=True).decode("utf-8")
        out[part.get_filename()] = list(csv.DictReader(io.StringIO(data)))
    return out


# -- the email as received --------------------------------------------------------------------------
def test_html_references_every_png_part_by_content_id_and_each_is_a_png() -> None:
    report = sample_report()
    message = as_received(render.render(report))
    html = html_of(message)
    images = pngs(message)
    assert len(images) == 3  # stored bytes, trend, pulls per day
    referenced = re.findall(r'<img src="cid:([^"]+)"', html)
    assert sorted(referenced) == sorted(images)
    for cid, data in images.items():
        with Image.open(io.BytesIO(data)) as png:
            png.verify()
            assert png.format == "PNG"
            assert png.width == charts.WIDTH_PX, cid
    for tag in re.findall(r"<img [^>]*>", html):
        assert re.search(r'alt="[^"]{10,}"', tag), tag
        assert f'width="{charts.WIDTH_PX}"' in tag, tag


def test_html_is_self_contained_inline_css_only() -> None:
    html = render.render(sample_report()).html
    lowered = html.lower()
    for banned in ("<style", "<script", "<link", "class=", "javascript:", "url(", "@import"):
        assert banned not in lowered, banned
    assert re.findall(r'src="([^"]*)"', html)
    assert all(src.startswith("cid:") for src in re.findall(r'src="([^"]*)"', html))
    assert "<table" in html and 'style="' in html


def test_csv_attachments_hold_every_table_with_exact_values() -> None:
    report = sample_report()
    got = csvs(as_received(render.render(report)))
    assert set(got) == {f"{name}.csv" for name in report.tables} | {"problems.csv"}
    for name in report.tables:
        columns, _ = tables.TABLES[name]
        with_header = got[f"{name}.csv"]
        assert len(with_header) == len(report.tables[name]), name
        if with_header:
            assert list(with_header[0]) == list(columns), name

    cost = got["cost.csv"]
    assert sum(int(r["size_bytes"]) for r in cost) == 3 * GIB + 512 * MIB + 4 * GIB + 1_234_567
    # exact: 3 GiB at $0.10 is the float 3 * 0.1, written with every digit; 0.4 gets its two decimals
    assert [r["usd_month"] for r in cost] == ["0.30000000000000004", "0.05", "0.40", repr(TOOLS_USD)]
    assert float(cost[3]["usd_month"]) == TOOLS_USD  # every decimal, not the $0.00 of the body
    assert sum(float(r["usd_month"]) for r in cost) == pytest.approx(0.75 + TOOLS_USD, abs=1e-12)

    by_repo = got["cost_by_repository.csv"]
    assert [r["unique_layer_bytes_estimate"] for r in by_repo] == [str(3 * GIB), "", ""]  # int, not 3.2e9
    assert [r["usd_month_estimate"] for r in by_repo] == ["0.30", "", ""]
    assert by_repo[1]["repository"] == HOSTILE  # data as is in the CSV

    pulls = got["pulls_by_repository_day.csv"]
    assert sum(int(r["pulls"]) for r in pulls) == 360
    assert sum(int(r["failed"]) for r in pulls) == 6
    assert [r["day"] for r in pulls] == ["2026-11-16", "2026-11-18", "2026-11-17", "2026-11-22"]

    never = got["never_pulled.csv"]
    assert [r["tags"] for r in never] == ["v1,latest", ""]
    assert [r["last_pull"] for r in never] == ["", "2026-11-01"]
    assert got["pull_success.csv"][0]["meets_target"] == "true"
    assert got["trend.csv"][0]["snapshot_at"] == "2026-10-23T06:00:00+00:00"
    assert sum(float(r["usd_month"]) for r in got["s3_storage.csv"]) == pytest.approx(0.086)
    assert [(r["source"], r["count"]) for r in got["problems.csv"]][1] == (HOSTILE_SOURCE, "3")


def test_usd_cells_keep_two_decimals_at_least_and_never_an_exponent() -> None:
    data = tables.empty(tables.COST_BY_TEAM)
    data = pd.DataFrame(
        [("a", 1, 1, 1.0, 2.5), ("b", 1, 1, 2.0, 1e-05), ("c", 1, 1, 3.0, 12345.678901)],
        columns=data.columns,
    )
    rows = list(csv.DictReader(io.StringIO(render.table_csv(data).decode())))
    assert [r["usd_month"] for r in rows] == ["2.50", "0.00001", "12345.678901"]
    assert [r["stored_bytes"] for r in rows] == ["1", "2", "3"]


# -- the subject ------------------------------------------------------------------------------------
def test_subject_with_previous_below_target() -> None:
    assert render.render(sample_report()).subject == (
        f"Registry report {LABEL} (weekly): $0.75/month (+56.3% vs previous), "
        "pulls 98.3% successful (below 99% target)"
    )


def test_subject_without_previous_and_meeting_the_target() -> None:
    report = sample_report(previous_usd_month=None, usd_month_change=None, pull_success_rate=0.997)
    assert render.render(report).subject == (
        f"Registry report {LABEL} (weekly): $0.75/month, pulls 99.7% successful"
    )


def test_subject_of_an_empty_window() -> None:
    report = empty_window_report()
    assert report.empty_window
    assert render.render(report).subject == (
        f"Registry report {LABEL} (weekly): $0.75/month (+56.3% vs previous), no pulls recorded"
    )


def test_a_success_rate_with_failures_never_reads_100_percent() -> None:
    assert render.percent(0.99996) == "99.996 %"
    assert render.percent(0.9999999) == ">99.999 %"
    assert render.percent(1.0) == "100.0 %"
    assert render.percent(0.997, space=False) == "99.7%"
    assert render.usd(1234.561) == "$1,234.56"
    assert render.usd(0.0001) == "<$0.01"
    assert render.change(-0.0001) == "+0.0 %"
    assert charts.human_bytes(1.2 * GIB) == "1.2 GiB"
    assert charts.human_bytes(512) == "512 B"


# -- the body ---------------------------------------------------------------------------------------
def test_hostile_names_are_escaped_everywhere_in_the_html() -> None:
    report = sample_report()
    report.notes.append(f"Repository {HOSTILE} was renamed.")
    html = render.render(report).html
    assert HOSTILE not in html and "<img src=http" not in html
    assert "Repository &lt;script&gt;alert(1)&lt;/script&gt; was renamed." in html
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert html.count(escaped) >= 4  # top repositories, worst repositories, never pulled, the alt
    assert re.search(r'alt="[^"]*' + re.escape(escaped), html)  # in the attribute too
    assert "events/&lt;img src=http://evil.example/x.png&gt;.json" in html


def test_sections_and_headline_carry_the_numbers() -> None:
    rendered = render.render(sample_report())
    html, text = rendered.html, rendered.text
    for part in (html, text):
        assert "$0.75/month" in part and "+56.3 %" in part
        assert "7.5 GiB" in part  # stored
        assert "98.3 %" in part and "BELOW TARGET 99 %" in part
        # from the trend: week over week (2026-11-15: $0.70), month over month (2026-10-23: $0.40)
        assert "$0.70" in part and "+7.2 %" in part
        assert "$0.40" in part and "+87.5 %" in part
        assert "Cost by team" in part and "Top growers" in part and "Savings by retention" in part
        assert "GLACIER_IR" in part and "12.0 GiB" in part  # S3 total
        assert "Images not pulled in 30 days" in part
        assert "truncated gzip" in part and "unknown event file shape" in part
    assert "#fdecea" in html  # the below-target box is marked
    assert "priced at $0.1 per GiB-month" in text
    assert "Generated 2026-11-23 07:00 UTC from the inventory snapshot of 2026-11-22 06:00 UTC." in text
    assert "Validation: not run on this report." in text
    assert rendered.text.startswith(f"Registry report {LABEL} (weekly)\n")


def test_the_success_mark_follows_the_target() -> None:
    html = render.render(sample_report(pull_success_rate=0.995, success_target=0.99)).html
    assert "BELOW TARGET" not in html.split("<h3")[0] and "target 99 %: met" in html


def test_an_empty_window_says_so_and_draws_no_pull_chart() -> None:
    report = empty_window_report()
    rendered = render.render(report)
    message = as_received(rendered)
    sentence = "No pull events were recorded between 2026-11-16 and 2026-11-22."
    assert sentence in html_of(message)
    assert text_of(message).count(sentence) == 1  # the builder's note is not said twice
    assert "pulls_per_day" not in rendered.charts
    assert not any(cid.startswith("pulls-per-day") for cid in pngs(message))
    assert "cid:pulls-per-day" not in rendered.html
    assert "Worst repositories" not in rendered.html
    assert set(rendered.charts) == {"stored_bytes_by_repository", "cost_trend"}


def test_an_empty_cost_table_says_so_and_draws_no_bars() -> None:
    report = sample_report()
    for name in ("cost", "cost_by_repository", "cost_by_team"):
        report.tables[name] = frame(name, [])
    rendered = render.render(report)
    assert "The cost table is empty" in rendered.html
    assert "stored_bytes_by_repository" not in rendered.charts
    assert "cid:stored-bytes" not in rendered.html
    assert len(pngs(as_received(rendered))) == 2
    with pytest.raises(ValueError, match="cost_by_repository: no repositories"):
        charts.stored_bytes_by_repository(report.tables["cost_by_repository"])


def test_data_quality_lists_every_problem_and_the_validation_result() -> None:
    report = sample_report()
    report.problems.append(Problem("notifications/2026/11/18/a.json", "record without target.mediaType", 7))
    failed = {
        "success": False,
        "failures": [
            {
                "table": "cost",
                "expectation": "expect_column_values_to_be_between",
                "sample": [{"size_bytes": -1}],
            }
        ],
    }
    rendered = render.render(report, failed)
    section = rendered.html.split("Data quality")[1]
    for problem in report.problems[:1] + report.problems[2:]:
        assert problem.source in section and problem.problem in section
    assert "record without target.mediaType</td><td" in section and ">7</td>" in section
    assert "3 input problem(s) standing for 11 file(s) or record(s)" in section
    assert "Validation: 1 expectation(s) failed." in section
    assert "expect_column_values_to_be_between" in section and "size_bytes" in section
    assert (
        "Validation: every expectation was met."
        in render.render(report, {"success": True, "failures": []}).text
    )


def test_problems_past_the_body_limit_are_in_the_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "MAX_PROBLEMS", 2)
    report = sample_report()
    report.problems += [Problem(f"file-{i}.json", "not JSON") for i in range(5)]
    rendered = render.render(report)
    assert "... and 5 more problems; every row is in problems.csv (attached)." in rendered.html
    assert len(csvs(as_received(rendered))["problems.csv"]) == 7


def test_headline_entries_for_week_and_month_override_the_trend() -> None:
    month = {  # as trend.changes makes it
        "stored_bytes_before": GIB,
        "stored_bytes_now": 3 * GIB,
        "usd_month_before": 0.25,
        "usd_month_now": 0.7501,
        "change": 2.0,
    }
    report = sample_report(week_over_week=0.5, month_over_month=month)
    text = render.render(report).text
    assert "week over week | - | $0.75 | +50.0 %" in text
    assert "month over month | $0.25 | $0.75 | +200.0 %" in text
    no_change = {"stored_bytes_before": 0, "stored_bytes_now": GIB, "usd_month_before": 0.0, "change": None}
    text = render.render(sample_report(week_over_week=None, month_over_month=no_change)).text
    assert "week over week | - | $0.75 | no earlier data" in text
    assert "month over month | $0.00 | $0.75 | -" in text


def test_a_missing_headline_number_is_named() -> None:
    report = sample_report()
    del report.headline["total_usd_month"]
    with pytest.raises(ValueError, match=f"report {LABEL}: headline has no 'total_usd_month'"):
        render.render(report)


def test_a_table_without_a_contract_column_is_named() -> None:
    report = sample_report()
    report.tables["growers"] = report.tables["growers"].drop(columns=["team"])
    with pytest.raises(ValueError, match="'growers': missing column"):
        render.render(report)


def test_the_message_needs_recipients() -> None:
    with pytest.raises(ValueError, match="no recipients"):
        render.render(sample_report()).message(())


# -- the ops alert ----------------------------------------------------------------------------------
def test_quality_alert_names_the_failures_and_carries_no_charts() -> None:
    text = "cost: expect_column_values_to_be_between size_bytes: 1 row(s) like {'size_bytes': -1}"
    alert = render.quality_alert(sample_report(), text, ("ops@example.com",), [{"a": 1}, {"b": 2}])
    assert alert.subject == f"Registry report {LABEL} NOT SENT: 2 expectation(s) failed"
    assert alert.recipients == ("ops@example.com",)
    received = email.message_from_bytes(
        notify.to_bytes(notify.to_mime(alert, "reports@example.com", ["ops@example.com"])),
        policy=policy.default,
    )
    assert [p.get_content_type() for p in received.walk()] == ["text/plain"]
    assert received.get_content().replace("\r\n", "\n").rstrip("\n") == text
    assert render.quality_alert(sample_report(), text, ("o@example.com",), 1).subject.endswith(
        "NOT SENT: 1 expectation(s) failed"
    )


# -- charts -----------------------------------------------------------------------------------------
def test_charts_are_deterministic_and_alike_from_parallel_threads() -> None:
    t = sample_tables()

    def draw(_: int) -> tuple[bytes, bytes | None, bytes | None]:
        return (
            charts.stored_bytes_by_repository(t["cost_by_repository"]),
            charts.cost_trend(t["trend"]),
            charts.pulls_per_day(t["pulls_by_repository_day"], START, END, 0.99),
        )

    serial = draw(0)
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(draw, range(4)))
    assert all(p == serial for p in parallel)
    for png in serial:
        assert png is not None and png.startswith(b"\x89PNG") and len(png) < 150_000
        assert b"tEXt" not in png and b"tIME" not in png  # no software version, no time


def test_a_name_with_dollar_signs_is_drawn_as_text() -> None:
    repos = frame("cost_by_repository", [("r", "odd$^{_name$x", "t", 1, 10, 0.1, None, None)])
    with Image.open(io.BytesIO(charts.stored_bytes_by_repository(repos))) as png:
        assert png.format == "PNG"


def test_no_trend_from_one_snapshot_and_no_pull_chart_without_pulls() -> None:
    t = sample_tables()
    one = t["trend"][t["trend"]["snapshot_at"] == at(11, 22)]
    assert charts.cost_trend(one) is None
    assert charts.cost_trend(frame("trend", [])) is None
    assert charts.pulls_per_day(frame("pulls_by_repository_day", [])) is None
    zero = frame("pulls_by_repository_day", [("r", "p", d(16), 0, 0, 0)])
    assert charts.pulls_per_day(zero) is None


# -- scale ------------------------------------------------------------------------------------------
def big_report(n: int) -> Report:
    rng = np.random.default_rng(7)
    report = sample_report()
    sizes = rng.integers(1, 5 * GIB, n)
    repos = [f"team-{i % 50}/service-{i}" for i in range(n)]
    registries = np.where(np.arange(n) % 2 == 0, "ecr-prod", "oci-local")
    teams = [f"team-{i % 50}" for i in range(n)]
    digests = [f"sha256:{i:064x}" for i in range(n)]
    days = [START + timedelta(days=int(i % 7)) for i in range(n)]
    pulls = rng.integers(1, 1000, n)
    failed = pulls // 200
    t = report.tables
    t["cost"] = pd.DataFrame(
        dict(
            registry=registries,
            repository=repos,
            digest=digests,
            kind="image",
            team=teams,
            size_bytes=sizes,
            usd_month=sizes / GIB * PRICE,
        )
    )
    t["cost_by_repository"] = pd.DataFrame(
        dict(
            registry=registries,
            repository=repos,
            team=teams,
            images=1,
            stored_bytes=sizes,
            usd_month=sizes / GIB * PRICE,
            unique_layer_bytes_estimate=sizes // 2,
            usd_month_estimate=sizes / 2 / GIB * PRICE,
        )
    )
    t["pulls_by_repository_day"] = pd.DataFrame(
        dict(registry=registries, repository=repos, day=days, pulls=pulls, failed=failed, principals=3)
    )
    t["pulls_by_image_day"] = pd.DataFrame(
        dict(
            registry=registries,
            repository=repos,
            image=digests,
            day=days,
            pulls=pulls,
            failed=failed,
            principals=3,
        )
    )
    t["never_pulled"] = pd.DataFrame(
        dict(
            registry=registries,
            repository=repos,
            digest=digests,
            tags=[["v1"]] * n,
            size_bytes=sizes,
            last_pull=None,
            last_pull_source=None,
        )
    )
    report.headline.update(total_usd_month=float(t["cost"]["usd_month"].sum()), images=n, repositories=n)
    return report


def test_rendering_100000_row_tables(capsys: pytest.CaptureFixture[str]) -> None:
    n = 100_000
    report = big_report(n)
    began = time.perf_counter()
    rendered = render.render(report)
    took = time.perf_counter() - began
    wire = notify.to_bytes(
        notify.to_mime(rendered.message(("t@example.com",)), "r@example.com", ["t@example.com"])
    )
    with capsys.disabled():
        print(
            f"\nrender of {n:,}-row tables: {took:.2f} s; HTML {len(rendered.html) / 1024:.0f} KiB; "
            f"email {len(wire) / 2**20:.1f} MiB"
        )
    assert len(rendered.html) < 200_000  # the first rows only
    assert "... and 99,990 more repositories; every row is in cost_by_repository.csv" in rendered.html
    # ~70 MB of CSV: gzipped to fit what mail servers accept (15 MiB raw, ~20 MB on the wire)
    assert len(wire) < 21 * 2**20
    received = email.message_from_bytes(wire, policy=policy.default)
    attached = {p.get_filename(): p.get_payload(decode=True) for p in received.iter_attachments()}
    assert "cost.csv.gz" in attached and "cost.csv" not in attached
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(attached["cost.csv.gz"]).decode())))
    assert len(rows) == n
    assert sum(int(r["size_bytes"]) for r in rows) == int(report.tables["cost"]["size_bytes"].sum())
    assert rendered.csvs["cost.csv"] == gzip.decompress(attached["cost.csv.gz"])  # S3 keeps it plain
    assert took < 60


def test_attachments_above_the_limit_are_gzipped_then_left_out_and_named() -> None:
    report = sample_report()
    plain = render.render(report)
    sizes = sorted((len(a.data), a.name) for a in plain.attachments)
    total = sum(size for size, _ in sizes)
    largest = sizes[-1][1]
    fitted = render.render(report, max_attachment_bytes=total - 1)  # gzip the largest, stop there
    names = {a.name for a in fitted.attachments}
    assert f"{largest}.gz" in names and largest not in names
    assert len(names) == len(sizes) and sum(len(a.data) for a in fitted.attachments) <= total - 1
    tiny = render.render(report, max_attachment_bytes=1)  # nothing fits: every CSV left out, named
    assert tiny.attachments == () and set(tiny.csvs) == {name for _, name in sizes}
    assert "Too large to attach, stored beside the report in S3" in tiny.html
    assert largest in tiny.text.split("Too large to attach")[1]
