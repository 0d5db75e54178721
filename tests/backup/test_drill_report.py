"""The drill report: objectives compared at their boundary, the report written to moto S3 as a
dated run with its pointer, and emailed through the session's SMTP sink (HTML, text, JSON)."""

from __future__ import annotations

import email
import json
from datetime import UTC, datetime, timedelta
from email import policy

import pytest

from include.registry_ops import storage
from include.registry_ops.backup import drill_report
from include.registry_ops.backup.drill import DrillPlan, Selection, Verification, rpo_seconds
from include.registry_ops.config import Config

BUCKET = "drill-report-test"
NOW = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def config(**dr) -> Config:
    return Config.model_validate(
        {
            "registries": [{"name": "oci-local", "kind": "oci", "conn_id": "oci_local"}],
            "storage": {"bucket": BUCKET},
            "notifications": {"recipients": ["dr@example.com"]},
            "dr": {"target": "oci-local", "rto_seconds": 600, "rpo_seconds": 26 * 3600, **dr},
        }
    )


PLAN = DrillPlan(
    snapshot="20261127T020000Z",
    taken_at="2026-11-27T02:00:00+00:00",
    mode="full",
    target="oci-local",
    target_kind="oci",
    scratch_prefix="dr-drill/",
    sample=2,
    seed="20261127T020000Z",
    repositories_in_snapshot=5,
    selections=(
        Selection("ecr-local", "team/a", "dr-drill/ecr-local/team/a"),
        Selection("oci-local", "svc/<b>", "dr-drill/oci-local/svc/<b>"),
    ),
)


def verification(failures: int = 0) -> Verification:
    v = Verification(
        manifests_checked=10, manifests_equal=10, blobs_checked=20, blobs_equal=20 - failures, seconds=2.0
    )
    v.tags_checked = v.tags_equal = 4
    v.failures = [
        {
            "registry": "oci-local",
            "repository": "svc/<b>",
            "target_repository": "dr-drill/oci-local/svc/<b>",
            "kind": "blob",
            "digest": "sha256:" + f"{i:064x}",
            "tag": None,
            "problem": "blob not in the target",
        }
        for i in range(failures)
    ]
    v.repositories = [
        {**s.__dict__, "manifests": 5, "blobs": 10, "tags": 2, "failures": 0} for s in PLAN.selections
    ]
    return v


def report(
    cfg: Config | None = None, *, rto_s: float = 10.0, rpo_s: float = 3600.0, failures: int = 0
) -> dict:
    return drill_report.build_report(
        cfg or config(),
        PLAN,
        restores=[],
        restore_failures=[],
        verification=verification(failures),
        rto_s=rto_s,
        rpo_s=rpo_s,
        now=NOW,
        started_at=NOW,
    )


def test_a_drill_that_came_back_whole_within_both_objectives_passes():
    r = report()
    assert r["passed"] and r["problems"] == []
    assert (r["digests_checked"], r["digests_equal"], r["blobs_checked"]) == (30, 30, 20)
    assert r["verification"]["digests_per_second"] == 15.0
    assert r["objectives"]["rto"] == {"seconds": 10.0, "objective": 600, "met": True}


@pytest.mark.parametrize("key", ["rto", "rpo"])
def test_each_objective_is_met_at_its_boundary_and_missed_just_past_it(key):
    objective = {"rto": 600, "rpo": 26 * 3600}[key]
    at = report(**{f"{key}_s": float(objective)})
    assert at["objectives"][key]["met"] and at["passed"]
    past = report(**{f"{key}_s": objective + 0.5})
    assert not past["objectives"][key]["met"] and not past["passed"]
    label = {"rto": "RTO (restore wall time)", "rpo": "RPO (snapshot age)"}[key]
    assert past["problems"] == [f"{label} {objective + 0.5:.0f} s exceeds the objective {objective} s"]


def test_rpo_is_now_minus_the_snapshots_taken_at():
    assert rpo_seconds("2026-11-27T02:00:00Z", NOW) == 28 * 3600
    assert rpo_seconds("2026-11-27T02:00:00+00:00", NOW + timedelta(seconds=1.5)) == 28 * 3600 + 1.5


def test_a_failed_drill_names_each_digest_up_to_the_cap():
    r = report(failures=3)
    assert not r["passed"] and r["problems"] == ["3 digest(s) did not come back equal"]
    message = drill_report.failure_message(r)
    for f in r["failures"]:
        assert f["digest"] in message
    many = report(failures=drill_report.MAX_NAMED + 5)
    tail = f"; and more ({drill_report.MAX_NAMED + 5} failures in all, every one in the report)"
    assert drill_report.failure_message(many).endswith(tail)
    assert len(many["digests_missing"]) == drill_report.MAX_NAMED + 5
    summary = drill_report.summary(many)  # what the DAG's verdict gets: the first ones
    assert len(summary["failures"]) == drill_report.MAX_NAMED
    assert drill_report.failure_message(summary).endswith(tail)
    assert drill_report.failure_message(drill_report.summary(r)) == message


def test_the_report_goes_to_s3_as_a_dated_run_and_by_email(moto_server, s3, smtp_server):
    cfg = config()
    storage.ensure_bucket(s3, BUCKET)
    r = report(cfg, failures=2)
    where = drill_report.write_report(cfg, s3, r)
    prefix = "reports/dr-drill/dt=2026-11-28/060000Z/"
    assert where == {
        "json": f"s3://{BUCKET}/{prefix}report.json",
        "html": f"s3://{BUCKET}/{prefix}report.html",
        "manifest": f"s3://{BUCKET}/{prefix}manifest.json",
    }
    stored = json.loads(s3.get_object(Bucket=BUCKET, Key=prefix + "report.json")["Body"].read())
    assert stored == json.loads(json.dumps(r))
    page = s3.get_object(Bucket=BUCKET, Key=prefix + "report.html")
    assert page["ContentType"].startswith("text/html")
    assert "svc/&lt;b&gt;" in page["Body"].read().decode()  # escaped, never raw markup
    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key="reports/dr-drill/latest.json")["Body"].read())
    assert pointer["report_json"] == prefix + "report.json" and pointer["passed"] is False
    assert pointer["kind"] == "dr-drill"

    before = len(smtp_server.messages)
    r["location"] = where
    sent = drill_report.email_report(cfg, r)
    assert sent["email"]["recipients"] == ["dr@example.com"]
    raw = smtp_server.messages[before].as_bytes()
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"].startswith(
        "[registry-ops] DR drill FAILED: snapshot 20261127T020000Z into oci-local"
    )
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert "FAILED" in html and r["failures"][0]["digest"] in html
    assert r["failures"][1]["digest"] in text and where["html"] in text
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "dr-drill-20261127T020000Z.json"
    assert json.loads(attachment.get_content()) == json.loads(json.dumps(r))


def test_no_email_when_dr_email_is_off(smtp_server):
    before = len(smtp_server.messages)
    assert drill_report.email_report(config(email=False), report()) is None
    assert len(smtp_server.messages) == before
