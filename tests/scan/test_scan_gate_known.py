"""The gate with memory: what was reported before and what ops acknowledged decide what fails and
what is emailed. Findings are the real Trivy reports of ``test_scan_gate``; state and
acknowledgements go through moto's S3 where they are stored."""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime, timedelta

import pytest

from include.registry_ops import storage
from include.registry_ops.clients import s3_client
from include.registry_ops.config import ConfigError
from include.registry_ops.scan import acks, gate, gate_state, jobs, notify, store
from tests.scan.test_scan_gate import TODAY, evaluate

NOW = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
RELEASE = ("oci", "team/app-release", f"sha256:{0:064x}")  # protected, CVE-2019-14697 critical
HIGH = ("oci", "team/app-high", f"sha256:{3:064x}")  # protected with max_high=0
POLICY = {"max_high": 0}  # two protected violations: the release (critical) and app-high (high)


def key(place: tuple[str, str, str]) -> str:
    return acks.key_of(*place)


def ack_for(place, ids, until=TODAY, reason="base image bump scheduled"):
    r, p, d = place
    return acks.build(
        registry=r, repository=p, digest=d, cve_ids=ids, reason=reason, until=until, by="ops", now=NOW
    )


def run(previous=None, found_acks=None, today=TODAY, **policy):
    """One gate evaluation classified against a previous state and acknowledgements."""
    result = evaluate(**{**POLICY, **policy})
    now = datetime.combine(today, NOW.timetz())
    return gate_state.classify(result, previous or {}, found_acks or {}, today, now)


def by_repo(result) -> dict[str, dict]:
    return {v["repository"]: v for v in result["violations"]}


def ids_of(result, place) -> list[str]:
    v = by_repo(result)[place[1]]
    return v["critical_ids"] + v["high_ids"]


def test_first_report_fails_and_emails_every_protected_violation():
    result = run()
    assert (result["new"], result["unacknowledged"], result["acknowledged"]) == (2, 0, 0)
    assert not result["passed"] and result["notify"]
    v = by_repo(result)
    assert v["team/app-release"]["news"] == ["new violation"]
    assert v["team/app-branch"]["status"] == "unprotected" and v["team/app-branch"]["news"] == []
    assert v["team/app-release"]["first_reported_at"] == NOW.isoformat()


def test_a_reported_violation_still_fails_but_is_not_emailed_again():
    first = run()
    state = gate_state.next_state(first, NOW)["violations"]
    later = TODAY + timedelta(days=3)
    again = run(previous=state, today=later)
    assert (again["new"], again["unacknowledged"]) == (0, 2)
    assert not again["passed"] and not again["notify"]  # fails every run, emails once
    assert by_repo(again)["team/app-release"]["first_reported_at"] == NOW.isoformat()
    nxt = gate_state.next_state(again, datetime.combine(later, NOW.timetz()))["violations"][key(RELEASE)]
    assert nxt["first_reported_at"] == NOW.isoformat() and nxt["last_seen"].startswith(later.isoformat())
    assert nxt["cve_ids"] == ["CVE-2019-14697"] and nxt["status"] == "unacknowledged"


def test_acknowledged_violations_pass_and_are_still_reported():
    state = gate_state.next_state(run(), NOW)["violations"]
    first = run()
    found = {key(p): ack_for(p, ids_of(first, p)) for p in (RELEASE, HIGH)}
    result = run(previous=state, found_acks=found)
    assert result["passed"] and not result["notify"]
    assert (result["new"], result["unacknowledged"], result["acknowledged"]) == (0, 0, 2)
    release = by_repo(result)["team/app-release"]
    assert release["status"] == "acknowledged" and release["ack"]["by"] == "ops"
    assert release["critical_ids"] == ["CVE-2019-14697"]  # the report still names it
    # half acknowledged: the other one still fails, without news
    result = run(previous=state, found_acks={key(RELEASE): found[key(RELEASE)]})
    assert not result["passed"] and not result["notify"] and result["unacknowledged"] == 1


def test_an_acknowledgement_applies_through_its_until_date_then_ends_as_news():
    state = gate_state.next_state(run(), NOW)["violations"]
    ids = ids_of(run(), RELEASE)
    found = {key(RELEASE): ack_for(RELEASE, ids, until=TODAY)}
    on_the_day = run(previous=state, found_acks=found, max_high=3)  # app-high no longer violates
    assert on_the_day["passed"] and on_the_day["acknowledged"] == 1
    acked_state = gate_state.next_state(on_the_day, NOW)["violations"]
    day_after = run(previous=acked_state, found_acks=found, today=TODAY + timedelta(days=1), max_high=3)
    release = by_repo(day_after)["team/app-release"]
    assert release["status"] == "unacknowledged" and not day_after["passed"]
    assert release["news"] == [f"acknowledgement ended (until {TODAY.isoformat()})"] and day_after["notify"]
    removed = run(previous=acked_state, found_acks={}, max_high=3)
    assert by_repo(removed)["team/app-release"]["news"] == ["acknowledgement ended (removed)"]


def test_a_new_cve_on_an_acknowledged_image_is_news():
    first = run()
    ids = ids_of(first, HIGH)
    assert len(ids) == 1
    state = gate_state.next_state(first, NOW)["violations"]
    state[key(HIGH)]["cve_ids"] = []  # as if the image had been reported without it
    result = run(previous=state)
    high = by_repo(result)["team/app-high"]
    assert high["status"] == "new" and high["news"] == [f"new CVE ids: {ids[0]}"] and high["new_ids"] == ids
    # an acknowledgement given before that CVE does not cover it
    release_ids = ids_of(first, RELEASE)
    found = {key(RELEASE): ack_for(RELEASE, release_ids[:-1] or ["CVE-0000-0001"])}
    result = run(previous=gate_state.next_state(first, NOW)["violations"], found_acks=found)
    assert by_repo(result)["team/app-release"]["status"] == "unacknowledged" and not result["passed"]


def test_an_acknowledgement_needs_no_previous_report_to_cover():
    """Reported, acknowledged, fixed, back with the same CVEs while the ack runs: still covered."""
    found = {key(RELEASE): ack_for(RELEASE, ids_of(run(), RELEASE))}
    result = run(found_acks=found, max_high=3)
    assert result["passed"] and by_repo(result)["team/app-release"]["status"] == "acknowledged"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"until": TODAY - timedelta(days=1)}, "is in the past"),
        ({"until": TODAY + timedelta(days=acks.MAX_DAYS + 1)}, "more than 90 days ahead"),
        ({"digest": "sha256:abc"}, "--digest: 'sha256:abc' is not sha256:"),
        ({"reason": "  "}, "--reason"),
        ({"cve_ids": []}, "no CVE ids"),
    ],
)
def test_acknowledgements_are_narrow(kwargs, message):
    args = {
        "registry": "oci",
        "repository": "team/app-release",
        "digest": RELEASE[2],
        "cve_ids": ["CVE-1"],
        "reason": "fix in review",
        "until": TODAY,
        "by": "ops",
        "now": NOW,
    }
    with pytest.raises(ValueError, match=message):
        acks.build(**{**args, **kwargs})
    assert acks.build(**{**args, "until": TODAY + timedelta(days=acks.MAX_DAYS)})["until"]


def test_log_table_and_summary_name_images_and_cve_ids():
    result = run()
    text = gate.table(result)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["status", "image", "newest"]
    assert lines[1].startswith("new") and "oci/team/app-release" in lines[1] and "1.0.0" in lines[1]
    assert "CVE-2019-14697" in lines[1] and f"sha256:{0:012x}" in lines[1]
    assert any(ln.startswith("unprotected") and "team/app-branch" in ln for ln in lines)
    assert gate.table(result, limit=1).splitlines()[-1] == "... and 2 more violation(s) in gate.json"
    line = gate.summary(result)
    assert "\n" not in line and line.startswith("gate failed: 2 protected image(s)")
    assert "2 new, 0 unacknowledged, 0 acknowledged" in line
    assert "oci/team/app-release:1.0.0 CVE-2019-14697" in line


def test_email_carries_the_news_in_full_and_known_ones_in_short():
    state = gate_state.next_state(run(), NOW)["violations"]
    del state[key(HIGH)]  # app-high is new this time, the release is known
    result = run(previous=state, found_acks={key(RELEASE): ack_for(RELEASE, ["CVE-2019-14697"])})
    assert result["notify"] and (result["new"], result["acknowledged"]) == (1, 1)
    body = notify.html_body(result, "Run x.")
    news, known = body.split("Known violations")
    assert "team/app-high" in news and "team/app-release" not in news
    assert f"<td>{HIGH[2]}</td>" in news  # the full digest, as `scan ack --digest` takes it
    assert "team/app-release:1.0.0" in known and "acknowledged by ops until 2026-11-27" in known
    assert notify.subject(result).startswith("[registry-ops] scan gate failed: 1 protected image(s) newly")
    assert "team/app-high" in notify.slack_text(result) and "team/app-release" not in notify.slack_text(
        result
    )


# --- stored in S3: acknowledgements through jobs, state saved only after the email ---


def _report(config, result, now=NOW):
    """Put a classified result where the gate would (the state as a run reports it)."""
    result["key"] = f"{store.base(config)}runs/test/gate.json"
    result["run_at"] = now.isoformat()
    return result


def test_acknowledge_only_what_was_reported_and_list_and_remove(scan_config, smtp_server):
    _, config = scan_config(max_high=0)
    s3 = s3_client(config)
    storage.ensure_bucket(s3, config.storage.bucket)
    registry = "oci-local"
    place = (registry, "team/app-release", RELEASE[2])
    with pytest.raises(
        ValueError, match=r"oci-local/team/app-release@sha256:0+ is not a protected violation"
    ):
        jobs.acknowledge(config, *place, "fix planned", TODAY, "ops", now=NOW)
    with pytest.raises(ConfigError, match="unknown registry 'nope'"):
        jobs.acknowledge(config, "nope", *place[1:], "fix planned", TODAY, "ops", now=NOW)

    state = {
        "violations": {
            key(place): {
                **dict(zip(("registry", "repository", "digest"), place, strict=True)),
                "cve_ids": ["CVE-B", "CVE-A"],
            }
        }
    }
    storage.put_json(s3, config.storage.bucket, store.gate_state_key(config), state)
    out = jobs.acknowledge(config, *place, "fix planned", TODAY + timedelta(days=5), "ops", now=NOW)
    assert out["cve_ids"] == ["CVE-A", "CVE-B"] and out["key"] == store.ack_key(config, *place)
    stored = storage.get_json(s3, config.storage.bucket, out["key"])
    assert stored["reason"] == "fix planned" and stored["by"] == "ops" and stored["until"] == "2026-12-02"

    assert [a["digest"] for a in jobs.list_acks(config, today=TODAY)] == [RELEASE[2]]
    later = TODAY + timedelta(days=6)
    assert jobs.list_acks(config, today=later) == []
    [expired] = jobs.list_acks(config, include_expired=True, today=later)
    assert expired["active"] is False
    assert jobs.unacknowledge(config, *place) == {"removed": out["key"]}
    with pytest.raises(ValueError, match="has no acknowledgement"):
        jobs.unacknowledge(config, *place)


def test_unreadable_state_or_acknowledgement_hides_nothing(scan_config, caplog):
    _, config = scan_config()
    s3 = s3_client(config)
    bucket = config.storage.bucket
    storage.ensure_bucket(s3, bucket)
    s3.put_object(Bucket=bucket, Key=store.gate_state_key(config), Body=b"{not json")
    bad_ack = store.ack_key(config, *RELEASE)
    s3.put_object(Bucket=bucket, Key=bad_ack, Body=json.dumps({"registry": "oci"}).encode())
    with caplog.at_level(logging.ERROR, logger="include.registry_ops"):
        assert gate_state.load(s3, config) == {}
        assert acks.load(s3, config) == {}
    assert store.gate_state_key(config) in caplog.text and bad_ack in caplog.text
    result = gate_state.classify(evaluate(**POLICY), {}, {}, TODAY, NOW)
    assert result["new"] == 2 and not result["passed"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_state_is_saved_only_after_the_email_went_out(scan_config, smtp_server, monkeypatch):
    _, config = scan_config()
    s3 = s3_client(config)
    storage.ensure_bucket(s3, config.storage.bucket)
    result = _report(config, run())
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": _closed_port(),
                "extra": {"disable_tls": True, "disable_ssl": True},
            }
        ),
    )
    with pytest.raises(OSError):
        jobs.report_gate(config, result, "Run x.")
    assert store.get_json_or_none(s3, config.storage.bucket, store.gate_state_key(config)) is None
    monkeypatch.undo()
    _, config = scan_config()  # the SMTP sink again, same S3 prefixes
    before = len(smtp_server.messages)
    sent = jobs.report_gate(config, result, "Run x.")
    assert sent["email"] == ["secops@example.com"] and len(smtp_server.messages) == before + 1
    saved = gate_state.load(s3, config)
    assert set(saved) == {key(RELEASE), key(HIGH)}
    # nothing new next time: no email, the state moves on
    again = _report(config, run(previous=saved, today=TODAY + timedelta(days=1)))
    assert jobs.report_gate(config, again) is None and len(smtp_server.messages) == before + 1
