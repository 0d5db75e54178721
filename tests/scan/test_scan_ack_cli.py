"""`registry-ops scan ack | acks | unack` as ops run them, between real `scan run --notify` runs
(moto's S3, the SMTP sink, the trivy stand-in). The commands call ``cli.main`` in process (a
subprocess pays a Python and Airflow start-up, seconds, per command); ``scan run`` as a real
process, its exit code and JSON on stdout, is test_scan_cli.py's test_scan_run_outside_airflow."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta

from tests import cli_in_process


def _violations(out_gate_key: str, config) -> list[dict]:
    from include.registry_ops import storage
    from include.registry_ops.clients import s3_client

    gate = storage.get_json(s3_client(config), config.storage.bucket, out_gate_key)
    return [v for v in gate["violations"] if v["protected"]]


def test_ack_cycle_between_runs(scan_fleet, scan_config, trivy_env, smtp_server, capfd):
    path, config = scan_config()
    cfg = ["--config", str(path)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli_in_process.run(capfd, list(args))

    before = len(smtp_server.messages)
    proc = run("scan", "run", *cfg, "--live", "--notify")
    assert proc.returncode == 1, proc.stderr
    first = json.loads(proc.stdout)["gate"]
    assert first["new"] == 3, proc.stdout + proc.stderr[-4000:]
    assert (first["new"], first["unacknowledged"], first["acknowledged"]) == (3, 0, 0)
    assert len(smtp_server.messages) == before + 1
    protected = _violations(first["report"], config)
    v = next(x for x in protected if x["repository"] == "scan/oci-app")
    image = ["--registry", v["registry"], "--repository", v["repository"], "--digest", v["digest"]]
    today = datetime.now(UTC).date()
    until = (today + timedelta(days=14)).isoformat()

    # refused: each names what is wrong, exit 2 (dates and reasons: test_scan_gate_known.py)
    for args, message in (
        (["--digest", "sha256:abc"], "--digest: 'sha256:abc' is not sha256:"),
        (["--registry", "nope"], "unknown registry 'nope'"),
        (["--repository", "scan/other"], "oci-local/scan/other@sha256:"),  # never reported
        (["--until", "soon"], "'soon' is not a date (YYYY-MM-DD)"),
    ):
        proc = run("scan", "ack", *cfg, *image, "--reason", "base image bump", "--until", until, *args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    assert json.loads(run("scan", "acks", *cfg, "--all").stdout) == []

    proc = run(
        "scan", "ack", *cfg, *image, "--reason", "base image bump in review", "--until", until, "--by", "kim"
    )
    assert proc.returncode == 0, proc.stderr
    acked = json.loads(proc.stdout)
    assert acked["cve_ids"] == v["critical_ids"] + v["high_ids"] and acked["by"] == "kim"
    [listed] = json.loads(run("scan", "acks", *cfg).stdout)
    assert listed["digest"] == v["digest"] and listed["active"] is True and listed["until"] == until

    # the next run: the acknowledged one passes, the two others still fail, nobody is emailed again
    proc = run("scan", "run", *cfg, "--live", "--notify")
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["gate"]["new"], out["gate"]["unacknowledged"], out["gate"]["acknowledged"]) == (0, 2, 1)
    assert out["notified"] is None and len(smtp_server.messages) == before + 1

    for other in protected:
        if other is v:
            continue
        ids = [
            "--registry",
            other["registry"],
            "--repository",
            other["repository"],
            "--digest",
            other["digest"],
        ]
        assert (
            run("scan", "ack", *cfg, *ids, "--reason", "tracked in SEC-12", "--until", until).returncode == 0
        )
    proc = run("scan", "run", *cfg, "--live", "--notify")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["gate"]["acknowledged"] == 3

    # removing one makes it fail again, and that is news: one more email
    assert run("scan", "unack", *cfg, *image).returncode == 0
    assert run("scan", "unack", *cfg, *image).returncode == 2
    proc = run("scan", "run", *cfg, "--live", "--notify")
    assert proc.returncode == 1 and json.loads(proc.stdout)["gate"]["unacknowledged"] == 1
    assert len(smtp_server.messages) == before + 2
    html = next(p for p in smtp_server.messages[-1].walk() if p.get_content_type() == "text/html")
    assert "acknowledgement ended (removed)" in html.get_payload(decode=True).decode()
