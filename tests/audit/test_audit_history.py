"""The audit's history on moto: two audits with a change in between (a grant added, a policy
removed, a finding fixed) and the diff naming exactly those; the Parquet tables read back with
the documented schema; the email in the SMTP sink (security recipients, new findings first, the
matrix attached as CSV)."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import timedelta

import pyarrow as pa
import pytest

from devstack.services import free_port
from include.registry_ops.audit import history, jobs
from include.registry_ops.config import load_config
from include.registry_ops.store import objects
from include.registry_ops.store.clients import s3_client

from . import test_audit_history_support as support

PARTNER_ROOT = f"arn:aws:iam::{support.PARTNER}:root"
CAPS = ("pull", "push", "delete", "admin")


def _table(config, key: str) -> pa.Table:
    return objects.get_table(s3_client(config), config.storage.bucket, key)


def _matrix(rows) -> set[tuple]:
    return {(r["principal"].rsplit(":", 1)[-1], r["repository"], *(r[c] for c in CAPS)) for r in rows}


def _mine(smtp_server, before: int, to: str):
    msgs = [m for m in smtp_server.messages[before:] if m["To"] == to]
    assert len(msgs) == 1, [m["To"] for m in smtp_server.messages[before:]]
    return msgs[0]


def test_two_audits_the_diff_names_exactly_the_changes(aws_account, tmp_path, smtp_server):
    acct = aws_account
    support.build(acct)
    config = load_config(support.write_config(acct, tmp_path, security=["secops@example.com"]))
    s3, bucket = s3_client(config), config.storage.bucket
    before = len(smtp_server.messages)

    first = jobs.run(config, notify=True)
    assert first["complete"] and first["gate"]["passed"] and first["published"]["latest"]
    assert first["baseline"] is None
    (mutable,) = _table(config, first["keys"]["findings"]).to_pylist()
    assert (mutable["id"], mutable["repository"], mutable["change"]) == ("mutable-tags", "prod/web", "new")
    pointer, _ = history.layout(config).latest(s3)
    assert (
        pointer["manifest"] == first["published"]["manifest"]
        and pointer["findings"] == first["keys"]["findings"]
    )
    _mine(smtp_server, before, "secops@example.com")  # security_recipients, not recipients

    support.grant_reader_web(acct)
    support.remove_partner_policy(acct)
    support.fix_mutable_tags(acct)
    before = len(smtp_server.messages)
    second = jobs.run(config, notify=True)

    changes = objects.get_json(s3, bucket, second["keys"]["changes"])
    assert changes["baseline"]["manifest"] == first["published"]["manifest"]
    assert changes["compared"] == ["ecr-audit"] and changes["not_compared"] == []
    reader = acct.arn("role", "reader")
    assert changes["grants"] == {
        "gained": [
            {
                "registry": "ecr-audit",
                "principal": reader,
                "principal_type": "role",
                "repository": "prod/web",
                "capability": "pull",
                "state": "allow",
            }
        ],
        "lost": [
            {
                "registry": "ecr-audit",
                "principal": PARTNER_ROOT,
                "principal_type": "external",
                "repository": "prod/api",
                "capability": "pull",
                "state": "allow",
            }
        ],
        "changed": [],
    }
    assert changes["findings"]["new"] == [] and changes["findings"]["escalated"] == []
    (resolved,) = changes["findings"]["resolved"]
    assert (resolved["key"], resolved["id"], resolved["repository"]) == (
        mutable["key"],
        "mutable-tags",
        "prod/web",
    )
    assert second["counts"] | {"by_severity": None} == {
        "access_rows": 6,
        "findings": 0,
        "by_severity": None,
        "grants_gained": 1,
        "grants_lost": 1,
        "grants_changed": 0,
        "findings_new": 0,
        "findings_escalated": 0,
        "findings_resolved": 1,
    }

    # the tables, read back: the documented schema, the matrix as the account grants it
    access = _table(config, second["keys"]["access"])
    findings = _table(config, second["keys"]["findings"])
    assert access.schema.equals(history.ACCESS_SCHEMA, check_metadata=False), access.schema
    assert findings.schema.equals(history.FINDINGS_SCHEMA, check_metadata=False), findings.schema
    assert findings.num_rows == 0
    assert _matrix(access.to_pylist()) == {
        ("role/deployer", "prod/api", "allow", "allow", None, None),
        ("role/deployer", "prod/web", "allow", "allow", None, None),
        ("role/reader", "prod/api", "allow", None, None, None),
        ("role/reader", "prod/web", "allow", None, None, None),
        ("user/ci", "prod/api", "allow", "allow", None, None),
        ("user/ci", "prod/web", "allow", "allow", None, None),
    }
    assert {r["account"] for r in access.to_pylist()} == {acct.id}

    # the email: the change summary, the matrix attached as CSV (the same rows)
    msg = _mine(smtp_server, before, "secops@example.com")
    assert "0 new finding(s), 1 resolved; grants +1/-1" in msg["Subject"]
    got = support.parts(msg)
    html = got["html"]
    gained, lost = html.index("Grants gained"), html.index("Grants lost")
    resolved_at = html.index("Findings resolved")
    assert gained < html.index("role/reader", gained) < html.index("prod/web", gained) < lost
    assert lost < html.index(PARTNER_ROOT, lost) < resolved_at
    assert "mutable-tags" in html[resolved_at:]
    assert f"+ ecr-audit {reader} prod/web pull (allow)" in got["text"]
    assert f"- ecr-audit {PARTNER_ROOT} prod/api pull (allow)" in got["text"]
    (name,) = got["attachments"]
    assert name == f"access-matrix-{second['run_at'][:10]}.csv"
    rows = list(csv.DictReader(io.StringIO(got["attachments"][name].decode())))
    assert _matrix([{k: (v or None) for k, v in r.items()} for r in rows]) == _matrix(access.to_pylist())


def test_new_findings_come_first_in_the_email(aws_account, tmp_path, smtp_server):
    """Without security_recipients the report goes to recipients; the new findings come before
    the change summary, in the HTML and in the text."""
    acct = aws_account
    support.build(acct)
    config = load_config(support.write_config(acct, tmp_path, recipients=("ops-sec@example.com",)))
    jobs.run(config, notify=True)
    support.scan_off(acct)
    support.grant_reader_web(acct)
    before = len(smtp_server.messages)
    out = jobs.run(config, notify=True)
    assert not out["gate"]["passed"]
    [failing] = out["gate"]["failing"]
    assert (failing["id"], failing["repository"], failing["gate"]) == ("scan-on-push-off", "prod/api", "new")

    got = support.parts(_mine(smtp_server, before, "ops-sec@example.com"))
    for body, new_head, change_head in ((got["html"], "New findings (1)", "Change since"),
                                        (got["text"], "NEW FINDINGS (1)", "CHANGE since")):  # fmt: skip
        new_at, change_at = body.index(new_head), body.index(change_head)
        assert new_at < body.index("scan-on-push-off") < change_at
        assert failing["key"] in body[new_at:change_at]
        assert change_at < body.index("role/reader", change_at)


def test_an_unreadable_baseline_makes_every_finding_new(aws_account, tmp_path, smtp_server):
    """Nothing is hidden: the last audit's findings table gone, the run says so and counts every
    finding as new (and resolves nothing)."""
    acct = aws_account
    support.build(acct)
    config = load_config(support.write_config(acct, tmp_path))
    first = jobs.run(config, notify=True)
    s3_client(config).delete_object(Bucket=config.storage.bucket, Key=first["keys"]["findings"])
    support.fix_mutable_tags(acct)
    support.scan_off(acct)
    out = jobs.run(config, notify=True)
    changes = objects.get_json(s3_client(config), config.storage.bucket, out["keys"]["changes"])
    assert changes["baseline"] is None and first["keys"]["findings"] in changes["baseline_error"]
    assert [f["id"] for f in changes["findings"]["new"]] == ["scan-on-push-off"]
    assert changes["findings"]["resolved"] == [] and changes["grants"]["lost"] == []


def test_a_condition_added_is_a_changed_grant_and_a_registry_not_audited_resolves_nothing(
    aws_account, tmp_path, smtp_server, monkeypatch
):
    acct = aws_account
    support.build(acct)
    config = load_config(support.write_config(acct, tmp_path))
    s3, bucket = s3_client(config), config.storage.bucket
    first = jobs.run(config, notify=True)

    # deployer's push on prod/* now only from a VPC: changed, neither gained nor lost
    acct.client("iam").put_role_policy(
        RoleName="deployer",
        PolicyName="deployer",
        PolicyDocument=support.policy(
            {"Sid": "Pull", "Effect": "Allow", "Action": support.PULL, "Resource": acct.repo_arn("prod/*")},
            {
                "Sid": "PushFromVpc",
                "Effect": "Allow",
                "Action": support.PUSH,
                "Resource": acct.repo_arn("prod/*"),
                "Condition": {"StringEquals": {"aws:SourceVpc": "vpc-0123"}},
            },
            support.TOKEN,
        ),
    )
    second = jobs.run(config, notify=True)
    changes = objects.get_json(s3, bucket, second["keys"]["changes"])
    deployer = acct.arn("role", "deployer")
    assert changes["grants"]["gained"] == [] and changes["grants"]["lost"] == []
    assert [
        (c["principal"], c["repository"], c["capability"], c["from"], c["to"])
        for c in changes["grants"]["changed"]
    ] == [
        (deployer, "prod/api", "push", "allow", "conditional"),
        (deployer, "prod/web", "push", "allow", "conditional"),
    ]
    assert changes["baseline"]["manifest"] == first["published"]["manifest"]

    # the registry cannot be read now: none of its grants is lost, none of its findings resolved
    down = json.loads(os.environ[f"AIRFLOW_CONN_{acct.conn_id.upper()}"])
    down["extra"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    # one attempt (the connection's config_kwargs): botocore's 8 on a refused port add ~40 s
    down["extra"]["config_kwargs"] = {"retries": {"max_attempts": 1}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{acct.conn_id.upper()}", json.dumps(down))
    third = jobs.run(config, notify=True)
    assert not third["complete"] and third["registries_audited"] == []
    changes = objects.get_json(s3, bucket, third["keys"]["changes"])
    assert changes["compared"] == [] and changes["not_compared"] == ["ecr-audit"]
    assert changes["grants"] == {"gained": [], "lost": [], "changed": []}
    assert changes["findings"] == {"new": [], "escalated": [], "resolved": []}
    assert third["published"]["latest"] is False


def test_two_stale_keys_of_one_user_are_two_findings(aws_account, tmp_path, smtp_server):
    acct = aws_account
    secrets = support.build(acct)
    second_key = acct.client("iam").create_access_key(UserName="ci")["AccessKey"]["AccessKeyId"]
    for key, days in zip(acct.iam_backend().users["ci"].access_keys, (120, 100), strict=True):
        key.create_date = key.create_date - timedelta(days=days)  # keys are told apart by creation time
    config = load_config(support.write_config(acct, tmp_path))
    out = jobs.run(config)
    rows = _table(config, out["keys"]["findings"]).to_pylist()
    stale = sorted((f["subject"], f["key"]) for f in rows if f["id"] == "stale-access-key")
    assert [s for s, _ in stale] == sorted([secrets["ci_key_id"], second_key])
    assert len({k for _, k in stale}) == 2


def test_an_empty_security_list_is_refused_naming_the_key(tmp_path):
    """None (absent) means the normal recipients; an empty list would silently mean them too."""
    from include.registry_ops.config import ConfigError

    path = tmp_path / "registry-ops.yaml"
    path.write_text(
        "registries: [{name: ecr, kind: ecr, conn_id: aws_default}]\n"
        "storage: {bucket: registry-ops-test}\n"
        "notifications: {recipients: [ops@example.com], security_recipients: []}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "notifications.security_recipients" in str(exc.value) and str(path) in str(exc.value)
    path.write_text(
        path.read_text().replace("security_recipients: []", "security_recipients: [sec@example.com]")
    )
    assert load_config(path).notifications.security_recipients == ["sec@example.com"]


def test_two_audits_in_one_second_keep_both_runs(aws_account, tmp_path):
    """The CLI run twice within a second: the second audit gets its own folder; the first's
    published findings are not overwritten (they were, and its baseline then lied)."""
    from datetime import UTC, datetime

    acct = aws_account
    support.build(acct)
    config = load_config(support.write_config(acct, tmp_path))
    s3, bucket = s3_client(config), config.storage.bucket
    now = datetime(2026, 11, 28, 20, 0, 5, 250000, tzinfo=UTC)
    first = jobs.run(config, now=now)
    support.scan_off(acct)
    second = jobs.run(config, now=now + timedelta(milliseconds=500))
    assert first["run_prefix"].endswith("dt=2026-11-28/200005Z/")
    assert second["run_prefix"].endswith("dt=2026-11-28/200006Z/")
    assert [f["id"] for f in _table(config, first["keys"]["findings"]).to_pylist()] == ["mutable-tags"]
    assert objects.get_json(s3, bucket, first["published"]["manifest"])["run_at"] == now.isoformat()
    assert sorted(f["id"] for f in _table(config, second["keys"]["findings"]).to_pylist()) == [
        "mutable-tags",
        "scan-on-push-off",
    ]
