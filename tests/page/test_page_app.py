"""The Registry page's app (FastAPI TestClient): only a signed-in Airflow user gets an answer,
checked with Airflow's own auth manager and tokens; every section answers even when its data or
the config is broken; Health reads our DAGs from Airflow's real REST API app (in process, on the
test's metadata DB) with the viewer's token, and names a DAG the scheduler paused."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from include.registry_ops.page.app import PREFIX, SECTIONS, create_app

ROUTES = [
    "/",
    "/restore?digest=sha256:00",
    "/api/sections",
    "/api/sections/fleet",
    "/api/retention/deleted?q=x",
]
ROUTES_ALL = [*ROUTES, "/api/health"]


@pytest.fixture(scope="module")
def auth(airflow_db):
    """Airflow's auth manager (the one the API server uses) and a way to mint session tokens."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    manager = create_auth_manager()
    manager.init()

    def token(name: str = "ops", seconds: int = 600) -> str:
        return manager.generate_jwt(
            SimpleAuthManagerUser(username=name, role="viewer"), expiration_time_in_seconds=seconds
        )

    return manager, token


@pytest.fixture(scope="module")
def airflow_app(serialized_dags):
    """Airflow's own REST API app on the test DB, with our DAGs serialized into it."""
    from airflow.api_fastapi.app import create_app as airflow_create_app

    return airflow_create_app(apps="core")


@pytest.fixture
def client(config_file, auth, airflow_app):
    app = create_app(
        airflow_base=lambda: "http://airflow", airflow_transport=httpx.ASGITransport(app=airflow_app)
    )
    return TestClient(app)


@pytest.mark.parametrize("route", ROUTES_ALL)
def test_every_route_refuses_a_request_without_a_session(client, route):
    resp = client.get(route)
    assert resp.status_code == 401, resp.text
    assert resp.json()["detail"] == "sign in to Airflow to see the Registry page"  # not "expired"


def test_a_person_signed_out_gets_a_sign_in_link_that_comes_back_to_the_page(client):
    resp = client.get("/", headers={"Accept": "text/html"}, cookies={})
    assert resp.status_code == 401
    assert 'href="/auth/login?next=%2F"' in resp.text and 'target="_top"' in resp.text


@pytest.mark.parametrize("kind", ["garbage", "wrong signature", "expired", "revoked"])
def test_a_token_airflow_would_refuse_is_refused(client, auth, kind):
    manager, token = auth
    if kind == "garbage":
        bad = "not-a-jwt"
    elif kind == "wrong signature":
        head, body, _sig = token().split(".")
        bad = f"{head}.{body}.c2lnbmF0dXJl"
    elif kind == "expired":
        bad = token(seconds=-120)
    else:
        bad = token()
        manager.revoke_token(bad)
    for route in ROUTES:
        assert client.get(route, cookies={"_token": bad}).status_code == 401, (kind, route)
        assert client.get(route, headers={"Authorization": f"Bearer {bad}"}).status_code == 401, (kind, route)


def test_the_session_cookie_or_a_bearer_token_lets_a_user_in(client, auth):
    _, token = auth
    resp = client.get("/api/sections", cookies={"_token": token()})
    assert resp.status_code == 200
    assert [s["id"] for s in resp.json()] == [*(s.id for s in SECTIONS), "health"]
    assert client.get("/api/sections", headers={"Authorization": f"Bearer {token()}"}).status_code == 200


def test_the_page_boots_with_where_it_is_mounted_and_no_token_in_it(client, auth):
    _, token = auth
    tok = token()
    page = client.get("/", cookies={"_token": tok})
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    boot = json.loads(re.search(r"window\.REGISTRY_PAGE = (\{.*?\});", page.text).group(1))
    assert boot["base"] == "/" and boot["airflow"] == ""
    assert [s["path"] for s in boot["sections"]][-1] == "api/health"
    assert tok not in page.text
    form = client.get("/restore?digest=sha256:ab", cookies={"_token": tok})
    assert form.status_code == 200 and "registry_restore" in form.text and tok not in form.text


def test_mounted_under_airflow_the_page_knows_airflow_s_root(auth, config_file):
    from fastapi import FastAPI

    _, token = auth
    outer = FastAPI()
    outer.mount(PREFIX, create_app())
    page = TestClient(outer).get(PREFIX + "/", cookies={"_token": token()})
    boot = json.loads(re.search(r"window\.REGISTRY_PAGE = (\{.*?\});", page.text).group(1))
    assert boot["base"] == PREFIX + "/" and boot["airflow"] == ""


def test_an_unknown_section_is_a_404_naming_the_sections(client, auth):
    _, token = auth
    resp = client.get("/api/sections/nope", cookies={"_token": token()})
    assert resp.status_code == 404 and "fleet" in resp.json()["detail"]


def test_a_broken_config_shows_in_every_section_and_the_page_still_loads(auth, tmp_path):
    _, token = auth
    bad = tmp_path / "registry-ops.yaml"
    bad.write_text("registries: [\n")
    from include.registry_ops.page.app import ConfigSource

    client = TestClient(create_app(config_source=ConfigSource(str(bad))))
    cookies = {"_token": token()}
    assert client.get("/", cookies=cookies).status_code == 200
    for spec in SECTIONS:
        body = client.get(f"/api/sections/{spec.id}", cookies=cookies).json()
        assert body["status"] == "error" and str(bad) in body["message"] and "YAML" in body["message"], body


def test_a_token_never_reaches_the_logs(client, auth, caplog):
    _, token = auth
    good, bad = token(), token(seconds=-120)
    with caplog.at_level(logging.DEBUG):
        client.get("/api/health", cookies={"_token": good})
        client.get("/api/sections/fleet", cookies={"_token": bad})
        client.get("/api/sections", headers={"Authorization": f"Bearer {bad}"})
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert good not in text and bad not in text
    assert "refused a token (ExpiredSignatureError)" in caplog.text


def test_health_lists_our_dags_from_airflow_with_the_viewer_s_token(client, auth):
    _, token = auth
    body = client.get("/api/health", cookies={"_token": token()}).json()
    assert body["status"] == "ok", body
    rows = {r["dag_id"]: r for r in body["tables"][0]["rows"]}
    ours = sorted(p.stem for p in (Path(__file__).parents[2] / "dags").glob("registry_*.py"))
    assert sorted(rows) == ours
    assert all(r["last_success"] is None for r in rows.values())


@pytest.fixture
def paused_by_the_scheduler(airflow_app):
    """``registry_scan`` paused by the scheduler's own check after 3 failed runs; undone after
    the test (the runs, the scheduler's Log row, the pause), so other tests of this worker's
    metadata DB (the pause watch) do not see it."""
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.models.log import Log
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType
    from sqlalchemy import delete, update

    dag_id = "registry_scan"
    base = datetime(2026, 11, 1, tzinfo=UTC)
    with create_session() as session:
        runs = []
        for i in range(3):
            run = DagRun(
                dag_id=dag_id,
                run_id=f"scheduled__fail{i}",
                run_type=DagRunType.SCHEDULED,
                logical_date=base + timedelta(days=i),
                run_after=base + timedelta(days=i),
                state=DagRunState.FAILED,
            )
            session.add(run)
            runs.append(run)
        session.flush()
        # the scheduler's own check, as it runs when a run fails (pauses, writes the Log row)
        runs[-1]._check_last_n_dagruns_failed(dag_id, 3, session)
    with create_session() as session:
        assert session.get(DagModel, dag_id).is_paused
    yield dag_id
    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id.like("scheduled__fail%")))
        session.execute(
            delete(Log).where(Log.dag_id == dag_id, Log.event == "paused", Log.owner == "scheduler")
        )
        session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=False))


def test_health_names_a_dag_the_scheduler_paused_after_failures(client, auth, paused_by_the_scheduler):
    dag_id = paused_by_the_scheduler
    _, token = auth
    body = client.get("/api/health", cookies={"_token": token()}).json()
    row = next(r for r in body["tables"][0]["rows"] if r["dag_id"] == dag_id)
    assert row["paused"] == "by the scheduler" and row["state"] == "failed"
    assert row["last_run_state"] == "failed" and row["last_success"] is None  # 3 failed runs, no success
    assert "paused by the scheduler" in row["note"]
    assert any(
        f["label"] == "Paused by the scheduler" and f["value"] == 1 and f["alert"] for f in body["figures"]
    )
    assert any(dag_id in n for n in body["notes"])


def test_health_says_so_when_airflow_s_api_is_down(config_file, auth):
    _, token = auth

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = TestClient(
        create_app(airflow_base=lambda: "http://airflow", airflow_transport=httpx.MockTransport(refuse))
    )
    body = client.get("/api/health", cookies={"_token": token()}).json()
    assert body["status"] == "error" and "connection refused" in body["message"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_the_page_is_read_only(client, auth, method):
    _, token = auth
    for route in ["/", "/api/sections/fleet", "/api/retention/deleted", "/api/health"]:
        resp = client.request(method, route, cookies={"_token": token()})
        assert resp.status_code == 405, (method, route, resp.status_code)


def test_a_section_that_fails_shows_the_error_without_credentials_in_it(auth, config_file, monkeypatch):
    """A loader's exception becomes the section's message, with URL credentials and
    password-style values masked (registries quote URLs in their errors)."""
    from include.registry_ops.page import model

    secret = "hunter2-not-for-the-page"

    def failing(_ctx):
        raise RuntimeError(f"GET https://ops:{secret}@registry.local/v2/ failed; password={secret}")

    import include.registry_ops.page.fleet as fleet

    monkeypatch.setattr(fleet, "load", failing)
    _, token = auth
    resp = TestClient(create_app()).get("/api/sections/fleet", cookies={"_token": token()})
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "error"
    assert secret not in resp.text and "https://***@registry.local/v2/" in body["message"]
    assert "password=***" in body["message"]
    assert model.redact(None) is None
