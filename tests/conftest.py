"""Test session: real local services (moto server, distribution registry, SMTP sink) started
here, Airflow pointed at a temp home, connections given as AIRFLOW_CONN_* variables.

The environment is set before anything imports Airflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_HOME = tempfile.mkdtemp(prefix="airflow-home-")
os.environ.update(
    AIRFLOW_HOME=_HOME,
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
    AIRFLOW__CORE__UNIT_TEST_MODE="False",
    AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    GX_ANALYTICS_ENABLED="false",
    NO_PROXY="127.0.0.1,localhost",
)

import boto3  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from devstack.fleet import make_fleet  # noqa: E402
from devstack.seed import seed_ecr, seed_oci  # noqa: E402
from devstack.services import MotoService, RegistryService, SmtpService  # noqa: E402
from include.registry_ops.registries.oci import OciRegistry  # noqa: E402

OCI_USER, OCI_PASSWORD = "ops", "s3cret-registry-pass"
BUCKET = "registry-ops-test"


@pytest.fixture(scope="session")
def moto_server():
    server = MotoService().start()
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = server.conn_json()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registry_server():
    server = RegistryService(username=OCI_USER, password=OCI_PASSWORD).start()
    os.environ["AIRFLOW_CONN_OCI_LOCAL"] = server.conn_json()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dr_registry_server():
    """A second distribution registry: the DR drill's scratch target (connection ``oci_dr``)."""
    server = RegistryService(username=OCI_USER, password=OCI_PASSWORD).start()
    os.environ["AIRFLOW_CONN_OCI_DR"] = server.conn_json()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp_server():
    server = SmtpService().start()
    os.environ["AIRFLOW_CONN_SMTP_DEFAULT"] = server.conn_json()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ecr(moto_server):
    return boto3.client("ecr", endpoint_url=moto_server.endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3(moto_server):
    return boto3.client("s3", endpoint_url=moto_server.endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def fleet():
    """The seeded fleet: small enough to be quick, big enough for paging and every image kind."""
    return make_fleet(seed=11, repositories=6, images=180, layer_scale=0.002, prefix="fleet/")


@pytest.fixture(scope="session")
def seeded(moto_server, registry_server, ecr, fleet):
    seed_ecr(ecr, fleet)
    seed_oci(OciRegistry("seed", registry_server.url, OCI_USER, OCI_PASSWORD), fleet)
    return fleet


@pytest.fixture(scope="session")
def config_file(moto_server, registry_server, smtp_server, tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {
                        "name": "ecr-local",
                        "kind": "ecr",
                        "conn_id": "aws_default",
                        "region": "us-east-1",
                        "include": ["fleet/*"],
                    },
                    {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": ["fleet/*"]},
                ],
                "storage": {"conn_id": "aws_default", "bucket": BUCKET},
                "notifications": {"recipients": ["ops@example.com"]},
                "inventory": {"batch_size": 2},
            }
        )
    )
    os.environ["REGISTRY_OPS_CONFIG"] = str(path)
    # Jobs never create buckets (registry-ops init does); the fixture stands in for that step.
    from include.registry_ops import storage

    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    storage.ensure_bucket(s3, BUCKET)
    return path


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated SQLite metadata DB in the temp AIRFLOW_HOME (dag.test() needs one)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
        timeout=300,
    )
    return _HOME


@pytest.fixture(scope="session")
def serialized_dags(airflow_db) -> None:
    """This repository's DAGs serialized into the worker's metadata DB (the REST API serves a DAG
    and its assets only then), once per worker: ``airflow dags reserialize`` is a process paying
    Airflow's start-up and a parse of every DAG (seconds), and the DAGs do not change during a
    session. Nothing here deletes serialized DAGs."""
    from devstack.api_server import reserialize_dags

    reserialize_dags()
