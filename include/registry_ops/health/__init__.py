"""Availability of every registry (``registry_health``: the API answers, a canary manifest can be
fetched by digest) and the SLOs built on it and on the reports' pull success, with multi-window
burn-rate alerts (Google SRE workbook, chapter 5)."""
