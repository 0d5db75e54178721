"""Scanners behind one interface (:class:`base.Scanner`): Trivy CLI and ECR's own scanning."""

from .base import Scanner, ScanResult, Target

__all__ = ["ScanResult", "Scanner", "Target"]
