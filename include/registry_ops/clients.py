"""Build registry adapters and AWS clients from Airflow connections.

The same code path serves DAG tasks and the command line: credentials always come from an
Airflow connection (metastore inside tasks; ``AIRFLOW_CONN_<ID>`` variables or a secrets
backend outside), never from the config file. Airflow is imported lazily so the rest of the
package stays importable without it.
"""

from __future__ import annotations

from typing import Any

from .config import Config, RegistryConfig
from .registries.base import Registry
from .registries.ecr import EcrRegistry
from .registries.oci import OciRegistry
from .registries.ocilayout import OciLayoutRegistry

# botocore "standard" mode retries throttling (ThrottlingException, 429) and 5xx with
# exponential backoff and jitter; 8 attempts ride out a burst of throttling.
RETRIES = {"mode": "standard", "max_attempts": 8}  # pass a copy: botocore rewrites the dict it is given


def botocore_config(conn_id: str, **defaults: Any) -> Any:
    """Our botocore settings (:data:`RETRIES`, then ``defaults``) with the connection's own
    ``config_kwargs`` over them. The hook uses a config it is given instead of the connection's,
    so without this merge a team's ``connect_timeout``, proxies or retries in the connection's
    extra would be silently ignored."""
    from botocore import UNSIGNED
    from botocore.config import Config as BotoConfig

    ours = BotoConfig(retries=dict(RETRIES), **defaults)
    try:
        extra = get_connection(conn_id).extra_dejson
    except ConnectionMissing:
        return ours  # the hook reports the missing connection its own way
    theirs = dict(extra.get("config_kwargs") or {})
    if not theirs:
        return ours
    if theirs.get("signature_version") == "unsigned":  # as the provider reads it
        theirs["signature_version"] = UNSIGNED
    try:
        return ours.merge(BotoConfig(**theirs))
    except TypeError as exc:
        raise ValueError(
            f"Airflow connection {conn_id!r}: extra config_kwargs is not a botocore Config: {exc}"
        ) from None


def aws_client(service: str, conn_id: str, region: str | None = None) -> Any:
    """A boto3 client through the Amazon provider's hook (endpoint, region, keys from the conn)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    config = botocore_config(conn_id, max_pool_connections=32)
    return AwsBaseHook(aws_conn_id=conn_id, client_type=service, region_name=region, config=config).get_conn()


def ecr_client(conn_id: str, region: str | None = None) -> Any:
    from airflow.providers.amazon.aws.hooks.ecr import EcrHook

    return EcrHook(aws_conn_id=conn_id, region_name=region, config=botocore_config(conn_id)).conn


class ConnectionMissing(ValueError):
    """The named Airflow connection is not defined where this process can see it."""


def get_connection(conn_id: str) -> Any:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        env = "AIRFLOW_CONN_" + conn_id.upper()
        raise ConnectionMissing(
            f"Airflow connection {conn_id!r} is not defined (outside a task define {env} "
            "or a secrets backend)"
        ) from None


def oci_url(conn: Any) -> str:
    """``scheme://host[:port]`` of an OCI connection; scheme from extra ``scheme`` (default https)."""
    host = (conn.host or "").rstrip("/")
    if not host:
        raise ValueError(f"connection {conn.conn_id!r} has no host")
    if "://" in host:
        return host
    scheme = conn.extra_dejson.get("scheme", "https")
    return f"{scheme}://{host}:{conn.port}" if conn.port else f"{scheme}://{host}"


def build_registry(reg: RegistryConfig) -> Registry:
    """The adapter for one configured registry."""
    if reg.kind == "ocilayout":  # files under a root directory: no connection, no credentials
        return OciLayoutRegistry(reg.name, reg.path or "", read_configs=reg.read_configs)
    if reg.kind == "ecr":
        return EcrRegistry(
            reg.name,
            ecr_client(reg.conn_id, reg.region),
            reg.registry_id,
            read_manifests=reg.read_manifests,
        )
    conn = get_connection(reg.conn_id)
    return OciRegistry(
        reg.name,
        reg.url or oci_url(conn),
        conn.login or None,
        conn.password or None,
        verify=conn.extra_dejson.get("verify", True),
        concurrency=reg.concurrency,
        read_configs=reg.read_configs,
    )


def s3_client(config: Config) -> Any:
    """The storage connection's S3 client: one per connection and process (``store.clients``)."""
    from .store.clients import s3_client as cached

    return cached(config)
