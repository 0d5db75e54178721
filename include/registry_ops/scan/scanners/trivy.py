"""Trivy: ``trivy image --format json`` against the image in its registry, by digest.

Credentials (from the registry's Airflow connection) reach Trivy only through the environment
variables ``TRIVY_USERNAME``/``TRIVY_PASSWORD`` (and a server token as ``TRIVY_TOKEN``), never
on the command line, where any local user can read them in the process table, and never in
logs: the command line is logged, the environment is not, and Trivy's stderr is scrubbed of
the secrets before it goes into an error message.

Trivy gets a small environment, not the worker's: Trivy sends TRIVY_USERNAME/PASSWORD to
every registry it talks to, and older versions also minted ECR tokens from any AWS keys in
the environment (GHSA-xcq4-m2r3-cmrj), so AWS credentials and unrelated secrets stay out.

Flags: ``--scanners vuln`` (no secret scanning: slow and not this report's subject),
``--image-src remote`` (no probing for a Docker daemon), ``--quiet``, ``--timeout``,
``--insecure`` for plain-HTTP or unverified registries, ``--server`` for client mode. A
standalone Trivy locks its cache directory, so without a server one process runs at a time per
task; with a server ``trivy.concurrency`` processes run in parallel.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from ..parsers import ReportError, parse_trivy
from ..settings import TrivyConfig
from .base import Scanner, ScanResult, Target

log = logging.getLogger(__name__)

PASSTHROUGH = (
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
CREDENTIAL_VARS = frozenset({"TRIVY_USERNAME", "TRIVY_PASSWORD", "TRIVY_TOKEN", "TRIVY_REGISTRY_TOKEN"})


class TrivyScanner(Scanner):
    name = "trivy"

    def __init__(
        self,
        host: str,
        username: str | None,
        password: str | None,
        config: TrivyConfig,
        *,
        insecure: bool = False,
        server_token: str | None = None,
    ) -> None:
        super().__init__()
        self.host = host.rstrip("/")
        self._username, self._password, self._token = username, password, server_token
        self.config = config
        self.insecure = insecure

    def reference(self, target: Target) -> str:
        return f"{self.host}/{target.repository}@{target.digest}"

    def command(self, reference: str) -> list[str]:
        cmd = [self.config.binary, "image", "--format", "json", "--scanners", "vuln", "--image-src", "remote"]
        cmd += ["--quiet", "--timeout", f"{self.config.timeout_seconds}s"]
        if self.insecure:
            cmd.append("--insecure")
        if self.config.server:
            cmd += ["--server", self.config.server]
        return [*cmd, reference]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in PASSTHROUGH}
        # Trivy's own settings (cache dir, DB repository, ...) pass; credentials only as set here.
        env.update(
            {k: v for k, v in os.environ.items() if k.startswith("TRIVY_") and k not in CREDENTIAL_VARS}
        )
        if self._username and self._password:
            env["TRIVY_USERNAME"], env["TRIVY_PASSWORD"] = self._username, self._password
        if self._token:
            env["TRIVY_TOKEN"] = self._token
        return env

    def _scrub(self, text: str) -> str:
        for secret in (self._password, self._token):
            if secret:
                text = text.replace(secret, "***")
        return text

    def scan_one(self, target: Target) -> ScanResult:
        reference = self.reference(target)
        cmd = self.command(reference)
        self._count()
        log.info("scan: %s", " ".join(cmd))

        def result(status: str, findings: list | None = None, error: str | None = None) -> ScanResult:
            return ScanResult(target, self.name, status, datetime.now(UTC), findings or [], error)

        try:
            proc = subprocess.run(
                cmd,
                env=self.environment(),
                capture_output=True,
                text=True,
                timeout=self.config.timeout_seconds + 30,
                check=False,
            )
        except FileNotFoundError:
            return result("error", error=f"trivy executable {self.config.binary!r} not found")
        except subprocess.TimeoutExpired:
            return result("error", error=f"trivy did not finish within {self.config.timeout_seconds}s")
        if proc.returncode != 0:
            lines = [ln for ln in self._scrub(proc.stderr or "").splitlines() if ln.strip()]
            tail = " | ".join(lines[-3:])[:500]
            return result("error", error=f"trivy exited {proc.returncode}: {tail}")
        try:
            rows = parse_trivy(json.loads(proc.stdout))
        except (ValueError, ReportError) as exc:
            return result("error", error=f"trivy output is not a usable report: {exc}"[:500])
        return result("ok", rows)

    def scan(self, targets: list[Target]) -> list[ScanResult]:
        workers = self.config.concurrency if self.config.server else 1
        if workers == 1:
            return [self.scan_one(t) for t in targets]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(self.scan_one, targets))
