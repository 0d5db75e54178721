"""The Registry page in Airflow's UI: the fleet, vulnerabilities, retention (with restore),
backups and drills, the access audit, reports and our DAGs' health, read from what the DAGs
wrote to S3. Wiring only; the app is ``include/registry_ops/page/app.py``.

Airflow mounts the FastAPI app at ``/registry-page`` in its API server and puts "Registry" in
the Browse menu of its nav, rendered in the UI as an iframe (``url_route``). Plugin endpoints are
not protected by Airflow: the app checks Airflow's own session token on every route, except
the registry event receiver (``POST /registry-page/api/events/<registry>``), which checks the
bearer token registries send (``docs/events.md``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from include.registry_ops.events.push import forward_pushes
from include.registry_ops.page.app import PREFIX, ConfigSource, create_app

_config = ConfigSource(os.environ.get("REGISTRY_OPS_CONFIG"))


def _scan_on_push(registry: str, envelope: dict[str, Any]) -> None:
    """A stored envelope's image pushes become one ``registry_pushed_images`` asset event (Airflow
    REST API); when that fails the receiver answers 503 and the registry delivers again."""
    forward_pushes(_config(), registry, envelope)


registry_page_app = create_app(_config, on_stored=_scan_on_push)


class RegistryPagePlugin(AirflowPlugin):
    name = "registry_page"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": registry_page_app, "url_prefix": PREFIX, "name": "Registry page"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Registry",
            "href": PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": "registry",
        }
    ]
