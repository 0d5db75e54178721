"""ECR's own scanning: basic (AWS native) or enhanced (Amazon Inspector), as the registry's
scanning configuration says.

- **Basic**: ``start_image_scan`` for each digest of the batch first, then one wait for all
  of them (scans run in parallel on AWS). ``LimitExceededException`` means the image was
  scanned within the last 24 hours (on push or by an earlier run: one scan per image per day),
  so its existing findings are read instead. botocore's standard retry mode counts that error
  as throttling and would retry it for about a minute, so ``start_image_scan`` goes through a
  client without retries (``start_client``); real throttling of it is retried here.
- **Enhanced**: Inspector scans continuously; nothing is started, findings are read.
- Findings: ``describe_image_scan_findings`` by digest, every page (``nextToken``, 1,000 per
  page); while the status is ``IN_PROGRESS``/``PENDING`` it is polled every
  ``ecr.poll_seconds`` up to ``ecr.wait_seconds``.
- Statuses ``UNSUPPORTED_IMAGE``, ``SCAN_ELIGIBILITY_EXPIRED`` and ``IMAGE_ARCHIVED`` are
  ``unsupported`` (nothing to retry soon); ``FAILED``, ``FINDINGS_UNAVAILABLE`` and
  ``LIMIT_EXCEEDED`` are errors, retried next run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ...registries.ecr import aws_problem
from ...store.objects import error_code
from ..parsers import parse_ecr
from ..settings import EcrScanConfig
from .base import Scanner, ScanResult, Target

log = logging.getLogger(__name__)

WAITING = frozenset({"IN_PROGRESS", "PENDING"})
DONE = frozenset({"COMPLETE", "ACTIVE"})
UNSUPPORTED = frozenset({"UNSUPPORTED_IMAGE", "SCAN_ELIGIBILITY_EXPIRED", "IMAGE_ARCHIVED"})
PAGE = 1000


def _code(exc: Exception) -> str:
    return error_code(exc) if isinstance(exc, ClientError) else ""


class EcrScanner(Scanner):
    name = "ecr"

    def __init__(
        self,
        client: Any,
        start_client: Any | None = None,
        *,
        registry_id: str | None = None,
        config: EcrScanConfig | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.client = client
        self.start_client = start_client or client
        self.registry_id = registry_id
        self.config = config or EcrScanConfig()
        self._sleep, self._monotonic = sleep, monotonic
        self.scan_type: str | None = None
        self.started = 0  # start_image_scan calls that started a scan
        self.reused = 0  # LimitExceededException: today's scan was read instead

    def _ids(self) -> dict[str, str]:
        return {"registryId": self.registry_id} if self.registry_id else {}

    def _scan_type(self) -> str:
        if self.scan_type is None:
            try:
                conf = self.client.get_registry_scanning_configuration(**self._ids())
                self.scan_type = conf.get("scanningConfiguration", {}).get("scanType", "BASIC")
            except (ClientError, BotoCoreError) as exc:
                log.warning(
                    "scan: cannot read the registry scanning configuration (%s); assuming BASIC",
                    aws_problem(exc),
                )
                self.scan_type = "BASIC"
        return self.scan_type

    def _start(self, target: Target) -> str | None:
        """Start a basic scan; returns an error message, or None when findings can be read."""
        for attempt in range(4):
            try:
                self.start_client.start_image_scan(
                    repositoryName=target.repository, imageId={"imageDigest": target.digest}, **self._ids()
                )
                self.started += 1
                return None
            except ClientError as exc:
                code = _code(exc)
                if code == "LimitExceededException":
                    self.reused += 1
                    log.info(
                        "scan: %s@%s was scanned within 24 h; reading that scan",
                        target.repository,
                        target.digest,
                    )
                    return None
                if code in ("ThrottlingException", "TooManyRequestsException") and attempt < 3:
                    self._sleep(0.5 * 2**attempt)
                    continue
                return f"start_image_scan failed: {aws_problem(exc)}"
            except BotoCoreError as exc:
                return f"start_image_scan failed: {aws_problem(exc)}"
        return "start_image_scan: still throttled"

    def _describe(self, target: Target, token: str | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "repositoryName": target.repository,
            "imageId": {"imageDigest": target.digest},
            "maxResults": PAGE,
            **self._ids(),
        }
        if token:
            kwargs["nextToken"] = token
        return self.client.describe_image_scan_findings(**kwargs)

    def _read_all(self, target: Target, first: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """Source and rows of every page, starting from an already fetched first page."""
        parsed = parse_ecr(first)
        rows, sources, seen = list(parsed.rows), set(parsed.sources), set()
        token = parsed.next_token
        while token:
            if token in seen:
                raise RuntimeError("describe_image_scan_findings returned the same nextToken twice")
            seen.add(token)
            page = parse_ecr(self._describe(target, token))
            rows.extend(page.rows)
            sources |= page.sources
            token = page.next_token
        enhanced = "ecr-enhanced" in sources or (not sources and self._scan_type() == "ENHANCED")
        return ("ecr-enhanced" if enhanced else "ecr-basic"), rows

    def scan(self, targets: list[Target]) -> list[ScanResult]:
        results: dict[Target, ScanResult] = {}
        basic = self._scan_type() == "BASIC"
        source = "ecr-basic" if basic else "ecr-enhanced"

        def finish(
            t: Target, status: str, rows: list | None = None, error: str | None = None, src: str = source
        ) -> None:
            results[t] = ScanResult(t, src, status, datetime.now(UTC), rows or [], error)

        pending: list[Target] = []
        for t in targets:
            self._count()
            error = self._start(t) if basic else None
            if error:
                finish(t, "error", error=error)
            else:
                pending.append(t)
        deadline = self._monotonic() + self.config.wait_seconds
        while pending:
            waiting = []
            for t in pending:
                try:
                    page = self._describe(t)
                except ClientError as exc:
                    if _code(exc) == "ScanNotFoundException" and basic:
                        waiting.append(t)  # just started; not visible yet
                    else:
                        finish(t, "error", error=f"describe_image_scan_findings failed: {aws_problem(exc)}")
                    continue
                except BotoCoreError as exc:
                    finish(t, "error", error=f"describe_image_scan_findings failed: {aws_problem(exc)}")
                    continue
                status = (page.get("imageScanStatus") or {}).get("status")
                description = (page.get("imageScanStatus") or {}).get("description") or ""
                if status in WAITING:
                    waiting.append(t)
                elif status in DONE:
                    try:
                        src, rows = self._read_all(t, page)
                    except (ClientError, BotoCoreError, RuntimeError) as exc:
                        finish(t, "error", error=f"reading findings failed: {aws_problem(exc)}")
                        continue
                    finish(t, "ok", rows, src=src)
                elif status in UNSUPPORTED:
                    finish(t, "unsupported", error=f"{status}: {description}".strip())
                else:
                    finish(t, "error", error=f"scan status {status}: {description}".strip())
            pending = waiting
            if pending and self._monotonic() >= deadline:
                for t in pending:
                    finish(t, "error", error=f"scan still running after {self.config.wait_seconds:.0f}s")
                break
            if pending:
                self._sleep(self.config.poll_seconds)
        return [results[t] for t in targets]
