"""Retention: ECR-compatible lifecycle policies plus extensions, planning, archive-before-delete
execution and restore."""
