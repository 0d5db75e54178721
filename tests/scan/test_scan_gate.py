"""The policy gate on findings from the real reports, and its notifications: a real MIME email
received by the SMTP sink, and a Slack webhook POST received by a local HTTP server."""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pandas as pd
import pytest

from include.registry_ops.scan import findings, gate, jobs, notify
from include.registry_ops.scan.parsers import parse_trivy
from include.registry_ops.scan.settings import ScanConfig
from tests.scan.scanfleet import TRIVY

TODAY = date(2026, 11, 27)
# image name -> (tags, Trivy report)
IMAGES = {
    "app-release": (["1.0.0", "abc1234", "latest"], "alpine-39"),  # 1 unique critical (2 entries)
    "app-branch": (["feature-x"], "photon-30"),  # 1 critical, 1 high; not protected
    "app-ok": (["1.1.0", "def5678"], "ubuntu-1804"),  # no critical/high
    "app-high": (["2.0.0"], "ubi-7-comprehensive"),  # 1 high
}


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    from include.registry_ops.scan.tagging import newest_tag

    images, rows = [], []
    now = pd.Timestamp("2026-11-27T10:00:00Z")
    for i, (name, (tags, report)) in enumerate(IMAGES.items()):
        digest = f"sha256:{i:064x}"
        images.append(
            {
                "registry": "oci",
                "repository": f"team/{name}",
                "digest": digest,
                "image_tags": tags,
                "newest_tag": newest_tag(tags),
                "platform": "linux/amd64",
            }
        )
        found = parse_trivy(json.loads((TRIVY / f"{report}.json.golden").read_text()))
        place = {"registry": "oci", "repository": f"team/{name}", "digest": digest, "source": "trivy"}
        rows += [{**f, **place, "first_seen": now, "scanned_at": now} for f in found]
    return findings.to_table(rows).to_pandas(), pd.DataFrame(images)


def evaluate(**policy):
    table, images = frames()
    return gate.evaluate(table, images, ScanConfig(**policy), TODAY)


def test_default_policy_fails_on_the_protected_release_only():
    result = evaluate()
    assert not result["passed"] and result["protected_violations"] == 1
    release, branch = result["violations"]
    assert (release["repository"], release["newest_tag"], release["protected"]) == (
        "team/app-release",
        "1.0.0",
        True,
    )
    assert release["critical"] == 1 and release["critical_ids"] == [
        "CVE-2019-14697"
    ]  # unique ids, not entries
    assert (branch["repository"], branch["newest_tag"], branch["protected"]) == (
        "team/app-branch",
        "feature-x",
        False,
    )
    assert branch["critical"] == 1 and branch["high"] == 1


def test_thresholds_are_configurable():
    result = evaluate(max_critical=1, max_high=0)
    # protected first: 2.0.0 is a release; alpine's one critical is now within the limit
    assert [v["repository"] for v in result["violations"]] == ["team/app-high", "team/app-branch"]
    assert result["protected_violations"] == 1


def test_allowlist_suppresses_until_its_expiry_date_inclusive():
    entry = {"id": "CVE-2019-14697", "reason": "musl not reachable", "expires": TODAY.isoformat()}
    result = evaluate(allowlist=[entry])
    assert result["passed"] and [v["repository"] for v in result["violations"]] == ["team/app-branch"]
    assert result["allowlist_active"][0]["id"] == "CVE-2019-14697" and result["allowlist_expired"] == []
    # one day later the same entry no longer suppresses and is reported with what it would cover
    expired = {**entry, "expires": (TODAY - timedelta(days=1)).isoformat()}
    result = evaluate(allowlist=[expired])
    assert not result["passed"]
    (rep,) = result["allowlist_expired"]
    assert rep["reason"] == "musl not reachable" and rep["would_cover"] == [
        f"oci/team/app-release@sha256:{0:064x}"
    ]


def test_allowlist_repository_globs():
    entry = {
        "id": "CVE-2019-14697",
        "reason": "accepted for tools",
        "expires": "2027-01-31",
        "repositories": ["tools/*"],
    }
    assert not evaluate(allowlist=[entry])["passed"]
    entry["repositories"] = ["team/app-*"]
    assert evaluate(allowlist=[entry])["passed"]


def test_allowlist_entries_need_a_reason_and_a_date():
    with pytest.raises(ValueError):
        ScanConfig(allowlist=[{"id": "CVE-1", "expires": "2027-01-01"}])
    with pytest.raises(ValueError):
        ScanConfig(allowlist=[{"id": "CVE-1", "reason": "because", "expires": "soon"}])


def test_gate_email_is_a_real_mime_message(smtp_server, scan_config):
    expired = [{"id": "CVE-2019-14697", "reason": "musl not reachable", "expires": "2026-01-31"}]
    _, config = scan_config(allowlist=expired)
    result = evaluate(allowlist=expired)
    before = len(smtp_server.messages)
    sent = jobs.notify_gate(config, result, "Run test.")
    assert sent["email"] == ["secops@example.com"] and sent["slack"] is False
    msg = smtp_server.messages[before]
    assert msg["To"] == "secops@example.com" and msg["From"] == "scan@example.com"
    assert msg["Subject"] == notify.subject(result)
    html = (
        next(p for p in msg.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    )
    assert "team/app-release" in html and "<td>1.0.0</td>" in html and "CVE-2019-14697" in html
    assert "Expired allowlist entries" in html


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append({"path": self.path, "json": json.loads(body)})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_slack_webhook_from_a_connection(scan_config, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        monkeypatch.setenv(
            "AIRFLOW_CONN_SLACK_SCAN",
            json.dumps(
                {
                    "conn_type": "slackwebhook",
                    "host": f"http://127.0.0.1:{port}/services",
                    "password": "T000/B000/secret-token",
                }
            ),
        )
        _, config = scan_config(slack_webhook_conn_id="slack_scan")
        assert notify.send_slack(config, evaluate())
        (call,) = _Hook.received
        assert call["path"] == "/services/T000/B000/secret-token"
        assert "team/app-release:1.0.0" in call["json"]["text"]
    finally:
        server.shutdown()
