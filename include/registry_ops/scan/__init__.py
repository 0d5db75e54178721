"""Scanning: Trivy and ECR findings in one table, policy gate, size budget, tag conventions."""
