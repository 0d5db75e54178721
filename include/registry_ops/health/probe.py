"""Availability probes: per registry, does the API answer, can the canary manifest be fetched by
digest, and how long each took (one ``schema.PROBE_SCHEMA`` row per registry per run).

- OCI: ``GET /v2/`` on the adapter's own HTTP session (its TLS settings and connection pool);
  200, or 401 with a ``WWW-Authenticate`` challenge, means the API answers (a registry with
  auth answers so to everybody). Then the canary manifest by digest through the adapter
  (``get_manifest``: token or basic auth as for every other call).
- ECR: ``DescribeRegistry``, then ``BatchGetImage`` of the canary by digest, through
  ``EcrRegistry`` on a client of the registry's connection built for probing.
- Other kinds (an OCI layout directory): listing its repositories is the API check.

A probe measures one attempt: the adapters' retries are off and every request waits at most
``health.timeout_seconds`` (retries would hide the outage the probe is there to see). Every
failure (dead endpoint, timeout, 5xx, wrong digest, even a bug of ours) becomes
``api_ok``/``canary_ok`` False with ``error`` naming the registry, URL and problem, with
credentials redacted; registries are probed in parallel and one never stops another.

The canary is ``health.canaries[registry]``; else the newest tagged image of that registry in
the latest inventory snapshot (newest by push time, else build time; ties by repository and
digest, so every run of one snapshot picks the same). A registry with neither has null canary
columns and ``good = api_ok``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from ..config import Config, RegistryConfig
from ..page.model import redact
from ..registries.base import Registry, digest_of
from .settings import Canary

log = logging.getLogger(__name__)

MAX_PARALLEL = 8  # registries probed at once


# -- canaries ---------------------------------------------------------------------------------------
def newest_tagged(frame: Any, registry: str) -> Canary | None:
    """The newest tagged image (or index) of ``registry`` in an inventory frame, or None."""
    rows = frame[(frame["registry"] == registry) & (frame["kind"] != "referrer")]
    rows = rows[rows["tags"].map(len) > 0]
    if rows.empty:
        return None
    rows = rows.assign(_when=rows["pushed_at"].fillna(rows["created_at"]))
    rows = rows.sort_values(
        ["_when", "repository", "digest"], ascending=[False, True, True], na_position="last"
    )
    first = rows.iloc[0]
    return Canary(repository=first["repository"], digest=first["digest"])


def canaries(config: Config, s3: Any, names: list[str]) -> dict[str, Canary | None]:
    """Each registry's canary: configured, else picked from the latest inventory snapshot (read
    once, only when some registry needs it); None where neither names one."""
    out: dict[str, Canary | None] = {n: config.health.canaries.get(n) for n in names}
    wanted = [n for n, c in out.items() if c is None]
    if not wanted:
        return out
    from botocore.exceptions import BotoCoreError, ClientError

    from ..inventory import latest_snapshot
    from ..schema import SchemaError
    from ..snapshots import SnapshotError

    try:
        table = latest_snapshot(s3, config.storage.bucket, config.storage.prefixes.inventory)
    except (SnapshotError, SchemaError, ClientError, BotoCoreError) as exc:
        # the probes go on without these canaries: an unreadable inventory must not stop them
        log.warning("health: no canary for %s from the inventory: %s", ", ".join(wanted), redact(str(exc)))
        return out
    columns = ["registry", "repository", "digest", "tags", "kind", "pushed_at", "created_at"]
    frame = table.select(columns).to_pandas()
    for name in wanted:
        out[name] = newest_tagged(frame, name)
    return out


# -- clients built for probing ----------------------------------------------------------------------
def _ecr(reg: RegistryConfig, timeout: float) -> Registry:
    """``EcrRegistry`` on a client of the registry's connection: one attempt, ``timeout`` each."""
    from airflow.providers.amazon.aws.hooks.ecr import EcrHook
    from botocore.config import Config as BotoConfig

    from ..registries.ecr import EcrRegistry

    boto = BotoConfig(
        connect_timeout=timeout, read_timeout=timeout, retries={"mode": "standard", "total_max_attempts": 1}
    )
    client = EcrHook(aws_conn_id=reg.conn_id, region_name=reg.region, config=boto).conn
    return EcrRegistry(reg.name, client, reg.registry_id)


def build(reg: RegistryConfig, timeout: float) -> Registry:
    """The registry's adapter, set up for probing (no retries, ``timeout`` per request)."""
    if reg.kind == "ecr":
        return _ecr(reg, timeout)
    from ..clients import build_registry

    registry = build_registry(reg)
    if reg.kind == "oci":
        registry.timeout, registry.retries = timeout, 0  # type: ignore[attr-defined]
    return registry


# -- one probe ----------------------------------------------------------------------------------------
def _timed(check: Callable[[], None]) -> tuple[float, str | None]:
    """(milliseconds on the monotonic clock, the problem or None)."""
    start = time.monotonic()
    try:
        check()
        problem = None
    except Exception as exc:  # every failure is a probe result, never a crash
        problem = str(exc) or type(exc).__name__
    return round((time.monotonic() - start) * 1000, 3), problem


def _oci_api(registry: Any, timeout: float) -> Callable[[], None]:
    def check() -> None:
        import requests

        url = f"{registry.url}/v2/"
        try:
            resp = registry.session.get(url, timeout=timeout, allow_redirects=False)
        except requests.Timeout:
            raise RuntimeError(f"GET {url}: no answer within {timeout:g}s") from None
        except requests.RequestException as exc:
            raise RuntimeError(f"GET {url}: cannot connect ({type(exc).__name__})") from None
        if resp.status_code == 200:
            return
        if resp.status_code == 401 and resp.headers.get("WWW-Authenticate"):
            return
        raise RuntimeError(f"GET {url}: HTTP {resp.status_code}")

    return check


def _ecr_api(registry: Any) -> Callable[[], None]:
    def check() -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        from ..registries.ecr import aws_problem

        endpoint = registry.client.meta.endpoint_url
        try:
            registry.client.describe_registry()
        except (ClientError, BotoCoreError) as exc:
            raise RuntimeError(f"DescribeRegistry at {endpoint}: {aws_problem(exc)}") from None

    return check


def _api_check(registry: Registry, timeout: float) -> Callable[[], None]:
    if registry.kind == "oci":
        return _oci_api(registry, timeout)
    if registry.kind == "ecr":
        return _ecr_api(registry)

    def check() -> None:
        registry.list_repositories()

    return check


def _canary_check(registry: Registry, canary: Canary) -> Callable[[], None]:
    def check() -> None:
        manifest = registry.get_manifest(canary.repository, canary.digest)
        got = digest_of(manifest.raw)
        if got != canary.digest:
            raise RuntimeError(f"canary {canary.repository}@{canary.digest}: the manifest hashes to {got}")

    return check


def _where(registry: Any, reg: RegistryConfig) -> str:
    """``registry NAME (URL)``: the URL the probe asked (the OCI adapter's has no user-info)."""
    if reg.kind == "oci" and registry is not None:
        url = registry.url
    elif reg.kind == "ecr" and registry is not None:
        url = registry.client.meta.endpoint_url
    else:
        url = reg.url or reg.path or f"connection {reg.conn_id}"
    return f"registry {reg.name} ({url})"


def _built(config: Config, name: str) -> Registry | Exception:
    """The registry's probing client, or why it cannot be built (kept for its row)."""
    try:
        return build(config.registry(name), config.health.timeout_seconds)
    except Exception as exc:  # a missing connection: this registry cannot be probed
        return exc


def probe(
    config: Config,
    registry_name: str,
    at: datetime,
    run_id: str,
    canary: Canary | None,
    client: Registry | Exception | None = None,
) -> dict:
    """One registry's probe row (``PROBE_SCHEMA``); failures are in the row, never raised.
    ``client``: the registry's client (or the error building it) when built already."""
    reg = config.registry(registry_name)
    timeout = config.health.timeout_seconds
    row: dict[str, Any] = {
        "at": at,
        "run_id": run_id,
        "registry": reg.name,
        "kind": reg.kind,
        "api_ok": False,
        "api_ms": None,
        "canary_repository": canary.repository if canary else None,
        "canary_digest": canary.digest if canary else None,
        "canary_ok": None,
        "canary_ms": None,
        "good": False,
        "error": None,
    }
    built = client if client is not None else _built(config, reg.name)
    if isinstance(built, Exception):
        row["error"] = redact(f"{_where(None, reg)}: cannot build its client: {built}")
        row["canary_ok"] = False if canary is not None else None
        return row
    registry = built
    problems: list[str] = []
    api_ms, problem = _timed(_api_check(registry, timeout))
    row["api_ok"] = problem is None
    row["api_ms"] = api_ms if problem is None else None
    if problem:
        problems.append(f"{_where(registry, reg)}: API: {problem}")
    if canary is not None:
        canary_ms, problem = _timed(_canary_check(registry, canary))
        row["canary_ok"] = problem is None
        row["canary_ms"] = canary_ms if problem is None else None
        if problem:
            problems.append(f"{_where(registry, reg)}: canary {canary.repository}@{canary.digest}: {problem}")
    row["good"] = bool(row["api_ok"]) and row["canary_ok"] is not False
    row["error"] = redact(problems[0]) if problems else None
    for p in problems:
        log.warning("health: %s", redact(p))
    return row


def _failed_row(config: Config, name: str, at: datetime, run_id: str, exc: Exception) -> dict:
    """The row of a probe that raised anyway (a bug of ours): bad, with the reason."""
    kind = next((r.kind for r in config.registries if r.name == name), "unknown")
    return {
        "at": at,
        "run_id": run_id,
        "registry": name,
        "kind": kind,
        "api_ok": False,
        "api_ms": None,
        "canary_repository": None,
        "canary_digest": None,
        "canary_ok": None,
        "canary_ms": None,
        "good": False,
        "error": redact(f"registry {name}: the probe failed: {type(exc).__name__}: {exc}"),
    }


def probed_names(config: Config, only: str | None = None) -> list[str]:
    """``health.registries`` (default: every configured registry), or the one asked for."""
    if only is not None:
        return [config.registry(only).name]  # ConfigError naming the known ones
    return list(config.health.registries or [r.name for r in config.registries])


def probe_all(
    config: Config, s3: Any, at: datetime, run_id: str, only: str | None = None
) -> list[dict[str, Any]]:
    """Every probed registry's row (sorted by name), in parallel, at most ``MAX_PARALLEL`` at once."""
    names = probed_names(config, only)
    picked = canaries(config, s3, names)
    # Clients are built here, one after another: building one imports Airflow's hooks and reads
    # its connection, and first imports racing in threads fail ("deadlock detected by
    # _ModuleLock"), which marked a healthy registry down. Only the network work is parallel.
    clients = {name: _built(config, name) for name in names}

    def one(name: str) -> dict:
        try:
            return probe(config, name, at, run_id, picked[name], clients[name])
        except Exception as exc:  # one registry never stops the others
            return _failed_row(config, name, at, run_id, exc)

    with ThreadPoolExecutor(max(1, min(MAX_PARALLEL, len(names)))) as pool:
        rows = list(pool.map(one, names))
    return sorted(rows, key=lambda r: r["registry"])


def jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for XCom and the CLI: ``at`` as an ISO string."""
    return [{**r, "at": r["at"].isoformat() if isinstance(r["at"], datetime) else r["at"]} for r in rows]
