"""One S3 client per Airflow connection and process.

A boto3 client costs tens of milliseconds and a connection lookup to build, and ``registry-ops
scan run`` or ``retention apply`` would otherwise build one per step. Clients are thread-safe, so
one per connection serves every thread. They must not cross a ``fork`` (Celery's prefork pool,
the LocalExecutor): the process id is part of the key, so a forked child builds its own.

Every job module binds ``s3_client`` from here at import (``jobs.s3_client``): a test that
replaces that module attribute still decides what the module's steps use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from ..config import Config

_CACHE: dict[tuple[int, str, str | None], Any] = {}
_LOCK = threading.Lock()


def _build(conn_id: str, region: str | None) -> Any:
    from ..clients import aws_client

    return aws_client("s3", conn_id, region)


def s3_for(conn_id: str, region: str | None = None, build: Callable[[str, str | None], Any] = _build) -> Any:
    """The process's S3 client for a connection (and region), built on first use."""
    key = (os.getpid(), conn_id, region)
    with _LOCK:
        client = _CACHE.get(key)
        if client is None:
            for inherited in [k for k in _CACHE if k[0] != key[0]]:  # a parent's, before a fork
                del _CACHE[inherited]
            client = _CACHE[key] = build(conn_id, region)
        return client


def s3_client(config: Config) -> Any:
    """The S3 client of the config's ``storage.conn_id``."""
    return s3_for(config.storage.conn_id)


def forget() -> None:
    """Drop every cached client (a connection changed under a long-lived process; tests)."""
    with _LOCK:
        _CACHE.clear()
