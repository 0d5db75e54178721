"""Burn-rate alerts end to end on moto S3 and the real SMTP sink: a registry down for 20 minutes
of a day of 5-minute probes lowers its availability by exactly 4 probes' worth, the page alert
is emailed once per episode (not again while it burns, again after recovery and a new outage),
a failed send leaves the episode unopened so the next evaluation retries, a claim held by a
concurrent evaluation is not emailed twice, and pull success is read from the reports' events."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser

import pyarrow as pa
import pytest

from include.registry_ops import storage
from include.registry_ops.config import parse_config
from include.registry_ops.health import alerts, slo
from include.registry_ops.health.schema import PROBE_SCHEMA
from include.registry_ops.reports.events import EVENTS_SCHEMA
from include.registry_ops.store import objects

T = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)  # the outage starts with the probe at T
STEP = timedelta(minutes=5)
START = T - timedelta(days=1)  # a day of probes before it
NO_PULLS = EVENTS_SCHEMA.empty_table()


def config_for(bucket: str, tag: str, smtp_conn_id: str = "smtp_default"):
    return parse_config(
        {
            "registries": [
                {"name": "oci-a", "kind": "oci", "conn_id": "oci_a"},
                {"name": "ecr-b", "kind": "ecr", "conn_id": "aws_default", "region": "us-east-1"},
            ],
            "storage": {
                "conn_id": "aws_default",
                "bucket": bucket,
                "prefixes": {"health": f"health-{tag}/", "reports": f"reports-{tag}/"},
            },
            "notifications": {"recipients": ["all@example.com"], "smtp_conn_id": smtp_conn_id},
            "slo": {"recipients": [f"slo-{tag}@example.com"]},
        },
        "test-config",
    )


def probe_rows(until: datetime, down: set[datetime]) -> pa.Table:
    """Probes every 5 min from START up to (not including) ``until`` for oci-a and ecr-b;
    oci-a's probes at the times in ``down`` failed."""
    rows, at = [], START
    while at < until:
        for registry in ("oci-a", "ecr-b"):
            bad = registry == "oci-a" and at in down
            rows.append(
                {
                    "at": at,
                    "run_id": at.isoformat(),
                    "registry": registry,
                    "kind": "oci" if registry == "oci-a" else "ecr",
                    "api_ok": not bad,
                    "api_ms": None if bad else 4.0,
                    "good": not bad,
                    "error": "ConnectionRefusedError" if bad else None,
                }
            )
        at += STEP
    return pa.Table.from_pylist(rows, schema=PROBE_SCHEMA)


OUTAGE = {T + STEP * i for i in range(4)}  # 20 minutes: the probes at T, T+5, T+10, T+15
SECOND = {T + timedelta(hours=3) + STEP * i for i in range(3)}


@pytest.fixture
def env(moto_server, s3, smtp_server):
    bucket = f"slo-{uuid.uuid4().hex[:8]}"
    storage.ensure_bucket(s3, bucket)
    tag = uuid.uuid4().hex[:6]
    return {"config": config_for(bucket, tag), "s3": s3, "bucket": bucket, "tag": tag, "smtp": smtp_server}


def mails(env, before: int) -> list:
    out = []
    for i in range(before, len(env["smtp"].messages)):
        raw = (env["smtp"].maildir / f"{i + 1:04d}.eml").read_bytes()
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        if f"slo-{env['tag']}@example.com" in str(msg["To"]):
            out.append(msg)
    return out


def step(env, now: datetime, down: set[datetime], config=None) -> tuple[dict, list]:
    config = config or env["config"]
    result = alerts.evaluate(config, env["s3"], now, probes=probe_rows(now, down), pulls=NO_PULLS)
    return result, alerts.notify(config, env["s3"], result)


def open_keys(env) -> set[str]:
    root = env["config"].storage.prefixes.health + "alerts/"
    keys = [o["Key"] for o in objects.list_keys(env["s3"], env["bucket"], root)]
    return {k[len(root) :] for k in keys if k.endswith("open.json")}


def condition(result: dict, slo_name: str, scope: str, alert: str) -> dict:
    (c,) = [c for c in result["conditions"] if (c["slo"], c["scope"], c["alert"]) == (slo_name, scope, alert)]
    return c


def test_an_outage_is_emailed_once_per_episode(env):
    before = len(env["smtp"].messages)
    # before the outage: everything good, nothing firing, nothing sent
    result, sent = step(env, T, set())
    avail = result["slos"]["availability"]["scopes"]
    assert (avail["oci-a"]["good"], avail["oci-a"]["total"]) == (288, 288) and sent == []

    # 10 minutes in (2 bad probes): page fires for oci-a and is emailed; the ticket and fleet
    # alerts hold too but are covered by it (their episodes open without an email)
    result, sent = step(env, T + 2 * STEP, OUTAGE)
    page = condition(result, "availability", "oci-a", "page")
    assert page["firing"] and page["long"]["burn"] == pytest.approx(2 / 12 / 0.001)
    assert [(s["scope"], s["alert"], s["severity"]) for s in sent] == [("oci-a", "page", "page")]
    assert condition(result, "availability", "oci-a", "ticket")["covered_by"] == "availability/oci-a/page"
    assert condition(result, "availability", slo.FLEET, "page")["covered_by"] == "availability/oci-a/page"
    (msg,) = mails(env, before)
    assert msg["Subject"].startswith(
        "[PAGE] availability SLO (99.90%) of oci-a: burn 166.7x over 1h and 1000.0x over 5m"
    )
    budget = 1 - (2 / 290) / 0.001
    assert f"error budget left {budget:.1%}" in msg["Subject"]
    assert open_keys(env) == {
        "availability/oci-a/page/open.json",
        "availability/oci-a/ticket/open.json",
        "availability/_fleet/page/open.json",
        "availability/_fleet/ticket/open.json",
    }

    # still down 20 minutes in: nothing more is sent
    result, sent = step(env, T + 4 * STEP, OUTAGE)
    assert condition(result, "availability", "oci-a", "page")["firing"] and sent == []
    assert len(mails(env, before)) == 1

    # recovered (two good probes since): the page episode closes, quietly; availability is
    # down by exactly the 4 failed probes of the 294 in its window
    result, sent = step(env, T + 6 * STEP, OUTAGE)
    oci = result["slos"]["availability"]["scopes"]["oci-a"]
    assert (oci["good"], oci["total"]) == (290, 294)
    assert oci["sli"] == pytest.approx(290 / 294)
    assert oci["budget_left"] == pytest.approx(1 - (4 / 294) / 0.001)
    assert result["slos"]["availability"]["scopes"]["ecr-b"]["sli"] == 1.0
    assert not condition(result, "availability", "oci-a", "page")["firing"] and sent == []
    assert "availability/oci-a/page/open.json" not in open_keys(env)
    episode = env["config"].storage.prefixes.health + "alerts/availability/oci-a/page/"
    closed = objects.list_keys(env["s3"], env["bucket"], episode + "closed/")
    (record,) = [objects.get_json(env["s3"], env["bucket"], o["Key"]) for o in closed]
    assert (record["state"], record["notified"]) == ("closed", True)
    assert record["closed_at"] == (T + 6 * STEP).isoformat()
    # the ticket still burns over 30 min: its (covered) episode stays open, still no email
    assert condition(result, "availability", "oci-a", "ticket")["firing"]
    assert len(mails(env, before)) == 1

    # an hour later everything has closed
    step(env, T + timedelta(hours=1), OUTAGE)
    assert open_keys(env) == set()

    # a new outage three hours in: a new episode, a new email
    down = OUTAGE | SECOND
    result, sent = step(env, T + timedelta(hours=3) + 2 * STEP, down)
    assert [(s["scope"], s["alert"]) for s in sent] == [("oci-a", "page")]
    assert len(mails(env, before)) == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failed_send_leaves_the_episode_to_the_next_evaluation(env, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_CLOSED",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": _closed_port(),
                "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "x@example.com"},
            }
        ),
    )
    broken = config_for(env["bucket"], env["tag"], smtp_conn_id="smtp_closed")
    before = len(env["smtp"].messages)
    now = T + 2 * STEP
    with pytest.raises(alerts.AlertNotSent, match="availability/oci-a/page") as failed:
        step(env, now, OUTAGE, config=broken)
    assert failed.value.sent == []
    assert "availability/oci-a/page/open.json" not in open_keys(env)  # the claim was given back
    assert mails(env, before) == []
    # run() keeps the evaluation for the page even when an email failed, then raises
    monkeypatch.setattr(alerts, "read_probes", lambda *_: probe_rows(now, OUTAGE))
    monkeypatch.setattr(alerts, "read_pulls", lambda *_: NO_PULLS)
    with pytest.raises(alerts.AlertNotSent):
        alerts.run(broken, env["s3"], now)
    latest = objects.get_json(env["s3"], env["bucket"], alerts.latest_key(broken))
    assert latest["evaluated_at"] == now.isoformat()
    assert "availability/oci-a/page/open.json" not in open_keys(env)
    # the next evaluation (SMTP back) sends it, once
    _, sent = step(env, now + STEP, OUTAGE)
    assert [(s["scope"], s["alert"]) for s in sent] == [("oci-a", "page")]
    _, sent = step(env, now + 2 * STEP, OUTAGE)
    assert sent == [] and len(mails(env, before)) == 1


def test_a_claim_held_by_another_evaluation_is_not_sent_twice_and_a_dead_one_is_taken_over(env):
    before = len(env["smtp"].messages)
    key = env["config"].storage.prefixes.health + "alerts/availability/oci-a/page/open.json"
    claim = {
        "episode_id": "x",
        "state": "sending",
        "slo": "availability",
        "scope": "oci-a",
        "alert": "page",
        "severity": "page",
        "opened_at": T.isoformat(),
        "claimed_at": datetime.now(UTC).isoformat(),
        "notified": False,
    }
    objects.put_json(env["s3"], env["bucket"], key, claim)
    _, sent = step(env, T + 2 * STEP, OUTAGE)
    assert sent == [] and mails(env, before) == []  # the other evaluation is sending it
    stale = {**claim, "claimed_at": (datetime.now(UTC) - timedelta(minutes=11)).isoformat()}
    objects.put_json(env["s3"], env["bucket"], key, stale)
    _, sent = step(env, T + 3 * STEP, OUTAGE)
    assert [(s["scope"], s["alert"]) for s in sent] == [("oci-a", "page")]
    assert len(mails(env, before)) == 1


def test_pull_success_is_read_from_the_reports_events_and_the_run_is_kept_for_the_page(env):
    config, s3, bucket = env["config"], env["s3"], env["bucket"]
    now = T + timedelta(minutes=30)
    # 40 pulls of ecr-b over the last 40 min (5 of the last 10 failed), 3 on the day before
    # the 30-day window, one just after now: only the 40 count
    times = [now - timedelta(minutes=40) + timedelta(minutes=i) for i in range(40)]
    failed = [False] * 30 + [False, True] * 5
    extra = [now - timedelta(days=30, minutes=1)] * 3 + [now + timedelta(seconds=1)]
    rows = [
        {
            "event_id": f"e{i}",
            "source": "cloudtrail",
            "registry": "ecr-b",
            "repository": "app",
            "event_time": t,
            "day": t.date(),
            "failed": f,
        }
        for i, (t, f) in enumerate(zip(times + extra, failed + [True] * 4, strict=True))
    ]
    events = pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)
    base = f"{config.storage.prefixes.reports}events/"
    for day in sorted({r["day"] for r in rows}):
        part = events.filter(pa.compute.equal(events["day"], pa.scalar(day, pa.date32())))
        objects.put_table(s3, bucket, f"{base}day={day.isoformat()}/part-{day:%Y%m%d}.parquet", part)
    before = len(env["smtp"].messages)
    result = alerts.evaluate(config, s3, now, probes=probe_rows(now, set()))
    ecr = result["slos"]["pull_success"]["scopes"]["ecr-b"]
    assert (ecr["good"], ecr["total"]) == (35, 40)
    assert ecr["budget_left"] == pytest.approx(1 - (5 / 40) / 0.01)
    page = condition(result, "pull_success", "ecr-b", "page")
    # 1 h: 5 bad of 40 -> 12.5x < 14.4: no page; 30 min / 6 h for the ticket: 5/30 -> 16.7x, 12.5x
    assert page["long"]["burn"] == pytest.approx(5 / 40 / 0.01) and not page["firing"]
    ticket = condition(result, "pull_success", "ecr-b", "ticket")
    assert ticket["short"]["burn"] == pytest.approx(5 / 30 / 0.01) and ticket["firing"]
    sent = alerts.notify(config, s3, result)
    assert [(s["slo"], s["scope"], s["alert"]) for s in sent] == [("pull_success", "ecr-b", "ticket")]
    (msg,) = mails(env, before)
    assert msg["Subject"].startswith("[TICKET] pull success SLO (99.00%) of ecr-b: burn 12.5x over 6h")
    key = alerts.persist(config, s3, result)
    assert key == f"health-{env['tag']}/slo/latest.json"
    latest = objects.get_json(s3, bucket, key)
    assert latest["evaluated_at"] == now.isoformat()
    assert [(e["slo"], e["scope"], e["alert"], e["notified"]) for e in latest["open_episodes"]] == [
        ("pull_success", "_fleet", "ticket", False),
        ("pull_success", "ecr-b", "ticket", True),
    ]


def test_run_reads_the_probe_dataset_and_keeps_the_evaluation_for_the_page(env):
    from include.registry_ops.health import dataset

    config, s3 = env["config"], env["s3"]
    now = T + 2 * STEP
    runs: dict[str, list[dict]] = {}
    for row in probe_rows(now, OUTAGE).to_pylist():
        if row["at"] >= T - timedelta(hours=2):  # the last two hours and 10 minutes: 26 runs
            runs.setdefault(row["run_id"], []).append(row)
    for run_id, rows in runs.items():
        dataset.append(s3, config, rows, run_id, rows[0]["at"])
    before = len(env["smtp"].messages)
    out = alerts.run(config, s3, now)
    assert "availability/oci-a/page" in out["firing"]
    assert [(s["scope"], s["alert"]) for s in out["sent"]] == [("oci-a", "page")]
    latest = objects.get_json(s3, env["bucket"], alerts.latest_key(config))
    oci = latest["slos"]["availability"]["scopes"]["oci-a"]
    assert (oci["good"], oci["total"]) == (24, 26)
    assert latest["slos"]["pull_success"]["scopes"][slo.FLEET]["total"] == 0  # no pull events stored
    assert {(e["scope"], e["alert"]) for e in latest["open_episodes"]} >= {("oci-a", "page")}
    again = alerts.run(config, s3, now + STEP)
    assert again["sent"] == [] and len(mails(env, before)) == 1


def test_two_evaluations_racing_for_one_episode_email_once(env, monkeypatch):
    # evaluation B listed the episodes before evaluation A claimed this one: B's write-once
    # claim loses (If-None-Match), so B sends nothing and leaves A's claim as it was
    before = len(env["smtp"].messages)
    key = env["config"].storage.prefixes.health + "alerts/availability/oci-a/page/open.json"
    claim = {"episode_id": "a", "state": "sending", "claimed_at": datetime.now(UTC).isoformat()}
    objects.put_json(env["s3"], env["bucket"], key, claim)
    monkeypatch.setattr(alerts, "open_episodes", lambda config, s3: {})
    result = alerts.evaluate(
        env["config"], env["s3"], T + 2 * STEP, probes=probe_rows(T + 2 * STEP, OUTAGE), pulls=NO_PULLS
    )
    assert condition(result, "availability", "oci-a", "page")["firing"]
    assert alerts.notify(env["config"], env["s3"], result) == []
    assert mails(env, before) == []
    assert objects.get_json(env["s3"], env["bucket"], key) == claim


def test_an_episode_of_a_registry_no_longer_configured_closes(env):
    config, s3, bucket = env["config"], env["s3"], env["bucket"]
    key = config.storage.prefixes.health + "alerts/availability/gone/page/open.json"
    doc = {
        "episode_id": "g",
        "state": "open",
        "slo": "availability",
        "scope": "gone",
        "alert": "page",
        "severity": "page",
        "opened_at": T.isoformat(),
        "notified": True,
    }
    objects.put_json(s3, bucket, key, doc)
    _, sent = step(env, T, set())
    assert sent == [] and open_keys(env) == set()
    closed = objects.list_keys(s3, bucket, key.rsplit("/", 1)[0] + "/closed/")
    (record,) = [objects.get_json(s3, bucket, o["Key"]) for o in closed]
    assert (record["state"], record["close_reason"], record["closed_at"]) == (
        "closed",
        "no longer evaluated",
        T.isoformat(),
    )
