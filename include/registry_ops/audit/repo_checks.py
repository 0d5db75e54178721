"""Repository settings in the spirit of AWS Security Hub's ECR controls: scan-on-push-off
(ECR.1: image scanning; a registry scanning rule that scans on push counts), mutable-tags
(ECR.2: tag immutability), no-lifecycle-policy (ECR.3), no-kms-encryption (ECR.5: a customer
managed KMS key; AES256 is ECR's default encryption)."""

from __future__ import annotations

from .findings import Finding, finding
from .scope import Repository


def settings(repos: list[Repository], registry: str) -> list[Finding]:
    out = []
    for r in repos:
        if not r.scan_on_push:
            out.append(
                finding(
                    "scan-on-push-off",
                    registry,
                    "images are not scanned on push (neither the repository's flag nor a registry "
                    "scanning rule)",
                    repository=r.name,
                )
            )
        if (r.tag_mutability or "MUTABLE").startswith("MUTABLE"):
            out.append(
                finding(
                    "mutable-tags",
                    registry,
                    f"tag mutability is {r.tag_mutability or 'MUTABLE'}: a pushed tag can be moved to "
                    "other content",
                    repository=r.name,
                )
            )
        if not r.lifecycle_policy:
            out.append(finding("no-lifecycle-policy", registry, "no lifecycle policy", repository=r.name))
        if not (r.encryption_type or "").startswith("KMS"):
            out.append(
                finding(
                    "no-kms-encryption",
                    registry,
                    f"encrypted with {r.encryption_type or 'AES256'}, not a KMS key",
                    repository=r.name,
                )
            )
    return out
