"""Names and URIs of the Airflow Assets the DAGs publish and schedule on.

Plain strings so this module needs no Airflow; DAG files build ``Asset(name=..., uri=...)``
from them, so producer and consumers always agree.
"""

INVENTORY = {"name": "registry_inventory_snapshot", "uri": "registry-ops://inventory/snapshot"}
RETENTION = {"name": "registry_retention_summary", "uri": "registry-ops://retention/summary"}
SCAN_FINDINGS = {"name": "registry_scan_findings", "uri": "registry-ops://scan/findings"}
# A push seen by the event receiver (OCI registries) or the ECR SQS watcher; extra:
# {"source": ..., "images": [{"registry", "repository", "digest", "tag", "pushed_at"}]}.
PUSHED = {"name": "registry_pushed_images", "uri": "registry-ops://events/pushed"}
