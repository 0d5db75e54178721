"""The Trivy command line and how credentials reach Trivy (scan/scanners/trivy.py).

Trivy cannot run here; the stand-in (tests/scan/scanfleet.py ``STAND_IN``) accepts only the exact
command line the scanner must run and exits 1 on anything else, as Trivy does on a bad flag. So a
changed ``--scanners``, ``--image-src`` or ``--format`` makes every Trivy scan in the scan tests
an error. These tests pin the command line once, literally, and prove the stand-in refuses each
kind of change (a stand-in that accepted anything would make those tests unable to fail).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from include.registry_ops.scan.parsers import parse_trivy
from include.registry_ops.scan.scanners.base import Target
from include.registry_ops.scan.scanners.factory import build_scanner
from include.registry_ops.scan.scanners.trivy import TrivyScanner
from include.registry_ops.scan.settings import TrivyConfig
from tests.conftest import OCI_PASSWORD, OCI_USER
from tests.scan.scanfleet import TRIVY, expect_trivy, invocations


def documented(reference: str, timeout: str = "600s") -> list[str]:
    """The command line for a plain-HTTP registry, standalone (no server), as docs say it."""
    return [
        "image",
        "--format",
        "json",
        "--scanners",
        "vuln",
        "--image-src",
        "remote",
        "--quiet",
        "--timeout",
        timeout,
        "--insecure",
        reference,
    ]


def test_the_scanner_runs_the_documented_command_line(
    scan_fleet, scan_config, trivy_bin, trivy_env, monkeypatch
):
    """``oci-local`` (plain HTTP, login ops) with ``scan.trivy.timeout_seconds: 120``: one run of
    ``trivy image`` by digest; the report replayed is parsed into the scan's findings."""
    _, config = scan_config(trivy={"binary": str(trivy_bin), "timeout_seconds": 120})
    expect_trivy(monkeypatch, timeout="120s")
    scanner = build_scanner(config, "oci-local")
    c = scan_fleet.by_name["c"]
    (result,) = scanner.scan([Target(c.digest, "oci-local", "scan/oci-app")])
    assert result.status == "ok", result.error
    report = json.loads((TRIVY / "ubuntu-1804.json.golden").read_text())
    assert result.findings == parse_trivy(report) and result.findings
    (call,) = invocations(trivy_env)
    reference = f"{scan_fleet.oci_host}/scan/oci-app@{c.digest}"
    assert call["argv"] == documented(reference, "120s")
    assert call["username"] == OCI_USER
    assert call["password_sha256"] == hashlib.sha256(OCI_PASSWORD.encode()).hexdigest()
    assert {"TRIVY_USERNAME", "TRIVY_PASSWORD"} <= set(call["env"])
    assert not call["token"] and not [k for k in call["env"] if k.startswith("AWS_")]


@pytest.fixture
def stand_in(scan_fleet, trivy_bin, trivy_env):
    """Run the stand-in directly with an argv and an environment (default: the registry's login
    as TRIVY_USERNAME/TRIVY_PASSWORD); gives (exit code, stdout, stderr)."""
    credentials = {"TRIVY_USERNAME": OCI_USER, "TRIVY_PASSWORD": OCI_PASSWORD}

    def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
        fake = {k: os.environ[k] for k in ("TRIVY_FAKE_MAP", "TRIVY_FAKE_LOG", "TRIVY_FAKE_EXPECT")}
        proc = subprocess.run(
            [str(trivy_bin), *argv],
            env={"PATH": os.environ["PATH"], **fake, **(credentials if env is None else env)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return proc.returncode, proc.stdout, proc.stderr

    return run


def _reference(scan_fleet) -> str:
    return scan_fleet.ref("scan/oci-app", "a")


def _replace(argv: list[str], old: list[str], new: list[str]) -> list[str]:
    for i in range(len(argv) - len(old) + 1):
        if argv[i : i + len(old)] == old:
            return argv[:i] + new + argv[i + len(old) :]
    raise AssertionError(f"{old} not in {argv}")


CHANGES = {  # name -> (old slice, new slice, what the stand-in must name)
    "scanners-vuln-secret": (
        ["--scanners", "vuln"],
        ["--scanners", "vuln,secret"],
        "unknown ['vuln,secret']",
    ),
    "no-scanners": (["--scanners", "vuln"], [], "missing ['--scanners', 'vuln']"),
    "no-image-src": (["--image-src", "remote"], [], "missing ['--image-src', 'remote']"),
    "image-src-docker": (["--image-src", "remote"], ["--image-src", "docker"], "unknown ['docker']"),
    "format-table": (["--format", "json"], ["--format", "table"], "unknown ['table']"),
    "format-sarif": (["--format", "json"], ["--format", "sarif"], "unknown ['sarif']"),
    "no-quiet": (["--quiet"], [], "missing ['--quiet']"),
    "timeout-without-unit": (["--timeout", "600s"], ["--timeout", "600"], "unknown ['600']"),
    "no-insecure": (["--insecure"], [], "missing ['--insecure']"),
    "extra-flag": (["--quiet"], ["--quiet", "--skip-db-update"], "unknown ['--skip-db-update']"),
    "other-subcommand": (["image"], ["repository"], "unknown ['repository']"),
    "reordered": (
        ["--format", "json", "--scanners", "vuln"],
        ["--scanners", "vuln", "--format", "json"],
        "got image --scanners vuln --format json",
    ),
}


def test_the_stand_in_replays_the_report_for_the_exact_command_line(stand_in, scan_fleet):
    """The control for the cases below: the documented line gets the real report back."""
    code, out, err = stand_in(documented(_reference(scan_fleet)))
    assert (code, err) == (0, "")
    assert json.loads(out) == json.loads((TRIVY / "alpine-39.json.golden").read_text())


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_the_stand_in_refuses_any_other_command_line(stand_in, scan_fleet, change):
    old, new, named = CHANGES[change]
    argv = _replace(documented(_reference(scan_fleet)), old, new)
    code, out, err = stand_in(argv)
    assert code == 1 and out == ""
    assert err.startswith("FATAL unexpected command line") and named in err, err


def test_the_stand_in_wants_the_image_by_digest(stand_in, scan_fleet):
    by_tag = _reference(scan_fleet).rsplit("@", 1)[0] + ":1.0.0"
    code, _, err = stand_in(documented(by_tag))
    assert code == 1 and "must be <host>/<repository>@sha256:<digest>" in err and by_tag in err


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TRIVY_USERNAME": OCI_USER}, "must come together"),
        ({}, "UNAUTHORIZED: authentication required"),
        (
            {"TRIVY_USERNAME": OCI_USER, "TRIVY_PASSWORD": OCI_PASSWORD, "AWS_SECRET_ACCESS_KEY": "x"},
            "unexpected credential variable AWS_SECRET_ACCESS_KEY",
        ),
        (
            {"TRIVY_USERNAME": OCI_USER, "TRIVY_PASSWORD": OCI_PASSWORD, "TRIVY_AUTH": f"ops:{OCI_PASSWORD}"},
            "a credential in TRIVY_AUTH",
        ),
    ],
    ids=["username-only", "no-credentials", "aws-keys", "password-elsewhere"],
)
def test_the_stand_in_wants_credentials_only_as_trivy_username_and_password(stand_in, scan_fleet, env, named):
    code, _, err = stand_in(documented(_reference(scan_fleet)), env)
    assert code == 1 and named in err, err


def test_credentials_on_the_command_line_are_refused(stand_in, scan_fleet):
    argv = documented(_reference(scan_fleet))
    argv = [*argv[:-1], "--username", OCI_USER, "--password", OCI_PASSWORD, argv[-1]]
    code, _, err = stand_in(argv)
    assert code == 1 and err.startswith("FATAL credentials on the command line")
    assert OCI_PASSWORD not in err


def test_a_refused_command_line_is_a_scan_error_naming_the_change(
    scan_fleet, trivy_bin, trivy_env, monkeypatch
):
    """What a changed flag does to a scan: an error result (the scan tests then fail), not findings."""
    built = TrivyScanner.command

    def with_secret_scanning(self: TrivyScanner, reference: str) -> list[str]:
        return _replace(built(self, reference), ["--scanners", "vuln"], ["--scanners", "vuln,secret"])

    monkeypatch.setattr(TrivyScanner, "command", with_secret_scanning)
    scanner = TrivyScanner(
        scan_fleet.oci_host, OCI_USER, OCI_PASSWORD, TrivyConfig(binary=str(trivy_bin)), insecure=True
    )
    a = scan_fleet.by_name["a"]
    (result,) = scanner.scan([Target(a.digest, "oci-local", "scan/oci-app")])
    assert result.status == "error" and result.findings == []
    assert "trivy exited 1: FATAL unexpected command line (unknown ['vuln,secret']" in result.error
    assert OCI_PASSWORD not in result.error


def test_server_mode_expects_the_server_flag(stand_in, scan_fleet, monkeypatch):
    """With a Trivy server configured, ``--server URL`` follows ``--insecure``; without, it is refused."""
    reference = _reference(scan_fleet)
    with_server = [*documented(reference)[:-1], "--server", "http://trivy.internal:4954", reference]
    code, _, err = stand_in(with_server)
    assert code == 1 and "unknown ['--server', 'http://trivy.internal:4954']" in err
    expect_trivy(monkeypatch, server="http://trivy.internal:4954")
    assert stand_in(with_server)[0] == 0
    code, _, err = stand_in(documented(reference))
    assert code == 1 and "missing ['--server', 'http://trivy.internal:4954']" in err


def test_the_workers_own_credentials_never_reach_trivy(scan_fleet, scan_config, trivy_env, monkeypatch):
    """The worker's environment holds AWS keys and Trivy credentials meant for something else;
    Trivy gets only the registry connection's login, as TRIVY_USERNAME/TRIVY_PASSWORD."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWORKERKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret-key")
    monkeypatch.setenv("TRIVY_USERNAME", "someone-else")
    monkeypatch.setenv("TRIVY_PASSWORD", "someone-elses-password")
    monkeypatch.setenv("TRIVY_REGISTRY_TOKEN", "someone-elses-token")
    _, config = scan_config()
    scanner = build_scanner(config, "oci-local")
    d = scan_fleet.by_name["d"]
    (result,) = scanner.scan([Target(d.digest, "oci-local", "scan/oci-app")])
    assert result.status == "ok", result.error
    (call,) = invocations(trivy_env)
    assert call["argv"] == documented(f"{scan_fleet.oci_host}/scan/oci-app@{d.digest}")
    assert call["username"] == OCI_USER
    assert call["password_sha256"] == hashlib.sha256(OCI_PASSWORD.encode()).hexdigest()
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TRIVY_REGISTRY_TOKEN"} & set(call["env"])


def test_client_mode_adds_the_server_after_the_documented_flags(
    scan_fleet, scan_config, trivy_bin, trivy_env, monkeypatch
):
    """``scan.trivy.server`` set: the same command line plus ``--server URL`` before the image."""
    server = "http://trivy.internal:4954"
    _, config = scan_config(trivy={"binary": str(trivy_bin), "server": server, "concurrency": 2})
    expect_trivy(monkeypatch, server=server)
    scanner = build_scanner(config, "oci-local")
    names = ("a", "b", "d")
    targets = [Target(scan_fleet.by_name[n].digest, "oci-local", "scan/oci-app") for n in names]
    assert {r.status for r in scanner.scan(targets)} == {"ok"}
    got = sorted(c["argv"] for c in invocations(trivy_env))
    refs = [scan_fleet.ref("scan/oci-app", n) for n in names]
    assert got == sorted([*documented(r)[:-1], "--server", server, r] for r in refs)
