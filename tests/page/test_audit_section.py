"""The Access audit section over audits the real ``audit.jobs.run`` wrote to moto S3: a fresh
AWS account on the session's moto (tests/audit's support account: one medium finding, a CI user
whose access key is made 120 days old), an audit ten days ago that became the baseline, a
repository's scan on push turned off, an audit yesterday (one new high finding), and an audit
this morning that was not reported (so not published). Checked against what the scenario
planted, never against the loader's own arithmetic."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from include.registry_ops.audit import history, jobs
from include.registry_ops.config import load_config
from include.registry_ops.page import audit
from include.registry_ops.page.context import Memo, PageContext
from include.registry_ops.store import objects
from tests.audit import test_audit_history_support as support
from tests.audit.conftest import new_account


@pytest.fixture(scope="module")
def env(moto_server, smtp_server, s3, tmp_path_factory):
    acct = new_account(moto_server.endpoint)
    secrets = support.build(acct)
    support.age_key(acct, "ci", 120)  # stale (> 90 days) and unused (never used in 90 days)
    now = datetime.now(UTC).replace(microsecond=0)
    config = load_config(
        support.write_config(acct, tmp_path_factory.mktemp("page-audit"), security=["sec@x.io"])
    )
    first = jobs.run(config, now=now - timedelta(days=10), notify=True)
    assert first["published"]["latest"], first
    support.scan_off(acct, "prod/api")  # a new high finding
    second = jobs.run(config, now=now - timedelta(days=1), notify=True)
    assert second["published"]["latest"] and not second["gate"]["passed"], second
    third = jobs.run(config, now=now - timedelta(hours=2), notify=False)  # not reported: no baseline
    assert not third["published"]["latest"]
    return {"config": config, "s3": s3, "now": now, "secrets": secrets, "acct": acct, "second": second}


def ctx_of(env, config=None, memo=None) -> PageContext:
    return PageContext(config or env["config"], env["s3"], env["now"], memo or Memo())


def figures(section) -> dict:
    return {f.label: f for f in section.figures}


def test_never_run_names_the_audit_dag(env):
    storage = env["config"].storage
    prefixes = storage.prefixes.model_copy(update={"reports": "nothing-here/"})
    other = env["config"].model_copy(update={"storage": storage.model_copy(update={"prefixes": prefixes})})
    section = audit.load(ctx_of(env, other))
    assert section.status == "never_run" and "registry_iam_audit has not run yet" in section.message


def test_open_findings_by_severity_and_new_since_last_week(env):
    section = audit.load(ctx_of(env))
    assert section.status == "ok", section.message
    f = figures(section)
    now, acct = env["now"], env["acct"]
    ci = acct.arn("user", "ci")
    # what the scenario planted: prod/web's mutable tags, CI's old unused key (two findings),
    # and prod/api's scan on push turned off between the two published audits
    want = {
        ("medium", "mutable-tags", None, "prod/web", now - timedelta(days=10)),
        ("medium", "stale-access-key", ci, None, now - timedelta(days=10)),
        ("medium", "unused-access-key", ci, None, now - timedelta(days=10)),
        ("high", "scan-on-push-off", None, "prod/api", now - timedelta(days=1)),
    }
    (table,) = [t for t in section.tables if t.id == "findings"]
    got = {(r["severity"], r["id"], r["principal"], r["repository"], r["first_seen"]) for r in table.rows}
    assert got == want
    assert [r["severity"] for r in table.rows] == ["high", "medium", "medium", "medium"]  # most severe first
    assert {r["registry"] for r in table.rows} == {"ecr-audit"}
    assert [r["id"] for r in table.rows if r["since"] == "new"] == ["scan-on-push-off"]
    assert (f["Critical"].value, f["High"].value, f["Medium"].value, f["Low"].value) == (0, 1, 3, 0)
    assert f["High"].alert and not f["Medium"].alert and not f["Critical"].alert
    assert f["Open findings"].value == 4
    assert (f["New since last week"].value, f["New since last week"].alert) == (1, True)
    assert (f["Gate"].value, f["Gate"].alert) == ("failed", True)
    assert f["Last audit"].value == now - timedelta(days=1)  # the published one, not this morning's
    assert f["Registries audited"].value == ["ecr-audit"]


def test_a_finding_first_seen_eight_days_ago_is_not_new_this_week(env):
    later = PageContext(env["config"], env["s3"], env["now"] + timedelta(days=7, hours=1), Memo())
    section = audit.load(later)
    assert figures(section)["New since last week"].value == 0
    assert figures(section)["Open findings"].value == 4


def test_the_unpublished_newer_audit_is_named(env):
    section = audit.load(ctx_of(env))
    (note,) = [n for n in section.notes if n.startswith("A newer audit")]
    assert "its report was not emailed" in note
    when = env["now"] - timedelta(hours=2)
    assert f"{when:%Y-%m-%d %H:%M} UTC" in note


def test_access_keys_by_id_and_age_never_a_secret(env):
    section = audit.load(ctx_of(env))
    (keys,) = [t for t in section.tables if t.id == "access_keys"]
    key_id = env["secrets"]["ci_key_id"]
    # the audit ran 1 day ago; the key was made 120 days before the test, never used
    assert sorted((r["id"], r["subject"], r["days"]) for r in keys.rows) == [
        ("stale-access-key", key_id, 119),
        ("unused-access-key", key_id, 119),
    ]
    text = json.dumps(section.to_json())
    assert key_id in text
    for name in ("ci_secret", "audit_secret", "audit_token"):
        assert env["secrets"][name] not in text


def test_a_warm_load_reads_the_pointer_and_lists_newer_runs_only(env):
    ctx = ctx_of(env)
    cold = audit.load(ctx)
    sent: list[str] = []

    def count(request, **_):
        sent.append(request.method)

    env["s3"].meta.events.register("before-send.s3", count, unique_id="page-audit-count")
    try:
        warm = audit.load(ctx)
    finally:
        env["s3"].meta.events.unregister("before-send.s3", unique_id="page-audit-count")
    assert warm.to_json() == cold.to_json()
    assert sent == ["GET", "GET"]  # latest.json, then the listing after its run


def test_a_corrupt_findings_table_is_named_and_the_counts_still_show(env):
    s3, bucket = env["s3"], env["config"].storage.bucket
    key = env["second"]["keys"]["findings"]
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=b"PAR1 not parquet at all")
    try:
        section = audit.load(ctx_of(env))
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=original)
    assert section.status == "error"
    assert f"{objects.url(bucket, key)} is not a Parquet table" in section.message
    assert figures(section)["High"].value == 1  # from latest.json's counts


def test_a_pointer_of_another_kind_is_named(env):
    s3, bucket = env["s3"], env["config"].storage.bucket
    key = history.layout(env["config"]).latest_key
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({"kind": "backup", "manifest": "x"}).encode())
    try:
        from include.registry_ops.page.model import guard

        section = guard(audit.ID, audit.TITLE, lambda: audit.load(ctx_of(env)))
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=original)
    assert section.status == "error"
    assert f"{objects.url(bucket, key)}: kind is 'backup', not 'iam-audit'" in section.message


def test_an_audit_that_ran_but_was_never_published_says_why(env, tmp_path):
    config = load_config(support.write_config(env["acct"], tmp_path))  # a reports prefix of its own
    jobs.run(config, now=env["now"] - timedelta(hours=1), notify=False)
    section = audit.load(ctx_of(env, config))
    assert section.status == "error"
    assert section.message.startswith("registry_iam_audit ran but no audit was published yet")
    assert "its report was not emailed" in section.message
    jobs.run(config, now=env["now"] - timedelta(minutes=30), notify=True)  # published, the newest
    section = audit.load(ctx_of(env, config))
    assert section.status == "ok" and section.message is None
    assert not [n for n in section.notes if n.startswith("A newer audit")]


def test_a_new_published_audit_is_seen_through_a_warm_memo(env, tmp_path):
    config, memo = load_config(support.write_config(env["acct"], tmp_path)), Memo()
    jobs.run(config, now=env["now"] - timedelta(hours=3), notify=True)
    before = figures(audit.load(ctx_of(env, config, memo=memo)))
    support.scan_off(env["acct"], "prod/web")  # one more high finding
    jobs.run(config, now=env["now"] - timedelta(hours=2), notify=True)
    after = figures(audit.load(ctx_of(env, config, memo=memo)))
    assert (before["High"].value + 1, before["Open findings"].value + 1) == (
        after["High"].value,
        after["Open findings"].value,
    )
    assert after["Last audit"].value == env["now"] - timedelta(hours=2)
