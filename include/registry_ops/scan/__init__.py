"""Scanning: Trivy and ECR findings in one table, policy gate, size budget, tag conventions.

| module | role |
|---|---|
| ``settings`` | the ``scan:`` config section |
| ``severity`` | one severity scale (and the documented mapping of ECR/Inspector words) |
| ``parsers`` | Trivy JSON and ECR DescribeImageScanFindings -> finding rows, counts |
| ``findings`` | the findings table schema |
| ``plan`` | which digests to scan (unique, image manifests only, not fresh) |
| ``scanners/`` | Trivy CLI and ECR native scanning behind one interface, and their factory |
| ``uploads`` | Trivy reports uploaded by build pipelines |
| ``results``, ``store`` | run results as tables, merge with the previous run, S3 layout |
| ``gate``, ``notify`` | policy gate with allowlist; email and Slack |
| ``sizes``, ``tagging``, ``retag`` | size budget; tag conventions; applying the tag scheme |
| ``jobs`` | the DAG's steps (and ``registry-ops scan run``) |
"""
