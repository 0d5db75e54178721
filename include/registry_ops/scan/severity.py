"""One severity scale for every scanner: Trivy's five levels.

Trivy reports ``CRITICAL``, ``HIGH``, ``MEDIUM``, ``LOW`` and ``UNKNOWN``; ECR basic scanning
and Amazon Inspector (ECR enhanced scanning) use more names. The findings table keeps the
scanner's own word in ``source_severity`` and the mapped level in ``severity``:

| source | source severity | severity |
|---|---|---|
| Trivy | CRITICAL, HIGH, MEDIUM, LOW | same |
| Trivy | UNKNOWN (no score from any source) | UNKNOWN |
| ECR basic | CRITICAL, HIGH, MEDIUM, LOW | same |
| ECR basic | INFORMATIONAL, UNDEFINED | UNKNOWN |
| ECR enhanced (Inspector) | CRITICAL, HIGH, MEDIUM, LOW | same |
| ECR enhanced (Inspector) | INFORMATIONAL, UNDEFINED, UNTRIAGED | UNKNOWN |
| any | anything else (missing, misspelt, a future level) | UNKNOWN |

Why UNKNOWN and not LOW: these levels mean "not rated (yet)", not "harmless", and UNKNOWN keeps
them visible without counting them against the gate, which counts CRITICAL and HIGH only.
This mapping is a project decision, not a standard (see docs/dags/registry_scan.md).
"""

from __future__ import annotations

LEVELS: tuple[str, ...] = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
RANK = {name: i for i, name in enumerate(LEVELS)}  # lower is worse


def normalize(value: object) -> str:
    """The Trivy level for any scanner's severity word (case-insensitive; unknown words -> UNKNOWN)."""
    word = str(value or "").strip().upper()
    return word if word in RANK else "UNKNOWN"
