"""The retention summary email, from real runs: ``registry-ops retention apply --execute --notify``
as a user runs it (a subprocess) and the DAG's steps in process (``plan_run`` -> ``apply_item`` ->
``summarize_run``), on moto, the distribution registry and the SMTP sink, every email parsed as
the MIME that arrived. A dry run emails nothing; a failed send never fails the run."""

from __future__ import annotations

import contextlib
import csv
import email
import io
import json
import os
import socket
import subprocess
import sys
from email import policy
from pathlib import Path

import pytest
import yaml

from include.registry_ops import storage
from include.registry_ops.clients import build_registry
from include.registry_ops.config import load_config
from include.registry_ops.inventory import publish_snapshot, run_inventory
from include.registry_ops.inventory_files import write_inventory
from include.registry_ops.retention import jobs, report_mail
from tests.retention_exec.helpers import NOW, oci_registry, present, seed, small_fleet, unique

CLI = [sys.executable, "-m", "include.registry_ops.cli"]
BUCKET = "ret-notify"
RECIPIENTS = ["platform@example.com", "finops@example.com"]
KEEP_3 = {
    "rulePriority": 1,
    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 3},
    "action": {"type": "expire"},
}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )


class Case:
    """One seeded repository on the distribution registry, its config (with ``notifications:``),
    inventory file and an enabled keep-3 policy (the pattern of test_apply_hardening's Case)."""

    def __init__(self, work: Path, name: str, retention: dict, bucket: str = BUCKET) -> None:
        self.prefix = unique("ret-notify")
        self.fleet = small_fleet(self.prefix, repositories=1, images=14, seed=47)
        self.reg = oci_registry(os.environ["_REGISTRY_URL"])
        seed(self.reg, self.fleet)
        policy_doc = {
            "policies": [{"name": "keep-3", "enabled": True, "repositories": [self.prefix + "*"],
                          "protect_tags": [], "rules": [KEEP_3]}]
        }  # fmt: skip
        self.policy = work / f"{name}-policy.json"
        self.policy.write_text(json.dumps(policy_doc))
        conf = {
            "registries": [
                {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [self.prefix + "*"]}
            ],
            "storage": {"conn_id": "aws_default", "bucket": bucket},
            "notifications": {"recipients": RECIPIENTS, "sender": "retention@example.com"},
            "retention": {"in_use_discovery": [], "policy_file": self.policy.name, **retention},
        }
        self.config = work / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump(conf))
        self.listing = run_inventory(load_config(self.config), build_registry, NOW)
        assert not self.listing.errors
        self.inventory = work / f"{name}.parquet"
        write_inventory(self.listing.table, self.inventory)

    def apply(self, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
        proc = run(
            "retention", "apply", "--inventory", str(self.inventory), "--config", str(self.config),
            "--now", NOW.isoformat(), *extra, env=env,
        )  # fmt: skip
        assert proc.stdout, proc.stderr
        return proc.returncode, json.loads(proc.stdout), proc.stderr

    def gone(self) -> int:
        repo = self.fleet[0]
        return sum(not present(self.reg, repo.name, m.digest) for m in repo.manifests if m.tags)


@pytest.fixture(scope="module")
def work(moto_server, registry_server, smtp_server, s3, tmp_path_factory):
    os.environ["_REGISTRY_URL"] = registry_server.url
    for bucket in (BUCKET, BUCKET + "-dag"):
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
    return tmp_path_factory.mktemp("retention-notify")


def arrived(smtp_server, index: int) -> email.message.EmailMessage:
    """Message ``index`` as it arrived on the wire, parsed by the modern parser."""
    return email.message_from_bytes(
        (smtp_server.maildir / f"{index + 1:04d}.eml").read_bytes(), policy=policy.default
    )


def parts(msg: email.message.EmailMessage) -> tuple[str, str, email.message.EmailMessage]:
    """(text, html, csv attachment) of a summary email; asserts its MIME structure."""
    assert msg.get_content_type() == "multipart/mixed"
    alternative, attachment = msg.get_payload()
    assert alternative.get_content_type() == "multipart/alternative"
    text, html = alternative.get_payload()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert (
        attachment.get_content_type() == "text/csv" and attachment.get_content_disposition() == "attachment"
    )
    return text.get_content(), html.get_content(), attachment


def test_an_executed_apply_with_notify_emails_what_it_removed(work, smtp_server, s3):
    case = Case(work, "executed", {"max_fraction_per_repository": 1.0})
    before = len(smtp_server.messages)
    code, summary, stderr = case.apply("--execute", "--notify")
    assert code == 0, stderr
    assert summary["images_removed"] > 0 and summary["bytes_removed"] > 0 and case.gone() > 0
    assert len(smtp_server.messages) == before + 1
    msg = arrived(smtp_server, before)

    assert msg["Subject"] == report_mail.subject(summary)
    assert f"removed {summary['images_removed']} image(s)" in msg["Subject"]
    assert f"${summary['monthly_cost_saved_usd']:,.2f}/month" in msg["Subject"]
    assert [a.addr_spec for a in msg["To"].addresses] == RECIPIENTS
    assert msg["From"] == "retention@example.com"
    assert summary["notification"]["email"] == {
        "recipients": RECIPIENTS,
        "message_id": msg["Message-ID"],
        "refused": {},
    }

    text, html, attachment = parts(msg)
    location = report_mail.audit_location(load_config(case.config), summary)
    assert location in text and location in html
    assert f"s3://{BUCKET}/{summary['summary_key']}" in text
    assert storage.get_json(s3, BUCKET, summary["summary_key"])["run_id"] == summary["run_id"]
    assert f"({summary['bytes_removed']} bytes)" in text

    # the CSV: one row per repository, its totals those of the summary, its audit objects in S3
    assert attachment.get_filename() == f"retention-{summary['run_id']}.csv"
    rows = list(csv.DictReader(io.StringIO(attachment.get_payload(decode=True).decode())))
    assert [r["repository"] for r in rows] == [case.fleet[0].name]
    assert sum(int(r["deleted"]) + int(r["already_deleted"]) for r in rows) == summary["images_removed"]
    assert sum(int(r["bytes_deleted"]) for r in rows) == summary["bytes_removed"]
    for row in rows:
        assert f"s3://{BUCKET}/{row['audit_key']}".startswith(location)
        assert row["audit_key"] in html
        records = s3.get_object(Bucket=BUCKET, Key=row["audit_key"])["Body"].read().decode().splitlines()
        assert sum(json.loads(line)["result"] == "deleted" for line in records) == int(row["deleted"])


def test_a_dry_run_emails_nothing_even_with_stopped_repositories(work, smtp_server):
    # a cap stops the repository: worth telling after an executed run, never after a dry run
    case = Case(work, "dry", {"max_fraction_per_repository": 0.1})
    before = len(smtp_server.messages)
    code, summary, _ = case.apply("--notify")  # a dry run (the default)
    assert code == 0 and summary["dry_run"] and summary["repositories_stopped"]
    assert summary["would_remove_images"] == 0 and summary["notification"] is None
    assert len(smtp_server.messages) == before


def test_without_the_flag_an_executed_apply_emails_nothing(work, smtp_server):
    case = Case(work, "quiet", {"max_fraction_per_repository": 1.0})
    before = len(smtp_server.messages)
    code, summary, _ = case.apply("--execute")
    assert code == 0 and summary["images_removed"] > 0 and "notification" not in summary
    assert len(smtp_server.messages) == before


def test_stopped_repositories_are_emailed_with_their_messages(work, smtp_server):
    case = Case(work, "stopped", {"max_fraction_per_repository": 0.1})
    before = len(smtp_server.messages)
    code, summary, _ = case.apply("--execute", "--notify")
    assert code == 1 and summary["images_removed"] == 0  # stopped by the cap: nothing removed
    (stopped,) = summary["repositories_stopped"]
    assert len(smtp_server.messages) == before + 1
    msg = arrived(smtp_server, before)
    assert "1 stopped by caps" in msg["Subject"] and "removed 0 image(s)" in msg["Subject"]
    text, html, _ = parts(msg)
    message = next(m for m in summary["messages"] if m.startswith(stopped + ":"))
    detail = message.removeprefix(stopped + ":").strip()
    assert f"- stopped: {stopped}: {detail}" in text
    assert "<h3>Not completed</h3>" in html and f"<b>stopped</b> {stopped}" in html
    assert "retention.max_fraction_per_repository" in detail  # the cap that stopped it


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failed_send_is_reported_and_never_fails_the_run(work, smtp_server):
    case = Case(work, "unsent", {"max_fraction_per_repository": 1.0})
    broken = json.dumps(
        {"conn_type": "smtp", "host": "127.0.0.1", "port": _closed_port(),
         "extra": {"disable_tls": True, "disable_ssl": True}}
    )  # fmt: skip
    before = len(smtp_server.messages)
    code, summary, stderr = case.apply("--execute", "--notify", env={"AIRFLOW_CONN_SMTP_DEFAULT": broken})
    assert code == 0 and summary["images_removed"] > 0 and case.gone() > 0
    error = summary["notification"]["error"]
    assert "SMTP connection 'smtp_default'" in error and "ConnectionRefusedError" in error
    assert f"warning: {error}" in stderr
    assert len(smtp_server.messages) == before


def test_the_dag_steps_email_an_executed_run_and_not_a_dry_run(work, smtp_server, s3, monkeypatch):
    bucket = BUCKET + "-dag"
    case = Case(work, "dag", {"max_fraction_per_repository": 1.0}, bucket=bucket)
    config = load_config(case.config)
    publish_snapshot(s3, bucket, "inventory/", case.listing.table, [], NOW, ["oci-local"])

    def dag_run(run_id: str, dry_run: bool, apply: bool = True) -> dict:
        planned = jobs.plan_run(config, run_id, NOW, dry_run, [])
        for item in planned["items"] if apply else []:
            jobs.apply_item(config, run_id, NOW, dry_run, item)
        return jobs.summarize_run(config, planned)

    # an executing run whose apply task never finished: nothing removed, its repository failed
    before = len(smtp_server.messages)
    unfinished = dag_run("manual__unfinished", dry_run=False, apply=False)
    (failed,) = unfinished["repositories_failed"]
    assert unfinished["images_removed"] == 0 and len(smtp_server.messages) == before + 1
    msg = arrived(smtp_server, before)
    assert "1 repositories failed" in msg["Subject"]
    text, _, _ = parts(msg)
    assert f"- failed: {failed}: no result stored (its task never finished)" in text

    before = len(smtp_server.messages)
    dry = dag_run("manual__dry", dry_run=True)
    assert dry["would_remove_images"] > 0 and dry["notification"] is None
    assert len(smtp_server.messages) == before

    real = dag_run("manual__real", dry_run=False)
    assert real["images_removed"] > 0 and case.gone() > 0
    assert len(smtp_server.messages) == before + 1
    msg = arrived(smtp_server, before)
    assert msg["Subject"] == report_mail.subject(real) and "manual__real" in msg["Subject"]
    assert real["notification"]["email"]["message_id"] == msg["Message-ID"]
    text, _, attachment = parts(msg)
    assert f"s3://{bucket}/{real['summary_key']}" in text
    rows = list(csv.DictReader(io.StringIO(attachment.get_payload(decode=True).decode())))
    assert sum(int(r["bytes_deleted"]) for r in rows) == real["bytes_removed"]
