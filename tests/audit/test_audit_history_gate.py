"""The audit's gate and its acknowledgements through ``registry-ops audit run|ack|acks|unack``
(in process, against moto and the SMTP sink): a new high finding fails the run, an
acknowledged one does not, an expired acknowledgement covers nothing, a finding grown more
severe is not covered; ``latest.json`` moves only after the report went out and only when every
registry was audited; an error text's URL credentials never reach the email or S3."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from devstack.services import free_port
from include.registry_ops.audit import history
from include.registry_ops.cli import main
from include.registry_ops.config import load_config
from include.registry_ops.store import objects
from include.registry_ops.store.clients import s3_client
from tests.cli_in_process import run_json

from . import test_audit_history_support as support
from .conftest import policy

TODAY = datetime.now(UTC).date()


def _pointer(config) -> dict | None:
    return history.layout(config).read_pointer(s3_client(config))


def _findings(config, out) -> dict[str, dict]:
    rows = objects.get_table(s3_client(config), config.storage.bucket, out["keys"]["findings"]).to_pylist()
    return {f["id"]: f for f in rows}


def test_new_high_fails_acknowledged_passes_expired_fails_again(aws_account, tmp_path, smtp_server, capfd):
    acct = aws_account
    support.build(acct)
    path = support.write_config(acct, tmp_path, security=["secops@example.com"])
    config, cfg = load_config(path), ["--config", str(path)]

    code, out, err = run_json(capfd, ["audit", "run", *cfg, "--notify"])
    assert code == 0 and out["gate"]["passed"], err[-3000:]

    support.scan_off(acct)
    code, out, _ = run_json(capfd, ["audit", "run", *cfg, "--notify"])
    assert code == 1 and not out["gate"]["passed"]
    [failing] = out["gate"]["failing"]
    assert (failing["id"], failing["severity"], failing["repository"], failing["gate"]) == (
        "scan-on-push-off",
        "high",
        "prod/api",
        "new",
    )
    key, found_at = failing["key"], datetime.fromisoformat(out["run_at"])
    assert _findings(config, out)["mutable-tags"]["gate"] is None  # medium: below the gate

    # known and still unacknowledged: the gate keeps failing, naming it as such
    code, out, _ = run_json(capfd, ["audit", "run", *cfg, "--notify"])
    assert code == 1 and [(f["key"], f["gate"]) for f in out["gate"]["failing"]] == [(key, "unacknowledged")]

    ack_args = ["--finding", key, "--reason", "scanner migration this week", "--until", TODAY.isoformat()]
    code, acked, err = run_json(capfd, ["audit", "ack", *cfg, *ack_args, "--by", "kim"])
    assert code == 0, err
    assert (acked["finding"], acked["id"], acked["severity"], acked["by"]) == (
        key,
        "scan-on-push-off",
        "high",
        "kim",
    )
    code, listed, _ = run_json(capfd, ["audit", "acks", *cfg])
    assert [(a["finding"], a["active"]) for a in listed] == [(key, True)]

    before = len(smtp_server.messages)
    code, out, _ = run_json(capfd, ["audit", "run", *cfg, "--notify"])
    assert code == 0 and out["gate"]["passed"] and out["gate"]["acknowledged"] == 1
    row = _findings(config, out)["scan-on-push-off"]
    assert (row["change"], row["first_seen"]) == ("known", found_at)  # first seen two runs ago
    assert (row["gate"], row["ack_reason"], row["ack_until"], row["ack_by"]) == (
        "acknowledged",
        "scanner migration this week",
        TODAY.isoformat(),
        "kim",
    )
    html = support.parts(smtp_server.messages[before])["html"]
    assert "acknowledged by kim until" in html and "scanner migration this week" in html

    # the day after `until` the acknowledgement covers nothing: the run fails again
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    before = len(smtp_server.messages)
    code, out, _ = run_json(capfd, ["audit", "run", *cfg, "--notify", "--now", tomorrow])
    assert code == 1 and [(f["key"], f["gate"]) for f in out["gate"]["failing"]] == [(key, "unacknowledged")]
    text = support.parts(smtp_server.messages[before])["text"]
    assert f"unacknowledged (acknowledgement ended {TODAY.isoformat()})" in text

    code, listed, _ = run_json(capfd, ["audit", "acks", *cfg])
    assert code == 0 and [a["finding"] for a in listed] == [key]  # active today still
    code, out, err = run_json(capfd, ["audit", "unack", *cfg, "--finding", key])
    assert code == 0 and out["removed"].endswith(f"iam-audit/acks/{key}.json")
    code, listed, _ = run_json(capfd, ["audit", "acks", *cfg, "--all"])
    assert listed == []
    code, _, err = run_json(capfd, ["audit", "unack", *cfg, "--finding", key])
    assert code == 2 and f"--finding '{key}' has no acknowledgement" in err


def test_ack_refuses_bad_input_naming_it(aws_account, tmp_path, smtp_server, capfd):
    acct = aws_account
    support.build(acct)
    support.scan_off(acct)
    path = support.write_config(acct, tmp_path)
    cfg = ["--config", str(path)]
    ack_args = ["--finding", "0" * 16, "--reason", "why not", "--until", TODAY.isoformat()]
    code, _, err = run_json(capfd, ["audit", "ack", *cfg, *ack_args])
    assert code == 2 and "no audit published yet" in err
    code, out, _ = run_json(capfd, ["audit", "run", *cfg, "--notify"])
    assert code == 1
    high = out["gate"]["failing"][0]["key"]
    medium = _findings(load_config(path), out)["mutable-tags"]["key"]
    until = TODAY.isoformat()
    for finding, reason, day, message in (
        ("../../latest", "reason", until, "--finding '../../latest' is not a finding key"),
        ("0123456789abcdef", "reason", until, "is not a finding of the last audit"),
        (medium, "reason", until, "a medium mutable-tags finding never fails the gate"),
        (high, "no", until, "--reason: say why"),
        (high, "reason", (TODAY - timedelta(days=1)).isoformat(), "is in the past"),
        (high, "reason", (TODAY + timedelta(days=91)).isoformat(), "more than 90 days ahead"),
    ):
        ack_args = ["--finding", finding, "--reason", reason, "--until", day]
        code, _, err = run_json(capfd, ["audit", "ack", *cfg, *ack_args])
        assert code == 2 and message in err, (finding, err)
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "ack", *cfg, "--finding", high, "--reason", "reason", "--until", "soon"])
    assert exit_.value.code == 2 and "'soon' is not a date (YYYY-MM-DD)" in capfd.readouterr().err
    code, listed, _ = run_json(capfd, ["audit", "acks", *cfg, "--all"])
    assert listed == []


def test_an_acknowledgement_does_not_cover_the_finding_grown_more_severe(
    aws_account, tmp_path, smtp_server, capfd
):
    acct = aws_account
    support.build(acct)
    ecr = acct.client("ecr")
    public = {"Sid": "PublicPull", "Effect": "Allow", "Principal": "*", "Action": support.PULL}
    vpc = {"StringEquals": {"aws:SourceVpce": "vpce-0123"}}
    ecr.set_repository_policy(repositoryName="prod/web", policyText=policy({**public, "Condition": vpc}))
    path = support.write_config(acct, tmp_path)
    cfg = ["--config", str(path)]
    code, out, _ = run_json(capfd, ["audit", "run", *cfg, "--notify"])
    [failing] = out["gate"]["failing"]
    assert code == 1 and (failing["id"], failing["severity"]) == ("public-repository", "high")
    ack_args = ["--finding", failing["key"], "--reason", "VPC only", "--until", TODAY.isoformat()]
    code, _, err = run_json(capfd, ["audit", "ack", *cfg, *ack_args])
    assert code == 0, err
    code, out, _ = run_json(capfd, ["audit", "run", *cfg, "--notify"])
    assert code == 0 and out["gate"]["acknowledged"] == 1

    ecr.set_repository_policy(repositoryName="prod/web", policyText=policy(public))  # the condition dropped
    code, out, _ = run_json(capfd, ["audit", "run", *cfg, "--notify"])
    [failing2] = out["gate"]["failing"]
    assert code == 1 and (failing2["key"], failing2["severity"], failing2["gate"]) == (
        failing["key"],
        "critical",
        "new",
    )
    row = _findings(load_config(path), out)["public-repository"]
    assert (row["change"], row["previous_severity"]) == ("escalated", "high")


def test_latest_moves_only_after_the_report(aws_account, tmp_path, smtp_server, capfd, monkeypatch):
    """Without --notify, or when the email fails, the run is stored but is no baseline: the
    next run still reports its findings as new."""
    acct = aws_account
    support.build(acct)
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_FLAKY", smtp_server.conn_json())
    path = support.write_config(acct, tmp_path, smtp_conn_id="smtp_flaky")
    config, cfg = load_config(path), ["--config", str(path)]
    s3, bucket = s3_client(config), config.storage.bucket

    code, quiet, _ = run_json(capfd, ["audit", "run", *cfg])
    assert code == 0 and quiet["published"] == {"manifest": quiet["published"]["manifest"], "latest": False}
    assert _pointer(config) is None
    manifest = objects.get_json(s3, bucket, quiet["published"]["manifest"])
    assert manifest["reported"] is False and manifest["kind"] == "iam-audit"

    code, first, _ = run_json(capfd, ["audit", "run", *cfg, "--notify"])
    assert code == 0 and first["baseline"] is None  # the quiet run was no baseline
    assert _findings(config, first)["mutable-tags"]["change"] == "new"
    assert _pointer(config)["manifest"] == first["published"]["manifest"]

    support.scan_off(acct)
    closed = json.loads(smtp_server.conn_json())
    closed["port"] = free_port()
    closed["extra"].update(retry_limit=0, timeout=5)
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_FLAKY", json.dumps(closed))
    code, failed, _ = run_json(capfd, ["audit", "run", *cfg, "--notify"])
    assert code == 1 and "SMTP connection 'smtp_flaky'" in failed["email_error"]
    assert failed["published"]["latest"] is False
    assert _pointer(config)["manifest"] == first["published"]["manifest"]
    for key in failed["keys"].values():  # the run's objects are there, it is only no baseline
        assert objects.exists(s3, bucket, key)
    assert objects.get_json(s3, bucket, failed["published"]["manifest"])["reported"] is False

    monkeypatch.setenv("AIRFLOW_CONN_SMTP_FLAKY", smtp_server.conn_json())
    code, again, _ = run_json(capfd, ["audit", "run", *cfg, "--notify"])
    assert again["baseline"]["manifest"] == first["published"]["manifest"]
    assert [(f["id"], f["gate"]) for f in again["gate"]["failing"]] == [("scan-on-push-off", "new")]
    assert _pointer(config)["manifest"] == again["published"]["manifest"]


def test_a_registry_not_audited_keeps_latest_and_its_url_credentials_out(
    aws_account, tmp_path, smtp_server, capfd, monkeypatch
):
    """A registry whose connection's endpoint carries credentials, and cannot be reached: the
    others are audited and reported, the error is shown without the credentials (email, S3,
    output), latest does not move, exit 1."""
    acct = aws_account
    support.build(acct)
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzzSECRET"
    endpoint = f"http://AKIAEXAMPLEBROKEN:{secret}@127.0.0.1:{free_port()}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUDIT_BROKEN",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "AKIAEXAMPLEBROKEN",
                "password": "not-the-secret-under-test",
                "extra": {
                    "region_name": support.REGION,
                    "endpoint_url": endpoint,
                    "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
                },
            }
        ),
    )
    # one attempt (the connection's config_kwargs): botocore's 8 on a refused port add ~40 s
    broken = {"name": "ecr-broken", "kind": "ecr", "conn_id": "audit_broken", "region": support.REGION}
    path = support.write_config(acct, tmp_path, security=["secops@example.com"], extra_registries=(broken,))
    config, cfg = load_config(path), ["--config", str(path)]
    before = len(smtp_server.messages)
    code, out, err = run_json(capfd, ["audit", "run", *cfg, "--notify"])
    assert code == 1 and not out["complete"] and out["gate"]["passed"]
    assert secret not in err  # the log line naming the broken registry is redacted too
    [error] = out["errors"]
    assert error["registry"] == "ecr-broken" and "http://***@127.0.0.1:" in error["error"]
    assert out["registries_audited"] == ["ecr-audit"] and out["counts"]["access_rows"] == 6
    assert out["published"]["latest"] is False and _pointer(config) is None

    msg = smtp_server.messages[before]
    body = support.raw(msg)
    assert "ecr-broken" in support.parts(msg)["html"] and "http://***@127.0.0.1:" in body
    assert secret not in body and secret not in json.dumps(out)
    s3 = s3_client(config)
    for obj in objects.list_keys(s3, config.storage.bucket, history.root(config)):
        assert (
            secret.encode() not in s3.get_object(Bucket=config.storage.bucket, Key=obj["Key"])["Body"].read()
        )
