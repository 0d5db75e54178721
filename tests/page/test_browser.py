"""The Registry page as ops meet it: Debian's chromium, driven by Playwright, against a real
``airflow api-server`` with our plugin loaded and images that a real retention run archived and
deleted on moto's ECR. Sign in through Airflow's login form, open "Registry" from Airflow's nav,
filter the deleted-image table, follow a Restore button to the filled-in ``registry_restore``
form and trigger it; Airflow's REST API then holds the run with those Params."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from include.registry_ops.config import load_config
from include.registry_ops.retention import audit, jobs
from include.registry_ops.retention.executor import Limits, RunContext, execute
from include.registry_ops.store import objects
from tests.retention_exec.helpers import (
    ecr_registry,
    oldest_images,
    plan_for,
    seed,
    small_fleet,
    unique,
    visible,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium on a closed network: no background connections, no sandbox as root (env skill notes)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BUCKET = "page-browser-test"
USER, PASSWORD = "ops", "browser-test-pass-1"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def deleted(moto_server, s3, tmp_path_factory):
    """A config whose bucket holds one executed retention run that deleted 3 images."""
    objects.ensure_bucket(s3, BUCKET)
    path = tmp_path_factory.mktemp("browser") / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [{"name": "ecr-local", "kind": "ecr", "conn_id": "aws_default"}],
                "storage": {"conn_id": "aws_default", "bucket": BUCKET},
            }
        )
    )
    config = load_config(path)
    reg = ecr_registry(moto_server.endpoint)
    [(repo, specs)] = ((r, visible(reg, r)) for r in seed(reg, small_fleet(unique("page-ui"), 1, 12)))
    gone = oldest_images(specs, 3)
    plan = plan_for(reg.name, repo, specs, {m.digest for m in gone})
    at = datetime.now(UTC) - timedelta(hours=2)
    run = RunContext.from_config(config, s3, "ui-run-1", at, False)
    results = execute(plan, run, lambda _: reg, limits=Limits(max_deletions_per_run=100, max_fraction=1.0))
    summary = audit.summarize(results, config.retention.usd_per_gb_month, False)
    summary.update(run_id="ui-run-1", now=at.isoformat())
    jobs._publish_summary(config, s3, summary, results)
    return {"config": path, "repository": repo.name, "digests": [m.digest for m in gone]}


@pytest.fixture(scope="module")
def airflow(serialized_dags, deleted, tmp_path_factory):
    from devstack.api_server import ApiServer

    server = ApiServer(
        tmp_path_factory.mktemp("api-server"),
        {USER: PASSWORD},
        REGISTRY_OPS_CONFIG=str(deleted["config"]),
        AIRFLOW__API_AUTH__JWT_SECRET="registry-page-browser-test-" + "k" * 48,
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def test_signed_out_the_page_and_its_json_answer_401(airflow, browser):
    page = browser.new_page()
    try:
        for path in ("/registry-page/", "/registry-page/api/sections/retention", "/registry-page/api/health"):
            resp = page.request.get(airflow.base + path)
            assert resp.status == 401, (path, resp.text())
    finally:
        page.close()


def test_ops_sign_in_open_the_page_filter_and_restore(airflow, browser, deleted, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(airflow.base + "/")
        page.get_by_label("Username").fill(USER)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Registry").click()
        frame = page.frame_locator("iframe")

        table = frame.locator('[data-table="deleted"]')
        expect(table.locator("tbody tr")).to_have_count(3, timeout=60_000)
        page.screenshot(
            path=os.environ.get("REGISTRY_PAGE_SHOT", str(tmp_path / "registry-page.png")), full_page=True
        )
        digest = deleted["digests"][1]
        table.get_by_role("searchbox").fill(digest[7:19])
        expect(table.locator("tbody tr")).to_have_count(1)
        expect(table.locator(".bar .meta")).to_have_text("1 of 1 rows")

        table.locator("tbody tr").get_by_role("link", name="Restore").click()
        form = frame.locator("#restore-form")
        try:
            expect(form.locator("#param-digest")).to_have_value(digest, timeout=60_000)
        except AssertionError:  # say what the form page showed, and what the API server logged
            status = frame.locator("#status").all_inner_texts()
            raise AssertionError(
                f"no filled form; the page said {status}; API server: {airflow.log_tail()}"
            ) from None
        expect(form.locator("#param-mode")).to_have_value("restore")
        expect(form.locator("#param-registry")).to_have_value("ecr-local")
        expect(form.locator("#param-repository")).to_have_value(deleted["repository"])
        form.get_by_role("button", name="Trigger registry_restore").click()
        link = frame.locator("#run-link")
        expect(link).to_be_visible(timeout=30_000)
        run_id = link.inner_text()
    finally:
        page.close()

    run = airflow.api(USER, "GET", f"/dags/registry_restore/dagRuns/{run_id}")
    assert run["conf"]["mode"] == "restore" and run["conf"]["digest"] == digest
    assert run["conf"]["registry"] == "ecr-local" and run["conf"]["repository"] == deleted["repository"]
    assert run["triggering_user_name"] == USER
