"""The scanner interface: a batch of targets in, one result per target out.

Batch-shaped because ECR scans are asynchronous (start them all, then wait once) while Trivy
runs one process per image; either way the caller sees one :class:`ScanResult` per digest and
never an exception for a single image (its ``status`` is ``error`` with the reason).
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Target:
    """An image to scan, at the location chosen for its digest."""

    digest: str
    registry: str
    repository: str


@dataclass
class ScanResult:
    """Outcome for one digest. ``status``: ``ok``, ``unsupported`` (the scanner cannot scan this
    kind of image; not retried within the freshness window) or ``error`` (retried next run)."""

    target: Target
    source: str
    status: str
    scanned_at: datetime
    findings: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


class Scanner(abc.ABC):
    """Counts its invocations (images handed to the scanning engine) for benches and tests."""

    name: str

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.invocations = 0

    def _count(self, n: int = 1) -> None:
        with self._lock:
            self.invocations += n

    @abc.abstractmethod
    def scan(self, targets: list[Target]) -> list[ScanResult]:
        """One result per target, same order."""
