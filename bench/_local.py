"""Shared start of the bench scripts: make ``include`` importable when a script runs as
``python bench/<name>.py``, and give AWS clients moto's fake local credentials unless the
caller set real ones (benches only ever talk to services on 127.0.0.1)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def prepare(**extra_env: str) -> Path:
    """Put the project root on ``sys.path`` and set the local defaults; returns the root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for key, value in {**LOCAL_ENV, **extra_env}.items():
        os.environ.setdefault(key, value)
    return ROOT


def s3_client(endpoint: str, region: str = "us-east-1") -> object:
    """An S3 client for the bench's moto: path-style, the project's retry policy, a pool wide
    enough for the benches' threads. Imports lazily: ``prepare`` must run first."""
    import boto3
    from botocore.config import Config

    from include.registry_ops.clients import RETRIES

    config = Config(retries=dict(RETRIES), max_pool_connections=32, s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def ecr_client(endpoint: str, region: str = "us-east-1") -> object:
    """An ECR client for the bench's moto: the project's retry policy and the same wide pool."""
    import boto3
    from botocore.config import Config

    from include.registry_ops.clients import RETRIES

    config = Config(retries=dict(RETRIES), max_pool_connections=32)
    return boto3.client("ecr", endpoint_url=endpoint, region_name=region, config=config)
