"""The SLOs section over what the alerts module wrote to moto S3 (evaluate, notify through the
SMTP sink, persist): fleet figures and per-registry tables checked against hand-computed values,
the open episodes, low-traffic and stale notes, never_run before the first evaluation, and the
section through the page app (signed in, signed out, a broken slo/latest.json)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from include.registry_ops import storage
from include.registry_ops.health import alerts
from include.registry_ops.page import slo as section
from include.registry_ops.page.app import create_app
from include.registry_ops.page.context import Memo, PageContext
from include.registry_ops.reports.events import EVENTS_SCHEMA
from tests.health.test_slo_alerts import OUTAGE, STEP, T, config_for, probe_rows
from tests.page.test_page_app import auth  # noqa: F401  (the signed-in session fixture)

NOW = T + 2 * STEP  # 10 minutes into oci-a's outage


@pytest.fixture(scope="module")
def env(moto_server, s3, smtp_server):
    bucket = f"page-slo-{uuid.uuid4().hex[:8]}"
    storage.ensure_bucket(s3, bucket)
    config = config_for(bucket, uuid.uuid4().hex[:6])
    result = alerts.evaluate(
        config, s3, NOW, probes=probe_rows(NOW, OUTAGE), pulls=EVENTS_SCHEMA.empty_table()
    )
    sent = alerts.notify(config, s3, result)
    assert [(s["scope"], s["alert"]) for s in sent] == [("oci-a", "page")]
    alerts.persist(config, s3, result)
    return {"config": config, "s3": s3, "bucket": bucket}


def ctx_of(env, config=None, now=NOW) -> PageContext:
    return PageContext(config or env["config"], env["s3"], now, Memo())


def test_never_run_names_registry_health(env):
    config = config_for(env["bucket"], f"none-{uuid.uuid4().hex[:6]}")
    got = section.load(ctx_of(env, config))
    assert got.status == "never_run" and "registry_health has not run yet" in got.message


def test_figures_tables_and_open_episodes(env):
    got = section.load(ctx_of(env))
    assert got.status == "ok" and got.message is None
    f = {x.label: x for x in got.figures}
    # 580 probes in the window (290 each: a day and 10 minutes), 2 of oci-a's bad
    avail = f["Availability (fleet, 30d)"]
    assert avail.value == pytest.approx(578 / 580) and avail.alert
    assert f["Availability target"].value == 0.999
    budget = f["Availability error budget left"]
    assert budget.value == pytest.approx(1 - (2 / 580) / 0.001) and budget.alert
    # no pull at all: no SLI, no budget figure, said in a note
    assert f["Pull success (fleet, 30d)"].value is None and not f["Pull success (fleet, 30d)"].alert
    assert any("Pull success: no pulls of the fleet" in n for n in got.notes)
    assert f["Open alert episodes"].value == 4 and f["Evaluated"].value == NOW
    tables = {t.id: t for t in got.tables}
    rows = {r["registry"]: r for r in tables["availability"].rows}
    assert set(rows) == {"oci-a", "ecr-b"}
    oci = rows["oci-a"]
    assert (oci["good"], oci["total"], oci["target"]) == (288, 290, 0.999)
    assert oci["page_long"] == round(2 / 12 / 0.001, 2) and oci["page_short"] == 1000.0
    assert oci["ticket_long"] == round(2 / 72 / 0.001, 2) and oci["ticket_short"] == round(2 / 6 / 0.001, 2)
    assert oci["firing"] == ["page", "ticket"] and rows["ecr-b"]["firing"] == []
    labels = [c.label for c in tables["availability"].columns]
    assert labels[6:10] == ["page burn 1h", "page burn 5m", "ticket burn 6h", "ticket burn 30m"]
    episodes = {(e["slo"], e["registry"], e["alert"]): e for e in tables["episodes"].rows}
    assert episodes[("Availability", "oci-a", "page")]["emailed"] == "yes"
    assert episodes[("Availability", "fleet", "page")]["emailed"] == "covered by availability/oci-a/page"
    assert episodes[("Availability", "oci-a", "page")]["opened_at"] == NOW


def test_an_old_evaluation_is_flagged(env):
    got = section.load(ctx_of(env, now=NOW + timedelta(hours=1)))
    f = {x.label: x for x in got.figures}
    assert f["Evaluated"].alert
    assert got.notes[0].startswith("The last SLO evaluation is from") and "registry_health" in got.notes[0]


def test_through_the_page_app(env, auth):  # noqa: F811
    _manager, token = auth
    app = create_app(config_source=lambda: env["config"], s3_factory=lambda _c: env["s3"], clock=lambda: NOW)
    client = TestClient(app)
    assert client.get("/api/sections/slo").status_code == 401
    assert "slo" in [s["id"] for s in client.get("/api/sections", cookies={"_token": token()}).json()]
    body = client.get("/api/sections/slo", cookies={"_token": token()}).json()
    assert body["status"] == "ok" and body["as_of"] == NOW.isoformat()
    assert {t["id"] for t in body["tables"]} == {"availability", "pull_success", "episodes"}
    # a broken latest.json shows as this section's error, naming the object
    key = alerts.latest_key(env["config"])
    env["s3"].put_object(Bucket=env["bucket"], Key=key, Body=b"{not json")
    try:
        body = client.get("/api/sections/slo", cookies={"_token": token()}).json()
        assert body["status"] == "error"
        assert f"s3://{env['bucket']}/{key} is not JSON" in body["message"]
        env["s3"].put_object(
            Bucket=env["bucket"], Key=key, Body=b'{"evaluated_at": "2026-11-28T09:00:00+00:00"}'
        )
        body = client.get("/api/sections/slo", cookies={"_token": token()}).json()
        assert body["status"] == "error" and "is not an SLO evaluation (KeyError" in body["message"]
    finally:
        result = alerts.evaluate(
            env["config"], env["s3"], NOW, probes=probe_rows(NOW, OUTAGE), pulls=EVENTS_SCHEMA.empty_table()
        )
        alerts.persist(env["config"], env["s3"], result)


def test_one_failed_probe_is_noted_as_held_back_not_alerted(env):
    config = config_for(env["bucket"], f"one-{uuid.uuid4().hex[:6]}")
    one = {T + STEP}  # the newest probe before NOW failed, alone
    result = alerts.evaluate(
        config, env["s3"], NOW, probes=probe_rows(NOW, one), pulls=EVENTS_SCHEMA.empty_table()
    )
    assert alerts.notify(config, env["s3"], result) == []
    alerts.persist(config, env["s3"], result)
    got = section.load(ctx_of(env, config))
    f = {x.label: x for x in got.figures}
    assert f["Open alert episodes"].value == 0 and not f["Open alert episodes"].alert
    assert (
        "Availability page alert of oci-a: both windows burn over 14.4x, but the 1h window holds "
        "1 bad sample(s); at least 2 are needed to alert (low traffic)."
    ) in got.notes
    assert got.tables[-1].rows == []
