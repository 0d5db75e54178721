"""Build the scanner a registry is configured for, credentials from its Airflow connection."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlparse

from ...clients import ecr_client, get_connection, oci_url
from ...config import Config, RegistryConfig
from .base import Scanner
from .ecr import EcrScanner
from .trivy import TrivyScanner


def _ecr_start_client(reg: RegistryConfig) -> Any:
    """An ECR client that does not retry: see ``ecr.py`` on LimitExceededException."""
    from airflow.providers.amazon.aws.hooks.ecr import EcrHook
    from botocore.config import Config as BotoConfig

    hook = EcrHook(
        aws_conn_id=reg.conn_id,
        region_name=reg.region,
        config=BotoConfig(retries={"mode": "standard", "max_attempts": 1}),
    )
    return hook.conn


def _server_token(config: Config) -> str | None:
    conn_id = config.scan.trivy.server_token_conn_id
    return get_connection(conn_id).password if conn_id else None


def build_scanner(config: Config, registry: str) -> Scanner:
    reg = config.registry(registry)
    choice = config.scan.scanner_for(reg.name, reg.kind)
    if choice == "ecr":
        if reg.kind != "ecr":
            raise ValueError(f"{config.source}: scan.scanners.{reg.name}: 'ecr' needs an ECR registry")
        return EcrScanner(
            ecr_client(reg.conn_id, reg.region),
            _ecr_start_client(reg),
            registry_id=reg.registry_id,
            config=config.scan.ecr,
        )
    if reg.kind == "oci":
        conn = get_connection(reg.conn_id)
        url = urlparse(reg.url or oci_url(conn))
        verify = conn.extra_dejson.get("verify", True)
        return TrivyScanner(
            url.netloc,
            conn.login or None,
            conn.password or None,
            config.scan.trivy,
            insecure=url.scheme == "http" or verify is False,
            server_token=_server_token(config),
        )
    # Trivy against ECR: a 12-hour registry token from GetAuthorizationToken, as `docker login` uses.
    auth = ecr_client(reg.conn_id, reg.region).get_authorization_token(
        **({"registryIds": [reg.registry_id]} if reg.registry_id else {})
    )["authorizationData"][0]
    user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
    return TrivyScanner(
        urlparse(auth["proxyEndpoint"]).netloc,
        user,
        password,
        config.scan.trivy,
        server_token=_server_token(config),
    )
