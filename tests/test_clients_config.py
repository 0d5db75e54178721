"""AWS clients take our botocore defaults (retries, pool size) with the connection's own
``config_kwargs`` over them: a team's timeouts, retries or proxies set on the Airflow connection
are not silently dropped by the config we hand the hook. Checked on the clients' real config and
with a request to moto."""

from __future__ import annotations

import json

import pytest

from include.registry_ops import clients


def _conn(monkeypatch, conn_id: str, endpoint: str, config_kwargs: object | None) -> None:
    extra = {"region_name": "us-east-1", "endpoint_url": endpoint}
    if config_kwargs is not None:
        extra["config_kwargs"] = config_kwargs
    doc = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(doc))


def test_the_connections_config_kwargs_win_over_our_defaults(moto_server, monkeypatch):
    _conn(
        monkeypatch,
        "cfg_team",
        moto_server.endpoint,
        {
            "connect_timeout": 3,
            "retries": {"mode": "adaptive", "max_attempts": 2},
            "s3": {"addressing_style": "path"},
        },
    )
    s3 = clients.aws_client("s3", "cfg_team")
    config = s3.meta.config
    assert config.connect_timeout == 3 and config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    assert config.max_pool_connections == 32 and config.s3 == {"addressing_style": "path"}  # ours kept
    s3.create_bucket(Bucket="cfg-team-bucket")
    assert "cfg-team-bucket" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    ecr = clients.ecr_client("cfg_team")
    assert ecr.meta.config.connect_timeout == 3 and ecr.meta.config.retries["total_max_attempts"] == 3
    assert ecr.describe_repositories()["repositories"] is not None


def test_without_config_kwargs_our_defaults_apply(moto_server, monkeypatch):
    _conn(monkeypatch, "cfg_plain", moto_server.endpoint, None)
    config = clients.aws_client("s3", "cfg_plain").meta.config
    ours = {"mode": "standard", "total_max_attempts": clients.RETRIES["max_attempts"] + 1}  # botocore's form
    assert config.retries == ours and config.max_pool_connections == 32
    assert clients.ecr_client("cfg_plain").meta.config.retries == ours


def test_config_kwargs_that_are_not_a_botocore_config_are_named(moto_server, monkeypatch):
    _conn(monkeypatch, "cfg_bad", moto_server.endpoint, {"connect_timout": 3})
    with pytest.raises(ValueError, match=r"'cfg_bad'.*config_kwargs.*connect_timout"):
        clients.aws_client("s3", "cfg_bad")
